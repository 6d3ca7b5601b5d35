"""Untrusted audio paths, bounded reads, skipped rows, evaluation windows and data warnings."""

from __future__ import annotations

import json
import os
import pickle
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
import torch
from safetensors.torch import load_file, save_file

from search.predict import PredictionError, Predictor
from trainables.backbones import load_backbone
from trainables.config import TrainConfig
from trainables.data import audio as audio_mod
from trainables.data.audio import (
    AudioError,
    check_audio_file,
    crop,
    load_audio,
    load_window,
    resampled_length,
    window_starts,
)
from trainables.data.cache import DIGEST_MEMO, file_digests
from trainables.data.checks import partition_warnings
from trainables.data.dataset import ClipSet, collate
from trainables.data.manifest import Utterance, partition, write_manifest
from trainables.data.splits import load_frame_splits, load_splits
from trainables.export import load_adapter
from trainables.train import predict, train

SR = 16000
FAST = dict(backbone="tiny-wavlm", method="frozen", epochs=1, batch_size=16, max_seconds=1.0)


def _wav(path: Path, seconds: float, seed: int = 0, sr: int = SR, amp: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).uniform(-amp, amp, round(seconds * sr))
    sf.write(path, noise.astype(np.float32), sr, subtype="FLOAT" if amp > 1 else "PCM_16")
    return path


def _bounded(fn: Callable[[], Any]) -> Any:
    """Runs ``fn`` in a thread and returns its result or exception; fails if it never returns
    (a FIFO read blocks forever; the join limit only guards against a hung test run)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the call blocked (a FIFO or device was read)"
    return out[0]


def _unusable(tmp_path: Path, kind: str) -> tuple[Path | str, str]:
    """A path that is not a readable audio file, and the reason expected for it."""
    path = tmp_path / kind
    if kind == "directory":
        path.mkdir()
        return path, "is a directory"
    if kind == "fifo":
        os.mkfifo(path)
        return path, r"not a regular file \(a FIFO\)"
    if kind == "device":
        return Path("/dev/zero"), r"not a regular file \(a character device\)"
    if kind == "symlink_loop":
        path.symlink_to(path)
        return path, "cannot stat"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty file"
    if kind == "text":
        path.write_text("root:x:0:0:root:/root:/bin/bash\n")
        return path, "not an audio file"
    if kind == "empty_path":
        return "", "empty path"
    return path, "no such file"


def _utt(path: Path | str, label: str) -> Utterance:
    return Utterance(Path(path), label, "s0", "F", {"split": "train"})


KINDS = ["missing", "directory", "fifo", "device", "symlink_loop", "empty", "text", "empty_path"]


@pytest.mark.parametrize("kind", KINDS)
def test_only_regular_audio_files_are_read(tmp_path: Path, kind: str) -> None:
    path, reason = _unusable(tmp_path, kind)
    for fn in (check_audio_file, lambda p: load_audio(p, SR)):
        exc = _bounded(lambda fn=fn: fn(path))
        assert isinstance(exc, AudioError), exc
        assert re.search(reason, exc.reason), exc.reason
    digest = _bounded(lambda: file_digests([Path(path)], tmp_path / "memo"))
    assert digest[0].startswith("invalid:")


def test_symlinks_to_audio_are_fine_and_digests_skip_the_rest(tmp_path: Path) -> None:
    wav = _wav(tmp_path / "a.wav", 0.5)
    link = tmp_path / "link.wav"
    link.symlink_to(wav)
    assert check_audio_file(link).st_size == wav.stat().st_size
    np.testing.assert_array_equal(load_audio(link, SR), load_audio(wav, SR))
    text, _ = _unusable(tmp_path, "text")
    digests = file_digests([wav, text], tmp_path / "memo")
    assert len(digests[0]) == 32 and digests[1] == f"invalid:{text}"
    assert set(json.loads((tmp_path / "memo" / DIGEST_MEMO).read_text())) == {str(wav)}


def test_reads_are_bounded_by_the_window(tmp_path: Path, monkeypatch) -> None:
    """A centre window reads its samples plus the resampler's margin, never the whole file."""
    reads: list[int] = []
    real = audio_mod._read  # noqa: SLF001

    def counted(f: sf.SoundFile, start: int, count: int) -> np.ndarray:
        reads.append(count)
        return real(f, start, count)

    monkeypatch.setattr(audio_mod, "_read", counted)
    same = _wav(tmp_path / "same.wav", 20.0)
    wave, length = load_window(same, SR, SR)
    assert reads == [SR] and length == 20 * SR
    np.testing.assert_array_equal(wave, crop(sf.read(same, dtype="float32")[0], SR, "center"))

    reads.clear()
    hi = _wav(tmp_path / "hi.wav", 20.0, sr=44100)
    wave, length = load_window(hi, SR, SR)
    full = soxr.resample(sf.read(hi, dtype="float32")[0], 44100, SR, quality="HQ")
    assert length == full.shape[0] == resampled_length(20 * 44100, 44100, SR)
    assert reads[0] < 1.5 * 44100  # 1 s window + 0.1 s margins + grid alignment
    np.testing.assert_allclose(wave, crop(full, SR, "center"), atol=1e-6)
    short = _wav(tmp_path / "short.wav", 0.5, sr=44100)  # shorter than the window: unchanged
    want = soxr.resample(sf.read(short, dtype="float32")[0], 44100, SR, quality="HQ")
    np.testing.assert_array_equal(load_audio(short, SR, SR), want)


