"""One fine-tune run: a plain PyTorch loop with a per-epoch callback (Ray wraps it elsewhere)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainables.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from trainables.config import TrainConfig
from trainables.data.dataset import ClipSet, class_weights, collate
from trainables.data.manifest import Partition, partition
from trainables.export import build_model, save_adapter, trainable_state
from trainables.metrics import EvalMetrics, evaluate
from trainables.model import SERModel

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


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


@dataclass
class Splits:
    train: ClipSet
    dev: ClipSet
    test: ClipSet
    labels: list[str]

    @property
    def skipped(self) -> list[dict[str, str]]:
        return [
            {"path": s.path, "reason": s.reason}
            for d in (self.train, self.dev, self.test)
            for s in d.skipped
        ]


def load_splits(cfg: TrainConfig, sample_rate: int, part: Partition | None = None) -> Splits:
    """Decodes the audio of the manifest partition once (bad files are skipped, not fatal)."""
    part = part or partition(cfg.manifest, fold=cfg.fold, dev_fold=cfg.dev_fold)
    labels = list(part.labels)

    def make(utts: tuple, crop: str) -> ClipSet:
        return ClipSet(utts, labels, sample_rate, cfg.max_seconds, crop, seed=cfg.seed)

    return Splits(
        make(part.train, "random"),
        make(part.dev, cfg.eval_crop),
        make(part.test, cfg.eval_crop),
        labels,
    )


@torch.no_grad()
def predict(model: SERModel, loader: DataLoader, device: str, bf16: bool) -> tuple[np.ndarray, ...]:
    """Returns ``(y_true, y_pred, genders, probs)`` over a loader."""
    model.eval()
    ys, preds, genders, probs = [], [], [], []
    for batch in loader:
        batch = batch.to(device)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch.waves, batch.lengths)
        p = logits.float().softmax(dim=-1)
        ys.append(batch.labels.cpu().numpy())
        preds.append(p.argmax(dim=-1).cpu().numpy())
        probs.append(p.cpu().numpy())
        genders += batch.genders
    return np.concatenate(ys), np.concatenate(preds), np.array(genders), np.concatenate(probs)


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
) -> dict[str, Any]:
    """Runs (or resumes) one fine-tune and writes ``result.json`` and ``adapter/`` to ``out_dir``.

    Each epoch trains on ``train``, evaluates ``dev`` and ``test``, keeps the weights of the best
    dev UAR (selection never looks at test), checkpoints to ``out_dir/checkpoint`` and calls
    ``on_epoch``. ``result.json`` and ``adapter/`` are written before the last epoch's callback,
    so a caller that stops the run at its final report loses nothing. A run with an existing
    checkpoint continues after its last finished epoch.

    Returns:
        The result dict also written to ``out_dir/result.json``.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    part = partition(cfg.manifest, fold=cfg.fold, dev_fold=cfg.dev_fold)
    num_classes = len(part.labels)
    model, method = build_model(
        cfg.backbone, cfg.method, cfg.method_options, cfg.head, num_classes, seed=cfg.seed
    )
    splits = splits or load_splits(cfg, model.backbone.sample_rate, part)
    model.to(cfg.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loaders = _loaders(cfg, splits)
    sched = _scheduler(cfg, opt, cfg.epochs * len(loaders["train"]))
    weights = class_weights(splits.train.targets, num_classes).to(cfg.device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

    ckpt = out_dir / "checkpoint"
    state = {"epoch": 0, "best_epoch": 0, "best_dev_uar": -1.0, "since_best": 0, "history": []}
    best = trainable_state(model)
    if has_checkpoint(ckpt):
        tensors, meta = load_checkpoint(ckpt, opt)
        if meta.get("config") != cfg.to_dict():
            raise ValueError(f"{ckpt} belongs to a different configuration; use a new --out")
        model.load_state_dict(
            {k: v for k, v in tensors.items() if not k.startswith("best.")}, strict=False
        )
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        sched.load_state_dict(meta["scheduler"])
        state = meta["state"]
        log.info("resuming %s after epoch %d", out_dir, state["epoch"])

    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss, lr = _train_epoch(model, loaders["train"], opt, sched, loss_fn, cfg, epoch)
        dev = _evaluate(model, loaders["dev"], cfg, num_classes)
        test = _evaluate(model, loaders["test"], cfg, num_classes)
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
            }
        )
        done = epoch == cfg.epochs or (0 < cfg.patience <= state["since_best"])
        tensors = {**trainable_state(model), **{f"best.{k}": v for k, v in best.items()}}
        save_checkpoint(
            ckpt,
            tensors,
            opt,
            {"config": cfg.to_dict(), "state": state, "scheduler": sched.state_dict()},
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
        )
        log.info("epoch %d loss %.4f dev UAR %.4f test UAR %.4f", epoch, loss, dev.uar, test.uar)
        result = None
        if done:  # finish before the last callback: Ray may stop the trial at that report
            model.load_state_dict(best, strict=False)
            result = _finish(
                cfg, out_dir, model, method, splits, state, time.perf_counter() - started
            )
        if on_epoch is not None:
            on_epoch(report)
        if result is not None:
            return result

    # Resumed from the checkpoint of a run that had already finished every epoch.
    model.load_state_dict(best, strict=False)
    return _finish(cfg, out_dir, model, method, splits, state, time.perf_counter() - started)


