"""One fine-tune run: a plain PyTorch loop with a per-epoch callback (Ray wraps it elsewhere)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainables import rundir
from trainables.checkpoint import has_checkpoint, load_checkpoint, read_meta, save_checkpoint
from trainables.config import TrainConfig
from trainables.data.dataset import class_weights
from trainables.data.manifest import partition
from trainables.data.splits import (
    Splits,
    load_frame_splits,
    load_splits,
    make_loaders,
)
from trainables.export import MAX_LABELS, build_model, save_adapter, trainable_state
from trainables.fingerprint import check_same_run, run_fingerprint
from trainables.loop import (
    NonFiniteLossError,
    StepContext,
    evaluate_split,
    logits_of,
    predict,
    step_context,
    train_epoch,
)
from trainables.metrics import EvalMetrics
from trainables.model import SERModel
from trainables.result import SUMMARY_KEYS, RunResult, summary
from trainables.run_checks import check_crop, data_facts, input_seconds

__all__ = [
    "SUMMARY_KEYS",
    "EpochReport",
    "NonFiniteLossError",
    "Splits",
    "StepContext",
    "load_frame_splits",
    "load_splits",
    "logits_of",
    "predict",
    "train",
]

log = logging.getLogger(__name__)


@dataclass
class EpochReport:
    """What the loop knows after one epoch; passed to ``on_epoch`` callbacks."""

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


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, total_steps: int) -> Any:
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=1)
    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


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
    Each history entry carries ``speed``: train seconds, padding fraction and audio seconds
    per second.

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
    part = partition(cfg.manifest, fold=cfg.fold, dev_fold=cfg.dev_fold)
    num_classes = len(part.labels)
    if num_classes > MAX_LABELS:  # an exported adapter with more would be refused on load
        raise ValueError(f"{cfg.manifest}: {num_classes} classes, over the {MAX_LABELS} limit")
    model, method = build_model(
        cfg.backbone, cfg.method, cfg.method_options, cfg.head, num_classes, seed=cfg.seed,
        allow_pickle_weights=cfg.allow_pickle_weights, digest=True,
    )  # fmt: skip
    check_crop(cfg, model.backbone)
    fingerprint = run_fingerprint(cfg, part.labels, model.backbone.weights_sha256)
    model.to(cfg.device)
    if splits is None:
        splits = (
            load_frame_splits(cfg, model.backbone, part)
            if method.frozen_frontend
            else load_splits(cfg, model.backbone.sample_rate, part, input_seconds(model))
        )
    ctx = step_context(cfg, model, splits)
    facts = data_facts(cfg, part, splits)
    facts["fingerprint"] = fingerprint
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fast_kernels or None
    )
    loaders = make_loaders(cfg, splits)
    sched = _scheduler(cfg, opt, cfg.epochs * len(loaders["train"]))
    weights = class_weights(splits.train.targets, num_classes).to(cfg.device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

    ckpt = out_dir / "checkpoint"
    state = {"epoch": 0, "best_epoch": 0, "best_dev_uar": -1.0, "since_best": 0, "history": []}
    best = trainable_state(model)
    if has_checkpoint(ckpt):
        # Checked before any tensor is loaded: a different run's optimizer state or head
        # would not fit, and its label map would silently rename this run's classes.
        check_same_run(out_dir, read_meta(ckpt).get("fingerprint"), fingerprint)
        tensors, meta = load_checkpoint(ckpt, opt)
        model.load_state_dict(
            {k: v for k, v in tensors.items() if not k.startswith("best.")}, strict=False
        )
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        sched.load_state_dict(meta["scheduler"])
        state = meta["state"]
        log.info("resuming %s after epoch %d", out_dir, state["epoch"])

    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss, lr, speed = train_epoch(
            model, loaders["train"], opt, sched, loss_fn, cfg, epoch, params, ctx
        )
        dev = evaluate_split(model, loaders["dev"], ctx, num_classes)
        test = evaluate_split(model, loaders["test"], ctx, num_classes)
        if cfg.schedule == "plateau":
            sched.step(dev.uar)
        is_best = dev.uar > state["best_dev_uar"]
        if is_best:
            best = trainable_state(model)
            state.update(best_epoch=epoch, best_dev_uar=dev.uar, since_best=0)
        else:
            state["since_best"] += 1
        state["epoch"] = epoch
        state["history"].append(
            {
                "epoch": epoch,
                "train_loss": loss,
                "lr": lr,
                "dev": dev.to_dict(),
                "test": test.to_dict(),
                "speed": {**speed, "epoch_seconds": time.perf_counter() - t0},
            }
        )
        done = epoch == cfg.epochs or (0 < cfg.patience <= state["since_best"])
        tensors = {**trainable_state(model), **{f"best.{k}": v for k, v in best.items()}}
        save_checkpoint(
            ckpt,
            tensors,
            opt,
            {
                "config": cfg.to_dict(),
                "fingerprint": fingerprint,
                "state": state,
                "scheduler": sched.state_dict(),
            },
        )
        report = EpochReport(
            epoch,
            loss,
            lr,
            dev,
            test,
            time.perf_counter() - t0,
            is_best,
            state["best_epoch"],
            state["best_dev_uar"],
            ckpt,
            sum(model.trainable_params()),
            done,
            state["history"],
            state["history"][-1]["speed"],
        )
        log.info(
            "epoch %d loss %.4f dev UAR %.4f test UAR %.4f (%.1f s, padding %.1f%%)",
            epoch,
            loss,
            dev.uar,
            test.uar,
            report.seconds,
            100 * speed["padding_fraction"],
        )
        result = None
        if done:  # finish before the last callback: Ray may stop the trial at that report
            model.load_state_dict(best, strict=False)
            result = _finish(
                cfg, out_dir, model, method, splits, state, time.perf_counter() - started, facts
            )
        if on_epoch is not None:
            on_epoch(report)
        if result is not None:
            return result

    # Resumed from the checkpoint of a run that had already finished every epoch (a trial
    # restarted after its last checkpoint): report the last epoch again, so the caller (Ray)
    # still gets a final report.
    model.load_state_dict(best, strict=False)
    seconds = time.perf_counter() - started
    result = _finish(cfg, out_dir, model, method, splits, state, seconds, facts)
    if on_epoch is not None and state["history"]:
        last = state["history"][-1]
        on_epoch(
            EpochReport(
                last["epoch"],
                last["train_loss"],
                last["lr"],
                EvalMetrics(**last["dev"]),
                EvalMetrics(**last["test"]),
                0.0,
                state["best_epoch"] == last["epoch"],
                state["best_epoch"],
                state["best_dev_uar"],
                ckpt,
                sum(model.trainable_params()),
                True,
                state["history"],
                last.get("speed", {}),
            )
        )
    return result


def _finish(
    cfg: TrainConfig,
    out_dir: Path,
    model: SERModel,
    method: Any,
    splits: Splits,
    state: dict[str, Any],
    seconds: float,
    facts: dict[str, Any],
) -> RunResult:
    """Writes ``adapter/`` and ``result.json`` of the best epoch; ``facts`` (fingerprint,
    warnings) go into the result as they are."""
    backbone_params, head_params = model.trainable_params()
    adapter_bytes = save_adapter(
        model,
        method,
        out_dir / "adapter",
        labels=splits.labels,
        head=cfg.head,
        max_seconds=cfg.max_seconds,
        eval_crop=cfg.eval_crop,
        extra={"eval_max_seconds": cfg.eval_max_seconds},
    )
    best = state["history"][state["best_epoch"] - 1]
    result = RunResult(
        method=cfg.method,
        method_options=method.config.to_dict(),
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
        best_epoch=state["best_epoch"],
        epochs_run=state["epoch"],
        skipped_files=len(splits.skipped),
        skipped=splits.skipped,
        seconds=seconds,
        config=cfg.to_dict(),
        **facts,
        history=state["history"],
    )
    result.write(out_dir)
    return result

