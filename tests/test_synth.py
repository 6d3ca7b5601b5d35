"""Tests for trainables.data.synth: determinism, manifest layout and learnability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from trainables.data.manifest import Partition, Utterance, partition, read_manifest
from trainables.data.synth import EMOTIONS, synthesize


@pytest.fixture(scope="module")
def corpus8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-speaker corpus (the default layout) with fewer takes, for split and learning tests."""
    return synthesize(tmp_path_factory.mktemp("synth8"), speakers=8, per_class=12, seed=0)


def _frame(manifest: Path) -> pd.DataFrame:
    return read_manifest(manifest).to_pandas()


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = synthesize(tmp_path / "a", speakers=4, per_class=2, seed=3)
    second = synthesize(tmp_path / "b", speakers=4, per_class=2, seed=3)
    other = synthesize(tmp_path / "c", speakers=4, per_class=2, seed=4)
    rows = _frame(first)
    pd.testing.assert_frame_equal(rows, _frame(second))
    differing = 0
    for rel in rows["path"]:
        data = (first.parent / rel).read_bytes()
        assert data == (second.parent / rel).read_bytes(), f"{rel} differs between runs"
        differing += data != (other.parent / rel).read_bytes()
    assert differing == len(rows), "a different seed must change every file"


def test_small_corpus_layout(synth_corpus: Path) -> None:
    rows = _frame(synth_corpus)
    assert {"path", "label", "speaker", "gender", "split", "fold", "duration"} <= set(rows)
    assert len(rows) == 4 * 4 * 6
    assert rows.groupby("label").size().to_dict() == {e: 24 for e in EMOTIONS}
    assert rows.groupby("gender").size().to_dict() == {"F": 48, "M": 48}
    assert rows.groupby("split").size().to_dict() == {"train": 48, "dev": 24, "test": 24}
    assert not any(Path(p).is_absolute() for p in rows["path"]), "paths must be relative"
    part = partition(synth_corpus)
    assert part.labels == tuple(sorted(EMOTIONS))
    train_speakers = {u.speaker for u in part.train}
    assert train_speakers == {"spk00", "spk01"}
    assert train_speakers.isdisjoint(u.speaker for u in part.dev + part.test)
    for items in (part.dev, part.test):  # every eval set holds both genders and all classes
        assert {u.gender for u in items} == {"F", "M"}
        assert {u.label for u in items} == set(EMOTIONS)


def test_audio_matches_manifest(synth_corpus: Path) -> None:
    rows = _frame(synth_corpus)
    for row in rows.itertuples():
        info = sf.info(str(synth_corpus.parent / row.path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames / 16000 == pytest.approx(row.duration)
        assert 1.5 <= row.duration <= 3.0


def _speakers(items: tuple[Utterance, ...]) -> set[str]:
    return {u.speaker for u in items}


def test_default_layout_splits_are_speaker_independent(corpus8: Path) -> None:
    rows = _frame(corpus8)
    for fold, group in rows.groupby("fold"):
        assert sorted(group["gender"].unique()) == ["F", "M"], f"fold {fold} not gender-balanced"
        assert group["speaker"].nunique() == 2
    split = partition(corpus8)
    assert _speakers(split.train) == {"spk00", "spk01", "spk02", "spk03"}
    assert _speakers(split.dev) == {"spk04", "spk05"}
    assert _speakers(split.test) == {"spk06", "spk07"}
    folded = partition(corpus8, fold=0)
    assert (folded.test_fold, folded.dev_fold) == (0, 1)
    assert _speakers(folded.test) == {"spk00", "spk01"}
    assert _speakers(folded.train).isdisjoint(_speakers(folded.dev + folded.test))


def test_invalid_arguments(tmp_path: Path) -> None:
    for speakers in (2, 5):
        with pytest.raises(ValueError, match="even and at least 4"):
            synthesize(tmp_path, speakers=speakers)
    with pytest.raises(ValueError, match="per_class"):
        synthesize(tmp_path, speakers=4, per_class=1)


def _f0(wave: np.ndarray, sr: int) -> float:
    """Median autocorrelation F0 (60-500 Hz) over the loudest frames."""
    win = int(0.04 * sr)
    hop = win // 2
    count = 1 + (wave.shape[0] - win) // hop
    frames = wave[np.arange(count)[:, None] * hop + np.arange(win)]  # (frames, win)
    energy = np.sqrt((frames**2).mean(axis=1))
    frames = frames[energy > 0.3 * energy.max()]
    frames = frames - frames.mean(axis=1, keepdims=True)
    autocorr = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * win)) ** 2)[:, :win]
    low, high = sr // 500, sr // 60
    lags = low + autocorr[:, low:high].argmax(axis=1)
    return float(np.median(sr / lags))


def _features(items: tuple[Utterance, ...]) -> np.ndarray:
    """(log RMS, log F0) per utterance."""
    rows = []
    for utt in items:
        wave, sr = sf.read(utt.path)
        rows.append([np.log(np.sqrt(np.mean(wave**2))), np.log(_f0(wave, sr))])
    return np.array(rows)


def _targets(part: Partition, items: tuple[Utterance, ...]) -> np.ndarray:
    return np.array([part.labels.index(u.label) for u in items])


def test_emotion_and_gender_cues_point_the_right_way(corpus8: Path) -> None:
    part = partition(corpus8)
    feats, targets = _features(part.train), _targets(part, part.train)
    means = {label: feats[targets == i].mean(axis=0) for i, label in enumerate(part.labels)}
    assert means["angry"][0] > means["neutral"][0] > means["sad"][0], "energy order wrong"
    assert means["happy"][1] > means["neutral"][1] > means["sad"][1], "F0 order wrong"
    everyone = part.train + part.dev + part.test
    log_f0 = np.concatenate([feats[:, 1], _features(part.dev + part.test)[:, 1]])
    female = np.array([u.gender == "F" for u in everyone])
    ratio = np.exp(log_f0[female].mean() - log_f0[~female].mean())
    assert 1.6 < ratio < 2.0, f"F/M F0 ratio {ratio:.2f}"


def test_learnable_but_not_trivial(corpus8: Path) -> None:
    """Nearest centroid on (energy, F0) must beat chance (0.25) clearly but not be perfect."""
    part = partition(corpus8)
    train, test = _features(part.train), _features(part.test)
    mean, std = train.mean(axis=0), train.std(axis=0)
    train, test = (train - mean) / std, (test - mean) / std
    y_train, y_test = _targets(part, part.train), _targets(part, part.test)
    centroids = np.stack([train[y_train == c].mean(axis=0) for c in range(len(part.labels))])
    pred = ((test[:, None, :] - centroids[None]) ** 2).sum(axis=-1).argmin(axis=1)
    accuracy = float((pred == y_test).mean())
    assert 0.4 < accuracy < 1.0, f"nearest-centroid test accuracy {accuracy:.3f}"
