"""The steps of a run: a training epoch, an evaluation pass, and how a batch reaches logits.

:func:`trainables.train.train` strings them together (set-up, epochs, checkpoints, result);
benchmarks call them directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainables.backbones.speed import cast_frozen_to_bf16, use_fast_dropout
from trainables.config import TrainConfig
from trainables.data.dataset import Batch
from trainables.data.frames import FrameBatch
from trainables.data.splits import Splits, set_epoch
from trainables.metrics import EvalMetrics, evaluate
from trainables.model import SERModel


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class StepContext:
    """What a step needs besides the model and batch: device, precision, unit of length.

    Attributes:
        device: torch device string.
        bf16: autocast to bfloat16.
        bf16_inputs: the frozen transformer is stored in bf16 (feed it bf16 features).
        seconds_per_unit: audio seconds per sample (waveforms) or per frame (features).
    """

    device: str
    bf16: bool
    bf16_inputs: bool = False
    seconds_per_unit: float = 0.0

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type


def logits_of(model: SERModel, batch: Batch | FrameBatch, ctx: StepContext) -> torch.Tensor:
    """``(batch, classes)`` logits of a waveform or frame-feature batch (already on device)."""
    with torch.autocast(ctx.device_type, dtype=torch.bfloat16, enabled=ctx.bf16):
        if isinstance(batch, FrameBatch):
            feats = batch.features.to(torch.bfloat16) if ctx.bf16_inputs else batch.features
            out = model.backbone.encode(feats, batch.frame_lengths)  # features -> hidden states
            return model.head(out.hidden_states, out.frame_mask)
        return model(batch.waves, batch.lengths)


@torch.no_grad()
def utterance_logits(
    model: SERModel, loader: DataLoader, ctx: StepContext
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Per-utterance ``(logits, y_true, genders)`` in one pass over ``loader``, by position.

    A batch row is one item of its dataset: a clip, or one evaluation window of a clip longer
    than ``eval_max_seconds`` (``batch.indices`` names the utterance). An utterance's logits
    ``(utterances, classes)`` (float32, CPU) are the mean of its items' logits, so each manifest
    row counts once; a clip of one item gets exactly its own logits.
    """
    model.eval()
    logits, owners, labels, genders = [], [], [], {}
    for batch in loader:
        batch = batch.to(ctx.device)
        logits.append(logits_of(model, batch, ctx).float().cpu())  # (batch, classes)
        owners.append(batch.indices.cpu())
        labels.append(batch.labels.cpu())
        genders.update(zip(batch.indices.tolist(), batch.genders))
    ids, slot = torch.unique(torch.cat(owners), return_inverse=True)  # sorted utterances
    total = torch.zeros(len(ids), logits[0].shape[1], dtype=torch.float64)
    total.index_add_(0, slot, torch.cat(logits).double())  # float64: x / 1 stays x exactly
    counts = torch.bincount(slot, minlength=len(ids)).unsqueeze(1)
    y = torch.zeros(len(ids), dtype=torch.int64).scatter_(0, slot, torch.cat(labels))
    sexes = np.array([genders[i] for i in ids.tolist()])
    return (total / counts).float(), y, sexes


@torch.no_grad()
def predict(
    model: SERModel, loader: DataLoader, device: str, bf16: bool, ctx: StepContext | None = None
) -> tuple[np.ndarray, ...]:
    """Returns per-utterance ``(y_true, y_pred, genders, probs)``, by utterance position.

    ``probs`` is the softmax of the utterance's mean logits (:func:`utterance_logits`).
    """
    logits, y, sexes = utterance_logits(model, loader, ctx or StepContext(device, bf16))
    p = logits.softmax(dim=-1)  # (utterances, classes)
    return y.numpy(), p.argmax(dim=-1).numpy(), sexes, p.numpy()


def step_context(cfg: TrainConfig, model: SERModel, splits: Splits) -> StepContext:
    """Applies the fast kernels to ``model`` and says how steps must feed it."""
    bf16_inputs = False
    if cfg.fast_kernels:
        use_fast_dropout(model)
        if cfg.bf16 and splits.frames:
            bf16_inputs = cast_frozen_to_bf16(model.backbone) > 0
    bb = model.backbone
    if splits.frames:  # seconds per frame, from the frame count of 10 s of audio
        unit = 10.0 / bb.frontend_frames(10 * bb.sample_rate)
    else:
        unit = 1.0 / bb.sample_rate
    return StepContext(cfg.device, cfg.bf16, bf16_inputs, unit)


def train_epoch(
    model: SERModel,
    loader: DataLoader,
    opt: torch.optim.Optimizer,
    sched: Any,
    loss_fn: torch.nn.Module,
    cfg: TrainConfig,
    epoch: int,
    params: list[torch.nn.Parameter],
    ctx: StepContext,
) -> tuple[float, float, dict[str, float]]:
    """One pass over ``loader``; returns mean loss, last LR and throughput figures."""
    model.train()
    set_epoch(loader, cfg.seed, epoch)
    total = torch.zeros((), dtype=torch.float64)
    count = valid = padded = 0
    started = time.perf_counter()
    for batch in loader:
        lengths = batch.frame_lengths if isinstance(batch, FrameBatch) else batch.lengths
        n = len(lengths)
        valid += int(lengths.sum())
        padded += n * int(lengths.max())
        batch = batch.to(cfg.device)
        logits = logits_of(model, batch, ctx)
        loss = loss_fn(logits.float(), batch.labels)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"epoch {epoch}: training loss is {loss.item()}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        opt.step()
        if cfg.schedule == "cosine":
            sched.step()
        total += loss.detach().double().cpu() * n
        count += n
    seconds = time.perf_counter() - started
    speed = {
        "train_seconds": seconds,
        "padding_fraction": 1.0 - valid / max(padded, 1),
        "audio_seconds_per_second": valid * ctx.seconds_per_unit / max(seconds, 1e-9),
    }
    return float(total) / max(count, 1), float(opt.param_groups[0]["lr"]), speed


def evaluate_split(
    model: SERModel,
    loader: DataLoader,
    ctx: StepContext,
    num_classes: int,
    loss_fn: torch.nn.Module,
) -> tuple[EvalMetrics, float]:
    """The metrics and the loss of one split, from a single pass over it.

    Args:
        loss_fn: the training loss (class-weighted cross-entropy with the training weights).

    Returns:
        ``(metrics, loss)``: ``loss`` is ``loss_fn`` over the split's utterances (their mean
        logits), i.e. ``sum_i w_{y_i} CE_i / sum_i w_{y_i}`` for the weighted cross-entropy.
    """
    logits, y, genders = utterance_logits(model, loader, ctx)
    with torch.no_grad():
        loss = float(loss_fn(logits.to(ctx.device), y.to(ctx.device)))
    pred = logits.softmax(dim=-1).argmax(dim=-1).numpy()  # as predict(): same ties
    return evaluate(y.numpy(), pred, list(genders), num_classes), loss