def _loaders(cfg: TrainConfig, splits: Splits) -> dict[str, DataLoader]:
    gen = torch.Generator().manual_seed(cfg.seed)
    return {
        "train": DataLoader(
            splits.train,
            batch_size=cfg.batch_size,
            shuffle=True,
            collate_fn=collate,
            generator=gen,
            drop_last=False,
        ),
        "dev": DataLoader(splits.dev, batch_size=cfg.batch_size, collate_fn=collate),
        "test": DataLoader(splits.test, batch_size=cfg.batch_size, collate_fn=collate),
    }


def _train_epoch(
    model: SERModel,
    loader: DataLoader,
    opt: torch.optim.Optimizer,
    sched: Any,
    loss_fn: torch.nn.Module,
    cfg: TrainConfig,
    epoch: int,
) -> tuple[float, float]:
    model.train()
    loader.dataset.set_epoch(epoch)
    # The shuffle order of epoch e depends only on (seed, e): resuming replays it exactly.
    loader.generator.manual_seed(cfg.seed * 100_003 + epoch)
    total, count = 0.0, 0
    for batch in loader:
        batch = batch.to(cfg.device)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(batch.waves, batch.lengths)
        loss = loss_fn(logits.float(), batch.labels)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"epoch {epoch}: training loss is {loss.item()}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], cfg.grad_clip
            )
        opt.step()
        if cfg.schedule == "cosine":
            sched.step()
        total += loss.item() * len(batch.labels)
        count += len(batch.labels)
    return total / max(count, 1), float(opt.param_groups[0]["lr"])


def _evaluate(
    model: SERModel, loader: DataLoader, cfg: TrainConfig, num_classes: int
) -> EvalMetrics:
    y, pred, genders, _ = predict(model, loader, cfg.device, cfg.bf16)
    return evaluate(y, pred, list(genders), num_classes)


def _finish(
    cfg: TrainConfig,
    out_dir: Path,
    model: SERModel,
    method: Any,
    splits: Splits,
    state: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    backbone_params, head_params = model.trainable_params()
    adapter_bytes = save_adapter(
        model,
        method,
        out_dir / "adapter",
        labels=splits.labels,
        head=cfg.head,
        max_seconds=cfg.max_seconds,
        eval_crop=cfg.eval_crop,
    )
    best = state["history"][state["best_epoch"] - 1]
    result = {
        "method": cfg.method,
        "method_options": method.config.to_dict(),
        "backbone": cfg.backbone,
        "random_init": model.backbone.random_init,
        "labels": splits.labels,
        "dev": _summary(best["dev"]),
        "test": _summary(best["test"]),
        "dev_details": best["dev"],
        "test_details": best["test"],
        "trainable_params": backbone_params + head_params,
        "trainable_params_method": backbone_params,
        "trainable_params_head": head_params,
        "adapter_bytes": adapter_bytes,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "skipped_files": len(splits.skipped),
        "skipped": splits.skipped,
        "seconds": seconds,
        "config": cfg.to_dict(),
        "history": state["history"],
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


SUMMARY_KEYS = (
    "uar",
    "wa",
    "macro_f1",
    "uar_gap_gender",
    "statistical_parity_gender",
    "equal_opportunity_gender",
)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in SUMMARY_KEYS}