def test_whole_clip_reads_are_capped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(audio_mod, "MAX_AUDIO_SECONDS", 1.0)
    long = _wav(tmp_path / "long.wav", 2.0)
    ok = _wav(tmp_path / "ok.wav", 0.5)
    with pytest.raises(AudioError, match="capped at 1 s"):
        load_audio(long, SR)
    assert load_audio(long, SR, SR // 2).shape == (SR // 2,)  # a centre crop reads 0.5 s
    utts = [_utt(long, "a"), _utt(ok, "a")]
    full = ClipSet(utts, ("a", "b"), SR, 0.5, "full")
    reason = "is 2 s long; clips read whole are capped at 1 s (use a centre crop)"
    assert [s.reason for s in full.skipped] == [reason]
    assert len(ClipSet(utts, ("a", "b"), SR, 0.5, "center")) == 2
    assert full.durations == [0.5]


def test_training_crops_come_from_the_centre_source_window(tmp_path: Path) -> None:
    """``random`` reads the centre max(source_seconds, max_seconds), like the frame path."""
    path = tmp_path / "ramp.wav"
    ramp = (np.arange(3 * SR) % 30000).astype(np.int16)  # 3 s; sample value = position
    sf.write(path, ramp, SR, subtype="PCM_16")
    clips = ClipSet([_utt(path, "a")], ("a", "b"), SR, 0.25, "random", seed=1, source_seconds=1.0)
    assert clips.durations == [3.0] and clips.num_samples(0) == SR // 4
    for epoch in range(20):
        clips.set_epoch(epoch)
        first = float(clips[0].wave[0]) * 32768  # a ramp: value = position (+-1 quantisation)
        assert SR - 1 <= first <= 2 * SR - SR // 4 + 1  # inside the centre second


def _manifest_with(synth_corpus: Path, tmp_path: Path, paths: list[str]) -> Path:
    """The synthetic corpus with absolute paths and its first train rows replaced by ``paths``."""
    table = pd.read_parquet(synth_corpus)
    table["path"] = [str((synth_corpus.parent / p).resolve()) for p in table["path"]]
    rows = table.index[table["split"] == "train"][: len(paths)]
    for row, path in zip(rows, paths):
        table.loc[row, "path"] = path
    manifest = tmp_path / "m.parquet"
    table.to_parquet(manifest)
    return manifest


@pytest.mark.parametrize("cache", [True, False])
def test_empty_path_directory_and_symlink_loop_are_counted_skips(
    synth_corpus: Path, tmp_path: Path, cache: bool
) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    manifest = _manifest_with(synth_corpus, tmp_path, ["", "adir", "loop.wav"])
    cfg = TrainConfig(manifest=manifest, feature_cache=cache, feature_cache_dir=tmp_path / "c",
                      **FAST)  # fmt: skip
    result = train(cfg, tmp_path / "run")
    assert result.skipped_files == 3
    reasons = {Path(s["path"]).name: s["reason"] for s in result.skipped}
    assert reasons[tmp_path.name] == "is a directory"  # "" names the manifest's folder
    assert reasons["adir"] == "is a directory"
    assert reasons["loop.wav"].startswith("cannot stat")
    waves = load_splits(cfg, SR)  # the waveform path (method "full") skips them too
    assert len(waves.skipped) == 3


def test_paths_outside_the_manifest_folder_are_checked_not_read(
    synth_corpus: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "corpus").mkdir()
    relative = os.path.relpath(secret, tmp_path / "corpus")  # ../outside/passwd
    manifest = _manifest_with(synth_corpus, tmp_path, [str(secret)])
    table = pd.read_parquet(manifest)
    table.loc[table.index[table["split"] == "train"][1], "path"] = relative
    table.to_parquet(tmp_path / "corpus" / "m.parquet")
    cfg = TrainConfig(manifest=tmp_path / "corpus" / "m.parquet",
                      feature_cache_dir=tmp_path / "cache", **FAST)  # fmt: skip
    splits = load_frame_splits(cfg, load_backbone("tiny-wavlm"))
    assert [(Path(s["path"]), s["reason"].split(" (")[0]) for s in splits.skipped] == [
        (secret, "not an audio file"),
        (secret, "not an audio file"),
    ]
    memo = json.loads((tmp_path / "cache" / DIGEST_MEMO).read_text())
    assert str(secret) not in memo and len(memo) == 96 - 2  # never hashed


def test_clipped_float_audio_is_reported_with_the_cache_on_and_off(
    synth_corpus: Path, tmp_path: Path
) -> None:
    loud = _wav(tmp_path / "loud.wav", 2.0, amp=1.5)
    manifest = _manifest_with(synth_corpus, tmp_path, [str(loud)])
    runs = {}
    for name, cache in (("off", False), ("build", True), ("hit", True)):
        cfg = TrainConfig(manifest=manifest, feature_cache=cache,
                          feature_cache_dir=tmp_path / "c", **FAST)  # fmt: skip
        runs[name] = load_frame_splits(cfg, load_backbone("tiny-wavlm")).warnings
    runs["waveform"] = load_splits(cfg, SR).warnings
    want = [f"train: 1 file(s) hold samples beyond +-1, clipped to +-1 when decoded ('{loud}')"]
    assert all(warnings == want for warnings in runs.values()), runs


def test_a_class_without_decodable_training_files_is_an_error(
    synth_corpus: Path, tmp_path: Path
) -> None:
    table = pd.read_parquet(synth_corpus)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    sad = (table["split"] == "train") & (table["label"] == "sad")
    table["path"] = [str((synth_corpus.parent / p).resolve()) for p in table["path"]]
    table.loc[sad, "path"] = str(bad)
    table.to_parquet(tmp_path / "m.parquet")
    cfg = TrainConfig(manifest=tmp_path / "m.parquet", feature_cache=False, **FAST)
    with pytest.raises(ValueError, match=r"class 'sad' has no decodable file in the train split"):
        load_splits(cfg, SR)
    with pytest.raises(ValueError, match=rf"all {int(sad.sum())} of its file\(s\) were skipped"):
        load_frame_splits(cfg, load_backbone("tiny-wavlm"))


def test_partition_warnings(tmp_path: Path) -> None:
    same = _wav(tmp_path / "w" / "same.wav", 0.3, seed=9)
    rows = []
    for i, (split, speaker, label) in enumerate(
        [("train", "s1", "a"), ("train", "s2", "b"), ("train", "unknown", "a"),
         ("dev", "s3", "a"), ("dev", "unknown", "a"),
         ("test", "s1", "a"), ("test", "s3", "b"), ("test", "unknown", "b")]
    ):  # fmt: skip
        path = _wav(tmp_path / "w" / f"{i}.wav", 0.3, seed=i)
        rows.append({"path": str(path), "label": label, "speaker": speaker, "gender": "F",
                     "split": split})  # fmt: skip
    rows.append({**rows[0], "path": str(same)})
    rows.append({**rows[6], "path": "w/same.wav"})
    part = partition(write_manifest(rows, tmp_path / "m.parquet"))
    assert partition_warnings(part, tmp_path / "memo") == [
        "1 speaker(s) appear in both train and test ('s1'; 1 test file(s)): test scores are "
        "not speaker-independent",
        "1 speaker(s) appear in both dev and test ('s3'; 2 test file(s)): test scores are not "
        "speaker-independent",
        "class(es) 'b' have no file in dev: dev UAR averages over the other 1 class(es)",
        f"1 audio content(s) appear in more than one split (train {same.resolve()} = test "
        f"{same.resolve()}): the "
        "same audio is trained or selected on and scored",
    ]


class _MeanModel(torch.nn.Module):
    """Logits ``(m, -m)`` with ``m`` the mean of a row's valid samples: known by hand."""

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = torch.arange(waves.shape[1])[None] < lengths[:, None]  # (batch, samples)
        m = (waves * valid).sum(1) / lengths
        return torch.stack([m, -m], dim=1)  # (batch, 2)


def test_predict_gives_one_row_per_utterance_from_mean_window_logits(tmp_path: Path) -> None:
    utts = [_utt(_wav(tmp_path / f"{i}.wav", s, seed=i), "ab"[i % 2]) for i, s in
            enumerate((0.4, 2.3, 0.6, 1.7))]  # fmt: skip
    clips = ClipSet(utts, ("a", "b"), SR, 5.0, "full", eval_max_seconds=0.5)
    assert clips.windowed == 3 and len(clips) == 1 + 5 + 2 + 4
    loader = torch.utils.data.DataLoader(clips, batch_size=3, collate_fn=collate)  # splits windows
    y, pred, genders, probs = predict(_MeanModel(), loader, "cpu", False)
    assert y.tolist() == [0, 1, 0, 1] and genders.tolist() == ["F"] * 4
    for u in range(4):
        means = [float(clips[i].wave.mean()) for i in range(len(clips)) if clips.owners[i] == u]
        m = float(np.mean(means))
        want = torch.tensor([m, -m]).softmax(-1).numpy()
        np.testing.assert_allclose(probs[u], want, rtol=1e-5)
        assert pred[u] == int(m < 0)


@pytest.fixture(scope="module")
def adapter(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapter")
    train(TrainConfig(manifest=synth_corpus, **FAST), out)
    return out / "adapter"


def _copy(adapter: Path, dest: Path, **meta: Any) -> Path:
    dest.mkdir()
    for f in adapter.rglob("*"):
        if f.is_file():
            (dest / f.relative_to(adapter)).parent.mkdir(parents=True, exist_ok=True)
            (dest / f.relative_to(adapter)).write_bytes(f.read_bytes())
    config = json.loads((dest / "emotune.json").read_text())
    (dest / "emotune.json").write_text(json.dumps({**config, **meta}))
    return dest


def test_nan_weights_give_an_error_not_a_label(
    adapter: Path, synth_corpus: Path, tmp_path: Path
) -> None:
    broken = _copy(adapter, tmp_path / "nan")
    weights = load_file(str(broken / "weights.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()},
              str(broken / "weights.safetensors"))  # fmt: skip
    wav = Path(partition(synth_corpus).test[0].path)
    predictor = Predictor(broken)
    with pytest.raises(PredictionError, match="not finite") as info:
        predictor.predict_file(wav)
    assert str(wav) in str(info.value)
    rows = list(predictor.predict_files([wav]))
    reason = "model output is not finite (NaN or Inf): the adapter's weights may be corrupt"
    assert rows == [{"file": str(wav), "error": reason}]
    json.dumps(rows, allow_nan=False)  # valid JSON: no NaN anywhere
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.path, again.reason) == (info.value.path, info.value.reason)


def test_predictor_windows_long_clips_like_training(
    adapter: Path, synth_corpus: Path, tmp_path: Path
) -> None:
    """Export -> predict reproduces the training evaluation of windowed clips."""
    windowed = _copy(adapter, tmp_path / "w", eval_crop="full", eval_max_seconds=0.5)
    predictor = Predictor(windowed)
    assert predictor.eval_window == SR // 2
    utts = partition(synth_corpus).test[:4]
    model = load_adapter(adapter).model
    clips = ClipSet(utts, predictor.labels, SR, 1.0, "full", eval_max_seconds=0.5)
    assert clips.windowed == 4  # the clips are 1.5-3 s long
    for i, utt in enumerate(utts):
        got = predictor.predict_file(utt.path)
        wave = torch.from_numpy(load_audio(utt.path, SR))
        starts = window_starts(wave.shape[0], SR // 2)
        items = [clips[j].wave for j in range(len(clips)) if clips.owners[j] == i]
        assert len(items) == len(starts) == -(-wave.shape[0] // (SR // 2)) >= 3
        for start, item in zip(starts, items):  # training's windows: the same audio (int16)
            torch.testing.assert_close(item, wave[start : start + SR // 2], atol=1 / 32767, rtol=0)
        with torch.no_grad():
            logits = [
                model(wave[s : s + SR // 2][None], torch.tensor([SR // 2]))[0] for s in starts
            ]
        want = torch.stack(logits).double().mean(0).float().softmax(-1).numpy()
        np.testing.assert_allclose(list(got["probabilities"].values()), want, atol=1e-6)


@pytest.mark.parametrize("crop", ["first", "center"])
def test_predictor_crops_files_as_the_adapter_was_evaluated(
    adapter: Path, synth_corpus: Path, tmp_path: Path, crop: str
) -> None:
    """An adapter evaluated on the first (or centre) 0.5 s predicts on that same stretch."""
    copied = _copy(adapter, tmp_path / crop, eval_crop=crop, max_seconds=0.5)
    predictor = Predictor(copied)
    utt = partition(synth_corpus).test[0]
    whole = load_audio(utt.path, SR)
    assert whole.shape[0] > SR  # long enough for the two crops to differ
    start = 0 if crop == "first" else (whole.shape[0] - SR // 2) // 2
    np.testing.assert_array_equal(predictor.prepare(utt.path), whole[start : start + SR // 2])
    model = load_adapter(copied).model
    with torch.no_grad():
        clip = torch.from_numpy(whole[start : start + SR // 2])[None]
        want = model(clip, torch.tensor([SR // 2]))[0].softmax(-1).numpy()
    got = predictor.predict_file(utt.path)["probabilities"]
    np.testing.assert_allclose(list(got.values()), want, atol=1e-6)
