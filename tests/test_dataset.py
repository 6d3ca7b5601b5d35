"""Tests for trainables.data.dataset: skipping bad files, seeded crops, collate, class weights."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from trainables.data.dataset import (
    Batch,
    Clip,
    ClipSet,
    SkippedFile,
    class_weights,
    collate,
)
from trainables.data.manifest import Utterance, partition

SR = 16000
LABELS = ("neg", "pos")


def _utt(path: Path, label: str = "pos", gender: str = "F") -> Utterance:
    return Utterance(path=path, label=label, speaker="s0", gender=gender, extra={})


def _wav(folder: Path, name: str, seconds: float, seed: int) -> Path:
    path = folder / name
    noise = np.random.default_rng(seed).uniform(-0.5, 0.5, round(seconds * SR))
    sf.write(path, noise, SR, subtype="PCM_16")
    return path


@pytest.fixture
def mixed_files(tmp_path: Path) -> list[Utterance]:
    """Two good clips around a corrupt file and an empty WAV."""
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(1).bytes(2048))
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), SR, subtype="PCM_16")
    return [
        _utt(_wav(tmp_path, "a.wav", 1.0, 0), "neg", "F"),
        _utt(corrupt),
        _utt(_wav(tmp_path, "b.wav", 0.5, 1), "pos", "M"),
        _utt(empty),
    ]


def test_bad_files_are_skipped_and_listed(
    mixed_files: list[Utterance], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        clips = ClipSet(mixed_files, LABELS, SR, max_seconds=2.0, crop_mode="full")
    assert len(clips) == 2
    assert [s.path for s in clips.skipped] == [str(mixed_files[1].path), str(mixed_files[3].path)]
    assert all(isinstance(s, SkippedFile) and s.reason for s in clips.skipped)
    assert "no samples" in clips.skipped[1].reason
    assert sum("corrupt.wav" in r.getMessage() for r in caplog.records) == 1
    assert clips.targets == [0, 1] and clips.genders == ["F", "M"]
    assert clips.durations == pytest.approx([1.0, 0.5])
    item = clips[1]
    assert isinstance(item, Clip) and item.wave.dtype == torch.float32
    assert (item.label, item.gender, item.index) == (1, "M", 1)
    original = sf.read(mixed_files[2].path, dtype="float32")[0]
    np.testing.assert_allclose(item.wave.numpy(), original, atol=1 / 32767)


def test_all_files_bad_raises(mixed_files: list[Utterance]) -> None:
    with pytest.raises(ValueError, match="none of the 2 file"):
        ClipSet([mixed_files[1], mixed_files[3]], LABELS, SR, 1.0, "full")


def test_unknown_label_raises(mixed_files: list[Utterance]) -> None:
    with pytest.raises(ValueError, match="not one of"):
        ClipSet(mixed_files[:1], ("x", "y"), SR, 1.0, "full")


def test_random_crops_depend_only_on_seed_epoch_and_index(tmp_path: Path) -> None:
    utts = [_utt(_wav(tmp_path, f"{i}.wav", 1.0, i)) for i in range(3)]
    first = ClipSet(utts, LABELS, SR, max_seconds=0.25, crop_mode="random", seed=7)
    second = ClipSet(utts, LABELS, SR, max_seconds=0.25, crop_mode="random", seed=7)
    first.set_epoch(3)
    second.set_epoch(3)
    for i in reversed(range(3)):  # a different access order must not matter
        assert first[i].wave.shape == (4000,)
        torch.testing.assert_close(first[i].wave, second[i].wave)
    second.set_epoch(4)
    assert not torch.equal(first[0].wave, second[0].wave), "epochs must draw new crops"
    other_seed = ClipSet(utts, LABELS, SR, max_seconds=0.25, crop_mode="random", seed=8)
    other_seed.set_epoch(3)
    assert not torch.equal(first[0].wave, other_seed[0].wave)


def test_center_mode_crops_middle(tmp_path: Path) -> None:
    path = _wav(tmp_path, "c.wav", 1.0, 0)
    clips = ClipSet([_utt(path)], LABELS, SR, max_seconds=0.5, crop_mode="center")
    original = sf.read(path, dtype="float32")[0]
    np.testing.assert_allclose(clips[0].wave.numpy(), original[4000:12000], atol=1 / 32767)
    assert clips.durations == [1.0], "durations are measured before the crop"


def test_collate_pads_and_reports_lengths() -> None:
    clips = [
        Clip(wave=torch.ones(3), label=1, gender="F", index=4),
        Clip(wave=torch.full((5,), 2.0), label=0, gender="M", index=9),
    ]
    batch = collate(clips)
    assert isinstance(batch, Batch)
    assert batch.waves.shape == (2, 5) and batch.waves.dtype == torch.float32
    torch.testing.assert_close(batch.waves[0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(batch.waves[1], torch.full((5,), 2.0))
    assert batch.lengths.tolist() == [3, 5] and batch.lengths.dtype == torch.int64
    assert batch.labels.tolist() == [1, 0] and batch.labels.dtype == torch.int64
    assert batch.indices.tolist() == [4, 9] and batch.genders == ["F", "M"]
    moved = batch.to("cpu")
    assert moved.waves.device.type == "cpu" and moved.genders == batch.genders
    with pytest.raises(ValueError):
        collate([])


def test_class_weights_hand_computed() -> None:
    # N = 6, C = 3, counts (3, 2, 1): w = 6 / (3 * n) = (2/3, 1, 2)
    weights = class_weights([0, 0, 0, 1, 1, 2], 3)
    torch.testing.assert_close(weights, torch.tensor([2 / 3, 1.0, 2.0]))
    assert float((weights * torch.tensor([3.0, 2.0, 1.0])).sum()) == pytest.approx(6.0)
    # an absent class gets weight 0: N = 4, C = 3, counts (2, 0, 2)
    torch.testing.assert_close(class_weights([0, 2, 0, 2], 3), torch.tensor([2 / 3, 0.0, 2 / 3]))
    with pytest.raises(ValueError):
        class_weights([0, 3], 3)
    with pytest.raises(ValueError):
        class_weights([], 3)


def test_clipset_on_synthetic_corpus(synth_corpus: Path) -> None:
    part = partition(synth_corpus)
    clips = ClipSet(part.train, part.labels, SR, max_seconds=1.0, crop_mode="random")
    assert len(clips) == len(part.train) and not clips.skipped
    assert sorted(set(clips.targets)) == list(range(len(part.labels)))
    assert all(1.5 <= d <= 3.0 for d in clips.durations)
    loader = torch.utils.data.DataLoader(clips, batch_size=8, collate_fn=collate)
    batch = next(iter(loader))
    assert batch.waves.shape == (8, SR)


def test_eval_windows_split_long_clips_and_name_their_utterance(tmp_path: Path) -> None:
    """A clip longer than eval_max_seconds becomes ceil(L / W) windows of W samples."""
    ramp = tmp_path / "ramp.wav"
    sf.write(ramp, (np.arange(9 * SR // 4) % 30000).astype(np.int16), SR, subtype="PCM_16")
    utts = [_utt(_wav(tmp_path, "short.wav", 0.5, 0), "neg"), _utt(ramp, "pos", "M")]
    clips = ClipSet(utts, LABELS, SR, 3.0, "full", eval_max_seconds=1.0)
    # L = 36000, W = 16000: n = 3, starts 0, 10000, 20000 (i * (L - W) // 2)
    assert len(clips) == 4 and clips.owners == [0, 1, 1, 1] and clips.windowed == 1
    assert clips.lengths() == [8000, SR, SR, SR] and clips.durations == [0.5, 2.25]
    for item, start in zip(range(1, 4), (0, 10000, 20000)):
        clip = clips[item]
        assert (clip.index, clip.label, clip.gender) == (1, 1, "M")
        assert abs(float(clip.wave[0]) * 32768 - start) <= 1  # a ramp: value = position
    assert clips.targets == [0, 1] and len(clips.utterances) == 2
    centre = ClipSet(utts, LABELS, SR, 2.0, "center", eval_max_seconds=1.0)
    assert centre.lengths() == [8000, SR, SR] and centre.windowed == 1  # 2 s crop, 2 windows
    batch = collate([clips[i] for i in range(len(clips))])
    assert batch.indices.tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError, match="center or full"):
        ClipSet(utts, LABELS, SR, 1.0, "random", eval_max_seconds=1.0)


def test_quantising_float_audio_beyond_one_is_recorded(tmp_path: Path) -> None:
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.array([0.5, 1.2, -0.1] * 100, dtype=np.float32), SR, subtype="FLOAT")
    quiet = _wav(tmp_path, "quiet.wav", 0.1, 0)
    clips = ClipSet([_utt(loud), _utt(quiet)], LABELS, SR, 1.0, "center")
    assert clips.clipped == [str(loud)]
    assert float(clips[0].wave.max()) == 1.0  # still clipped, but no longer silently
