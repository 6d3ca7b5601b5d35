"""Crop policies ``first`` and ``center`` for training, ``first`` for dev/test, on both data paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from trainables.backbones import load_backbone
from trainables.config import TrainConfig
from trainables.data.audio import crop, load_window
from trainables.data.cache import FeatureCache
from trainables.data.dataset import ClipSet
from trainables.data.frames import FrameCrop, FrameSet, FrontendExtractor, load_frame_set
from trainables.data.manifest import Utterance, partition
from trainables.data.splits import load_frame_splits, load_splits, make_loaders
from trainables.export import build_model
from trainables.model import HeadConfig
from trainables.train import predict

SR = 16000


def test_first_crop_is_the_start_and_short_clips_are_unchanged() -> None:
    wave = np.arange(100, dtype=np.float32)
    assert crop(wave, 30, "first").tolist() == list(range(30))
    assert crop(wave, 200, "first") is wave


@pytest.mark.parametrize("rate", [SR, 44100])
def test_first_window_equals_the_start_of_the_whole_decode(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "a.wav"
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * rate)
    sf.write(path, noise, rate, subtype="FLOAT")
    whole = noise.astype(np.float32)
    if rate != SR:
        whole = soxr.resample(whole, rate, SR, quality="HQ")
    wave, length = load_window(path, SR, SR, first=True)
    assert length == whole.shape[0] and wave.shape == (SR,)
    np.testing.assert_allclose(wave, whole[:SR], atol=1e-6)  # exact at 16 kHz, ~1e-7 resampled


def test_clipset_first_and_center_read_their_own_stretch(tmp_path: Path) -> None:
    path = tmp_path / "ramp.wav"
    ramp = np.linspace(-0.9, 0.9, 2 * SR)
    sf.write(path, ramp, SR, subtype="PCM_16")
    utt = [Utterance(path, "a", "s", "F", {})]
    decoded = sf.read(path, dtype="float32")[0]
    first = ClipSet(utt, ("a", "b"), SR, 0.5, "first")
    centre = ClipSet(utt, ("a", "b"), SR, 0.5, "center")
    np.testing.assert_allclose(first[0].wave.numpy(), decoded[: SR // 2], atol=1e-4)
    np.testing.assert_allclose(
        centre[0].wave.numpy(), decoded[3 * SR // 4 : 5 * SR // 4], atol=1e-4
    )
    first.set_epoch(3)
    assert torch.equal(first[0].wave, ClipSet(utt, ("a", "b"), SR, 0.5, "first")[0].wave)


WINDOWED = dict(max_seconds=1.0, eval_max_seconds=0.5, crop="first", eval_crop="first")


def test_waveform_and_frame_paths_agree_for_first(synth_corpus: Path, tmp_path: Path) -> None:
    """Every split's frame features are the front end on the waveform path's crop; test
    predictions (first 1 s, scored as two 0.5 s windows) agree."""
    cfg = TrainConfig(manifest=synth_corpus, feature_cache_dir=tmp_path, **WINDOWED)
    model, _ = build_model("tiny-wavlm", "frozen", {}, HeadConfig(), 4, seed=0)
    ex = FrontendExtractor(model.backbone)
    waves, frames = load_splits(cfg, SR), load_frame_splits(cfg, model.backbone)
    assert isinstance(frames.train, FrameSet) and frames.train.window is None
    n_test = len(partition(synth_corpus).test)
    assert waves.windowed == frames.windowed == {"train": 0, "dev": n_test, "test": n_test}
    for name in ("train", "dev", "test"):
        w, f = getattr(waves, name), getattr(frames, name)
        assert len(w) == len(f) and w.owners == f.owners
        for i in (0, len(w) - 1):
            assert torch.equal(f[i].features, ex(w[i].wave))
    frames.train.set_epoch(4)  # deterministic: no random window
    assert torch.equal(frames.train[0].features, ex(waves.train[0].wave))
    outputs = [predict(model, make_loaders(cfg, s)["test"], "cpu", False) for s in (waves, frames)]
    (y_wave, _, _, p_wave), (y_frame, _, _, p_frame) = outputs
    assert y_wave.tolist() == y_frame.tolist() and len(y_wave) == n_test
    np.testing.assert_allclose(p_wave, p_frame, atol=1e-5)


def test_cache_key_tells_first_from_center(synth_corpus: Path, tmp_path: Path) -> None:
    part = partition(synth_corpus)
    ex = FrontendExtractor(load_backbone("tiny-wavlm"))
    cache = FeatureCache(tmp_path)
    utts = list(part.dev[:4])  # synthetic clips are 1.5-3 s: a 1 s crop is not the whole clip
    first = load_frame_set(utts, part.labels, ex, FrameCrop("first", 1.0), 0, cache)
    centre = load_frame_set(utts, part.labels, ex, FrameCrop("center", 1.0), 0, cache)
    assert first.source.table.folder != centre.source.table.folder
    assert first.source.table.meta["inputs"]["crop"]["source"] == "first"
    clips = ClipSet(utts, part.labels, SR, 1.0, "first")
    for i in range(len(utts)):
        assert torch.equal(first[i].features, ex(clips[i].wave))
        assert not torch.equal(first[i].features, centre[i].features)


@pytest.mark.parametrize("policy", ["center", "first"])
def test_training_split_takes_the_deterministic_crop(synth_corpus: Path, policy: str) -> None:
    cfg = TrainConfig(manifest=synth_corpus, max_seconds=1.0, crop=policy, feature_cache=False)
    waves = load_splits(cfg, SR)
    expected = ClipSet(partition(synth_corpus).train, waves.labels, SR, 1.0, policy)
    assert waves.train.crop_mode == policy and waves.train.lengths() == [SR] * len(expected)
    waves.train.set_epoch(2)
    for i in (0, len(expected) - 1):
        assert torch.equal(waves.train[i].wave, expected[i].wave)


def test_defaults_keep_random_training_crops(synth_corpus: Path) -> None:
    cfg = TrainConfig(manifest=synth_corpus)
    assert (cfg.crop, cfg.eval_crop, cfg.augment) == ("random", "center", "")
    waves = load_splits(TrainConfig(manifest=synth_corpus, max_seconds=1.0), SR)
    assert waves.train.crop_mode == "random" and waves.train.augment is None
