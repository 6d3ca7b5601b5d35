"""A deterministic synthetic emotional-speech corpus for tests, smoke runs and demos.

Each utterance is a source-filter "speech-like" signal: a Rosenberg glottal pulse train
(with jitter and shimmer) plus breath noise, shaped by a syllable envelope, then passed
through four formant resonators whose targets glide between vowel-like settings. Emotions
differ in pitch level and range, loudness, tempo, spectral tilt and breathiness; gender
changes pitch (F ~ 1.8x M) and formant scale (F ~ +15 %). Per-speaker offsets (including
how expressive a speaker is) and per-utterance variation make the classes overlap, so a
classifier has something to learn but cannot be perfect.

The resonators are applied frame by frame in the frequency domain (overlap-add of
zero-padded, Hann-windowed frames), which equals convolving each frame with the
resonators' impulse responses and lets the formant targets change every 16 ms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from trainables.data.manifest import write_manifest

logger = logging.getLogger(__name__)

EMOTIONS: tuple[str, ...] = ("neutral", "happy", "angry", "sad")

# Male vowel formants F1-F4 in Hz (roughly Peterson & Barney): a, e, i, o, u.
_VOWELS = np.array(
    [
        [730.0, 1090.0, 2440.0, 3400.0],
        [530.0, 1840.0, 2480.0, 3500.0],
        [270.0, 2290.0, 3010.0, 3700.0],
        [570.0, 840.0, 2410.0, 3400.0],
        [300.0, 870.0, 2240.0, 3300.0],
    ]
)
_BANDWIDTHS = np.array([80.0, 110.0, 160.0, 220.0])  # Hz, F1-F4
_FEMALE_F0_RATIO = 1.8
_FEMALE_FORMANT_SCALE = 1.15
_TILT_REF_HZ = 500.0


@dataclass(frozen=True)
class EmotionStyle:
    """How one emotion shapes an utterance.

    Attributes:
        f0_scale: Multiplier of the speaker's mean F0.
        f0_range_st: Span of pitch accents in semitones.
        level_db: Active-speech RMS level in dBFS.
        syllable_rate: Syllables per second.
        tilt_db_oct: Spectral tilt above 500 Hz in dB per octave (positive = brighter).
        breath: Breath-noise amplitude relative to the normalised voice source.
        open_quotient: Fraction of each glottal cycle the glottis is open.
        formant_shift: Multiplier of all formants (smiling raises them).
    """

    f0_scale: float
    f0_range_st: float
    level_db: float
    syllable_rate: float
    tilt_db_oct: float
    breath: float
    open_quotient: float
    formant_shift: float

    def blend(self, other: EmotionStyle, amount: float) -> EmotionStyle:
        """Interpolates from ``self`` (amount 0) towards ``other`` (amount 1)."""
        values = {
            name: getattr(self, name) + amount * (getattr(other, name) - getattr(self, name))
            for name in self.__dataclass_fields__
        }
        return replace(self, **values)


STYLES: dict[str, EmotionStyle] = {
    "neutral": EmotionStyle(1.00, 3.0, -26.0, 4.0, 0.0, 0.05, 0.60, 1.00),
    "happy": EmotionStyle(1.30, 9.0, -22.0, 4.8, 0.5, 0.04, 0.55, 1.06),
    "angry": EmotionStyle(1.20, 4.0, -17.0, 5.4, 5.0, 0.02, 0.40, 1.01),
    "sad": EmotionStyle(0.85, 1.0, -31.0, 2.8, -5.0, 0.15, 0.78, 0.97),
}


@dataclass(frozen=True)
class SpeakerProfile:
    """A synthetic speaker's fixed traits.

    Attributes:
        name: Speaker id, e.g. ``spk03``.
        gender: ``F`` or ``M``.
        f0_hz: Mean F0 of neutral speech.
        formant_scale: Multiplier of the male vowel formants (vocal tract length).
        tempo: Multiplier of syllable rate.
        level_db: Offset of loudness.
        tilt_db_oct: Offset of spectral tilt.
        expressiveness: How far this speaker's emotions move away from neutral.
    """

    name: str
    gender: str
    f0_hz: float
    formant_scale: float
    tempo: float
    level_db: float
    tilt_db_oct: float
    expressiveness: float


def _speaker(seed: int, index: int) -> SpeakerProfile:
    """Draws the traits of speaker ``index`` (even index = F, odd = M)."""
    rng = np.random.default_rng((seed, 0, index))
    female = index % 2 == 0
    # Bounded spread keeps every speaker's F0 inside the range typical of its gender.
    f0 = 115.0 * np.exp(rng.uniform(-0.12, 0.12))
    scale = np.exp(rng.normal(0.0, 0.04))
    return SpeakerProfile(
        name=f"spk{index:02d}",
        gender="F" if female else "M",
        f0_hz=float(f0 * (_FEMALE_F0_RATIO if female else 1.0)),
        formant_scale=float(scale * (_FEMALE_FORMANT_SCALE if female else 1.0)),
        tempo=float(np.exp(rng.normal(0.0, 0.10))),
        level_db=float(rng.normal(0.0, 2.0)),
        tilt_db_oct=float(rng.normal(0.0, 1.0)),
        expressiveness=float(rng.uniform(0.8, 1.2)),
    )


@dataclass(frozen=True)
class _Syllables:
    """Syllable timing and targets of one utterance (times in seconds)."""

    starts: np.ndarray  # (syllables,)
    voiced: np.ndarray  # (syllables,) voiced length
    centers: np.ndarray  # (syllables,)
    stress: np.ndarray  # (syllables,) amplitude in (0, 1]
    accent: np.ndarray  # (syllables,) pitch accent in [0, 1]
    formants: np.ndarray  # (syllables, 4) Hz


def _plan(
    duration: float, rate: float, formant_scale: float, rng: np.random.Generator
) -> _Syllables:
    """Lays syllables between short leading and trailing pauses."""
    lead, tail = rng.uniform(0.05, 0.15, size=2)
    span = duration - lead - tail
    count = max(2, round(span * rate))
    lengths = rng.uniform(0.7, 1.3, size=count)
    lengths *= span / lengths.sum()
    starts = lead + np.concatenate(([0.0], np.cumsum(lengths)[:-1]))
    voiced = lengths * rng.uniform(0.65, 0.9, size=count)
    vowels = _VOWELS[rng.integers(0, len(_VOWELS), size=count)]
    jitter = np.exp(rng.normal(0.0, 0.03, size=(count, 4)))
    return _Syllables(
        starts=starts,
        voiced=voiced,
        centers=starts + voiced / 2,
        stress=rng.uniform(0.55, 1.0, size=count),
        accent=rng.uniform(0.0, 1.0, size=count),
        formants=vowels * formant_scale * jitter,
    )


def _envelope(t: np.ndarray, syl: _Syllables) -> np.ndarray:
    """Per-sample amplitude: a rounded bump over each syllable's voiced part, 0 elsewhere."""
    which = np.clip(np.searchsorted(syl.starts, t, side="right") - 1, 0, len(syl.starts) - 1)
    u = (t - syl.starts[which]) / syl.voiced[which]
    inside = (u >= 0.0) & (u <= 1.0)
    bump = np.sin(np.pi * np.clip(u, 0.0, 1.0)) ** 0.7
    return np.where(inside, bump * syl.stress[which], 0.0)


