"""Training-time waveform augmentation: Gaussian noise at a drawn SNR, then one time mask.

Off by default (``TrainConfig.augment == ""``). When on, each training clip, after its crop
(``TrainConfig.crop``), gets in this order (as PEFT-SER does):

* ``noise``: with probability ``p``, white Gaussian noise at an SNR drawn uniformly in
  ``[snr_min, snr_max]`` dB relative to the clip's RMS: ``std = rms / 10 ** (snr / 20)``, so
  ``20 log10(rms(clip) / rms(noise)) = snr`` up to sampling error. A silent clip (RMS 0) gets no
  noise (any noise would be infinitely louder than it).
* ``timemask``: with probability ``p``, one span of ``round(f * n)`` samples, ``f`` drawn
  uniformly in ``[mask_min, mask_max]`` and ``n`` the clip's length, at a uniformly drawn start,
  set to zero with hard edges. PEFT-SER uses audiomentations' ``TimeMask`` with ``fade=True``,
  which ramps the span's edges; we do not fade.

Seeding: every draw of item ``index`` in ``epoch`` comes from
``np.random.default_rng((seed, epoch, index, RNG_TAG))``, so the item gets the same augmentation
in a given epoch whatever the worker count or sampling order, another one the next epoch, and
the draws never share a stream with the crop's ``(seed, epoch, index)``. The scalars are drawn
in a fixed order whether or not an augmentation is listed or applied, so adding ``timemask``
does not change the noise of a clip. Dev and test clips are never augmented
(:class:`~trainables.data.dataset.ClipSet` refuses an augmenter on evaluation windows, and
:mod:`trainables.data.splits` gives one to the training split only).

Feature cache. Augmentation acts on the waveform, and the frozen front end (CNN, log-mel) is
not linear, so noise or a mask cannot be applied to cached features. With ``augment`` set, a
frozen-front-end method loads its *training* split on the waveform path (a ``ClipSet``): the
frozen front end runs on every step on the augmented clip, without gradients
(:meth:`Backbone.forward` turns them off for a frozen front end), and nothing of the training
split goes into the cache. Dev and test keep the frame path (cached, or live with the cache off):
:func:`trainables.loop.logits_of` feeds each batch by its kind and
:func:`trainables.data.splits.make_loaders` collates each split by its kind, so mixing is exact
and costs no extra front-end passes on dev/test. ``result.json`` says so in its warnings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

AUGMENTATIONS: tuple[str, ...] = ("noise", "timemask")
RNG_TAG = 0x617567  # "aug": fourth seed word, so augmentation never reuses the crop's stream


def normalise_augment(text: Any) -> str:
    """The stored form of ``TrainConfig.augment``: known names, sorted, comma-joined.

    ``"timemask, noise"`` -> ``"noise,timemask"``; ``""`` and ``"none"`` -> ``""`` (off).

    Raises:
        ValueError: naming the field: not a string, or a name outside :data:`AUGMENTATIONS`.
    """
    expected = f"a comma list of {', '.join(AUGMENTATIONS)} ('' or 'none': off)"
    if not isinstance(text, str):
        raise ValueError(f"augment = {text!r}; expected {expected}")
    names = {t.strip() for t in text.split(",")} - {""}
    if names == {"none"}:
        return ""
    unknown = sorted(names - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"augment: unknown augmentation(s) {unknown}; expected {expected}")
    return ",".join(sorted(names))


@dataclass(frozen=True)
class Draws:
    """What :class:`Augmenter` does to one clip (None: that augmentation is not applied).

    Attributes:
        snr_db: SNR of the added noise in dB.
        mask: ``(start, length)`` of the zeroed span, in samples.
    """

    snr_db: float | None
    mask: tuple[int, int] | None


@dataclass(frozen=True)
class Augmenter:
    """Seeded training augmentation of waveforms (see the module docstring).

    Attributes:
        kinds: the augmentations applied, a subset of :data:`AUGMENTATIONS`.
        p: probability that each listed augmentation is applied to a clip.
        snr_db: ``(min, max)`` SNR of the noise in dB.
        mask_fraction: ``(min, max)`` fraction of the clip zeroed by the time mask.
    """

    kinds: tuple[str, ...]
    p: float = 1.0
    snr_db: tuple[float, float] = (10.0, 30.0)
    mask_fraction: tuple[float, float] = (0.1, 0.15)

    def __post_init__(self) -> None:
        problems = [
            (set(self.kinds) <= set(AUGMENTATIONS), f"kinds {self.kinds} not in {AUGMENTATIONS}"),
            (0.0 <= self.p <= 1.0, f"p must be in [0, 1], got {self.p}"),
            (self.snr_db[0] <= self.snr_db[1], f"snr_db needs min <= max, got {self.snr_db}"),
            (
                0.0 <= self.mask_fraction[0] <= self.mask_fraction[1] < 1.0,
                f"mask_fraction needs 0 <= min <= max < 1, got {self.mask_fraction}",
            ),
        ]
        for ok, message in problems:
            if not ok:
                raise ValueError(f"augmenter: {message}")

    @classmethod
    def from_config(cls, cfg: Any) -> Augmenter | None:
        """The augmenter of a ``TrainConfig`` (its ``augment*``, ``noise_snr_*`` and
        ``timemask_*`` fields), or None when ``augment`` is off."""
        if not cfg.augment:
            return None
        return cls(
            kinds=tuple(cfg.augment.split(",")),
            p=cfg.augment_p,
            snr_db=(cfg.noise_snr_min, cfg.noise_snr_max),
            mask_fraction=(cfg.timemask_min, cfg.timemask_max),
        )

    def draw(self, rng: np.random.Generator, samples: int) -> Draws:
        """The scalar draws for a clip of ``samples`` samples (always all five, in order)."""
        use_noise = rng.random() < self.p
        snr = float(rng.uniform(*self.snr_db))
        use_mask = rng.random() < self.p
        fraction = float(rng.uniform(*self.mask_fraction))
        where = float(rng.random())
        length = min(samples, round(fraction * samples))
        start = min(samples - length, math.floor(where * (samples - length + 1)))
        return Draws(
            snr_db=snr if use_noise and "noise" in self.kinds else None,
            mask=(start, length) if use_mask and "timemask" in self.kinds else None,
        )

    def __call__(self, wave: np.ndarray, seed: int, epoch: int, index: int) -> np.ndarray:
        """Augments one training clip.

        Args:
            wave: float32 waveform ``(samples,)``; not modified.
            seed, epoch, index: the run's seed, the epoch and the item's index.

        Returns:
            A new float32 waveform of the same shape.
        """
        rng = np.random.default_rng((seed, epoch, index, RNG_TAG))
        draws = self.draw(rng, wave.shape[0])
        out = np.array(wave, dtype=np.float32)
        if draws.snr_db is not None:
            out = add_noise(out, draws.snr_db, rng)
        if draws.mask is not None:
            start, length = draws.mask
            out[start : start + length] = 0.0
        return out


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``wave`` plus white Gaussian noise ``N(0, std^2)``, ``std = rms(wave) / 10^(snr_db/20)``.

    Returns ``wave`` unchanged when it is silent (RMS 0). The sum is not clipped to +-1 (the
    model takes float input; clipping would change the SNR).
    """
    rms = math.sqrt(float(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    if rms == 0.0:
        return wave
    std = rms / 10.0 ** (snr_db / 20.0)
    noise = rng.standard_normal(wave.shape[0]) * std  # float64, (samples,)
    return (wave + noise).astype(np.float32)
