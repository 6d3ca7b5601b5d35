"""Audio decoding (soundfile), mono mixing, resampling (soxr) and cropping."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

logger = logging.getLogger(__name__)

CropMode = Literal["random", "center", "full"]
CROP_MODES: tuple[str, ...] = ("random", "center", "full")


class AudioError(ValueError):
    """A file cannot be used as audio; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"audio {path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Picklable with its fields (Ray sends a trial's exception to the driver pickled).
        return type(self), (self.path, self.reason)


def load_audio(path: Path, target_sr: int) -> np.ndarray:
    """Decodes a file to mono float32 at ``target_sr``.

    Channels are mixed by their mean; the rate is converted with soxr ("HQ") only when it
    differs from ``target_sr``.

    Args:
        path: Any file libsndfile can decode (WAV, FLAC, OGG, ...).
        target_sr: Output sample rate in Hz.

    Returns:
        The waveform, shape ``(samples,)``, float32, nominally in [-1, 1].

    Raises:
        AudioError: If the file cannot be decoded, has no samples, or holds NaN/Inf.
        ValueError: If ``target_sr`` is not positive.
    """
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        raise AudioError(path, f"cannot decode ({exc})") from exc
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(path, "has no samples")
    if not np.isfinite(data).all():
        raise AudioError(path, "holds non-finite samples (NaN or Inf)")
    wave = data.mean(axis=1, dtype=np.float32)  # (samples,)
    if sr != target_sr:
        wave = soxr.resample(wave, sr, target_sr, quality="HQ")
        if wave.size == 0:
            raise AudioError(path, f"has no samples after resampling {sr} -> {target_sr} Hz")
    return np.ascontiguousarray(wave, dtype=np.float32)


def crop(
    wave: np.ndarray,
    max_samples: int,
    mode: CropMode,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Cuts a window of at most ``max_samples`` from a 1-D waveform.

    ``random`` draws the window start uniformly (training), ``center`` takes the middle
    window (evaluation), ``full`` returns the whole clip. Clips no longer than
    ``max_samples`` are returned unchanged: padding is the collate function's job.

    Args:
        wave: Shape ``(samples,)``.
        max_samples: Window length in samples.
        mode: ``random``, ``center`` or ``full``.
        rng: Required for ``random`` so crops are reproducible.

    Returns:
        A view of ``wave`` of length ``min(len(wave), max_samples)`` (or all of it for
        ``full``).

    Raises:
        ValueError: On a non-positive ``max_samples``, an unknown mode, or ``random``
            without ``rng``.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; expected one of {', '.join(CROP_MODES)}")
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    length = wave.shape[0]
    if mode == "full" or length <= max_samples:
        return wave
    if mode == "center":
        start = (length - max_samples) // 2
    else:
        if rng is None:
            # An implicit fresh generator would make training runs unrepeatable.
            raise ValueError("crop mode 'random' needs an explicit rng")
        start = int(rng.integers(0, length - max_samples + 1))
    return wave[start : start + max_samples]
