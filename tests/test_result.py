"""RunResult: the typed result.json, written by the trainer and read by the driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainables.result import SUMMARY_KEYS, RunResult, summary

# The keys of result.json before RunResult existed (single run, then cross-validation).
RUN_KEYS = {
    "method", "method_options", "backbone", "random_init", "labels", "dev", "test",
    "dev_details", "test_details", "trainable_params", "trainable_params_method",
    "trainable_params_head", "adapter_bytes", "best_epoch", "epochs_run", "skipped_files",
    "skipped", "seconds", "config", "warnings", "eval_windows", "fingerprint", "history",
}  # fmt: skip
FOLD_KEYS = {
    "method", "method_options", "backbone", "random_init", "labels", "trainable_params",
    "trainable_params_method", "trainable_params_head", "adapter_bytes", "best_epoch",
    "history", "dev", "test", "folds", "selected_fold", "skipped_files", "seconds",
}  # fmt: skip


def _metrics(uar: float) -> dict:
    return {**dict.fromkeys(SUMMARY_KEYS, 0.5), "uar": uar, "confusion": [[1, 0], [0, 1]]}


def _common() -> dict:
    return dict(
        method="lora", method_options={"rank": 2}, backbone="tiny-wavlm", random_init=True,
        labels=["a", "b"], dev=summary(_metrics(0.6)), test=summary(_metrics(0.4)),
        trainable_params=10, trainable_params_method=6, trainable_params_head=4,
        adapter_bytes=100, best_epoch=1, skipped_files=0, seconds=1.5,
        history=[{"epoch": 1, "dev": _metrics(0.6), "test": _metrics(0.4)}],
    )  # fmt: skip


def test_single_run_keys_and_round_trip(tmp_path: Path) -> None:
    run = RunResult(
        **_common(), dev_details=_metrics(0.6), test_details=_metrics(0.4), epochs_run=1,
        skipped=[], config={"seed": 0}, warnings=[], eval_windows={"max_seconds": 60.0},
        fingerprint={"labels": ["a", "b"]},
    )  # fmt: skip
    assert set(run.to_json()) == RUN_KEYS and not run.cross_validated
    path = run.write(tmp_path)
    assert set(json.loads(path.read_text())) == RUN_KEYS
    assert RunResult.read(tmp_path) == run
    assert summary(_metrics(0.6)) == {**dict.fromkeys(SUMMARY_KEYS, 0.5), "uar": 0.6}


def test_cross_validation_keys() -> None:
    cv = RunResult(**_common(), folds=[{"fold": 1, "dev": {}, "test": {}}], selected_fold=1)
    assert set(cv.to_json()) == FOLD_KEYS and cv.cross_validated
    assert RunResult.from_json(cv.to_json()) == cv


def test_unknown_or_missing_keys_name_the_file(tmp_path: Path) -> None:
    data = RunResult(**_common()).to_json()
    with pytest.raises(ValueError, match=r"x/result\.json: not an emotune result .*'surprise'"):
        RunResult.from_json({**data, "surprise": 1}, "x/result.json")
    del data["dev"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['dev'\]"):
        RunResult.from_json(data)
    (tmp_path / "result.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        RunResult.read(tmp_path)
