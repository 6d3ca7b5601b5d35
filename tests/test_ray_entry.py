"""What a trial reports to Ray: metric keys, objective values, node and clock, staged folders.

Hand-made reports and folders, no Ray session: the search tests run the real thing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from trainables import ray_entry, rundir
from trainables.metrics import EvalMetrics
from trainables.objectives import OBJECTIVES
from trainables.ray_entry import (
    Trial,
    epoch_metrics,
    fold_metrics,
    stage_folds,
    stage_run,
    trial_folder,
)
from trainables.result import SUMMARY_KEYS, RunResult, summary
from trainables.train import EpochReport

OBJ_KEYS = {f"obj_{name}" for name in OBJECTIVES}


def _metrics(uar: float, wa: float, f1: float, gap: float | None) -> EvalMetrics:
    return EvalMetrics(
        uar=uar, wa=wa, macro_f1=f1, uar_gap_gender=gap, statistical_parity_gender=None,
        equal_opportunity_gender=gap, per_class_recall=[uar, None], confusion=[[1, 0], [0, 1]],
        uar_by_gender={}, n=2,
    )  # fmt: skip


def _report(tmp_path: Path, done: bool = False) -> EpochReport:
    """Epoch 2 of a run whose best epoch is 1 (dev gap unknown there)."""
    best = _metrics(0.6, 0.55, 0.5, None)
    now = _metrics(0.4, 0.45, 0.3, 0.2)
    test = _metrics(0.7, 0.65, 0.6, 0.1)
    history = [
        {"epoch": 1, "train_loss": 1.5, "lr": 1e-3, "dev": best.to_dict(), "test": test.to_dict()},
        {"epoch": 2, "train_loss": 1.2, "lr": 5e-4, "dev": now.to_dict(), "test": test.to_dict()},
    ]
    return EpochReport(
        epoch=2, train_loss=1.2, lr=5e-4, dev=now, test=test, seconds=3.0, is_best=False,
        best_epoch=1, best_dev_uar=0.6, checkpoint=tmp_path / "checkpoint",
        trainable_params=1234, done=done, history=history,
    )  # fmt: skip


def test_epoch_metrics_report_every_objective_of_the_best_epoch(tmp_path: Path) -> None:
    report = _report(tmp_path)
    metrics = epoch_metrics(report)
    assert {k for k in metrics if k.startswith("obj_")} == OBJ_KEYS
    # Hand-computed: epoch 1's dev summary; its gender gap is unknown, so fairness is worst.
    assert metrics["obj_uar"] == 0.6 == report.best_dev_uar
    assert metrics["obj_params"] == 1234.0
    assert metrics["obj_fairness"] == 1.0 == OBJECTIVES["fairness"].worst
    assert metrics["obj_wa"] == 0.55 and metrics["obj_macro_f1"] == 0.5
    best = report.history[0]["dev"]
    for o in OBJECTIVES.values():
        assert metrics[o.report_key] == o.reported(best, 1234)
    split_keys = {f"{s}_{k}" for s in ("dev", "test") for k in SUMMARY_KEYS}
    rest = {"epoch", "train_loss", "lr", "best_epoch", "trainable_params", ray_entry.FINAL_KEY}
    assert set(metrics) == split_keys | OBJ_KEYS | rest
    assert metrics["dev_uar"] == 0.4 and math.isnan(metrics["dev_statistical_parity_gender"])
    assert metrics["final"] is False and epoch_metrics(_report(tmp_path, done=True))["final"]


def _fold_summary(gap: float | None) -> RunResult:
    dev = summary(_metrics(0.5, 0.6, 0.4, gap).to_dict())
    return RunResult(
        method="lora", method_options={}, backbone="tiny-wavlm", random_init=True,
        labels=["a", "b"], dev=dev, test=summary(_metrics(0.3, 0.3, 0.3, None).to_dict()),
        trainable_params=99, trainable_params_method=90, trainable_params_head=9,
        adapter_bytes=1, best_epoch=3, skipped_files=0, seconds=1.0, history=[],
    )  # fmt: skip


@pytest.mark.parametrize(("gap", "fairness"), [(0.25, 0.25), (None, 1.0)])
def test_fold_metrics_report_every_objective(gap: float | None, fairness: float) -> None:
    metrics = fold_metrics(_fold_summary(gap), folds_done=2, last=True)
    assert {k for k in metrics if k.startswith("obj_")} == OBJ_KEYS
    assert metrics["obj_uar"] == 0.5 and metrics["obj_params"] == 99.0
    assert metrics["obj_fairness"] == fairness
    assert metrics["obj_wa"] == 0.6 and metrics["obj_macro_f1"] == 0.4
    assert metrics["epoch"] == 2 and metrics["best_epoch"] == 3 and metrics["final"] is True
    assert math.isnan(metrics["test_uar_gap_gender"])


def test_trial_report_adds_node_and_clock(tmp_path: Path, monkeypatch) -> None:
    sent: list[tuple[dict[str, Any], Any]] = []
    monkeypatch.setattr(
        ray_entry.tune, "report", lambda m, checkpoint: sent.append((m, checkpoint))
    )
    node = {"node": "host", "node_id": "abc", "pid": 7}
    Trial(tmp_path, started=0.0, import_seconds=1.5, node=node).report({"epoch": 1}, tmp_path)
    [(metrics, checkpoint)] = sent
    assert metrics["epoch"] == 1 and metrics["import_seconds"] == 1.5
    assert {k: metrics[k] for k in node} == node and metrics["trial_seconds"] > 0
    assert Path(checkpoint.path) == tmp_path


def _write_outputs(folder: Path) -> None:
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "weights.safetensors").write_bytes(b"w")
    (folder / "result.json").write_text("{}")


def test_stage_run_sends_the_checkpoint_then_a_final_folder(tmp_path: Path) -> None:
    out = tmp_path / "emotune"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.json").write_text("{}")
    _write_outputs(out)
    report = _report(out)
    assert stage_run(out, report) == out / "checkpoint"
    report.done = True
    final = stage_run(out, report)
    assert final == out / "final"
    names = sorted(str(p.relative_to(final)) for p in final.rglob("*"))
    assert names == ["adapter", "adapter/weights.safetensors", "result.json", "state.json"]
    assert stage_run(out, report) == final  # a repeated final report replaces the folder


def test_stage_folds_sends_finished_folds_without_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "emotune"
    for k in (0, 1):
        (out / f"fold_{k}" / "checkpoint").mkdir(parents=True)
        (out / f"fold_{k}" / rundir.LOCK).write_text("")
    _write_outputs(out / "fold_0")  # fold 1 is still training
    staging = stage_folds(out, last=False)
    assert staging == tmp_path / "emotune-report"
    assert sorted(str(p.relative_to(staging)) for p in staging.rglob("*")) == [
        "fold_0", "fold_0/adapter", "fold_0/adapter/weights.safetensors", "fold_0/result.json",
    ]  # fmt: skip
    _write_outputs(out / "fold_1")
    _write_outputs(out)
    staging = stage_folds(out, last=True)
    top = sorted(p.name for p in staging.iterdir())
    assert top == ["adapter", "fold_0", "fold_1", "result.json"]


def test_trial_folder_is_outside_what_tune_uploads(tmp_path: Path) -> None:
    experiment = tmp_path / "artifacts" / "2026-12-07" / "exp"
    trial_dir = experiment / "driver_artifacts" / "_trial_ab12_1"
    folder = trial_folder(trial_dir)
    assert folder == experiment / "emotune_trials" / "_trial_ab12_1" / "emotune"
    assert trial_dir not in folder.parents and experiment / "driver_artifacts" not in folder.parents
    # One folder per trial: a cross-validation's staging folder sits beside it, per trial.
    assert folder.parent != trial_folder(trial_dir.with_name("_trial_cd34_2")).parent
    # A layout this code does not know keeps the trial directory.
    assert trial_folder(tmp_path / "elsewhere" / "t1") == tmp_path / "elsewhere" / "t1" / "emotune"
