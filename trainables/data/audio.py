"""Audio decoding (soundfile), mono mixing, resampling (soxr) and cropping.

Every file a manifest or a user names is untrusted: :func:`open_audio_file` lets only regular
files whose first bytes are an audio header be read (a FIFO or ``/dev/zero`` would block or never
end; ``/etc/passwd`` is not audio), and :func:`load_window` reads only the part of a file the
caller keeps, so a 10-hour file costs no more than its window.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import soundfile as sf
import soxr

logger = logging.getLogger(__name__)

CropMode = Literal["random", "center", "first", "full"]
CROP_MODES: tuple[str, ...] = ("random", "center", "first", "full")
MAX_AUDIO_SECONDS = 3600.0  # longest clip read whole ("full" crops); longer files are skipped
RESAMPLE_MARGIN_SECONDS = 0.1  # audio read beyond a window so soxr's filter has its context
_HEADER_BYTES = 16
_MP3 = "MP3" in sf.available_formats()
_MAGIC: tuple[bytes, ...] = (
    b"fLaC",
    b"OggS",
    b".snd",  # AU, big endian
    b"dns.",  # AU, little endian
    b"caff",  # CAF
    b"NIST_1A",  # NIST SPHERE (TIMIT and other speech corpora)
    b"riff\x2e\x91\xcf\x11",  # Sony Wave64 (GUID of its "riff" chunk)
    *((b"ID3",) if _MP3 else ()),
)
_RIFF = (b"RIFF", b"RIFX", b"RF64")
_IFF_FORMS = (b"AIFF", b"AIFC", b"8SVX", b"16SV")


class AudioError(ValueError):
    """A file cannot be used as audio; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"audio {path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Picklable with its fields (Ray sends a trial's exception to the driver pickled).
        return type(self), (self.path, self.reason)


