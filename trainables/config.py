"""The typed configuration of one run; it crosses the CLI, Ray's config dict and result files."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

from trainables.data.augment import normalise_augment
from trainables.methods import METHODS, build_method
from trainables.model import HeadConfig

# Fields that change how fast a run goes, never its numbers (float16 caches excepted, which is
# why ``feature_cache_dtype`` is not listed).
SPEED_ONLY_FIELDS: tuple[str, ...] = (
    "feature_cache",
    "feature_cache_dir",
    "feature_cache_mirror",
    "num_workers",
    "allow_pickle_weights",
)


# Longest crop or evaluation window a run may ask for; exported adapters are held to the same
# bound when they are loaded (``trainables.export``).
MAX_CROP_SECONDS = 3600.0
CROPS = ("random", "center", "first")  # the training split's crop (``crop``)
EVAL_CROPS = ("center", "full", "first")  # dev / test (``eval_crop``)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one fine-tune run.

    Attributes:
        manifest: the dataset manifest (Parquet).
        backbone: preset name, local folder or hub id.
        method: registered method name; ``method_options`` are its options.
        fold / dev_fold: for fold manifests, the test fold and the dev fold (default: next fold).
        epochs, batch_size, lr, weight_decay: training (see ``optimizer``).
        optimizer: ``adamw`` (torch AdamW: weight decay decoupled from the gradient,
            ``p <- p - lr * wd * p`` beside the Adam step) or ``adam`` (torch Adam: weight decay
            is an L2 term added to the gradient, ``g <- g + wd * p``, before the moments, as
            PEFT-SER trains with betas (0.9, 0.98) and 1e-4).
        adam_beta1, adam_beta2: the moments' decay rates of either optimizer, in [0, 1).
        warmup_ratio: fraction of steps with linear warm-up before the schedule.
        schedule: ``cosine`` decay to 0 after warm-up, or ``plateau`` (ReduceLROnPlateau,
            stepped once per epoch on ``plateau_metric``).
        plateau_metric: ``uar`` (dev UAR, higher is better) or ``loss`` (the dev split's
            class-weighted cross-entropy with the training weights, lower is better).
        plateau_patience: epochs without improvement tolerated before the LR is cut (0: cut
            after the first epoch that does not improve).
        plateau_factor: the LR is multiplied by this, in (0, 1), at each cut.
        min_lr: the plateau schedule never cuts the LR below this (an ``lr`` already below it
            is left as it is).
        grad_clip: max gradient norm (0 disables clipping).
        bf16: bfloat16 autocast for the forward pass.
        seed: seeds initialisation, shuffling and crops (same seed and
            thread count -> same result on CPU).
        patience: stop after this many epochs without a better dev UAR (0: never stop early).
        max_seconds: crop length; train uses ``crop``, dev/test ``eval_crop``.
        crop: the training split's crop of ``max_seconds``: ``random`` (a fresh random crop each
            epoch), ``center`` (the centre) or ``first`` (the first ``max_seconds``, as
            PEFT-SER); frozen-front-end methods cache ``center`` / ``first`` as exact waveform
            crops (see :mod:`trainables.data.frames`).
        eval_crop: ``center`` (centre crop to ``max_seconds``), ``first`` (the first
            ``max_seconds``) or ``full`` (whole clip).
        augment: training augmentation, a comma list from ``noise``, ``timemask`` (stored
            sorted; ``""``: off), applied to each training clip after its crop, never to dev /
            test (see :mod:`trainables.data.augment`). With it, a frozen-front-end method loads
            its training split as waveforms and runs the frozen front end on every step (the
            augmented clips are never cached; dev / test still use the cache), so such runs are
            slower; result.json's warnings say so.
        augment_p: probability that each listed augmentation is applied to a training clip.
        noise_snr_min, noise_snr_max: ``noise``: SNR in dB of the Gaussian noise, drawn
            uniformly in this range relative to the clip's RMS.
        timemask_min, timemask_max: ``timemask``: fraction of the clip zeroed (one span),
            drawn uniformly in this range.
        eval_max_seconds: longest stretch of audio the model sees at once in evaluation. A
            dev/test clip longer than this (after its crop) is evaluated as overlapping windows
            of this length that cover it, and its logits are the mean of the windows' logits
            (attention memory grows with the square of the length: 2 min of audio took 18 GB).
        head: head options.
        device: torch device string.
        feature_cache: for methods that keep the front end frozen (all but ``full``), compute its
            output once per (backbone, split, crop policy) and memory-map it from
            ``feature_cache_dir`` (shared by epochs, trials and nodes). Off: the front end runs
            on every step. Both give the same results (frame-space crops either way; see
            :mod:`trainables.data.frames`). Ignored for ``full``.
        feature_cache_dir: cache root; None: ``$EMOTUNE_FEATURE_CACHE`` or
            ``~/.cache/emotune/features``. A search on a storage folder passes
            ``<storage>/feature-cache``, so every search and node on that folder shares it.
        feature_cache_mirror: URI (``s3://``, ``gs://``, ``file://``) of a shared copy of the
            cache: a node missing an entry downloads it from there instead of building it, and
            uploads the entries it builds. A search on URI storage passes
            ``<storage>/feature-cache``.
        feature_cache_dtype: ``float32`` (identical results) or ``float16`` (half the disk and
            page cache; logits differ by ~1e-3, see BENCHMARKS.md).
        frontend_max_seconds: frozen-front-end methods run the front end on at most this much of
            each training clip (its centre; never less than ``max_seconds``) and crop
            ``max_seconds`` windows in frame space.
        bucketing: length-bucketed batches (less padding); off: plain shuffled batches.
        num_workers: DataLoader worker processes; None sizes them to the trial's CPU threads
            (0 up to 4 threads: batches are slices of memory-mapped features or int16 clips).
        allow_pickle_weights: let a backbone folder or hub id load pickle weights
            (``pytorch_model.bin``) when it has no safetensors. Unpickling runs code from the
            file: only for weights you trust. Off: such a backbone is refused.
        fast_kernels: fused AdamW, bulk-random dropout masks and, with ``bf16``, a bf16 copy of
            the frozen transformer (see :mod:`trainables.backbones.speed`).
    """

    manifest: Path
    backbone: str = "tiny-wavlm"
    method: str = "lora"
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    fold: int | None = None
    dev_fold: int | None = None
    epochs: int = 10
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.01
    optimizer: Literal["adamw", "adam"] = "adamw"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    warmup_ratio: float = 0.1
    schedule: Literal["cosine", "plateau"] = "cosine"
    plateau_metric: Literal["uar", "loss"] = "uar"
    plateau_patience: int = 1
    plateau_factor: float = 0.5
    min_lr: float = 0.0
    grad_clip: float = 1.0
    bf16: bool = False
    seed: int = 0
    patience: int = 0
    max_seconds: float = 6.0
    crop: Literal["random", "center", "first"] = "random"
    eval_crop: Literal["center", "full", "first"] = "center"
    augment: str = ""
    augment_p: float = 1.0
    noise_snr_min: float = 10.0
    noise_snr_max: float = 30.0
    timemask_min: float = 0.1
    timemask_max: float = 0.15
    eval_max_seconds: float = 60.0
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    device: str = "cpu"
    feature_cache: bool = True
    feature_cache_dir: Path | None = None
    feature_cache_dtype: Literal["float32", "float16"] = "float32"
    feature_cache_mirror: str | None = None
    frontend_max_seconds: float = 30.0
    bucketing: bool = True
    num_workers: int | None = None
    fast_kernels: bool = True
    allow_pickle_weights: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest", Path(self.manifest).expanduser().resolve())
        if self.feature_cache_dir is not None:
            cache_dir = Path(self.feature_cache_dir).expanduser().resolve()
            object.__setattr__(self, "feature_cache_dir", cache_dir)
        if isinstance(self.head, dict):
            object.__setattr__(self, "head", _from_dict(HeadConfig, self.head, "head"))
        self._normalise_augment()
        bad_floats = [
            f.name
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))
        ]
        if bad_floats:
            values = ", ".join(f"{n}={getattr(self, n)}" for n in bad_floats)
            raise ValueError(f"train config: {values}: must be a finite number")
        checks = [
            (
                self.method in METHODS,
                f"method must be one of {METHODS.names()}, got {self.method!r}",
            ),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (
                0 <= self.warmup_ratio < 1,
                f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}",
            ),
            (self.schedule in ("cosine", "plateau"), "schedule must be cosine or plateau"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (
                0 < self.max_seconds <= MAX_CROP_SECONDS,
                f"max_seconds must be in (0, {MAX_CROP_SECONDS}], got {self.max_seconds}",
            ),
            *self._data_checks(),
            (
                0 < self.eval_max_seconds <= MAX_CROP_SECONDS,
                f"eval_max_seconds must be in (0, {MAX_CROP_SECONDS}], got {self.eval_max_seconds}",
            ),
            (
                self.feature_cache_dtype in ("float32", "float16"),
                "feature_cache_dtype must be float32 or float16",
            ),
            (
                self.frontend_max_seconds > 0,
                f"frontend_max_seconds must be > 0, got {self.frontend_max_seconds}",
            ),
            (
                self.num_workers is None or self.num_workers >= 0,
                f"num_workers must be >= 0 or None, got {self.num_workers}",
            ),
            *self._optimiser_checks(),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"train config: {message}")
        build_method(self.method, self.method_options)  # validates the options early

    def _optimiser_checks(self) -> list[tuple[bool, str]]:
        """``(ok, message)`` of the optimizer and plateau-schedule fields."""
        return [
            (
                self.optimizer in ("adamw", "adam"),
                f"optimizer must be adamw or adam, got {self.optimizer!r}",
            ),
            (
                0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1,
                f"adam_beta1 and adam_beta2 must be in [0, 1), got {self.adam_beta1} and "
                f"{self.adam_beta2}",
            ),
            (
                self.plateau_metric in ("uar", "loss"),
                f"plateau_metric must be uar or loss, got {self.plateau_metric!r}",
            ),
            (
                _is_int(self.plateau_patience) and self.plateau_patience >= 0,
                f"plateau_patience must be an integer >= 0, got {self.plateau_patience!r}",
            ),
            (
                0 < self.plateau_factor < 1,
                f"plateau_factor must be in (0, 1), got {self.plateau_factor}",
            ),
            (self.min_lr >= 0, f"min_lr must be >= 0, got {self.min_lr}"),
        ]

    def _normalise_augment(self) -> None:
        """Stores ``augment`` in its normal form (sorted names, no spaces; ``""`` when off)."""
        try:
            object.__setattr__(self, "augment", normalise_augment(self.augment))
        except ValueError as exc:
            raise ValueError(f"train config: {exc}") from None

    def _data_checks(self) -> list[tuple[bool, str]]:
        """``(ok, message)`` of the crop and augmentation fields."""
        return [
            (self.crop in CROPS, f"crop must be one of {CROPS}, got {self.crop!r}"),
            (
                self.eval_crop in EVAL_CROPS,
                f"eval_crop must be one of {EVAL_CROPS}, got {self.eval_crop!r}",
            ),
            (0 <= self.augment_p <= 1, f"augment_p must be in [0, 1], got {self.augment_p}"),
            (
                self.noise_snr_min <= self.noise_snr_max,
                f"noise_snr_min must be <= noise_snr_max, got {self.noise_snr_min} > "
                f"{self.noise_snr_max}",
            ),
            (
                0 <= self.timemask_min <= self.timemask_max < 1,
                "timemask_min and timemask_max must satisfy 0 <= timemask_min <= timemask_max "
                f"< 1, got {self.timemask_min} and {self.timemask_max}",
            ),
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (paths as strings)."""
        d = dataclasses.asdict(self)
        d["manifest"] = str(self.manifest)
        if self.feature_cache_dir is not None:
            d["feature_cache_dir"] = str(self.feature_cache_dir)
        return d

    def result_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields that change speed but never results (a run may
        resume with them changed)."""
        d = self.to_dict()
        for name in SPEED_ONLY_FIELDS:
            d.pop(name, None)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Builds a config from a plain dict; unknown keys are an error."""
        return _from_dict(cls, data, "train config")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(names)}")
    return cls(**data)
