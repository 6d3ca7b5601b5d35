"""The Ray Tune entry point of one trial: the only module of ``trainables`` that imports Ray.

It runs :func:`trainables.train.train` and turns each epoch into ``tune.report`` with the run's
checkpoint, so a trial restarted by Ray (worker crash, node loss) resumes from its last epoch.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.config import TrainConfig
from trainables.train import EpochReport, train

# Keys every report carries. ``obj_*`` are the search objectives; ``final`` is True only on the
# last report of a trial that ran to its end (a trial stopped early never reports it).
FINAL_KEY = "final"


def epoch_metrics(report: EpochReport) -> dict[str, Any]:
    """Flat, float-only metrics of one epoch for Ray (None becomes NaN)."""

    def num(x: float | None) -> float:
        return math.nan if x is None else float(x)

    metrics: dict[str, Any] = {
        "epoch": report.epoch,
        "train_loss": report.train_loss,
        "lr": report.lr,
    }
    for split, m in (("dev", report.dev), ("test", report.test)):
        for key in (
            "uar",
            "wa",
            "macro_f1",
            "uar_gap_gender",
            "statistical_parity_gender",
            "equal_opportunity_gender",
        ):
            metrics[f"{split}_{key}"] = num(getattr(m, key))
    best = report.history[report.best_epoch - 1]["dev"]
    gap = best["uar_gap_gender"]
    metrics.update(
        obj_uar=report.best_dev_uar,
        obj_params=float(report.trainable_params),
        obj_fairness=1.0 if gap is None else float(gap),  # no gap measurable: worst value
        best_epoch=report.best_epoch,
        trainable_params=report.trainable_params,
        node=socket.gethostname(),
    )
    metrics[FINAL_KEY] = report.done
    return metrics


def run_trial(cfg: TrainConfig, out_dir: Path) -> dict[str, Any]:
    """Runs one trial inside Ray Tune, resuming from Tune's checkpoint when there is one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)
            shutil.copytree(folder, out_dir / "checkpoint")

    def report(r: EpochReport) -> None:
        tune.report(epoch_metrics(r), checkpoint=tune.Checkpoint.from_directory(str(r.checkpoint)))

    return train(cfg, out_dir, on_epoch=report)
