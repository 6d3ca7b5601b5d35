"""One run end to end on the synthetic corpus: result files, determinism, resume, bad audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from trainables.config import TrainConfig
from trainables.data.dataset import ClipSet, collate
from trainables.export import load_adapter
from trainables.progress import Progress
from trainables.train import NonFiniteLossError, train

FAST = dict(backbone="tiny-wavlm", epochs=2, batch_size=16, max_seconds=1.0, lr=2e-3)
SUMMARY = {
    "uar",
    "wa",
    "macro_f1",
    "uar_gap_gender",
    "statistical_parity_gender",
    "equal_opportunity_gender",
}


def _cfg(manifest: Path, **kw) -> TrainConfig:
    return TrainConfig(manifest=manifest, **{**FAST, **kw})


def test_result_and_adapter_round_trip(synth_corpus: Path, tmp_path: Path) -> None:
    result = train(_cfg(synth_corpus, method="lora", method_options={"rank": 2}), tmp_path)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert set(on_disk["dev"]) == SUMMARY and set(on_disk["test"]) == SUMMARY
    for key in (
        "method",
        "backbone",
        "trainable_params",
        "adapter_bytes",
        "best_epoch",
        "skipped_files",
    ):
        assert key in on_disk
    assert on_disk["random_init"] is True
    assert on_disk["trainable_params"] == (
        on_disk["trainable_params_method"] + on_disk["trainable_params_head"]
    )
    assert on_disk["adapter_bytes"] == (tmp_path / "adapter/weights.safetensors").stat().st_size
    best = on_disk["history"][on_disk["best_epoch"] - 1]
    assert best["dev"]["uar"] == max(h["dev"]["uar"] for h in on_disk["history"])
    assert result.test["uar"] == best["test"]["uar"]  # reported test = at best dev epoch

    # The exported folder rebuilds a classifier that predicts exactly like the best epoch.
    loaded = load_adapter(tmp_path / "adapter")
    assert (tmp_path / "adapter/peft/adapter_config.json").is_file()
    clips = ClipSet(_test_utts(synth_corpus), loaded.labels, 16000, 1.0, "center")
    batch = collate([clips[i] for i in range(len(clips))])
    with torch.no_grad():
        pred = loaded.model(batch.waves, batch.lengths).argmax(-1).numpy()
    acc = float((pred == batch.labels.numpy()).mean())
    assert acc == pytest.approx(on_disk["test"]["wa"])


def _test_utts(manifest: Path):
    from trainables.data.manifest import partition

    return partition(manifest).test


def test_same_seed_same_result(synth_corpus: Path, tmp_path: Path) -> None:
    a = train(_cfg(synth_corpus, method="adapter", epochs=1), tmp_path / "a")
    b = train(_cfg(synth_corpus, method="adapter", epochs=1), tmp_path / "b")
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert a.test == b.test


def test_resume_after_interruption_matches_uninterrupted(synth_corpus: Path, tmp_path) -> None:
    cfg = _cfg(synth_corpus, method="prompt", epochs=2)
    full = train(cfg, tmp_path / "full")

    def crash(report) -> None:
        if report.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", on_epoch=crash)
    resumed = train(cfg, tmp_path / "cut")
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[1]["train_loss"] == pytest.approx(full.history[1]["train_loss"])
    assert resumed.test == full.test


def test_checkpoint_of_another_config_is_refused(synth_corpus: Path, tmp_path: Path) -> None:
    train(_cfg(synth_corpus, method="frozen", epochs=1), tmp_path)
    with pytest.raises(ValueError, match="different configuration"):
        train(_cfg(synth_corpus, method="frozen", epochs=1, lr=1e-3), tmp_path)


def test_bad_audio_is_skipped_and_counted(synth_corpus: Path, tmp_path: Path) -> None:
    """Corrupt and empty files are skipped; stereo 44.1 kHz audio is mixed and resampled."""
    table = pd.read_parquet(synth_corpus)
    table["path"] = [str((synth_corpus.parent / p).resolve()) for p in table["path"]]
    train_rows = table.index[table["split"] == "train"]
    corrupt, empty, stereo = (tmp_path / n for n in ("corrupt.wav", "empty.wav", "stereo.wav"))
    corrupt.write_bytes(b"RIFF\x00\x00not really a wav" * 10)
    sf.write(empty, np.zeros(0), 16000)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(44100) / 44100)
    sf.write(stereo, np.stack([tone, tone], axis=1), 44100)
    for row, path in zip(train_rows[:3], (corrupt, empty, stereo)):
        table.loc[row, "path"] = str(path)
    manifest = tmp_path / "m.parquet"
    table.to_parquet(manifest)
    result = train(_cfg(manifest, method="frozen", epochs=1), tmp_path / "run")
    assert result.skipped_files == 2
    assert sorted(Path(s["path"]).name for s in result.skipped) == ["corrupt.wav", "empty.wav"]


def test_nan_loss_fails_loudly(synth_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    from trainables import model as model_mod

    monkeypatch.setattr(
        model_mod.Head, "forward", lambda self, s, m: self.classifier(self.pooled(s, m)) * np.nan
    )
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        train(_cfg(synth_corpus, method="frozen", epochs=1), tmp_path)


def test_data_warnings_and_eval_windows_reach_the_result(synth_corpus: Path, tmp_path) -> None:
    """The 4-speaker corpus shares its dev and test speakers: a warning, not an error; clips
    longer than eval_max_seconds are scored as windows, and the result says so."""
    result = train(
        _cfg(synth_corpus, method="frozen", epochs=1, eval_crop="full", eval_max_seconds=0.5),
        tmp_path,
    )
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert any("appear in both dev and test" in w for w in on_disk["warnings"])
    windowed = on_disk["eval_windows"]["windowed_files"]
    assert on_disk["eval_windows"]["max_seconds"] == 0.5
    assert windowed["dev"] > 0 and windowed["test"] > 0  # synthetic clips last ~2 s
    assert any("eval_max_seconds=0.5" in w for w in result.warnings)
    meta = json.loads((tmp_path / "adapter/emotune.json").read_text())
    assert meta["eval_max_seconds"] == 0.5  # predict windows the same way


def test_a_crop_too_short_for_one_frame_is_refused(synth_corpus: Path, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"max_seconds=0.001 s is shorter than one frame"):
        train(_cfg(synth_corpus, method="frozen", max_seconds=0.001), tmp_path)
    assert not (tmp_path / "result.json").exists()


def test_progress_keeps_the_first_of_equal_best_epochs() -> None:
    model = torch.nn.Linear(2, 1)
    progress = Progress()
    assert progress.track_best(1, 0.5, model) and progress.best_weights.keys() == {
        "weight", "bias"
    }  # fmt: skip
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not progress.track_best(2, 0.5, model)  # a tie is not better
    assert not progress.track_best(3, 0.4, model)
    assert (progress.epoch, progress.best_epoch, progress.since_best) == (3, 1, 2)
    assert not torch.equal(progress.best_weights["weight"], model.weight.detach())
    assert progress.state() == {
        "epoch": 3, "best_epoch": 1, "best_dev_uar": 0.5, "since_best": 2, "history": []
    }  # fmt: skip


def test_patience_stops_at_the_first_epoch_without_a_better_dev_uar(
    synth_corpus: Path, tmp_path: Path
) -> None:
    reports = []
    cfg = _cfg(synth_corpus, method="frozen", epochs=4, patience=1, schedule="plateau")
    result = train(cfg, tmp_path, on_epoch=reports.append)
    uars = [h["dev"]["uar"] for h in result.history]
    stale = [e for e in range(2, len(uars) + 1) if uars[e - 1] <= max(uars[: e - 1])]
    assert result.epochs_run == len(uars) == (stale[0] if stale else 4)
    assert [r.epoch for r in reports] == list(range(1, len(uars) + 1))
    assert [r.done for r in reports] == [False] * (len(uars) - 1) + [True]
    assert [r.is_best for r in reports] == [r.epoch == r.best_epoch for r in reports]
    assert reports[-1].best_dev_uar == max(uars) == result.dev["uar"]