def _source(
    f0: np.ndarray, env: np.ndarray, style: EmotionStyle, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """Glottal flow derivative (Rosenberg pulses with jitter/shimmer) plus breath noise."""
    n_cycles = int(f0.sum() / sr * 1.3) + 8
    jitter = rng.normal(0.0, 0.01, size=n_cycles)
    shimmer = np.exp(rng.normal(0.0, 0.06, size=n_cycles))
    # Jitter perturbs each cycle's period: index it by the unperturbed cycle count.
    cycle = np.minimum(np.floor(np.cumsum(f0) / sr).astype(np.int64), n_cycles - 1)
    phase = np.cumsum(f0 * (1.0 + jitter[cycle])) / sr
    cycle = np.minimum(np.floor(phase).astype(np.int64), n_cycles - 1)
    frac = phase - np.floor(phase)
    rise, fall = 0.6 * style.open_quotient, 0.4 * style.open_quotient
    flow = np.where(
        frac < rise,
        0.5 * (1.0 - np.cos(np.pi * frac / rise)),
        np.where(frac < rise + fall, np.cos(0.5 * np.pi * (frac - rise) / fall), 0.0),
    )
    # Differentiating the flow models lip radiation (+6 dB/octave).
    voice = np.diff(flow * shimmer[cycle] * env, prepend=0.0)
    voice /= np.sqrt(np.mean(voice**2)) + 1e-12
    noise = rng.normal(0.0, 1.0, size=f0.shape[0]) * (style.breath * env + 0.004)
    return voice + noise


def _formant_filter(x: np.ndarray, syl: _Syllables, tilt_db_oct: float, sr: int) -> np.ndarray:
    """Filters ``x`` through four time-varying resonators and a spectral tilt."""
    win = 1 << int(np.ceil(np.log2(0.032 * sr)))  # ~32 ms
    hop, nfft = win // 2, 2 * win  # zero padding to 2*win leaves room for resonance tails
    n = x.shape[0]
    n_frames = int(np.ceil(n / hop)) + 1
    padded = np.zeros((n_frames + 3) * hop)
    padded[hop : hop + n] = x  # leading hop so the first sample sits at full window weight
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann: OLA = 1
    starts = np.arange(n_frames) * hop
    frames = padded[starts[:, None] + np.arange(win)] * window  # (frames, win)
    spec = np.fft.rfft(frames, nfft)  # (frames, bins)

    times = (starts + win / 2 - hop) / sr
    tracks = np.stack(
        [np.interp(times, syl.centers, syl.formants[:, k]) for k in range(4)], axis=1
    )  # (frames, 4)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)  # (bins,)
    z1 = np.exp(-2j * np.pi * freqs / sr)
    r = np.exp(-np.pi * _BANDWIDTHS / sr)  # (4,)
    b = 2.0 * r * np.cos(2.0 * np.pi * tracks / sr)  # (frames, 4)
    c = -(r**2) * np.ones_like(b)
    gain = (1.0 - b - c)[..., None]  # unit gain at DC (Klatt resonator)
    resp = gain / (1.0 - b[..., None] * z1 - c[..., None] * z1**2)  # (frames, 4, bins)
    usable = (tracks < 0.45 * sr)[..., None]  # formants above Nyquist are dropped
    response = np.where(usable, resp, 1.0).prod(axis=1)  # (frames, bins)
    tilt = 10.0 ** (tilt_db_oct / 20.0 * np.log2(np.maximum(freqs, _TILT_REF_HZ) / _TILT_REF_HZ))
    out_frames = np.fft.irfft(spec * response * tilt, nfft)  # (frames, nfft)

    out = np.zeros((n_frames + 3) * hop)
    for k in range(nfft // hop):  # overlap-add, one hop-sized slice of every frame at a time
        chunk = out_frames[:, k * hop : (k + 1) * hop].reshape(-1)
        out[k * hop : k * hop + chunk.shape[0]] += chunk
    return out[hop : hop + n]


def _utterance(
    speaker: SpeakerProfile, emotion: str, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """Synthesises one utterance as float64 samples in [-1, 1]."""
    amount = speaker.expressiveness * rng.uniform(0.7, 1.3)
    style = STYLES["neutral"].blend(STYLES[emotion], amount)
    duration = rng.uniform(1.5, 3.0)
    n = round(duration * sr)
    t = np.arange(n) / sr
    rate = style.syllable_rate * speaker.tempo * rng.uniform(0.88, 1.12)
    scale = speaker.formant_scale * style.formant_shift * np.exp(rng.normal(0.0, 0.02))
    syl = _plan(duration, rate, scale, rng)

    f0_mean = speaker.f0_hz * style.f0_scale * np.exp(rng.normal(0.0, 0.06))
    f0_range = style.f0_range_st * rng.uniform(0.7, 1.3)
    semitones = np.interp(t, syl.centers, f0_range * (syl.accent - 0.5)) - 2.0 * t / duration
    f0 = f0_mean * 2.0 ** (semitones / 12.0)

    env = _envelope(t, syl)
    tilt = style.tilt_db_oct + speaker.tilt_db_oct + rng.normal(0.0, 1.0)
    wave = _formant_filter(_source(f0, env, style, sr, rng), syl, tilt, sr)

    level = style.level_db + speaker.level_db + rng.normal(0.0, 2.0)
    active = env > 0.05
    rms = np.sqrt(np.mean(wave[active] ** 2)) + 1e-12
    wave *= 10.0 ** (level / 20.0) / rms
    peak = np.abs(wave).max()
    if peak > 0.95:  # rare loud takes: limit instead of clipping
        wave *= 0.95 / peak
    return wave


def _split(fold: int, n_folds: int, take: int) -> str:
    """Speaker-independent split: last fold test, the one before dev, the rest train.

    With only two folds (4 speakers) the last fold's takes alternate between dev and test
    so that train still has its own speakers.
    """
    if n_folds == 2:
        return "train" if fold == 0 else ("dev" if take % 2 == 0 else "test")
    if fold == n_folds - 1:
        return "test"
    return "dev" if fold == n_folds - 2 else "train"


def _check_arguments(speakers: int, per_class: int, seed: int, sample_rate: int) -> None:
    """Raises ValueError on arguments :func:`synthesize` cannot honour."""
    if speakers < 4 or speakers % 2:
        raise ValueError(f"speakers must be even and at least 4, got {speakers}")
    min_takes = 2 if speakers == 4 else 1
    if per_class < min_takes:
        raise ValueError(
            f"per_class must be at least {min_takes} with {speakers} speakers, got {per_class}"
        )
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")


def _write_take(
    out_dir: Path, speaker: SpeakerProfile, emotion: str, take: int, wave: np.ndarray, sr: int
) -> tuple[str, int]:
    """Writes one utterance as 16-bit PCM; returns its path relative to ``out_dir`` and its
    sample count."""
    pcm = np.round(wave * 32767.0).astype(np.int16)
    rel = f"wav/{speaker.name}_{emotion}_{take:03d}.wav"
    sf.write(out_dir / rel, pcm, sr, subtype="PCM_16", format="WAV")
    return rel, pcm.shape[0]


def _speaker_rows(
    out_dir: Path, seed: int, index: int, speakers: int, per_class: int, sr: int
) -> list[dict[str, object]]:
    """Synthesises and writes every take of speaker ``index``; returns its manifest rows."""
    speaker = _speaker(seed, index)
    fold = index // 2
    rows: list[dict[str, object]] = []
    for e, emotion in enumerate(EMOTIONS):
        for take in range(per_class):
            rng = np.random.default_rng((seed, 1, index, e, take))
            wave = _utterance(speaker, emotion, sr, rng)
            rel, samples = _write_take(out_dir, speaker, emotion, take, wave, sr)
            rows.append(
                {
                    "path": rel,
                    "label": emotion,
                    "speaker": speaker.name,
                    "gender": speaker.gender,
                    "split": _split(fold, speakers // 2, take),
                    "fold": fold,
                    "duration": samples / sr,
                }
            )
    return rows


def synthesize(
    out_dir: Path,
    speakers: int = 8,
    per_class: int = 24,
    seed: int = 0,
    sample_rate: int = 16000,
) -> Path:
    """Writes the synthetic corpus and its manifest.

    Files go to ``out_dir/wav/<speaker>_<emotion>_<take>.wav`` (16-bit PCM) and the
    manifest to ``out_dir/manifest.parquet`` with columns path (relative to ``out_dir``),
    label, speaker, gender, split, fold and duration. Speakers alternate F/M; fold =
    speaker index // 2, so every fold holds one F and one M speaker. The same arguments
    always give byte-identical audio.

    Args:
        out_dir: Destination folder (created).
        speakers: Even number of speakers, at least 4.
        per_class: Takes per speaker and emotion (at least 2 with 4 speakers).
        seed: Non-negative random seed.
        sample_rate: Output rate in Hz (at least 8000).

    Returns:
        The manifest path.

    Raises:
        ValueError: On invalid arguments.
    """
    _check_arguments(speakers, per_class, seed, sample_rate)
    out_dir = Path(out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for s in range(speakers):
        rows += _speaker_rows(out_dir, seed, s, speakers, per_class, sample_rate)
    manifest = write_manifest(rows, out_dir / "manifest.parquet")
    logger.info("synthesised %d utterances under %s", len(rows), out_dir)
    return manifest
