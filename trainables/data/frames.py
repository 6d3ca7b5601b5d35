"""Frame-space data for methods that keep the front end frozen (every method but ``full``).

Crop policy. The front end (the CNN of wav2vec 2.0-style models, Whisper's log-mel) does not
commute with cropping: waveform normalisation, the CNN's per-utterance GroupNorm and Whisper's
per-clip log-mel clamp all look at the whole input, so the features of a crop differ from a crop
of the clip's features. To make the front end's output cacheable and still draw a fresh random
crop every epoch, frozen-front-end methods crop in frame space:

* train, ``crop="random"``: the front end runs once on the centre ``source_seconds`` of each
  clip (default 30 s, so usually the whole clip); each epoch takes a random window of
  ``frontend_frames(max_seconds)`` frames from it, drawn from ``(seed, epoch, index)`` like
  :class:`ClipSet`'s waveform crops.
* train, ``crop="center"`` or ``"first"`` (deterministic): exactly the waveform crop of
  :class:`ClipSet` (the centre or the first ``max_seconds``), front end on it, all frames kept,
  no random window: the same numbers as the waveform path.
* dev / test: exactly the waveform crop of :class:`ClipSet` (centre or first ``max_seconds``, or
  the full clip), front end on it, all frames kept: the same numbers as the waveform path,
  export and ``predict``. A clip longer than ``eval_max_seconds`` after its crop is split into
  the evaluation windows of :class:`ClipSet`; each window is a separate front-end input (and
  cache item) and :attr:`FrameSet.owners` maps the items to their utterances.

The waveform crop the front end sees (``center``, ``first`` or ``full``, and its length) is part
of the cache key, so an entry built for one crop is never read for another. Augmented training
clips never come this way (:mod:`trainables.data.augment`).

The features come either from the on-disk cache (:mod:`trainables.data.cache`; a split's entry
is described in :mod:`trainables.data.frame_cache`) or are computed on every access
(:class:`LiveSource`); both go through the same per-clip :class:`FrontendExtractor` call on the
same int16-quantised waveform, so a float32 cache gives identical tensors
(:mod:`trainables.data.feature_sources`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from trainables.backbones import Backbone
from trainables.data.cache import FeatureCache, FeatureTable, cache_key
from trainables.data.dataset import ClipSet, SkippedFile, batch_to
from trainables.data.feature_sources import (
    FeatureSource,
    FrontendExtractor,
    LiveSource,
    TableSource,
)
from trainables.data.frame_cache import entry_meta, entry_rows, key_parts
from trainables.data.manifest import Utterance

log = logging.getLogger(__name__)


@dataclass
class FrameClip:
    """One example in frame space: ``features`` is ``(frames, dim)`` float32."""

    features: torch.Tensor
    label: int
    gender: str
    index: int


@dataclass
class FrameBatch:
    """A zero-padded batch of frame features.

    Attributes:
        features: ``(batch, max_frames, dim)`` float32.
        frame_lengths: ``(batch,)`` int64 valid frames per row.
        labels: ``(batch,)`` int64 class indices.
        genders: gender of each row.
        indices: ``(batch,)`` int64 dataset index of each row.
    """

    features: torch.Tensor
    frame_lengths: torch.Tensor
    labels: torch.Tensor
    genders: list[str]
    indices: torch.Tensor

    def to(self, device: torch.device | str) -> FrameBatch:
        """Returns a copy with every tensor on ``device``."""
        return batch_to(self, device)


def collate_frames(clips: list[FrameClip]) -> FrameBatch:
    """Stacks frame clips into a zero-padded :class:`FrameBatch`."""
    if not clips:
        raise ValueError("cannot collate an empty list of clips")
    lengths = torch.tensor([c.features.shape[0] for c in clips], dtype=torch.int64)
    dim = clips[0].features.shape[1]
    feats = torch.zeros(len(clips), int(lengths.max()), dim, dtype=torch.float32)
    for row, clip in enumerate(clips):
        feats[row, : clip.features.shape[0]] = clip.features
    return FrameBatch(
        feats,
        lengths,
        torch.tensor([c.label for c in clips], dtype=torch.int64),
        [c.gender for c in clips],
        torch.tensor([c.index for c in clips], dtype=torch.int64),
    )


class FrameSet(Dataset[FrameClip]):
    """Frame features of a split with the train / eval crop policy of the module docstring.

    Args:
        source: per-item features.
        targets / genders: class index and gender of each utterance.
        window: frames per item in training (random window per epoch); None keeps all frames.
        seed: seeds the windows with ``(seed, epoch, index)``.
        skipped: files that could not be decoded.
        durations: seconds of each utterance's audio before any crop.
        owners: utterance position of each item (evaluation windows); None: one item per
            utterance.
        clipped: paths of files with samples beyond +-1 (clipped when quantised).
    """

    def __init__(
        self,
        source: FeatureSource,
        targets: list[int],
        genders: list[str],
        window: int | None,
        seed: int,
        skipped: list[SkippedFile],
        durations: list[float],
        owners: list[int] | None = None,
        clipped: list[str] | None = None,
    ) -> None:
        owners = list(range(len(targets))) if owners is None else list(owners)
        if len(targets) != len(genders) or len(owners) != len(source):
            raise ValueError("need one target and gender per utterance and one owner per item")
        if owners and (min(owners) < 0 or max(owners) >= len(targets)):
            raise ValueError(f"item owners must lie in [0, {len(targets)})")
        if window is not None and owners != list(range(len(targets))):
            raise ValueError("training windows need one item per utterance")
        self.source = source
        self.owners = owners
        self.clipped = list(clipped or [])
        self.targets = targets
        self.genders = genders
        self.window = window
        self.seed = seed
        self.skipped = skipped
        self.durations = durations
        self.epoch = 0
        self._frames = [source.num_frames(i) for i in range(len(source))]

    @property
    def windowed(self) -> int:
        """Utterances split into more than one evaluation window."""
        return sum(n > 1 for n in Counter(self.owners).values())

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose random windows :meth:`__getitem__` returns."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._frames)

    def lengths(self) -> list[int]:
        """Frames each item yields after windowing (fixed across epochs; for bucketing)."""
        w = self.window
        return [f if w is None else min(f, w) for f in self._frames]

    def __getitem__(self, index: int) -> FrameClip:
        frames, start, stop = self._frames[index], 0, None
        if self.window is not None and frames > self.window:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            start = int(rng.integers(0, frames - self.window + 1))
            stop = start + self.window
        feats = self.source.features(index, start, stop)
        owner = self.owners[index]
        return FrameClip(feats, self.targets[owner], self.genders[owner], owner)


@dataclass(frozen=True)
class FrameCrop:
    """The crop policy of one split.

    Attributes:
        source: waveform crop the front end sees, ``center`` (centre ``source_seconds``),
            ``first`` (first ``source_seconds``) or ``full``.
        source_seconds: length of the centre crop.
        window_seconds: training window, converted to frames; None keeps all frames.
        eval_max_seconds: dev / test: split longer clips into evaluation windows of this
            length (see :class:`ClipSet`); None keeps clips whole.
    """

    source: Literal["center", "first", "full"]
    source_seconds: float
    window_seconds: float | None = None
    eval_max_seconds: float | None = None


def _labelled(utts: Sequence[Utterance], labels: Sequence[str]) -> dict[str, int]:
    index = {label: i for i, label in enumerate(labels)}
    for utt in utts:
        if utt.label not in index:
            raise ValueError(f"{utt.path}: label {utt.label!r} is not one of {tuple(labels)}")
    return index


def _seconds(crop: FrameCrop, backbone: Backbone) -> tuple[float, float | None]:
    """The crop's source and evaluation-window seconds, capped where the backbone encodes at
    most a fixed length (Whisper: 30 s), so a long clip is windowed rather than refused."""
    source, windows = crop.source_seconds, crop.eval_max_seconds
    max_samples = getattr(backbone, "max_samples", None)
    if max_samples is not None:
        cap = max_samples / backbone.sample_rate
        source = min(source, cap)
        windows = None if windows is None else min(windows, cap)
    return source, windows


def _window_frames(crop: FrameCrop, extract: FrontendExtractor) -> int | None:
    """The training window of ``crop`` in frames; None keeps every frame."""
    if crop.window_seconds is None:
        return None
    return extract.frames(max(1, round(crop.window_seconds * extract.backbone.sample_rate)))


def _cached_table(
    cache: FeatureCache,
    parts: dict[str, object],
    utts: Sequence[Utterance],
    decode: Callable[[], ClipSet],
    extract: FrontendExtractor,
    cache_dtype: str,
) -> FeatureTable:
    """The cache entry of ``parts``; decodes the audio and runs the front end only to build it."""
    decoded: list[ClipSet] = []

    def items() -> Iterator[torch.Tensor]:  # runs under the cache lock, only if we build
        decoded.append(decode())
        for i in range(len(decoded[0])):
            yield extract(decoded[0][i].wave)

    def meta() -> dict[str, object]:
        return entry_meta(utts, decoded[0], {k: v for k, v in parts.items() if k != "audio"})

    table = cache.get_or_build(cache_key(parts), items(), meta, cache_dtype)
    if not decoded:  # nothing was decoded: another trial, node or run built the entry
        log.info("feature cache hit %s (%d items)", table.folder, len(table))
    return table


def load_frame_set(
    utts: Sequence[Utterance],
    labels: Sequence[str],
    extract: FrontendExtractor,
    crop: FrameCrop,
    seed: int,
    cache: FeatureCache | None,
    cache_dtype: str = "float32",
) -> FrameSet:
    """Builds a split's :class:`FrameSet`, from the cache when it has the entry.

    On a cache hit no audio is decoded at all. On a miss the audio is decoded (bad files are
    skipped as in :class:`ClipSet`), the front end runs once per item (a clip, or one
    evaluation window of it) and the entry is written. Without a cache the features are
    computed on every access.
    """
    index = _labelled(utts, labels)
    seconds = _seconds(crop, extract.backbone)
    window = _window_frames(crop, extract)

    def decode() -> ClipSet:
        return ClipSet(
            utts, labels, extract.backbone.sample_rate, seconds[0], crop.source, seed=seed,
            eval_max_seconds=seconds[1],
        )  # fmt: skip

    if cache is None:
        clips = decode()
        return FrameSet(
            LiveSource(clips, extract), clips.targets, clips.genders, window, seed,
            clips.skipped, clips.durations, clips.owners, clips.clipped,
        )  # fmt: skip
    parts = key_parts(utts, extract, crop.source, seconds, cache_dtype, cache.root)
    table = _cached_table(cache, parts, utts, decode, extract, cache_dtype)
    return _from_table(table, utts, index, window, seed)


def _from_table(
    table: FeatureTable,
    utts: Sequence[Utterance],
    index: dict[str, int],
    window: int | None,
    seed: int,
) -> FrameSet:
    """The :class:`FrameSet` of a cache entry, its rows mapped back onto ``utts``."""
    rows = entry_rows(table, utts)
    if rows.skipped:
        log.warning("skipped %d of %d file(s)", len(rows.skipped), len(utts))
    return FrameSet(
        TableSource(table), [index[u.label] for u in rows.kept], [u.gender for u in rows.kept],
        window, seed, rows.skipped, rows.durations, rows.owners, rows.clipped,
    )  # fmt: skip
