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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables import rundir
from trainables.checkpoint import CHECKPOINT_DIR, copy_checkpoint, read_meta
from trainables.config import TrainConfig
from trainables.folds import train_folds
from trainables.objectives import OBJECTIVES, report_values
from trainables.provenance import check_project
from trainables.result import FOLD_KEY, RESULT_FILE, SUMMARY_KEYS, RunResult, fold_report_key
from trainables.train import EpochReport, train

# Keys every report carries. ``obj_*`` are the search objectives (every row of
# :data:`~trainables.objectives.OBJECTIVES`); ``final`` is True only on the last report of a
# trial that ran to its end (a trial stopped early never reports it).
FINAL_KEY = "final"
ADAPTER_DIR = "adapter"
FINAL_DIR = "final"  # a single run's last report: checkpoint, adapter and result
FOLDS_STAGING = "emotune-report"  # beside a cross-validation's folder: what a fold report sends


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def epoch_metrics(report: EpochReport) -> dict[str, Any]:
    """Flat, float-only metrics of one epoch for Ray (None becomes NaN).

    The objectives are read from the dev summary of the best epoch so far, so ``obj_uar`` is
    ``report.best_dev_uar``; an objective that cannot be measured reports its ``worst`` value.
    """
    metrics: dict[str, Any] = {
        "epoch": report.epoch,
        "train_loss": report.train_loss,
        "lr": report.lr,
    }
    for split, m in (("dev", report.dev), ("test", report.test)):
        for key in SUMMARY_KEYS:
            metrics[f"{split}_{key}"] = _num(getattr(m, key))
    best = report.history[report.best_epoch - 1]["dev"]
    metrics.update(report_values(tuple(OBJECTIVES), best, report.trainable_params))
    metrics.update(best_epoch=report.best_epoch, trainable_params=report.trainable_params)
    metrics[FINAL_KEY] = report.done
    return metrics


def fold_metrics(summary: RunResult, folds_done: int, last: bool) -> dict[str, Any]:
    """Ray metrics of a cross-validated trial: means over the folds finished so far, the fold
    that just finished (``fold``) and every finished fold's own dev and test summaries
    (``fold_<K>_dev_uar``, ... see :func:`~trainables.result.fold_report_key`), so the driver
    has the folds of a trial that ASHA stops after this report (nested cross-validation)."""
    metrics: dict[str, Any] = {
        "epoch": folds_done,
        "best_epoch": summary.best_epoch,
        "trainable_params": summary.trainable_params,
    }
    for split in ("dev", "test"):
        for key, value in getattr(summary, split).items():
            metrics[f"{split}_{key}"] = _num(value)
    for fold in summary.folds or []:
        for split in ("dev", "test"):
            for key in SUMMARY_KEYS:
                value = (fold.get(split) or {}).get(key)
                metrics[fold_report_key(fold[FOLD_KEY], split, key)] = _num(value)
    if summary.folds:
        metrics[FOLD_KEY] = summary.folds[-1][FOLD_KEY]
    metrics.update(report_values(tuple(OBJECTIVES), summary.dev, summary.trainable_params))
    metrics[FINAL_KEY] = last
    return metrics


def trial_clock(started: float | None, import_seconds: float) -> dict[str, float]:
    """Timing keys of a report: seconds since the trial function was entered (``started``, a
    ``time.perf_counter`` value; now if None) and what its imports took."""
    now = time.perf_counter()
    return {
        "trial_seconds": now - (now if started is None else started),
        "import_seconds": import_seconds,
    }


@dataclass
class Trial:
    """What the steps of one trial share: its out folder, where it runs and its clock.

    Attributes:
        out_dir: the trial's emotune folder on this node, claimed by :func:`start_trial`.
        started: ``time.perf_counter()`` when the trial function was entered.
        import_seconds: what the trial's imports took.
        node: host name, Ray node id and process id, added to every report.
    """

    out_dir: Path
    started: float
    import_seconds: float
    node: dict[str, Any]

    def report(self, metrics: dict[str, Any], folder: Path) -> None:
        """Sends ``metrics``, with :attr:`node` and :func:`trial_clock`, to Tune, with
        ``folder`` as the report's checkpoint."""
        tune.report(
            {**metrics, **self.node, **trial_clock(self.started, self.import_seconds)},
            checkpoint=tune.Checkpoint.from_directory(str(folder)),
        )


def trial_folder(trial_dir: Path) -> Path:
    """The trial's working folder on this node: ``<experiment>/emotune_trials/<trial>/emotune``.

    Not inside Tune's trial directory: on the driver's node that directory sits under
    ``driver_artifacts``, which Tune uploads to storage with the experiment state every few
    seconds, so checkpoints being written there raced the upload (a renamed-away temporary file
    fails it) and every checkpoint was stored twice. Results reach the driver through reported
    checkpoints only. If Tune's layout is not the one known here, the trial directory is used.
    """
    if trial_dir.parent.name != "driver_artifacts":
        return trial_dir / "emotune"
    return trial_dir.parent.parent / "emotune_trials" / trial_dir.name / "emotune"


