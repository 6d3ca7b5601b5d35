"""Checks and facts about a run's inputs, taken before it trains (result.json reports them)."""

from __future__ import annotations

import logging
from typing import Any

from trainables.config import TrainConfig
from trainables.data.cache import default_cache_dir
from trainables.data.checks import partition_warnings
from trainables.data.manifest import Partition
from trainables.data.splits import Splits
from trainables.model import SERModel

log = logging.getLogger(__name__)


def input_seconds(model: SERModel) -> float | None:
    """The longest input the backbone accepts (Whisper: 30 s), or None for no limit."""
    limit = getattr(model.backbone, "max_samples", None)
    return None if limit is None else limit / model.backbone.sample_rate


def data_facts(cfg: TrainConfig, part: Partition, splits: Splits) -> dict[str, Any]:
    """What result.json says about the data: warnings (also logged) and windowed evaluation.

    Warnings are problems that leave the run meaningful but weaker (speakers shared across
    splits, a class absent from dev or test, the same audio in two splits, clipped audio);
    problems that would make it meaningless were raised earlier. One line is a fact rather than
    a problem: that augmentation made the training split bypass the feature cache (result.json
    has no other field for it).
    """
    digest_root = cfg.feature_cache_dir or default_cache_dir()  # hash the corpus once
    warnings = partition_warnings(part, digest_root) + splits.warnings
    windowed = {k: v for k, v in splits.windowed.items() if k != "train"}
    if any(windowed.values()):
        counts = ", ".join(f"{n} {k}" for k, n in windowed.items() if n)
        warnings.append(
            f"{counts} clip(s) are longer than eval_max_seconds={cfg.eval_max_seconds:g} s: "
            "each was scored as overlapping windows of that length (mean of the windows' logits)"
        )
    if splits.train_bypassed_cache:
        warnings.append(
            f"augment={cfg.augment}: the training split bypassed the feature cache (augmented "
            "waveforms; the frozen front end ran on every step and nothing of train was cached); "
            "dev and test used the cache"
        )
    for text in warnings:
        log.warning("%s", text)
    return {
        "warnings": warnings,
        "eval_windows": {"max_seconds": cfg.eval_max_seconds, "windowed_files": windowed},
    }


def check_crop(cfg: TrainConfig, backbone: Any) -> None:
    """Refuses crop lengths shorter than one frame of the backbone's front end.

    The front end zero-pads such inputs to one frame, so the model would mostly see padding:
    the run would train and report numbers that mean nothing.

    Raises:
        ValueError: ``max_seconds`` or ``eval_max_seconds`` is shorter than one frame.
    """
    shortest = backbone.min_samples / backbone.sample_rate
    crops = (("max_seconds", cfg.max_seconds), ("eval_max_seconds", cfg.eval_max_seconds))
    for name, seconds in crops:
        if round(seconds * backbone.sample_rate) < backbone.min_samples:
            raise ValueError(
                f"{name}={seconds:g} s is shorter than one frame of {cfg.backbone} "
                f"({shortest:.3f} s): the model would see mostly padding"
            )
