"""A run's train / dev / test data and loaders: waveform clips or frozen front-end frames.

Methods that train the front end (``full``) get :class:`ClipSet` waveforms with waveform crops.
Every other method gets :class:`FrameSet` frame features (crop policy in
:mod:`trainables.data.frames`), memory-mapped from the feature cache when it is on; with
training augmentation its training split alone is a :class:`ClipSet` of augmented waveforms
(:mod:`trainables.data.augment`), and each loader collates its split by its kind.

Both paths read the same audio: training clips with ``crop="random"`` are read over their centre
``max(frontend_max_seconds, max_seconds)`` (random crops are drawn inside it), with ``center`` /
``first`` over their centre / first ``max_seconds``; dev / test clips over their ``eval_crop``
(centre or first ``max_seconds``, or whole), split into evaluation windows of
``eval_max_seconds`` when longer (predictions average each utterance's windows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from trainables.backbones import Backbone
from trainables.config import TrainConfig
from trainables.data.augment import Augmenter
from trainables.data.bucketing import BucketBatchSampler
from trainables.data.cache import FeatureCache, default_cache_dir
from trainables.data.checks import decode_warnings, require_train_classes
from trainables.data.dataset import ClipSet, collate
from trainables.data.frames import (
    FrameCrop,
    FrameSet,
    FrontendExtractor,
    LiveSource,
    collate_frames,
    load_frame_set,
)
from trainables.data.manifest import Partition, partition

log = logging.getLogger(__name__)

DataSet = ClipSet | FrameSet


@dataclass
class Splits:
    """A run's three splits.

    Attributes:
        train_bypassed_cache: the training split of a frozen-front-end method was loaded as
            augmented waveforms instead of from the (enabled) feature cache.

    Raises:
        ValueError: (on construction) if a class has no decodable training file left.
    """

    train: DataSet
    dev: DataSet
    test: DataSet
    labels: list[str]
    train_bypassed_cache: bool = False

    def __post_init__(self) -> None:
        require_train_classes(self.train, self.labels)

    @property
    def windowed(self) -> dict[str, int]:
        """Per split, the clips evaluated as several windows (longer than eval_max_seconds)."""
        return {name: getattr(self, name).windowed for name in ("train", "dev", "test")}

    @property
    def warnings(self) -> list[str]:
        """Decode-level problems (clipped audio, dev / test classes lost to skipped files)."""
        sets = {name: getattr(self, name) for name in ("train", "dev", "test")}
        return decode_warnings(sets, self.labels)

    @property
    def skipped(self) -> list[dict[str, str]]:
        return [
            {"path": s.path, "reason": s.reason}
            for d in (self.train, self.dev, self.test)
            for s in d.skipped
        ]

    @property
    def frames(self) -> bool:
        """True when the training split is frame features (frozen front end, no augmentation),
        False for waveforms (dev / test may still be frames: see :func:`make_loaders`)."""
        return isinstance(self.train, FrameSet)


def load_splits(
    cfg: TrainConfig,
    sample_rate: int,
    part: Partition | None = None,
    max_input_seconds: float | None = None,
) -> Splits:
    """Waveform splits: decodes the audio of the partition once (bad files are skipped).

    Training clips are read as :func:`train_clips` says (for ``crop="random"`` over their centre
    ``max(frontend_max_seconds, max_seconds)``, like the frame path's), so both paths crop from
    the same audio. ``max_input_seconds`` is the
    longest input the backbone accepts (Whisper: 30 s): evaluation windows never exceed it.
    """
    part = part or partition(cfg.manifest, fold=cfg.fold, dev_fold=cfg.dev_fold)
    labels = list(part.labels)
    window = min(cfg.eval_max_seconds, max_input_seconds or cfg.eval_max_seconds)

    def make(utts: tuple) -> ClipSet:
        return ClipSet(
            utts, labels, sample_rate, cfg.max_seconds, cfg.eval_crop, seed=cfg.seed,
            eval_max_seconds=window,
        )  # fmt: skip

    train = train_clips(cfg, part.train, labels, sample_rate)
    return Splits(train, make(part.dev), make(part.test), labels)


def train_clips(cfg: TrainConfig, utts: tuple, labels: list[str], sample_rate: int) -> ClipSet:
    """The training split as waveforms: ``cfg.crop`` of ``max_seconds``, augmented when
    ``cfg.augment`` is set; one item per utterance (no evaluation windows)."""
    return ClipSet(
        utts, labels, sample_rate, cfg.max_seconds, cfg.crop, seed=cfg.seed,
        source_seconds=cfg.frontend_max_seconds, augment=Augmenter.from_config(cfg),
    )  # fmt: skip


def feature_cache(cfg: TrainConfig) -> FeatureCache | None:
    """The run's feature cache, or None when ``cfg.feature_cache`` is off."""
    if not cfg.feature_cache:
        return None
    return FeatureCache(cfg.feature_cache_dir or default_cache_dir(), cfg.feature_cache_mirror)


def load_frame_splits(
    cfg: TrainConfig, backbone: Backbone, part: Partition | None = None
) -> Splits:
    """Frame-feature splits of a frozen front end, cached or computed live (same numbers).

    With ``cfg.augment`` the training split is augmented waveforms instead (the front end runs
    on every step; nothing of it is cached), dev / test stay frame features.
    """
    part = part or partition(cfg.manifest, fold=cfg.fold, dev_fold=cfg.dev_fold)
    labels = list(part.labels)
    extract = FrontendExtractor(backbone, cfg.device)
    cache = feature_cache(cfg)
    if cache is not None and backbone.frontend_settings().get("dither", 0.0):
        log.warning("front end adds random dither; its output is not cached")
        cache = None
    if cfg.crop == "random":  # random windows in frame space over the centre source
        source = max(cfg.frontend_max_seconds, cfg.max_seconds)
        train_crop = FrameCrop("center", source, cfg.max_seconds)
    else:  # exactly the waveform crop, all frames
        train_crop = FrameCrop(cfg.crop, cfg.max_seconds)
    eval_crop = FrameCrop(cfg.eval_crop, cfg.max_seconds, eval_max_seconds=cfg.eval_max_seconds)

    def make(utts: tuple, crop: FrameCrop) -> FrameSet:
        return load_frame_set(utts, labels, extract, crop, cfg.seed, cache, cfg.feature_cache_dtype)

    if cfg.augment:
        train: DataSet = train_clips(cfg, part.train, labels, backbone.sample_rate)
    else:
        train = make(part.train, train_crop)
    dev, test = make(part.dev, eval_crop), make(part.test, eval_crop)
    bypassed = bool(cfg.augment) and cache is not None
    return Splits(train, dev, test, labels, train_bypassed_cache=bypassed)


def loader_workers(cfg: TrainConfig, data: DataSet) -> int:
    """Worker processes for a split's loader.

    Items are slices of memory-mapped features or of int16 clips in memory (tens of
    microseconds), so up to 4 CPU threads the main process prepares batches faster than worker
    processes would hand them over, and workers would compete with the step for the cores.
    Larger trials (a GPU node) get ``threads // 4`` workers, at most 4. Live front-end features
    always load in the main process (the model is there).
    """
    if isinstance(data, FrameSet) and isinstance(data.source, LiveSource):
        return 0
    if cfg.num_workers is not None:
        return cfg.num_workers
    threads = torch.get_num_threads()
    return 0 if threads <= 4 else min(4, threads // 4)


def make_loaders(cfg: TrainConfig, splits: Splits) -> dict[str, DataLoader]:
    """Train / dev / test loaders: length-bucketed when ``cfg.bucketing``; each split is
    collated by its kind (frame features or waveforms)."""
    out: dict[str, DataLoader] = {}
    for name in ("train", "dev", "test"):
        data = getattr(splits, name)
        collate_fn = collate_frames if isinstance(data, FrameSet) else collate
        workers = loader_workers(cfg, data)
        common = dict(collate_fn=collate_fn, num_workers=workers, pin_memory=False)
        if cfg.bucketing:
            sampler = BucketBatchSampler(
                data.lengths(), cfg.batch_size, shuffle=name == "train", seed=cfg.seed
            )
            out[name] = DataLoader(data, batch_sampler=sampler, **common)
        elif name == "train":
            gen = torch.Generator().manual_seed(cfg.seed)
            out[name] = DataLoader(
                data, batch_size=cfg.batch_size, shuffle=True, generator=gen, **common
            )
        else:
            out[name] = DataLoader(data, batch_size=cfg.batch_size, **common)
    return out


def set_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Makes the crops and order of ``epoch`` depend only on ``(seed, epoch)`` (exact resume)."""
    loader.dataset.set_epoch(epoch)
    if isinstance(loader.batch_sampler, BucketBatchSampler):
        loader.batch_sampler.set_epoch(epoch)
    elif loader.generator is not None:
        loader.generator.manual_seed(seed * 100_003 + epoch)
