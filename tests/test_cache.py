"""The frozen-feature cache: same results on and off, invalidation, concurrency, crop policy."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from trainables.backbones import load_backbone
from trainables.config import TrainConfig
from trainables.data import dataset as dataset_mod
from trainables.data.cache import FeatureCache, cache_key, file_digests
from trainables.data.dataset import ClipSet
from trainables.data.frames import (
    FrameCrop,
    FrontendExtractor,
    LiveSource,
    TableSource,
    load_frame_set,
)
from trainables.data.manifest import partition
from trainables.data.splits import load_frame_splits, load_splits, make_loaders
from trainables.export import build_model
from trainables.model import HeadConfig
from trainables.train import predict, train

FAST = dict(backbone="tiny-wavlm", epochs=2, batch_size=16, max_seconds=1.0, lr=2e-3)
TRAIN_CROP = FrameCrop("center", 30.0, 1.0)


def _cfg(manifest: Path, **kw) -> TrainConfig:
    return TrainConfig(manifest=manifest, **{**FAST, **kw})


@pytest.mark.parametrize(
    ("backbone", "method"),
    [("tiny-wavlm", "lora"), ("tiny-wavlm", "frozen"), ("tiny-whisper", "prompt")],
)
def test_cache_on_and_off_give_identical_runs(
    synth_corpus: Path, tmp_path: Path, backbone: str, method: str
) -> None:
    epochs = 2 if backbone == "tiny-wavlm" else 1
    kw = dict(backbone=backbone, method=method, epochs=epochs)
    off = train(_cfg(synth_corpus, feature_cache=False, **kw), tmp_path / "off")
    cache = tmp_path / "cache"
    built = train(_cfg(synth_corpus, feature_cache_dir=cache, **kw), tmp_path / "built")
    hit = train(_cfg(synth_corpus, feature_cache_dir=cache, **kw), tmp_path / "hit")
    for run in (built, hit):
        assert [h["train_loss"] for h in run.history] == [
            h["train_loss"] for h in off.history
        ]
        assert [h["dev"] for h in run.history] == [h["dev"] for h in off.history]
        assert run.test == off.test
    assert len([p for p in cache.iterdir() if (p / "index.json").is_file()]) == 3  # train/dev/test


def test_cache_hit_decodes_no_audio(synth_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = _cfg(synth_corpus, method="frozen", epochs=1, feature_cache_dir=tmp_path / "c")
    first = train(cfg, tmp_path / "a")

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("audio decoded despite a complete feature cache")

    monkeypatch.setattr(dataset_mod, "load_window", no_decoding)
    second = train(cfg, tmp_path / "b")
    assert second.test == first.test


def _extract(backbone: str = "tiny-wavlm") -> FrontendExtractor:
    return FrontendExtractor(load_backbone(backbone))


@pytest.mark.parametrize("backbone", ["tiny-wavlm", "tiny-whisper"])
def test_table_equals_live_features_and_frame_counts(
    synth_corpus: Path, tmp_path: Path, backbone: str
) -> None:
    part = partition(synth_corpus)
    ex = _extract(backbone)
    cache = FeatureCache(tmp_path)
    cached = load_frame_set(part.dev, part.labels, ex, TRAIN_CROP, 0, cache)
    live = load_frame_set(part.dev, part.labels, ex, TRAIN_CROP, 0, None)
    assert isinstance(cached.source, TableSource) and isinstance(live.source, LiveSource)
    assert cached.lengths() == live.lengths() and cached.targets == live.targets
    for i in range(len(live)):
        full = live.source.features(i)
        assert full.shape[0] == live.source.num_frames(i)  # frontend_frames() is exact
        assert torch.equal(cached.source.features(i), full)
        assert torch.equal(cached.source.features(i, 3, 9), full[3:9])


def test_training_windows_are_seeded_frame_crops(synth_corpus: Path, tmp_path: Path) -> None:
    part = partition(synth_corpus)
    ex = _extract()
    frames = load_frame_set(part.train, part.labels, ex, TRAIN_CROP, 5, FeatureCache(tmp_path))
    window = ex.frames(16000)  # 1 s
    assert frames.window == window and set(frames.lengths()) == {window}  # clips are 1.5-3 s
    full = frames.source.features(0)
    frames.set_epoch(1)
    a = frames[0].features
    start = int(np.random.default_rng((5, 1, 0)).integers(0, full.shape[0] - window + 1))
    assert torch.equal(a, full[start : start + window])
    frames.set_epoch(2)
    assert not torch.equal(frames[0].features, a)
    frames.set_epoch(1)
    assert torch.equal(frames[0].features, a)


def test_eval_features_match_the_waveform_centre_crop(synth_corpus: Path, tmp_path: Path) -> None:
    part = partition(synth_corpus)
    ex = _extract()
    frames = load_frame_set(
        part.test, part.labels, ex, FrameCrop("center", 1.0), 0, FeatureCache(tmp_path)
    )
    clips = ClipSet(part.test, part.labels, 16000, 1.0, "center")
    for i in (0, len(clips) - 1):
        expected = ex(clips[i].wave)
        assert torch.equal(frames[i].features, expected)


def test_float16_cache_is_close(synth_corpus: Path, tmp_path: Path) -> None:
    part = partition(synth_corpus)
    ex = _extract()
    f32 = load_frame_set(part.dev, part.labels, ex, TRAIN_CROP, 0, FeatureCache(tmp_path))
    f16 = load_frame_set(
        part.dev, part.labels, ex, TRAIN_CROP, 0, FeatureCache(tmp_path), "float16"
    )
    assert f16.source.table.folder != f32.source.table.folder  # dtype is part of the key
    for i in range(len(f32)):
        a, b = f32.source.features(i), f16.source.features(i)
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)


def test_key_changes_with_weights_audio_and_crop(synth_corpus: Path, tmp_path: Path) -> None:
    bb = load_backbone("tiny-wavlm")
    digest = bb.frontend_digest()
    bb.model.encoder.layers[0].attention.q_proj.weight.data.add_(1.0)
    assert bb.frontend_digest() == digest  # transformer weights do not matter
    bb.model.feature_extractor.conv_layers[0].conv.weight.data[0, 0, 0] += 1e-3
    assert bb.frontend_digest() != digest
    assert cache_key({"crop": 1}) != cache_key({"crop": 2})

    part = partition(synth_corpus)
    ex = _extract()
    utts = list(part.dev[:3])
    moved = []
    for u in utts:  # private copies of three files, then change one of them
        target = tmp_path / "audio" / Path(u.path).name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(Path(u.path).read_bytes())
        moved.append(type(u)(target, u.label, u.speaker, u.gender))
    cache = FeatureCache(tmp_path / "cache")
    first = load_frame_set(moved, part.labels, ex, TRAIN_CROP, 0, cache)
    same = load_frame_set(moved, part.labels, ex, TRAIN_CROP, 0, cache)
    assert same.source.table.folder == first.source.table.folder
    other_cap = load_frame_set(moved, part.labels, ex, FrameCrop("center", 2.0, 1.0), 0, cache)
    assert other_cap.source.table.folder != first.source.table.folder
    wave, sr = sf.read(moved[0].path)
    before = os.stat(moved[0].path)
    sf.write(moved[0].path, wave[::-1].copy(), sr)  # same size: only the content changes
    # An edit is seen through (size, mtime); set a later mtime so that a coarse file-system
    # clock (or a fast machine) cannot give the edit the old one.
    os.utime(moved[0].path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    changed = load_frame_set(moved, part.labels, ex, TRAIN_CROP, 0, cache)
    assert changed.source.table.folder != first.source.table.folder


def test_file_digests_are_memoised(tmp_path: Path, monkeypatch) -> None:
    a = tmp_path / "a.flac"
    a.write_bytes(b"fLaC" + b"x" * 100)
    first = file_digests([a], tmp_path / "cache")
    assert not first[0].startswith("invalid:")
    import trainables.data.cache as cache_mod

    monkeypatch.setattr(cache_mod, "open_audio_file", lambda *a, **k: pytest.fail("file re-read"))
    assert file_digests([a], tmp_path / "cache") == first
    monkeypatch.undo()
    a.write_bytes(b"fLaC" + b"y" * 101)
    assert file_digests([a], tmp_path / "cache") != first


def _items(n: int, delay: float = 0.0):
    for i in range(n):
        time.sleep(delay)
        yield torch.full((i + 2, 3), float(i))


def _build_in_child(root: str, marker: str) -> None:
    def counted():
        Path(marker, f"build-{time.monotonic_ns()}").touch()
        yield from _items(4, delay=0.05)

    table = FeatureCache(Path(root)).get_or_build("k" * 64, counted(), {"who": "child"})
    assert len(table) == 4


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_build_in_child, args=(str(tmp_path / "c"), str(marker)))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()  # no timeout: on a loaded machine a child may take long, never forever
        assert p.exitcode == 0
    assert len(list(marker.iterdir())) == 1  # the others waited on the lock, then read it
    table = FeatureCache(tmp_path / "c").lookup("k" * 64)
    assert table is not None and torch.equal(table.features(3), torch.full((5, 3), 3.0))
    assert not [p for p in (tmp_path / "c").iterdir() if ".tmp-" in p.name]


def test_losing_a_rename_race_keeps_the_winner(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = "r" * 64

    def racing():
        yield from _items(2)
        # Another node finishes the same entry while this writer is still busy.
        cache._build(key, _items(2), {"who": "winner"}, "float32")  # noqa: SLF001
        yield torch.zeros(1, 3)

    table = cache.get_or_build(key, racing(), {"who": "loser"})
    assert table.meta["who"] == "winner" and len(table) == 2
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_entry_serves_a_moved_copy_of_the_corpus(synth_corpus: Path, tmp_path: Path) -> None:
    """The key is content-based: the same audio under other paths reuses the entry."""
    part = partition(synth_corpus)
    ex = _extract()
    cache = FeatureCache(tmp_path / "cache")
    utts = list(part.dev[:4])
    moved = []
    for u in utts:
        target = tmp_path / "copy" / Path(u.path).name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(Path(u.path).read_bytes())
        moved.append(type(u)(target, u.label, u.speaker, u.gender))
    (tmp_path / "copy" / "bad.wav").write_bytes(b"not audio")
    bad = type(utts[0])(tmp_path / "copy" / "bad.wav", utts[0].label, "x", "F")
    first = load_frame_set([*utts[:2], bad, *utts[2:]], part.labels, ex, TRAIN_CROP, 0, cache)
    again = load_frame_set([*moved[:2], bad, *moved[2:]], part.labels, ex, TRAIN_CROP, 0, cache)
    assert again.source.table.folder == first.source.table.folder
    assert [s.path for s in again.skipped] == [str(bad.path)] and len(again) == 4


def test_finished_run_resumes_with_the_cache_off_and_reports_again(
    synth_corpus: Path, tmp_path: Path
) -> None:
    """Cache settings may change on resume; a finished run repeats its final report."""
    first = train(_cfg(synth_corpus, method="frozen", epochs=1, feature_cache_dir=tmp_path / "c"),
                  tmp_path / "run")  # fmt: skip
    reports = []
    again = train(_cfg(synth_corpus, method="frozen", epochs=1, feature_cache=False),
                  tmp_path / "run", on_epoch=reports.append)  # fmt: skip
    assert again.test == first.test
    assert [(r.epoch, r.done) for r in reports] == [(1, True)]
    assert reports[0].dev.uar == first.history[0]["dev"]["uar"]


def _never():
    pytest.fail("the entry was built again instead of fetched from the mirror")
    yield torch.zeros(1, 3)  # pragma: no cover


def test_mirror_shares_entries_between_nodes(tmp_path: Path) -> None:
    """A node without a shared file system fetches what another node built and uploaded."""
    mirror = f"file://{tmp_path / 'bucket'}"
    key = "m" * 64
    built = FeatureCache(tmp_path / "node-a", mirror).get_or_build(key, _items(3), {"who": "a"})
    uploaded = sorted(p.name for p in (tmp_path / "bucket" / key).iterdir())
    assert uploaded == ["index.json", "shard-00000.safetensors"]

    fetched = FeatureCache(tmp_path / "node-b", mirror).get_or_build(key, _never(), {"who": "b"})
    assert fetched.folder == (tmp_path / "node-b" / key).resolve()
    assert fetched.meta["who"] == "a"
    for i in range(3):
        assert torch.equal(fetched.features(i), built.features(i))
    assert not [p for p in (tmp_path / "node-b").iterdir() if ".fetch-" in p.name]


def test_local_entry_is_uploaded_when_a_mirror_is_added(tmp_path: Path) -> None:
    key = "l" * 64
    FeatureCache(tmp_path / "node-a").get_or_build(key, _items(2), {"who": "a"})
    mirror = f"file://{tmp_path / 'bucket'}"
    FeatureCache(tmp_path / "node-a", mirror).get_or_build(key, _never(), {})
    assert (tmp_path / "bucket" / key / "index.json").is_file()


def test_half_uploaded_entry_is_not_fetched(tmp_path: Path) -> None:
    """Shards without index.json (an upload cut short) are rebuilt locally, not read."""
    mirror = f"file://{tmp_path / 'bucket'}"
    key = "h" * 64
    FeatureCache(tmp_path / "node-a", mirror).get_or_build(key, _items(2), {"who": "a"})
    (tmp_path / "bucket" / key / "index.json").unlink()
    table = FeatureCache(tmp_path / "node-b", mirror).get_or_build(key, _items(2), {"who": "b"})
    assert table.meta["who"] == "b"
    assert (tmp_path / "bucket" / key / "index.json").is_file()  # b's upload completed it


def test_unreachable_mirror_costs_a_warning_not_the_run(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cache = FeatureCache(tmp_path / "c", f"file://{blocker}/sub")
    with caplog.at_level("WARNING", logger="trainables.data.cache"):
        table = cache.get_or_build("u" * 64, _items(2), {})
    assert len(table) == 2
    assert "could not upload" in caplog.text


WINDOWED = dict(method="frozen", epochs=1, eval_crop="full", eval_max_seconds=0.5)


def test_windowed_evaluation_is_the_same_with_the_cache_on_and_off(
    synth_corpus: Path, tmp_path: Path
) -> None:
    """Clips of 1.5-3 s evaluated as 0.5 s windows: cache off, built and hit agree exactly."""
    cache = tmp_path / "cache"
    runs = {
        name: train(
            _cfg(synth_corpus, feature_cache=on, feature_cache_dir=cache, **WINDOWED),
            tmp_path / name,
        )  # fmt: skip
        for name, on in (("off", False), ("built", True), ("hit", True))
    }
    for run in (runs["built"], runs["hit"]):
        assert [h["dev"] for h in run.history] == [h["dev"] for h in runs["off"].history]
        assert run.test == runs["off"].test
    bb = load_backbone("tiny-wavlm")
    cfg = _cfg(synth_corpus, feature_cache_dir=cache, **WINDOWED)
    cached = load_frame_splits(cfg, bb)
    live = load_frame_splits(_cfg(synth_corpus, feature_cache=False, **WINDOWED), bb)
    n_dev = len(partition(synth_corpus).dev)
    assert cached.windowed == live.windowed == {"train": 0, "dev": n_dev, "test": n_dev}
    assert cached.dev.owners == live.dev.owners and len(set(cached.dev.owners)) == n_dev
    assert len(cached.dev) > n_dev and cached.dev.source.table.meta["owners"] == live.dev.owners
    for i in range(len(live.dev)):
        assert torch.equal(cached.dev[i].features, live.dev[i].features)
    model, _ = build_model("tiny-wavlm", "frozen", {}, HeadConfig(), 4, seed=0)
    probs = [predict(model, make_loaders(cfg, s)["dev"], "cpu", False)[3] for s in (cached, live)]
    assert probs[0].shape == (n_dev, 4) and np.array_equal(probs[0], probs[1])
    other = load_frame_splits(_cfg(synth_corpus, feature_cache_dir=cache, **{
        **WINDOWED, "eval_max_seconds": 0.75}), bb)  # fmt: skip
    assert other.dev.source.table.folder != cached.dev.source.table.folder  # policy in the key


def test_waveform_and_frame_paths_window_alike(synth_corpus: Path, tmp_path: Path) -> None:
    """The ``full`` method's waveform windows and the frame path's give the same predictions."""
    cfg = _cfg(synth_corpus, feature_cache_dir=tmp_path, **WINDOWED)
    model, _ = build_model("tiny-wavlm", "frozen", {}, HeadConfig(), 4, seed=0)
    outputs = []
    for splits in (load_splits(cfg, 16000), load_frame_splits(cfg, model.backbone)):
        assert splits.windowed["test"] == len(partition(synth_corpus).test)
        outputs.append(predict(model, make_loaders(cfg, splits)["test"], "cpu", False))
    (y_wave, _, g_wave, p_wave), (y_frame, _, g_frame, p_frame) = outputs
    assert y_wave.tolist() == y_frame.tolist() and g_wave.tolist() == g_frame.tolist()
    assert len(y_wave) == len(partition(synth_corpus).test)  # one row per utterance
    np.testing.assert_allclose(p_wave, p_frame, atol=1e-5)
