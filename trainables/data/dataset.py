"""In-memory clip dataset, padding collate and class weights.

Every file is decoded once when the dataset is built, so a broken file is reported (and
skipped) before training starts instead of crashing a worker in epoch 7.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from trainables.data.audio import (
    CROP_MODES,
    AudioError,
    CropMode,
    crop,
    load_window,
    window_starts,
)
from trainables.data.augment import Augmenter
from trainables.data.manifest import Utterance

BatchT = TypeVar("BatchT")

logger = logging.getLogger(__name__)

_INT16_SCALE = 32767.0
TRAIN_SOURCE_SECONDS = 30.0  # centre read for random crops (TrainConfig.frontend_max_seconds)


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a :class:`ClipSet` and why (``label``: its class, for the checks of
    :mod:`trainables.data.checks`)."""

    path: str
    reason: str
    label: str = ""


@dataclass
class Clip:
    """One (cropped) example.

    Attributes:
        wave: float32 waveform, shape ``(samples,)``.
        label: Class index.
        gender: ``F``, ``M`` or ``unknown``.
        index: Position of the item's utterance in its :class:`ClipSet` (several evaluation
            windows of one utterance share it).
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
        indices: Utterance position of each row in its dataset, int64, shape ``(batch,)``.
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


def _quantise(wave: np.ndarray) -> tuple[np.ndarray, bool]:
    """Quantises [-1, 1] float audio to int16 (halves memory against float32).

    Returns:
        The int16 samples and whether any sample lay beyond +-1 and was clipped (float files
        may hold such samples; the run reports them instead of clipping silently).
    """
    scaled = np.round(wave * _INT16_SCALE)
    clipped = bool(scaled.size) and float(np.abs(scaled).max()) > _INT16_SCALE
    return np.clip(scaled, -_INT16_SCALE, _INT16_SCALE).astype(np.int16), clipped


def _check_clip_arguments(
    labels: Sequence[str],
    sample_rate: int,
    max_seconds: float,
    crop_mode: str,
    seed: int,
    source_seconds: float,
    eval_max_seconds: float | None,
    augment: Augmenter | None = None,
) -> None:
    """Raises ValueError on :class:`ClipSet` arguments it cannot honour (see its ``__init__``)."""
    if crop_mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {crop_mode!r}; expected one of {CROP_MODES}")
    eval_seconds = 1.0 if eval_max_seconds is None else eval_max_seconds
    if min(sample_rate, max_seconds, source_seconds, eval_seconds) <= 0:
        raise ValueError(
            "need positive sample_rate, max_seconds, source_seconds and eval_max_seconds, "
            f"got {sample_rate}, {max_seconds}, {source_seconds}, {eval_max_seconds}"
        )
    if eval_max_seconds is not None and crop_mode == "random":
        raise ValueError(
            "evaluation windows (eval_max_seconds) need crop mode first, center or full"
        )
    if eval_max_seconds is not None and augment is not None:
        raise ValueError("augmentation is for training clips, never evaluation windows")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {list(labels)}")


def _read_samples(
    crop_mode: str, max_seconds: float, source_seconds: float, sample_rate: int
) -> int | None:
    """Samples decoded from each file (its centre, or its start for ``first``) for a crop
    mode; None reads files whole."""
    if crop_mode == "full":
        return None
    seconds = max(source_seconds, max_seconds) if crop_mode == "random" else max_seconds
    return max(1, round(seconds * sample_rate))


class ClipSet(Dataset[Clip]):
    """Utterances decoded into memory once, cropped on access.

    What is read of each file: ``center`` its centre ``max_seconds``; ``first`` its first
    ``max_seconds`` (PEFT-SER's crop); ``random`` (training) its
    centre ``max(source_seconds, max_seconds)``, inside which the random crops are drawn, like
    the frame windows of the frozen-front-end path (:mod:`trainables.data.frames`), so a long
    clip costs its window, not its length; ``full`` the whole file, at most
    :data:`MAX_AUDIO_SECONDS` long (longer files are skipped).

    Random crops are drawn from ``np.random.default_rng((seed, epoch, index))``, so item
    ``index`` gets the same crop in a given epoch whatever the worker count or sampling
    order. Call :meth:`set_epoch` before each epoch's DataLoader iterator is created (with
    ``persistent_workers`` the workers would keep a stale epoch).

    With ``eval_max_seconds`` (evaluation only), a clip longer than that after its crop is
    split into the windows of :func:`window_starts`; every window is an item whose ``index`` is
    its utterance's position, so a prediction can average the windows of each utterance.

    With an ``augment`` (training only), each item is augmented after its crop with draws from
    ``(seed, epoch, index)`` (see :mod:`trainables.data.augment`).

    Attributes:
        utterances: The kept utterances, in dataset order.
        skipped: Files that could not be decoded.
        targets: Class index of each kept utterance.
        genders: Gender of each kept utterance.
        durations: Duration of each kept utterance in seconds (the whole clip, before crop).
        clipped: Paths of files with samples beyond +-1 (clipped to +-1 when quantised).
        windowed: Utterances split into more than one evaluation window.
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
        source_seconds: float = TRAIN_SOURCE_SECONDS,
        eval_max_seconds: float | None = None,
        augment: Augmenter | None = None,
    ) -> None:
        """Decodes every utterance.

        Args:
            utterances: Items to load.
            labels: Class names; the position of a label is its class index.
            sample_rate: Target sample rate in Hz.
            max_seconds: Crop window length in seconds (unused for ``full``).
            crop_mode: ``random`` (training), ``center``, ``first`` or ``full``.
            seed: Non-negative seed for random crops.
            source_seconds: ``random`` only: the centre stretch read for the random crops
                (never less than ``max_seconds``).
            eval_max_seconds: not for ``random``: split longer clips into windows of
                this length; None keeps every clip whole.
            augment: training only: augments every item after its crop; None: no augmentation.

        Raises:
            ValueError: On bad arguments, an utterance whose label is not in ``labels``,
                or when no file could be decoded.
        """
        _check_clip_arguments(
            labels, sample_rate, max_seconds, crop_mode, seed, source_seconds, eval_max_seconds,
            augment,
        )  # fmt: skip
        self.labels: tuple[str, ...] = tuple(labels)
        self.sample_rate = sample_rate
        self.max_samples = max(1, round(max_seconds * sample_rate))
        self.crop_mode: CropMode = crop_mode
        self.seed = seed
        self.augment = augment
        self.epoch = 0
        self.utterances: list[Utterance] = []
        self.skipped: list[SkippedFile] = []
        self.targets: list[int] = []
        self.genders: list[str] = []
        self.durations: list[float] = []
        self.clipped: list[str] = []
        self._waves: list[np.ndarray] = []  # int16, (samples,), one per utterance
        self._items: list[tuple[int, int, int]] = []  # (utterance, start, stop) per item
        read = _read_samples(crop_mode, max_seconds, source_seconds, sample_rate)
        eval_window = None if eval_max_seconds is None else round(eval_max_seconds * sample_rate)
        self._load(utterances, read, None if eval_window is None else max(1, eval_window))

    def _load(
        self, utterances: Sequence[Utterance], read: int | None, eval_window: int | None
    ) -> None:
        """Decodes, quantises and stores every utterance; records failures."""
        index = {label: i for i, label in enumerate(self.labels)}
        for utt in utterances:
            if utt.label not in index:
                raise ValueError(f"{utt.path}: label {utt.label!r} is not one of {self.labels}")
            try:
                wave, length = load_window(
                    utt.path, self.sample_rate, read, first=self.crop_mode == "first"
                )
            except AudioError as exc:
                logger.warning("skipping %s", exc)
                self.skipped.append(SkippedFile(str(utt.path), exc.reason, utt.label))
                continue
            position = len(self._waves)
            self.durations.append(length / self.sample_rate)
            pcm, clipped = _quantise(wave)
            if clipped:
                self.clipped.append(str(utt.path))
            self._waves.append(pcm)
            n = pcm.shape[0]
            if eval_window is None:
                self._items.append((position, 0, n))
            else:
                size = min(n, eval_window)
                self._items += [(position, s, s + size) for s in window_starts(n, size)]
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

    @property
    def owners(self) -> list[int]:
        """Utterance position of each item (items are evaluation windows of utterances)."""
        return [u for u, _, _ in self._items]

    @property
    def windowed(self) -> int:
        """Utterances split into more than one evaluation window."""
        return sum(n > 1 for n in Counter(u for u, _, _ in self._items).values())

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose random crops :meth:`__getitem__` returns."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._items)

    def num_samples(self, index: int) -> int:
        """Samples item ``index`` yields (after its crop; the same in every epoch)."""
        _, start, stop = self._items[index]
        n = stop - start
        return min(n, self.max_samples) if self.crop_mode == "random" else n

    def lengths(self) -> list[int]:
        """Samples each item yields (for length bucketing)."""
        return [self.num_samples(i) for i in range(len(self._items))]

    def __getitem__(self, index: int) -> Clip:
        if not 0 <= index < len(self._items):
            raise IndexError(f"index {index} out of range for {len(self._items)} clips")
        owner, start, stop = self._items[index]
        if self.crop_mode == "random":  # one item per utterance: index == owner
            rng = np.random.default_rng((self.seed, self.epoch, index))
            wave = crop(self._waves[owner], self.max_samples, "random", rng)
        else:  # already cut to the centre / first crop when decoded
            wave = self._waves[owner][start:stop]
        samples = wave.astype(np.float32) / _INT16_SCALE  # (samples,)
        if self.augment is not None:  # one item per utterance: index == owner
            samples = self.augment(samples, self.seed, self.epoch, index)
        tensor = torch.from_numpy(samples)
        return Clip(wave=tensor, label=self.targets[owner], gender=self.genders[owner], index=owner)


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
