"""The Ray Tune entry point of one trial: the only module of ``trainables`` that imports Ray.

It runs :func:`trainables.train.train` and turns each epoch into ``tune.report`` with the run's
checkpoint, so a trial restarted by Ray (worker crash, node loss) resumes from its last epoch.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables import rundir
from trainables.checkpoint import copy_checkpoint, read_meta
from trainables.config import TrainConfig
from trainables.provenance import check_project
from trainables.result import SUMMARY_KEYS, RunResult
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
        for key in SUMMARY_KEYS:
            metrics[f"{split}_{key}"] = num(getattr(m, key))
    best = report.history[report.best_epoch - 1]["dev"]
    gap = best["uar_gap_gender"]
    metrics.update(
        obj_uar=report.best_dev_uar,
        obj_params=float(report.trainable_params),
        obj_fairness=1.0 if gap is None else float(gap),  # no gap measurable: worst value
        best_epoch=report.best_epoch,
        trainable_params=report.trainable_params,
    )
    metrics[FINAL_KEY] = report.done
    return metrics


def trial_clock(started: float | None, import_seconds: float) -> dict[str, float]:
    """Timing keys of a report: seconds since the trial function was entered (``started``, a
    ``time.perf_counter`` value; now if None) and what its imports took."""
    now = time.perf_counter()
    return {
        "trial_seconds": now - (now if started is None else started),
        "import_seconds": import_seconds,
    }


def run_trial(
    cfg: TrainConfig,
    out_dir: Path | None = None,
    started: float | None = None,
    import_seconds: float = 0.0,
) -> RunResult:
    """Runs one trial inside Ray Tune, resuming from Tune's checkpoint when there is one.

    ``out_dir`` defaults to the trial's folder on this node. Every epoch reports its checkpoint;
    the last report's checkpoint also holds ``result.json`` and ``adapter/``, so the driver gets
    them through Ray's storage even when the trial ran on another node. Reports carry
    :func:`trial_clock` (``started`` and ``import_seconds`` come from the caller, which timed
    its imports), so the driver can tell trial work from Ray's overhead.
    """
    check_project()  # refuse to train with a shadowed or mixed emotune (Ray adds the cwd)
    started = time.perf_counter() if started is None else started
    if out_dir is None:
        out_dir = Path(tune.get_context().get_trial_dir()) / "emotune"
    rundir.claim(out_dir, "run")  # before the restored checkpoint is copied in
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    resumed_from = 0
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            copy_checkpoint(Path(folder), out_dir / "checkpoint")
        resumed_from = int(read_meta(out_dir / "checkpoint")["state"]["epoch"])
    node = {
        "node": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
    }

    def report(r: EpochReport) -> None:
        folder = r.checkpoint
        if r.done:
            folder = out_dir / "final"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(r.checkpoint, folder)
            shutil.copytree(out_dir / "adapter", folder / "adapter")
            shutil.copy2(out_dir / "result.json", folder / "result.json")
        metrics = {
            **epoch_metrics(r),
            **node,
            **trial_clock(started, import_seconds),
            "resumed_from_epoch": resumed_from,
        }
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))

    return train(cfg, out_dir, on_epoch=report)


def fold_metrics(summary: RunResult, folds_done: int, last: bool) -> dict[str, Any]:
    """Ray metrics of a cross-validated trial: means over the folds finished so far."""

    def num(x: float | None) -> float:
        return math.nan if x is None else float(x)

    metrics: dict[str, Any] = {
        "epoch": folds_done,
        "best_epoch": summary.best_epoch,
        "trainable_params": summary.trainable_params,
    }
    for split in ("dev", "test"):
        for key, value in getattr(summary, split).items():
            metrics[f"{split}_{key}"] = num(value)
    gap = summary.dev["uar_gap_gender"]
    metrics.update(
        obj_uar=summary.dev["uar"],
        obj_params=float(summary.trainable_params),
        obj_fairness=1.0 if gap is None else float(gap),
    )
    metrics[FINAL_KEY] = last
    return metrics


def run_trial_folds(
    cfg: TrainConfig,
    folds: list[int],
    started: float | None = None,
    import_seconds: float = 0.0,
) -> RunResult:
    """A trial scored by the mean over ``folds``; one report per finished fold.

    Each report's checkpoint holds the finished folds' results and adapters, so a restarted
    trial skips them (the fold in progress starts again).
    """
    check_project()  # refuse to train with a shadowed or mixed emotune (Ray adds the cwd)
    started = time.perf_counter() if started is None else started
    from trainables.folds import train_folds

    out_dir = Path(tune.get_context().get_trial_dir()) / "emotune"
    rundir.claim(out_dir, "folds")  # before the restored folds are copied in
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            shutil.copytree(folder, out_dir, dirs_exist_ok=True)
    node = {"node": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id()}
    done: list[int] = []

    def report(summary: RunResult, last: bool) -> None:
        done.append(len(done))
        staging = out_dir.parent / "emotune-report"
        shutil.rmtree(staging, ignore_errors=True)
        for fold_dir in out_dir.glob("fold_*"):
            if (fold_dir / "result.json").is_file():
                shutil.copytree(
                    fold_dir,
                    staging / fold_dir.name,
                    ignore=shutil.ignore_patterns("checkpoint*", rundir.LOCK),
                )
        if last:
            shutil.copytree(out_dir / "adapter", staging / "adapter")
            shutil.copy2(out_dir / "result.json", staging / "result.json")
        metrics = {
            **fold_metrics(summary, len(done), last),
            **node,
            **trial_clock(started, import_seconds),
        }
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(staging)))

    return train_folds(cfg, out_dir, folds, on_fold=report)
