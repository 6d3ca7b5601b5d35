"""Tests for trainables.data.audio: decoding, mono mixing, resampling and cropping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from trainables.data.audio import AudioError, crop, load_audio, resampled_length, window_starts


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_is_mixed_by_mean(tmp_path: Path) -> None:
    left, right = _sine(440, 16000, 0.5), _sine(700, 16000, 0.5, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-7)


def test_resampling_keeps_duration_and_frequency(tmp_path: Path) -> None:
    path = tmp_path / "hi.wav"
    sf.write(path, _sine(1000, 44100, 1.0), 44100, subtype="PCM_16")
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32
    assert abs(wave.shape[0] - 16000) <= 1, "length must scale by 16000/44100"
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.shape[0])))
    peak_hz = np.fft.rfftfreq(wave.shape[0], 1 / 16000)[spectrum.argmax()]
    assert abs(peak_hz - 1000) <= 2, f"sine moved to {peak_hz} Hz"


def test_same_rate_is_not_resampled(tmp_path: Path) -> None:
    original = _sine(300, 16000, 0.25)
    path = tmp_path / "same.wav"
    sf.write(path, original, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, 16000), original)


def test_corrupt_file_raises_audio_error_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x10\x00\x00WAVE" + np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match="cannot decode") as info:
        load_audio(path, 16000)
    assert str(path) in str(info.value)
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match="not an audio file"):
        load_audio(noise, 16000)


def test_empty_wav_raises_audio_error_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="no samples") as info:
        load_audio(path, 16000)
    assert str(path) in str(info.value)


def test_missing_and_non_finite_files(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "absent.wav", 16000)
    bad = _sine(200, 16000, 0.1)
    bad[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, bad, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(path, 16000)


def test_random_crop_is_a_window_within_bounds_and_seeded() -> None:
    wave = np.arange(100, dtype=np.float32)
    starts = set()
    for seed in range(50):
        out = crop(wave, 30, "random", np.random.default_rng(seed))
        assert out.shape == (30,)
        start = int(out[0])
        assert 0 <= start <= 70
        np.testing.assert_array_equal(out, wave[start : start + 30])
        again = crop(wave, 30, "random", np.random.default_rng(seed))
        np.testing.assert_array_equal(out, again)
        starts.add(start)
    assert len(starts) > 10, "random crops should vary with the seed"


def test_center_crop_is_exact() -> None:
    wave = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop(wave, 4, "center", None), [3, 4, 5, 6])
    np.testing.assert_array_equal(crop(wave, 3, "center", None), [3, 4, 5])


@pytest.mark.parametrize("mode", ["random", "center", "full"])
def test_short_clips_are_unchanged(mode: str) -> None:
    wave = np.arange(20, dtype=np.float32)
    out = crop(wave, 50, mode, np.random.default_rng(0))  # type: ignore[arg-type]
    np.testing.assert_array_equal(out, wave)


def test_full_returns_whole_clip_and_bad_arguments_raise() -> None:
    wave = np.arange(100, dtype=np.float32)
    assert crop(wave, 10, "full", None).shape == (100,)
    with pytest.raises(ValueError, match="explicit rng"):
        crop(wave, 10, "random", None)
    with pytest.raises(ValueError, match="unknown crop mode"):
        crop(wave, 10, "middle", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        crop(wave, 0, "center", None)


@pytest.mark.parametrize(
    ("length", "window", "starts"),
    [(4, 4, [0]), (3, 4, [0]), (5, 4, [0, 1]), (8, 4, [0, 4]), (9, 4, [0, 2, 5]),
     (10, 4, [0, 3, 6]), (13, 4, [0, 3, 6, 9])],
)  # fmt: skip
def test_window_starts_hand_computed(length: int, window: int, starts: list[int]) -> None:
    # n = ceil(length / window); start_i = i * (length - window) // (n - 1)
    assert window_starts(length, window) == starts
    assert len(starts) == -(-length // window)
    assert starts[-1] + min(window, length) == length  # the last window ends at the clip's end


def test_resampled_length_matches_soxr() -> None:
    for frames in (1, 2, 3, 440, 441, 12345, 44100, 99999):
        for rate in (8000, 11025, 22050, 44100, 48000, 16001):
            got = soxr.resample(np.zeros(frames, np.float32), rate, 16000, quality="HQ")
            assert resampled_length(frames, rate, 16000) == got.shape[0], (frames, rate)


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("AIFF", "PCM_16")]
)
def test_centre_window_equals_crop_of_whole_decode(tmp_path: Path, fmt: str, subtype: str) -> None:
    """Seeking to the centre window gives the samples of decoding all and cropping."""
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, _sine(300, 22050, 3.0), 22050, subtype=subtype, format=fmt)
    whole = load_audio(path, 22050)
    np.testing.assert_array_equal(load_audio(path, 22050, 22050), crop(whole, 22050, "center"))
    resampled = load_audio(path, 16000)
    np.testing.assert_allclose(
        load_audio(path, 16000, 8000), crop(resampled, 8000, "center"), atol=1e-6
    )
