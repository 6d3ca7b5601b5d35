"""The set-up step of a run: partition, model, splits, optimizer, scheduler and loss.

:func:`set_up` builds everything one fine-tune needs, in a fixed order (the model is built with
the run's seed before any loader shuffles), and hands it over as one :class:`RunSetup`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from trainables.backbones import input_normalization
from trainables.config import TrainConfig
from trainables.data.dataset import class_weights
from trainables.data.manifest import Partition, partition
from trainables.data.splits import Splits, load_frame_splits, load_splits, make_loaders
from trainables.export import MAX_LABELS, build_model
from trainables.fingerprint import run_fingerprint
from trainables.loop import StepContext, step_context
from trainables.model import SERModel
from trainables.run_checks import check_crop, data_facts, input_seconds


@dataclass
class RunSetup:
    """What the steps of one run share once it is set up.

    Attributes:
        cfg: the run's configuration.
        part: the manifest's train/dev/test partition.
        model: the classifier, on ``cfg.device``, its method applied.
        method: the PEFT method (its config goes into the result and the adapter).
        splits: the loaded train/dev/test data.
        ctx: how a step feeds the model (device, precision, unit of length).
        loaders: ``train``, ``dev`` and ``test`` data loaders.
        params: the parameters that train.
        opt: AdamW or Adam over ``params`` (:func:`make_optimizer`).
        sched: cosine (stepped per batch) or plateau (stepped per epoch on dev UAR or dev loss)
            schedule.
        loss_fn: class-weighted cross-entropy.
        fingerprint: what identifies the run, checked before a resume.
        facts: what result.json says about the data (fingerprint, warnings, eval windows).
    """

    cfg: TrainConfig
    part: Partition
    model: SERModel
    method: Any
    splits: Splits
    ctx: StepContext
    loaders: dict[str, DataLoader]
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: Any
    loss_fn: torch.nn.Module
    fingerprint: dict[str, Any]
    facts: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.part.labels)


def make_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.optimizer`` over ``params``.

    Both keep Adam's moments ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2`` and step
    ``p <- p - lr * m_hat / (sqrt(v_hat) + eps)`` (bias-corrected). They differ in the weight
    decay ``wd``: ``adamw`` shrinks ``p <- p (1 - lr wd)`` beside that step (decoupled),
    ``adam`` adds ``wd p`` to the gradient ``g`` before the moments (an L2 penalty, PEFT-SER).
    With ``fast_kernels`` both use torch's fused implementation.
    """
    kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return kind(
        params,
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.weight_decay,
        fused=cfg.fast_kernels or None,
    )


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, total_steps: int) -> Any:
    """ReduceLROnPlateau, or linear warm-up then cosine decay over ``total_steps``.

    The plateau schedule is stepped once per epoch with :func:`plateau_value`: the dev UAR
    (``mode="max"``) or the dev loss (``mode="min"``); after ``plateau_patience`` epochs without
    improvement the LR becomes ``max(lr * plateau_factor, min_lr)``.
    """
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode="min" if cfg.plateau_metric == "loss" else "max",
            factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
            min_lr=cfg.min_lr,
        )
    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def plateau_value(cfg: TrainConfig, dev_uar: float, dev_loss: float) -> float:
    """What the plateau schedule is stepped with after an epoch (``cfg.plateau_metric``)."""
    return dev_loss if cfg.plateau_metric == "loss" else dev_uar


def set_up(cfg: TrainConfig, splits: Splits | None = None) -> RunSetup:
    """Builds the model, data, optimizer, scheduler and loss of a run.

    Args:
        cfg: the run's configuration.
        splits: data already loaded by the caller (default: loaded here, as frame features
            for methods with a frozen front end, their training split as waveforms when
            ``cfg.augment`` is set, as waveforms otherwise).

    Raises:
        ValueError: more classes than an adapter may hold, or a crop shorter than one frame.
    """
    part = partition(cfg.manifest, fold=cfg.fold, dev_fold=cfg.dev_fold)
    num_classes = len(part.labels)
    if num_classes > MAX_LABELS:  # an exported adapter with more would be refused on load
        raise ValueError(f"{cfg.manifest}: {num_classes} classes, over the {MAX_LABELS} limit")
    model, method = build_model(
        cfg.backbone, cfg.method, cfg.method_options, cfg.head, num_classes, seed=cfg.seed,
        allow_pickle_weights=cfg.allow_pickle_weights, digest=True,
    )  # fmt: skip
    check_crop(cfg, model.backbone)
    fingerprint = run_fingerprint(
        cfg, part.labels, model.backbone.weights_sha256, input_normalization(model.backbone)
    )
    model.to(cfg.device)
    if splits is None:
        splits = (
            load_frame_splits(cfg, model.backbone, part)
            if method.frozen_frontend
            else load_splits(cfg, model.backbone.sample_rate, part, input_seconds(model))
        )
    ctx = step_context(cfg, model, splits)
    facts = {**data_facts(cfg, part, splits), "fingerprint": fingerprint}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(cfg, params)
    loaders = make_loaders(cfg, splits)
    sched = make_scheduler(cfg, opt, cfg.epochs * len(loaders["train"]))
    weights = class_weights(splits.train.targets, num_classes).to(cfg.device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    return RunSetup(
        cfg=cfg, part=part, model=model, method=method, splits=splits, ctx=ctx, loaders=loaders,
        params=params, opt=opt, sched=sched, loss_fn=loss_fn, fingerprint=fingerprint, facts=facts,
    )  # fmt: skip