def start_trial(
    kind: str, out_dir: Path | None, started: float | None, import_seconds: float
) -> Trial:
    """Checks the project, claims the trial's folder (``out_dir``, default the trial's folder
    on this node) as a ``kind`` folder before anything restored is copied in, and sets torch's
    threads to ``OMP_NUM_THREADS`` (what the search gives each trial)."""
    check_project()  # refuse to train with a shadowed or mixed emotune (Ray adds the cwd)
    started = time.perf_counter() if started is None else started
    if out_dir is None:
        out_dir = trial_folder(Path(tune.get_context().get_trial_dir()))
    rundir.claim(out_dir, kind)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:  # a worker's torch may have started with another count
        torch.set_num_threads(threads)
    node = {
        "node": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
    }
    return Trial(out_dir, started, import_seconds, node)


def restore_from_tune(copy: Callable[[Path], None]) -> bool:
    """Hands the folder of Tune's checkpoint to ``copy``; False when the trial starts fresh."""
    restored = tune.get_checkpoint()
    if restored is None:
        return False
    with restored.as_directory() as folder:
        copy(Path(folder))
    return True


def _copy_outputs(out_dir: Path, folder: Path) -> None:
    """Copies the run's ``adapter/`` and ``result.json`` into ``folder``."""
    shutil.copytree(out_dir / ADAPTER_DIR, folder / ADAPTER_DIR)
    shutil.copy2(out_dir / RESULT_FILE, folder / RESULT_FILE)


def stage_run(out_dir: Path, report: EpochReport) -> Path:
    """The folder an epoch's report sends: the run's checkpoint, or on the final report a
    ``final`` folder with the checkpoint, ``adapter/`` and ``result.json``."""
    if not report.done:
        return report.checkpoint
    folder = out_dir / FINAL_DIR
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(report.checkpoint, folder)
    _copy_outputs(out_dir, folder)
    return folder


def stage_folds(out_dir: Path, last: bool) -> Path:
    """The folder a fold's report sends (beside ``out_dir``): each finished fold's folder
    without its checkpoint, plus the selected ``adapter/`` and ``result.json`` when ``last``."""
    staging = out_dir.parent / FOLDS_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    for fold_dir in out_dir.glob("fold_*"):
        if (fold_dir / RESULT_FILE).is_file():
            shutil.copytree(
                fold_dir,
                staging / fold_dir.name,
                ignore=shutil.ignore_patterns(f"{CHECKPOINT_DIR}*", rundir.LOCK),
            )
    if last:
        _copy_outputs(out_dir, staging)
    return staging


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
    trial = start_trial("run", out_dir, started, import_seconds)
    ckpt = trial.out_dir / CHECKPOINT_DIR
    resumed_from = 0
    if restore_from_tune(lambda folder: copy_checkpoint(folder, ckpt)):
        resumed_from = int(read_meta(ckpt)["state"]["epoch"])

    def report(r: EpochReport) -> None:
        metrics = {**epoch_metrics(r), "resumed_from_epoch": resumed_from}
        trial.report(metrics, stage_run(trial.out_dir, r))

    return train(cfg, trial.out_dir, on_epoch=report)


def fold_reporter(trial: Trial, reported: set[int]) -> Callable[[RunResult, bool], None]:
    """The ``on_fold`` callback of a cross-validated trial: one Tune report per finished fold.

    Folds in ``reported`` (restored from Tune's checkpoint: reported before a restart) are not
    reported again, except the last fold, whose final report ends the trial. Tune restores the
    trial's ``training_iteration`` with the checkpoint, so re-reporting them would count them
    twice: ASHA (whose clock is that iteration, meant to be the number of finished folds) would
    then compare the trial at a rung with a different set of folds, or stop it at ``max_t``
    before its last fold.
    """

    def report(summary: RunResult, last: bool) -> None:
        folds = summary.folds or []
        if folds and folds[-1][FOLD_KEY] in reported and not last:
            return
        trial.report(fold_metrics(summary, len(folds), last), stage_folds(trial.out_dir, last))

    return report


def run_trial_folds(
    cfg: TrainConfig,
    folds: list[int],
    started: float | None = None,
    import_seconds: float = 0.0,
) -> RunResult:
    """A trial scored by the mean over ``folds``; one report per finished fold.

    ``folds`` run in the order given, the same for every trial of a search (the manifest's
    sorted fold values), so report ``n`` of any trial covers the same ``n`` folds: ASHA's rungs
    and the per-fold comparisons of nested cross-validation compare trials on the same folds.
    Each report's checkpoint holds the finished folds' results and adapters, so a restarted
    trial skips them (the fold in progress starts again) without reporting them twice.
    """
    trial = start_trial("folds", None, started, import_seconds)
    reported: set[int] = set()  # the folds of Tune's checkpoint: reported before a restart

    def restore(folder: Path) -> None:
        shutil.copytree(folder, trial.out_dir, dirs_exist_ok=True)
        reported.update(k for k in folds if (folder / f"fold_{k}" / RESULT_FILE).is_file())

    restore_from_tune(restore)
    return train_folds(cfg, trial.out_dir, folds, on_fold=fold_reporter(trial, reported))
