"""One fine-tune run: a plain PyTorch loop with a per-epoch callback (Ray wraps it elsewhere).

It reads as named steps: set up (:func:`trainables.run_setup.set_up`), restore from the
checkpoint (:func:`trainables.progress.restore_progress`), then per epoch train, evaluate, track
the best and checkpoint (:func:`_run_epoch`), report (:func:`_epoch_report`), and at the end
write the adapter and result of the best epoch (:func:`_finish`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables import rundir
from trainables.checkpoint import CHECKPOINT_DIR
from trainables.config import TrainConfig
from trainables.data.splits import Splits
from trainables.export import save_adapter
from trainables.loop import (
    NonFiniteLossError,
    StepContext,
    evaluate_split,
    logits_of,
    predict,
    train_epoch,
)
from trainables.metrics import EvalMetrics
from trainables.progress import Progress, restore_progress, save_progress
from trainables.result import RunResult, summary
from trainables.run_setup import RunSetup, plateau_value, set_up

__all__ = [
    "EpochReport",
    "NonFiniteLossError",
    "Splits",
    "StepContext",
    "logits_of",
    "predict",
    "train",
]

log = logging.getLogger(__name__)


@dataclass
class EpochReport:
    """What the loop knows after one epoch; passed to ``on_epoch`` callbacks.

    ``dev_loss`` is the dev split's class-weighted cross-entropy (training weights); None only
    when replaying the last epoch of a run checkpointed before it was recorded.
    """

    epoch: int
    train_loss: float
    lr: float
    dev: EvalMetrics
    test: EvalMetrics
    seconds: float
    is_best: bool
    best_epoch: int
    best_dev_uar: float
    checkpoint: Path
    trainable_params: int
    done: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    speed: dict[str, float] = field(default_factory=dict)
    dev_loss: float | None = None


def train(
    cfg: TrainConfig,
    out_dir: Path,
    on_epoch: Callable[[EpochReport], None] | None = None,
    splits: Splits | None = None,
) -> RunResult:
    """Runs (or resumes) one fine-tune and writes ``result.json`` and ``adapter/`` to ``out_dir``.

    Each epoch trains on ``train``, evaluates ``dev`` and ``test``, keeps the weights of the best
    dev UAR (selection never looks at test), checkpoints to ``out_dir/checkpoint`` and calls
    ``on_epoch``. ``result.json`` and ``adapter/`` are written before the last epoch's callback,
    so a caller that stops the run at its final report loses nothing. A run with an existing
    checkpoint continues after its last finished epoch (``feature_cache``, its folder and
    ``num_workers`` may differ on resume: they never change the numbers).

    Methods that keep the front end frozen (all but ``full``) train on frame features, cropped
    in frame space and memory-mapped from the feature cache when ``cfg.feature_cache`` is on
    (see :mod:`trainables.data.frames`); ``full`` trains on waveforms with waveform crops.
    Each history entry carries ``dev_loss`` (the dev split's class-weighted cross-entropy, what
    ``plateau_metric="loss"`` steps the schedule with) and ``speed``: train seconds, padding
    fraction and audio seconds per second.

    Returns:
        The result, also written to ``out_dir/result.json``.
    """
    with rundir.owned(out_dir, "run", "--out") as folder:
        return _run(cfg, folder, on_epoch, splits)


def _run(
    cfg: TrainConfig,
    out_dir: Path,
    on_epoch: Callable[[EpochReport], None] | None,
    splits: Splits | None,
) -> RunResult:
    """The body of :func:`train`, with ``out_dir`` claimed and locked by this process."""
    started = time.perf_counter()
    run = set_up(cfg, splits)
    ckpt = out_dir / CHECKPOINT_DIR
    progress = restore_progress(run, out_dir, ckpt)
    for epoch in range(progress.epoch + 1, cfg.epochs + 1):
        report = _run_epoch(run, progress, epoch, ckpt)
        result = None
        if report.done:  # finish before the last callback: Ray may stop the trial at that report
            result = _finish(run, out_dir, progress, time.perf_counter() - started)
        if on_epoch is not None:
            on_epoch(report)
        if result is not None:
            return result

    # Resumed from the checkpoint of a run that had already finished every epoch (a trial
    # restarted after its last checkpoint): report the last epoch again, so the caller (Ray)
    # still gets a final report.
    result = _finish(run, out_dir, progress, time.perf_counter() - started)
    if on_epoch is not None and progress.history:
        last = progress.history[-1]
        dev, test = EvalMetrics(**last["dev"]), EvalMetrics(**last["test"])
        on_epoch(_epoch_report(run, progress, ckpt, dev=dev, test=test, seconds=0.0, done=True))
    return result


def _run_epoch(run: RunSetup, progress: Progress, epoch: int, ckpt: Path) -> EpochReport:
    """Trains one epoch, evaluates dev and test, tracks the best epoch and checkpoints."""
    t0 = time.perf_counter()
    cfg, model = run.cfg, run.model
    loss, lr, speed = train_epoch(
        model, run.loaders["train"], run.opt, run.sched, run.loss_fn, cfg, epoch, run.params,
        run.ctx,
    )  # fmt: skip
    dev, dev_loss = evaluate_split(model, run.loaders["dev"], run.ctx, run.num_classes, run.loss_fn)
    test, _ = evaluate_split(model, run.loaders["test"], run.ctx, run.num_classes, run.loss_fn)
    if cfg.schedule == "plateau":
        run.sched.step(plateau_value(cfg, dev.uar, dev_loss))
    progress.track_best(epoch, dev.uar, model)
    progress.history.append(
        {
            "epoch": epoch,
            "train_loss": loss,
            "lr": lr,
            "dev_loss": dev_loss,
            "dev": dev.to_dict(),
            "test": test.to_dict(),
            "speed": {**speed, "epoch_seconds": time.perf_counter() - t0},
        }
    )
    done = epoch == cfg.epochs or (0 < cfg.patience <= progress.since_best)
    save_progress(run, ckpt, progress)
    report = _epoch_report(
        run, progress, ckpt, dev=dev, test=test, seconds=time.perf_counter() - t0, done=done
    )
    log.info(
        "epoch %d loss %.4f dev UAR %.4f test UAR %.4f (%.1f s, padding %.1f%%)",
        epoch, loss, dev.uar, test.uar, report.seconds, 100 * speed["padding_fraction"],
    )  # fmt: skip
    return report


def _epoch_report(
    run: RunSetup,
    progress: Progress,
    ckpt: Path,
    *,
    dev: EvalMetrics,
    test: EvalMetrics,
    seconds: float,
    done: bool,
) -> EpochReport:
    """The report of the last finished epoch (``progress.history[-1]``), for ``on_epoch``."""
    last = progress.history[-1]
    return EpochReport(
        epoch=last["epoch"],
        train_loss=last["train_loss"],
        lr=last["lr"],
        dev=dev,
        test=test,
        seconds=seconds,
        is_best=progress.best_epoch == last["epoch"],
        best_epoch=progress.best_epoch,
        best_dev_uar=progress.best_dev_uar,
        checkpoint=ckpt,
        trainable_params=sum(run.model.trainable_params()),
        done=done,
        history=progress.history,
        speed=last.get("speed", {}),
        dev_loss=last.get("dev_loss"),
    )


def _finish(run: RunSetup, out_dir: Path, progress: Progress, seconds: float) -> RunResult:
    """Loads the best epoch's weights and writes ``adapter/`` and ``result.json`` of that
    epoch; the run's facts (fingerprint, warnings) go into the result as they are."""
    cfg, model, splits = run.cfg, run.model, run.splits
    model.load_state_dict(progress.best_weights, strict=False)
    backbone_params, head_params = model.trainable_params()
    adapter_bytes = save_adapter(
        model,
        run.method,
        out_dir / "adapter",
        labels=splits.labels,
        head=cfg.head,
        max_seconds=cfg.max_seconds,
        eval_crop=cfg.eval_crop,
        extra={"eval_max_seconds": cfg.eval_max_seconds},
    )
    best = progress.history[progress.best_epoch - 1]
    result = RunResult(
        method=cfg.method,
        method_options=run.method.config.to_dict(),
        backbone=cfg.backbone,
        random_init=model.backbone.random_init,
        labels=splits.labels,
        dev=summary(best["dev"]),
        test=summary(best["test"]),
        dev_details=best["dev"],
        test_details=best["test"],
        trainable_params=backbone_params + head_params,
        trainable_params_method=backbone_params,
        trainable_params_head=head_params,
        adapter_bytes=adapter_bytes,
        best_epoch=progress.best_epoch,
        epochs_run=progress.epoch,
        skipped_files=len(splits.skipped),
        skipped=splits.skipped,
        seconds=seconds,
        config=cfg.to_dict(),
        **run.facts,
        history=progress.history,
    )
    result.write(out_dir)
    return result
