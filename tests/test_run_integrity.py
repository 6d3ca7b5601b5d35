"""A run folder holds one run: resume only the same run, remove only what emotune wrote, and
never let two processes write it at once (issue 10, items 1-3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from search.cli import main
from trainables import rundir
from trainables.backbones import build_preset_model
from trainables.config import TrainConfig
from trainables.folds import train_folds
from trainables.train import train

FAST = dict(backbone="tiny-wavlm", method="frozen", epochs=1, batch_size=16, max_seconds=1.0)


def _copy_manifest(src: Path, dst: Path) -> Path:
    """A copy of ``src`` at ``dst`` with absolute audio paths (so it can be edited in place)."""
    table = pd.read_parquet(src)
    table["path"] = [str((src.parent / p).resolve()) for p in table["path"]]
    table.to_parquet(dst)
    return dst


def test_resume_after_the_manifest_changed_is_refused(synth_corpus: Path, tmp_path: Path) -> None:
    """Same path, other rows: resuming would report the old metrics and relabel the head."""
    manifest = _copy_manifest(synth_corpus, tmp_path / "m.parquet")
    out = tmp_path / "run"
    train(TrainConfig(manifest=manifest, **FAST), out)
    adapter_meta = (out / "adapter/emotune.json").read_bytes()
    result = (out / "result.json").read_bytes()

    table = pd.read_parquet(manifest)
    table["label"] = table["label"].replace({"sad": "unhappy"})  # label map order changes
    table.to_parquet(manifest)
    with pytest.raises(ValueError, match="manifest's content changed") as err:
        train(TrainConfig(manifest=manifest, **FAST), out)
    assert "label map changed" in str(err.value)
    # Nothing of the finished run was rewritten.
    assert (out / "adapter/emotune.json").read_bytes() == adapter_meta
    assert (out / "result.json").read_bytes() == result


def test_resume_of_the_same_run_is_accepted(synth_corpus: Path, tmp_path: Path) -> None:
    first = train(TrainConfig(manifest=synth_corpus, **FAST), tmp_path)
    again = train(TrainConfig(manifest=synth_corpus, **FAST), tmp_path)
    assert again.dev == first.dev and again.fingerprint == first.fingerprint
    assert set(first.fingerprint) == {
        "config", "manifest_sha256", "labels", "backbone_sha256", "input_normalization"
    }
    assert first.fingerprint["backbone_sha256"]  # the base weights were hashed


def test_resume_on_other_backbone_weights_is_refused(synth_corpus: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bb"
    build_preset_model("tiny-wavlm").save_pretrained(folder)
    cfg = TrainConfig(manifest=synth_corpus, **{**FAST, "backbone": str(folder)})
    train(cfg, tmp_path / "run")
    model = build_preset_model("tiny-wavlm")
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # someone re-downloaded or edited the weights
    model.save_pretrained(folder)
    with pytest.raises(ValueError, match="backbone's weights changed"):
        train(cfg, tmp_path / "run")


def test_reused_fold_of_another_manifest_is_refused(tmp_path: Path) -> None:
    from trainables.data.synth import synthesize

    manifest = _copy_manifest(
        synthesize(tmp_path / "six", speakers=6, per_class=2, seed=1), tmp_path / "f.parquet"
    )
    cfg = TrainConfig(manifest=manifest, **FAST)
    train_folds(cfg, tmp_path / "cv", folds=[0, 1])
    table = pd.read_parquet(manifest)
    table.iloc[::-1].to_parquet(manifest)  # same rows in another order: another run
    with pytest.raises(ValueError, match="fold_0 holds a different run"):
        train_folds(cfg, tmp_path / "cv", folds=[0, 1])


def test_out_with_files_emotune_did_not_write_is_refused(synth_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "checkpoint").mkdir(parents=True)
    precious = out / "checkpoint" / "my_model.pt"
    precious.write_bytes(b"weights of a week of training")
    with pytest.raises(rundir.FolderError, match="not made by emotune"):
        train(TrainConfig(manifest=synth_corpus, **FAST), out)
    assert precious.read_bytes() == b"weights of a week of training"
    assert not (out / rundir.MARKER).exists()


class _Stop(Exception):
    pass


def _stop(report) -> None:
    raise _Stop  # an interrupted run: epoch 1 of 2 checkpointed


def test_checkpoint_rotation_keeps_foreign_files(synth_corpus: Path, tmp_path: Path) -> None:
    """Inside an emotune folder too: the checkpoint folder is replaced only if it holds ours."""
    out, cfg = tmp_path / "run", TrainConfig(manifest=synth_corpus, **{**FAST, "epochs": 2})
    with pytest.raises(_Stop):
        train(cfg, out, on_epoch=_stop)
    precious = out / "checkpoint" / "notes.txt"
    precious.write_text("mine")
    with pytest.raises(rundir.FolderError, match="notes.txt"):
        train(cfg, out)  # resumes, then would rotate the checkpoint folder after epoch 2
    assert precious.read_text() == "mine"
    precious.unlink()
    assert train(cfg, out).epochs_run == 2


def test_out_of_another_kind_or_a_file_is_refused(tmp_path: Path) -> None:
    rundir.claim(tmp_path / "s", "search")
    with pytest.raises(rundir.FolderError, match="'search' folder, not a 'run' folder"):
        rundir.claim(tmp_path / "s", "run")
    (tmp_path / "f").write_text("x")
    with pytest.raises(rundir.FolderError, match="not a folder"):
        rundir.claim(tmp_path / "f", "run")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / rundir.MARKER).write_text("not json")
    with pytest.raises(rundir.FolderError, match="not an emotune marker"):
        rundir.claim(tmp_path / "bad", "run")


def _hold_lock(folder: Path) -> subprocess.Popen:
    """A second process that holds ``folder``'s lock until its stdin closes."""
    code = (
        "import sys; from trainables import rundir\n"
        f"with rundir.owned({str(folder)!r}, 'run', '--out'):\n"
        "    print('locked', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"  # waits for the lock, not for a clock
    return proc


def test_second_process_on_one_out_is_refused(synth_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        with pytest.raises(rundir.FolderBusyError, match=f"pid {holder.pid}"):
            train(TrainConfig(manifest=synth_corpus, **FAST), out)
        assert not (out / "result.json").exists()
    finally:
        holder.stdin.close()
        holder.wait()
    train(TrainConfig(manifest=synth_corpus, **FAST), out)  # free again once the holder exits
    assert (out / "result.json").is_file()


def test_cli_says_busy_and_stale_in_one_line(synth_corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "--manifest", str(synth_corpus), "--method", "frozen", "--epochs", "1",
            "--max-seconds", "1", "--out", str(out)]  # fmt: skip
    holder = _hold_lock(out)
    try:
        assert main(args) == 2
    finally:
        holder.stdin.close()
        holder.wait()
    err = capsys.readouterr().err
    assert "in use by another emotune process" in err and "Traceback" not in err
    assert main(args) == 0
    assert main([*args[:-2], "--lr", "0.001", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "Traceback" not in err
    assert json.loads((out / "result.json").read_text())["config"]["lr"] == 5e-4
