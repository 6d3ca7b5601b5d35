"""In-memory clip dataset, padding collate and class weights.

Every file is decoded once when the dataset is built, so a broken file is reported (and
skipped) before training starts instead of crashing a worker in epoch 7.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from trainables.data.audio import CROP_MODES, AudioError, CropMode, crop, load_audio
from trainables.data.manifest import Utterance

BatchT = TypeVar("BatchT")

logger = logging.getLogger(__name__)

_INT16_SCALE = 32767.0


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a :class:`ClipSet` and why."""

    path: str
    reason: str


@dataclass
class Clip:
    """One (cropped) example.

    Attributes:
        wave: float32 waveform, shape ``(samples,)``.
        label: Class index.
        gender: ``F``, ``M`` or ``unknown``.
        index: Position of the item in its :class:`ClipSet`.
    """

    wave: torch.Tensor
    label: int
    gender: str
    index: int


@dataclass
class Batch:
    """A padded batch of clips.

    Attributes:
        waves: Zero-padded float32 waveforms, shape ``(batch, max_samples)``.
        lengths: Valid sample count of each row, int64, shape ``(batch,)``.
        labels: Class indices, int64, shape ``(batch,)``.
        genders: Gender of each row.
        indices: Dataset index of each row, int64, shape ``(batch,)``.
    """

    waves: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    genders: list[str]
    indices: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """Returns a copy with every tensor on ``device``."""
        return batch_to(self, device)


def batch_to(batch: BatchT, device: torch.device | str) -> BatchT:
    """A copy of a batch dataclass (:class:`Batch`, ``FrameBatch``) with every tensor field on
    ``device`` (asynchronous where the source is pinned) and its list fields copied."""
    moved: dict[str, Any] = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, torch.Tensor):
            moved[f.name] = value.to(device, non_blocking=True)
        else:
            moved[f.name] = list(value)
    return type(batch)(**moved)


def _to_int16(wave: np.ndarray) -> np.ndarray:
    """Quantises [-1, 1] float audio to int16 (halves memory against float32)."""
    return np.clip(np.round(wave * _INT16_SCALE), -_INT16_SCALE, _INT16_SCALE).astype(np.int16)