def _kind(mode: int) -> str:
    """Names a non-regular file type for error messages."""
    for test, name in (
        (stat.S_ISDIR, "is a directory"),
        (stat.S_ISFIFO, "not a regular file (a FIFO)"),
        (stat.S_ISCHR, "not a regular file (a character device)"),
        (stat.S_ISBLK, "not a regular file (a block device)"),
        (stat.S_ISSOCK, "not a regular file (a socket)"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _header_problem(head: bytes) -> str | None:
    """Why the first bytes of a file are not an audio header libsndfile decodes, or None."""
    if head[:4] in _RIFF:
        # Say "cannot decode" rather than "not audio": other RIFF forms (AVI, WebP) exist.
        return None if head[8:12] == b"WAVE" else "cannot decode (a RIFF file without WAVE data)"
    if head[:4] == b"FORM":
        return None if head[8:12] in _IFF_FORMS else "cannot decode (an IFF file, not AIFF)"
    if any(head.startswith(magic) for magic in _MAGIC):
        return None
    if _MP3 and len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return None  # MPEG audio frame sync
    return "not an audio file (no WAV, FLAC, Ogg, AIFF, AU, CAF, W64, NIST or MP3 header)"


def open_audio_file(path: Path | str) -> BinaryIO:
    """Opens a file for reading once it is known to be a regular file with an audio header.

    Symlinks are followed; what they resolve to must pass the same checks. The file is opened
    non-blocking and checked again through its descriptor, so a FIFO swapped in after the
    ``stat`` cannot block the caller. Only the first bytes are read.

    Args:
        path: The file.

    Returns:
        The file, opened in binary mode at offset 0; the caller closes it.

    Raises:
        AudioError: No such file, cannot stat (e.g. a symlink loop), a directory, not a regular
            file (FIFO, device, socket), an empty file, or not an audio file.
    """
    if not str(path):
        raise AudioError(path, "empty path")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(path, "no such file") from None
    except (OSError, ValueError) as exc:  # ELOOP, EACCES, ENAMETOOLONG, embedded NUL...
        raise AudioError(path, f"cannot stat ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(path, _kind(st.st_mode))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise AudioError(path, f"cannot open ({exc.strerror or exc})") from None
    f = os.fdopen(fd, "rb")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between stat and open
            raise AudioError(path, _kind(st.st_mode))
        if st.st_size == 0:
            raise AudioError(path, "empty file")
        problem = _header_problem(os.pread(fd, _HEADER_BYTES, 0))
        if problem is not None:
            raise AudioError(path, problem)
    except BaseException:
        f.close()
        raise
    return f


def check_audio_file(path: Path | str) -> os.stat_result:
    """Checks that ``path`` may be read as audio (see :func:`open_audio_file`); reads no more
    than its header.

    Returns:
        The ``stat`` of the file (symlinks followed).

    Raises:
        AudioError: With the reason the file cannot be used.
    """
    with open_audio_file(path) as f:
        return os.fstat(f.fileno())


def resampled_length(frames: int, source_sr: int, target_sr: int) -> int:
    """Samples soxr returns for ``frames`` input samples: ``round(frames * target / source)``
    with halves rounded up (checked against ``soxr.resample`` in the tests)."""
    if source_sr == target_sr:
        return frames
    return (2 * frames * target_sr + source_sr) // (2 * source_sr)


def _source_span(
    frames: int, sr: int, target_sr: int, start: int, stop: int
) -> tuple[int, int, int]:
    """Source samples ``[s0, s1)`` to resample for output samples ``[start, stop)``, and the
    output index ``k0`` of ``s0``.

    ``s0`` sits on the grid where input and output samples coincide (multiples of
    ``sr / gcd``), so the chunk's output samples are the whole clip's output samples
    ``k0, k0 + 1, ...``; a margin on both sides gives soxr's filter its context, leaving
    differences of float rounding (~1e-7) from resampling the whole clip.
    """
    g = math.gcd(sr, target_sr)
    step_in, step_out = sr // g, target_sr // g
    margin = math.ceil(RESAMPLE_MARGIN_SECONDS * target_sr)
    k0 = max(0, start - margin) // step_out * step_out
    s0 = k0 // step_out * step_in
    k1 = stop + margin
    s1 = min(frames, -(-k1 * sr // target_sr) + step_in)
    return s0, s1, k0


def _read(f: sf.SoundFile, start: int, count: int) -> np.ndarray:
    """``count`` mono float32 samples from frame ``start`` (channels mixed by their mean)."""
    if start:
        if f.seekable():
            f.seek(start)
        else:
            for _ in f.blocks(blocksize=1 << 16, frames=start, dtype="float32"):
                pass
    data = f.read(count, dtype="float32", always_2d=True)  # (samples, channels)
    return data.mean(axis=1, dtype=np.float32)  # (samples,)


def load_window(
    path: Path | str, target_sr: int, window: int | None = None, first: bool = False
) -> tuple[np.ndarray, int]:
    """Decodes the centre (``first``: the first) ``window`` samples (at ``target_sr``) of a
    file, reading no more.

    The result equals decoding the whole file, mixing channels by their mean, resampling with
    soxr ("HQ") when the rate differs and taking ``crop(wave, window, "center")`` (``first``:
    ``crop(wave, window, "first")``): exactly when
    no resampling is needed or the clip fits the window, to float rounding (~1e-7) otherwise
    (the window is resampled with :data:`RESAMPLE_MARGIN_SECONDS` of context each side).

    Args:
        path: Any regular file libsndfile can decode (WAV, FLAC, OGG, ...).
        target_sr: Output sample rate in Hz.
        window: Samples to keep, from the centre; None reads the whole clip, which must not be
            longer than :data:`MAX_AUDIO_SECONDS`.
        first: keep the first ``window`` samples instead of the centre ones.

    Returns:
        ``(wave, length)``: the float32 waveform ``(min(length, window),)``, nominally in
        [-1, 1], and the length of the whole clip at ``target_sr`` (from the header).

    Raises:
        AudioError: If the file is not usable audio (see :func:`open_audio_file`), cannot be
            decoded, has no samples, holds NaN/Inf, or is too long to read whole.
        ValueError: If ``target_sr`` or ``window`` is not positive.
    """
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    if window is not None and window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    with open_audio_file(path) as raw:
        try:
            with sf.SoundFile(raw.fileno(), closefd=False) as f:
                wave, length = _decode(f, path, target_sr, window, first)
        except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as exc:
            if isinstance(exc, AudioError):
                raise
            raise AudioError(path, f"cannot decode ({exc})") from exc
    if wave.size == 0:
        raise AudioError(path, "has no samples")
    if not np.isfinite(wave).all():
        raise AudioError(path, "holds non-finite samples (NaN or Inf)")
    return np.ascontiguousarray(wave, dtype=np.float32), length


def _decode(
    f: sf.SoundFile, path: Path | str, target_sr: int, window: int | None, first: bool = False
) -> tuple[np.ndarray, int]:
    """The body of :func:`load_window` on an open file."""
    frames, sr = int(f.frames), int(f.samplerate)
    if frames <= 0 or f.channels <= 0 or sr <= 0:
        raise AudioError(path, "has no samples")
    length = resampled_length(frames, sr, target_sr)
    if window is None:
        if frames > MAX_AUDIO_SECONDS * sr:
            raise AudioError(
                path,
                f"is {frames / sr:.0f} s long; clips read whole are capped at "
                f"{MAX_AUDIO_SECONDS:.0f} s (use a centre crop)",
            )
        window = length
    start = 0 if first else max(0, (length - window) // 2)
    stop = min(length, start + window)
    if sr == target_sr:
        return _read(f, start, stop - start), length
    if start == 0 and stop == length:  # the whole clip: resample it as one piece
        s0, s1, k0 = 0, frames, 0
    else:
        s0, s1, k0 = _source_span(frames, sr, target_sr, start, stop)
    chunk = _read(f, s0, s1 - s0)
    if chunk.size == 0:
        raise AudioError(path, "has no samples")
    out = soxr.resample(chunk, sr, target_sr, quality="HQ")
    return out[start - k0 : stop - k0], length


def load_audio(
    path: Path | str, target_sr: int, window: int | None = None, first: bool = False
) -> np.ndarray:
    """Decodes a file to mono float32 at ``target_sr`` (see :func:`load_window`).

    Args:
        path: Any regular file libsndfile can decode.
        target_sr: Output sample rate in Hz.
        window: Keep only the centre ``window`` samples (and read no more); None: the whole
            clip, at most :data:`MAX_AUDIO_SECONDS` long.
        first: keep the first ``window`` samples instead of the centre ones.

    Returns:
        The waveform, shape ``(samples,)``, float32, nominally in [-1, 1].

    Raises:
        AudioError: If the file is not usable audio (the reason says why).
        ValueError: If ``target_sr`` or ``window`` is not positive.
    """
    return load_window(path, target_sr, window, first=first)[0]


def window_starts(length: int, window: int) -> list[int]:
    """Starts of the evaluation windows of a clip of ``length`` samples.

    ``n = ceil(length / window)`` windows of exactly ``window`` samples, evenly spaced: the first
    starts at 0, the last ends at ``length`` (start ``i * (length - window) // (n - 1)``). A clip
    no longer than ``window`` is one window, itself.

    Raises:
        ValueError: If ``length`` or ``window`` is not positive.
    """
    if length <= 0 or window <= 0:
        raise ValueError(f"length and window must be positive, got {length}, {window}")
    if length <= window:
        return [0]
    n = -(-length // window)
    return [i * (length - window) // (n - 1) for i in range(n)]


def crop(
    wave: np.ndarray,
    max_samples: int,
    mode: CropMode,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Cuts a window of at most ``max_samples`` from a 1-D waveform.

    ``random`` draws the window start uniformly (training), ``center`` takes the middle
    window (evaluation), ``first`` the window at the start, ``full`` returns the whole clip. Clips no longer than
    ``max_samples`` are returned unchanged: padding is the collate function's job.

    Args:
        wave: Shape ``(samples,)``.
        max_samples: Window length in samples.
        mode: ``random``, ``center``, ``first`` or ``full``.
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
    if mode == "first":
        start = 0
    elif mode == "center":
        start = (length - max_samples) // 2
    else:
        if rng is None:
            # An implicit fresh generator would make training runs unrepeatable.
            raise ValueError("crop mode 'random' needs an explicit rng")
        start = int(rng.integers(0, length - max_samples + 1))
    return wave[start : start + max_samples]
