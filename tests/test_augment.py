"""Training augmentation: hand-checked noise SNR and time mask, seeding, train-only, the cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from search.cli import main
from trainables.backbones import load_backbone
from trainables.config import TrainConfig
from trainables.data.augment import RNG_TAG, Augmenter, normalise_augment
from trainables.data.dataset import ClipSet, collate
from trainables.data.frames import FrameSet, FrontendExtractor
from trainables.data.manifest import Utterance, partition
from trainables.data.splits import load_frame_splits, load_splits
from trainables.train import train

SR = 16000
BOTH = Augmenter(("noise", "timemask"))


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.mean(np.square(x, dtype=np.float64))))


def _draws(aug: Augmenter, seed: int, epoch: int, index: int, samples: int):
    return aug.draw(np.random.default_rng((seed, epoch, index, RNG_TAG)), samples)


def _tone(seconds: float = 10.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize(("seed", "epoch", "index"), [(0, 0, 0), (3, 1, 7), (11, 4, 2)])
def test_noise_has_the_drawn_snr(seed: int, epoch: int, index: int) -> None:
    """On a 10 s clip the measured SNR of the added noise is the drawn one within 0.1 dB."""
    wave = _tone()
    aug = Augmenter(("noise",), snr_db=(10.0, 30.0))
    out = aug(wave, seed, epoch, index)
    snr = _draws(aug, seed, epoch, index, wave.shape[0]).snr_db
    assert snr is not None and 10.0 <= snr <= 30.0
    measured = 20 * math.log10(_rms(wave) / _rms(out.astype(np.float64) - wave))
    assert abs(measured - snr) < 0.1
    assert out.dtype == np.float32 and out.shape == wave.shape


def test_noise_std_is_rms_over_ten_to_the_snr_over_20() -> None:
    """A fixed 20 dB: std = 0.3 / sqrt(2) / 10 for a 0.3-amplitude tone."""
    wave = _tone()
    out = Augmenter(("noise",), snr_db=(20.0, 20.0))(wave, 0, 0, 0)
    expected = 0.3 / math.sqrt(2) / 10
    assert _rms(out.astype(np.float64) - wave) == pytest.approx(expected, rel=0.01)


def test_a_silent_clip_gets_no_noise() -> None:
    silent = np.zeros(SR, dtype=np.float32)
    assert np.array_equal(Augmenter(("noise",))(silent, 0, 0, 0), silent)


@pytest.mark.parametrize("index", range(5))
def test_time_mask_zeroes_one_span_of_the_drawn_length(index: int) -> None:
    n = 48_000
    wave = np.ones(n, dtype=np.float32)
    aug = Augmenter(("timemask",), mask_fraction=(0.1, 0.15))
    out = aug(wave, 1, 2, index)
    start, length = _draws(aug, 1, 2, index, n).mask
    zeros = np.flatnonzero(out == 0.0)
    assert round(0.1 * n) <= length <= round(0.15 * n)
    assert zeros.tolist() == list(range(start, start + length))  # one span, exactly the draw
    assert np.all(out[out != 0.0] == 1.0)  # the rest is untouched


def test_noise_then_mask_and_the_input_is_not_modified() -> None:
    wave = _tone(2.0)
    before = wave.copy()
    out = BOTH(wave, 0, 0, 0)
    start, length = _draws(BOTH, 0, 0, 0, wave.shape[0]).mask
    assert np.all(out[start : start + length] == 0.0)  # masked after the noise was added
    assert np.array_equal(wave, before)
    noise_only = Augmenter(("noise",))(wave, 0, 0, 0)
    outside = np.ones(wave.shape[0], dtype=bool)
    outside[start : start + length] = False
    assert np.array_equal(out[outside], noise_only[outside])  # adding timemask keeps the noise


def test_same_seed_epoch_index_same_clip_another_epoch_differs() -> None:
    wave = _tone(1.0)
    a = BOTH(wave, 5, 1, 3)
    assert np.array_equal(a, BOTH(wave, 5, 1, 3))
    assert not np.array_equal(a, BOTH(wave, 5, 2, 3))
    assert not np.array_equal(a, BOTH(wave, 5, 1, 4))
    assert not np.array_equal(a, BOTH(wave, 6, 1, 3))


def test_probability_p() -> None:
    wave = _tone(0.5)
    assert np.array_equal(Augmenter(("noise", "timemask"), p=0.0)(wave, 0, 0, 0), wave)
    half = Augmenter(("noise",), p=0.5)
    changed = [not np.array_equal(half(wave, 0, 0, i), wave) for i in range(40)]
    assert 0 < sum(changed) < 40


def test_normalised_names_and_bad_values_name_the_field(synth_corpus: Path) -> None:
    assert normalise_augment(" timemask, noise,noise") == "noise,timemask"
    assert normalise_augment("none") == normalise_augment("") == ""
    cfg = TrainConfig(manifest=synth_corpus, augment="timemask,noise")
    assert cfg.augment == "noise,timemask"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    bad = [
        ({"augment": "reverb"}, "augment: unknown augmentation(s) ['reverb']"),
        ({"augment": ["noise"]}, "augment = ['noise']"),
        ({"augment_p": 1.5}, "augment_p must be in [0, 1]"),
        ({"noise_snr_min": 30.0, "noise_snr_max": 10.0}, "noise_snr_min must be <= noise_snr_max"),
        ({"timemask_min": 0.5, "timemask_max": 0.2}, "timemask_min and timemask_max"),
        ({"crop": "last"}, "crop must be one of"),
        ({"eval_crop": "random"}, "eval_crop must be one of"),
    ]
    for fields, message in bad:
        with pytest.raises(ValueError, match="train config: ") as err:
            TrainConfig(manifest=synth_corpus, **fields)
        assert message in str(err.value)


def _utts(folder: Path, n: int = 6) -> list[Utterance]:
    out = []
    for i in range(n):
        path = folder / f"{i}.wav"
        sf.write(path, np.random.default_rng(i).uniform(-0.5, 0.5, SR), SR, subtype="PCM_16")
        out.append(Utterance(path, ("a", "b")[i % 2], f"s{i}", "F", {}))
    return out


def test_clipset_augments_by_index_whatever_the_order_or_workers(tmp_path: Path) -> None:
    utts = _utts(tmp_path)
    plain = ClipSet(utts, ("a", "b"), SR, 0.5, "random", seed=2)
    aug = ClipSet(utts, ("a", "b"), SR, 0.5, "random", seed=2, augment=BOTH)
    aug.set_epoch(1)
    plain.set_epoch(1)
    direct = [aug[i].wave for i in range(len(aug))]
    for i in reversed(range(len(aug))):
        assert torch.equal(aug[i].wave, direct[i])
        crop = plain[i].wave.numpy()  # the same crop, then the augmentation
        assert np.array_equal(direct[i].numpy(), BOTH(crop, 2, 1, i))
    loader = DataLoader(aug, batch_size=2, num_workers=2, collate_fn=collate)
    rows = [w[:n] for b in loader for w, n in zip(b.waves, b.lengths.tolist(), strict=True)]
    assert all(torch.equal(a, b) for a, b in zip(rows, direct, strict=True))
    aug.set_epoch(2)
    assert not torch.equal(aug[0].wave, direct[0])
    with pytest.raises(ValueError, match="never evaluation windows"):
        ClipSet(utts, ("a", "b"), SR, 0.5, "center", eval_max_seconds=0.25, augment=BOTH)


def _same_items(a, b) -> bool:
    field = "features" if isinstance(a, FrameSet) else "wave"
    return len(a) == len(b) and all(
        torch.equal(getattr(a[i], field), getattr(b[i], field)) for i in range(len(a))
    )


def test_dev_and_test_are_never_augmented(synth_corpus: Path, tmp_path: Path) -> None:
    kw = dict(manifest=synth_corpus, max_seconds=1.0, crop="first", eval_crop="first")
    clean = TrainConfig(**kw, feature_cache=False)
    noisy = TrainConfig(**kw, feature_cache=False, augment="noise,timemask")
    wave_clean, wave_noisy = load_splits(clean, SR), load_splits(noisy, SR)
    assert wave_noisy.train.augment is not None and wave_clean.train.augment is None
    assert not _same_items(wave_noisy.train, wave_clean.train)
    for name in ("dev", "test"):
        assert getattr(wave_noisy, name).augment is None
        assert _same_items(getattr(wave_noisy, name), getattr(wave_clean, name))
    bb = load_backbone("tiny-wavlm")
    frames_clean, frames_noisy = load_frame_splits(clean, bb), load_frame_splits(noisy, bb)
    assert isinstance(frames_noisy.train, ClipSet) and not frames_noisy.frames
    assert _same_items(frames_noisy.train, wave_noisy.train)  # the waveform path's train split
    assert not frames_noisy.train_bypassed_cache  # the cache was off: nothing to bypass
    for name in ("dev", "test"):
        assert isinstance(getattr(frames_noisy, name), FrameSet)
        assert _same_items(getattr(frames_noisy, name), getattr(frames_clean, name))


def _entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if (p / "index.json").is_file()}


def test_augmented_runs_write_no_training_cache_entry(synth_corpus: Path, tmp_path: Path) -> None:
    """Augmented: only dev/test entries (clean features); a plain run then reuses them."""
    cache = tmp_path / "cache"
    kw = dict(manifest=synth_corpus, method="frozen", epochs=1, max_seconds=1.0,
              feature_cache_dir=cache)  # fmt: skip
    noisy = train(TrainConfig(**kw, augment="noise,timemask"), tmp_path / "noisy")
    assert any("training split bypassed the feature cache" in w for w in noisy.warnings)
    after_noisy = _entries(cache)
    assert len(after_noisy) == 2  # dev and test
    part = partition(synth_corpus)
    ex = FrontendExtractor(load_backbone("tiny-wavlm"))
    dev = ClipSet(part.dev, part.labels, SR, 1.0, "center")
    counts = {
        len(json.loads((cache / e / "index.json").read_text())["frames"]) for e in after_noisy
    }
    assert counts == {len(part.dev), len(part.test)}
    clean = load_frame_splits(TrainConfig(**kw), load_backbone("tiny-wavlm"))
    assert clean.dev.source.table.folder.name in after_noisy  # a hit on the entry built above
    for i in (0, len(dev) - 1):
        assert torch.equal(clean.dev[i].features, ex(dev[i].wave))  # clean, not augmented
    plain = train(TrainConfig(**kw), tmp_path / "plain")
    assert _entries(cache) > after_noisy and len(_entries(cache)) == 3  # + the train entry
    assert not any("bypassed" in w for w in plain.warnings)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_cli_trains_with_augmentation_and_first_crops(
    method: str, synth_corpus: Path, tmp_path: Path
) -> None:
    code = main([
        "train", "--manifest", str(synth_corpus), "--method", method, "--epochs", "1",
        "--max-seconds", "1", "--augment", "noise,timemask", "--crop", "first",
        "--eval-crop", "first", "--noise-snr", "5", "15", "--timemask", "0.05", "0.1",
        "--out", str(tmp_path / "run"), "--feature-cache-dir", str(tmp_path / "fc"),
    ])  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    config = result["config"]
    assert (config["augment"], config["crop"], config["eval_crop"]) == (
        "noise,timemask", "first", "first")  # fmt: skip
    assert (config["noise_snr_min"], config["timemask_max"]) == (5.0, 0.1)
    bypassed = any("bypassed the feature cache" in w for w in result["warnings"])
    entries = list((tmp_path / "fc").glob("*/index.json"))
    if method == "full":  # waveforms throughout: no cache at all
        assert not bypassed and not entries
    else:
        assert bypassed and len(entries) == 2  # dev and test only
        crops = {json.loads(e.read_text())["inputs"]["crop"]["source"] for e in entries}
        assert crops == {"first"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--augment", "reverb"], "augment: unknown augmentation(s) ['reverb']"),
        (["--noise-snr", "30", "10"], "noise_snr_min must be <= noise_snr_max"),
        (["--timemask", "0.3", "0.2"], "timemask_min and timemask_max"),
        (["--augment-p", "1.5"], "augment_p must be in [0, 1]"),
        (["--augment-p", "-0.1"], "augment_p must be in [0, 1]"),
    ],
)
def test_cli_bad_augmentation_values_are_clear_errors(
    flags: list[str], message: str, synth_corpus: Path, tmp_path: Path, capsys
) -> None:
    code = main(["train", "--manifest", str(synth_corpus), "--augment", "noise", *flags,
                 "--out", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