class ClipSet(Dataset[Clip]):
    """Utterances decoded into memory once, cropped on access.

    Random crops are drawn from ``np.random.default_rng((seed, epoch, index))``, so item
    ``index`` gets the same crop in a given epoch whatever the worker count or sampling
    order. Call :meth:`set_epoch` before each epoch's DataLoader iterator is created (with
    ``persistent_workers`` the workers would keep a stale epoch).

    Attributes:
        utterances: The kept utterances, in dataset order.
        skipped: Files that could not be decoded.
        targets: Class index of each kept item.
        genders: Gender of each kept item.
        durations: Duration of each kept item in seconds (after resampling, before crop).
        max_samples: Crop window in samples.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        labels: Sequence[str],
        sample_rate: int,
        max_seconds: float,
        crop_mode: CropMode,
        seed: int = 0,
    ) -> None:
        """Decodes every utterance.

        Args:
            utterances: Items to load.
            labels: Class names; the position of a label is its class index.
            sample_rate: Target sample rate in Hz.
            max_seconds: Crop window length in seconds (unused for ``full``).
            crop_mode: ``random`` (training), ``center`` or ``full``.
            seed: Non-negative seed for random crops.

        Raises:
            ValueError: On bad arguments, an utterance whose label is not in ``labels``,
                or when no file could be decoded.
        """
        if crop_mode not in CROP_MODES:
            raise ValueError(f"unknown crop mode {crop_mode!r}; expected one of {CROP_MODES}")
        if sample_rate <= 0 or max_seconds <= 0:
            raise ValueError(
                f"need positive sample_rate and max_seconds, got {sample_rate}, {max_seconds}"
            )
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {list(labels)}")
        self.labels: tuple[str, ...] = tuple(labels)
        self.sample_rate = sample_rate
        self.max_samples = max(1, round(max_seconds * sample_rate))
        self.crop_mode: CropMode = crop_mode
        self.seed = seed
        self.epoch = 0
        self.utterances: list[Utterance] = []
        self.skipped: list[SkippedFile] = []
        self.targets: list[int] = []
        self.genders: list[str] = []
        self.durations: list[float] = []
        self._waves: list[np.ndarray] = []  # int16, (samples,)
        self._load(utterances)

    def _load(self, utterances: Sequence[Utterance]) -> None:
        """Decodes, quantises and stores every utterance; records failures."""
        index = {label: i for i, label in enumerate(self.labels)}
        for utt in utterances:
            if utt.label not in index:
                raise ValueError(f"{utt.path}: label {utt.label!r} is not one of {self.labels}")
            try:
                wave = load_audio(utt.path, self.sample_rate)
            except AudioError as exc:
                logger.warning("skipping %s", exc)
                self.skipped.append(SkippedFile(path=str(utt.path), reason=exc.reason))
                continue
            self.durations.append(wave.shape[0] / self.sample_rate)
            if self.crop_mode == "center":
                # The centre crop never changes, so only the window needs to stay in memory.
                wave = crop(wave, self.max_samples, "center")
            self._waves.append(_to_int16(wave))
            self.utterances.append(utt)
            self.targets.append(index[utt.label])
            self.genders.append(utt.gender)
        if not self._waves:
            raise ValueError(
                f"none of the {len(utterances)} file(s) could be decoded; "
                f"first failure: {self.skipped[0] if self.skipped else 'no utterances given'}"
            )
        if self.skipped:
            logger.warning("skipped %d of %d file(s)", len(self.skipped), len(utterances))

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose random crops :meth:`__getitem__` returns."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._waves)

    def num_samples(self, index: int) -> int:
        """Samples item ``index`` yields (after its crop; the same in every epoch)."""
        n = int(self._waves[index].shape[0])
        return n if self.crop_mode == "full" else min(n, self.max_samples)

    def lengths(self) -> list[int]:
        """Samples each item yields (for length bucketing)."""
        return [self.num_samples(i) for i in range(len(self._waves))]

    def __getitem__(self, index: int) -> Clip:
        if not 0 <= index < len(self._waves):
            raise IndexError(f"index {index} out of range for {len(self._waves)} clips")
        rng = (
            np.random.default_rng((self.seed, self.epoch, index))
            if self.crop_mode == "random"
            else None
        )
        wave = crop(self._waves[index], self.max_samples, self.crop_mode, rng)
        tensor = torch.from_numpy(wave.astype(np.float32) / _INT16_SCALE)  # (samples,)
        return Clip(wave=tensor, label=self.targets[index], gender=self.genders[index], index=index)


def collate(clips: list[Clip]) -> Batch:
    """Stacks clips into a zero-padded :class:`Batch`.

    Args:
        clips: At least one clip.

    Returns:
        The batch; ``waves`` is ``(batch, longest clip)``.
    """
    if not clips:
        raise ValueError("cannot collate an empty list of clips")
    lengths = torch.tensor([c.wave.shape[0] for c in clips], dtype=torch.int64)
    waves = torch.zeros(len(clips), int(lengths.max()), dtype=torch.float32)
    for row, clip in enumerate(clips):
        waves[row, : clip.wave.shape[0]] = clip.wave
    return Batch(
        waves=waves,
        lengths=lengths,
        labels=torch.tensor([c.label for c in clips], dtype=torch.int64),
        genders=[c.gender for c in clips],
        indices=torch.tensor([c.index for c in clips], dtype=torch.int64),
    )


def class_weights(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights for weighted cross-entropy.

    ``w_c = N / (C * n_c)`` with ``N`` examples, ``C = num_classes`` and ``n_c`` examples
    of class ``c``. When every class occurs, ``sum_c w_c * n_c = N``: the weighted loss has
    the same scale as the unweighted one, and each class contributes ``N / C``. A class
    with no examples gets weight 0 (it cannot contribute to the loss anyway).

    Args:
        targets: Class index of each training example.
        num_classes: ``C``.

    Returns:
        float32 weights, shape ``(num_classes,)``.

    Raises:
        ValueError: If ``targets`` is empty or holds an index outside ``[0, C)``.
    """
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    counts_in = np.asarray(targets, dtype=np.int64)
    if counts_in.size == 0:
        raise ValueError("cannot compute class weights from no targets")
    if counts_in.min() < 0 or counts_in.max() >= num_classes:
        raise ValueError(
            f"targets must lie in [0, {num_classes}), got {counts_in.min()}..{counts_in.max()}"
        )
    counts = np.bincount(counts_in, minlength=num_classes).astype(np.float64)
    weights = np.zeros(num_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = counts_in.size / (num_classes * counts[present])
    return torch.from_numpy(weights.astype(np.float32))
