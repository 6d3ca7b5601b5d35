"""bench.sampler_hv: the search loop with a stand-in trainer, and its hand-checked hypervolume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bench.sampler_hv import SAMPLERS, Run, Trainer, paired, run_search
from spaces import SpaceConfig
from spaces.sampling import to_train_config


class FakeTrainer(Trainer):
    """Deterministic result from the point alone: UAR from lr, params from the method."""

    def __call__(self, params: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        cfg = to_train_config(params, base)  # the product's conversion must accept the point
        self.trained += 1
        uar = 0.25 + 0.5 * (math.log10(cfg.lr) + 4) / math.log10(50)  # lr in [1e-4, 5e-3]
        n_params = {"frozen": 1_000, "lora": 5_000, "adapter": 8_000, "prompt": 2_000}
        dev = {"uar": uar, "uar_gap_gender": 0.0}
        return {"method": cfg.method, "dev": dev, "test": dev, "best_epoch": 1,
                "trainable_params": n_params[cfg.method]}  # fmt: skip


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_run_search_hypervolume(sampler: str, tmp_path: Path) -> None:
    base = {"manifest": str(tmp_path / "manifest.parquet"), "backbone": "tiny-wavlm"}
    trainer = FakeTrainer(tmp_path)
    run = run_search(sampler, 0, 5, SpaceConfig.from_dict({"epochs": 2}), base, trainer)
    assert len(run.records) == len(run.hv) == 5 and trainer.trained == 5
    assert all(b >= a for a, b in zip(run.hv, run.hv[1:]))  # more trials never lose volume
    first = run.records[0]
    # One point: its box against (UAR 0, log10 1e9 = 9).
    expected = float(first.dev["uar"]) * (9 - math.log10(first.trainable_params))
    assert run.hv[0] == pytest.approx(expected)


def test_paired_differences() -> None:
    runs = [Run("random", 0, hv=[1.0]), Run("tpe", 0, hv=[1.5]), Run("random", 1, hv=[2.0]),
            Run("tpe", 1, hv=[1.75])]  # fmt: skip
    assert paired(runs, "tpe") == [0.5, -0.25]
