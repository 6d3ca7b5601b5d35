"""The search driver reads results typed (``RunResult``), without the trainer, and the model
card takes each method's own text from the method."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from search.card import model_card
from search.records import record_of
from trainables.methods import METHODS
from trainables.result import SUMMARY_KEYS, RunResult

DEV = dict.fromkeys(SUMMARY_KEYS, 0.5) | {"uar": 0.6}
TEST = dict.fromkeys(SUMMARY_KEYS, 0.4) | {"equal_opportunity_gender": None}
FOLDS = [{"fold": k, "dev": DEV, "test": TEST} for k in (1, 2)]
LAST = {"final": True, "node": "host", "node_id": "abcdef0123456789ff"}
# What the card said about LoRA before methods carried their own text (kept byte for byte).
LORA_USAGE = """
The LoRA weights alone, as a peft folder, on the base backbone's Hugging Face model:

```python
from peft import PeftModel
model = PeftModel.from_pretrained(base_model, "DIR/peft")
```
"""


def _result(**extra: Any) -> RunResult:
    return RunResult(
        method="lora",
        method_options={"rank": 2},
        backbone="tiny-wavlm",
        random_init=True,
        labels=["angry", "happy"],
        dev=DEV,
        test=TEST,
        trainable_params=1000,
        trainable_params_method=800,
        trainable_params_head=200,
        adapter_bytes=4000,
        best_epoch=2,
        skipped_files=0,
        seconds=1.5,
        history=[{"epoch": 1, "train_loss": 1.0, "lr": 1e-3, "dev": DEV, "test": TEST}],
        **extra,
    )


@pytest.mark.parametrize(
    "extra",
    [{"warnings": ["3 clips are shorter than 0.5 s"]}, {"folds": FOLDS, "selected_fold": 2}],
    ids=["single", "cross-validated"],
)
def test_record_of_a_complete_trial_reads_its_result(tmp_path: Path, extra: dict) -> None:
    result = _result(**extra)
    result.write(tmp_path)
    config = {"method": "lora", "rank": 2, "_base": "hidden"}
    record = record_of("t1", config, LAST, None, tmp_path, number=3)
    assert (record.state, record.number, record.method) == ("COMPLETE", 3, "lora")
    assert record.params == {"method": "lora", "rank": 2}
    assert (record.dev, record.test, record.history) == (DEV, TEST, result.history)
    assert (record.trainable_params, record.adapter_bytes, record.best_epoch) == (1000, 4000, 2)
    assert record.adapter_dir == str(tmp_path / "adapter")
    assert record.node == "host (abcdef012345)"
    assert record.warnings == extra.get("warnings", [])


def test_record_of_refuses_a_result_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text(json.dumps({**_result().to_json(), "bogus": 1}))
    with pytest.raises(ValueError, match="not an emotune result"):
        record_of("t1", {"method": "lora"}, LAST, None, tmp_path)


def test_record_of_unfinished_trials_reads_the_last_report(tmp_path: Path) -> None:
    _result().write(tmp_path)  # ignored: the trial did not finish
    last = {"dev_uar": 0.55, "test_uar": float("nan"), "trainable_params": 10, "best_epoch": 1}
    pruned = record_of("t1", {"method": "lora"}, last, None, tmp_path)
    assert (pruned.state, pruned.dev["uar"], pruned.test["uar"]) == ("PRUNED", 0.55, None)
    assert (pruned.trainable_params, pruned.adapter_dir, pruned.node) == (10, None, None)
    failed = record_of("t2", {"method": "lora"}, {**LAST, **last}, "boom", tmp_path)
    assert (failed.state, failed.error, failed.history) == ("FAILED", "boom", [])


def _facts(method: str) -> dict[str, Any]:
    meta = {
        "labels": ["angry", "happy"],
        "backbone": "tiny-wavlm",
        "random_init": True,
        "method": method,
        "method_options": {},
        "sample_rate": 16000,
        "eval_crop": "center",
        "max_seconds": 1.0,
    }
    trial = {"trial_id": "t1", "number": 0, "dev": DEV, "test": TEST, "trainable_params": 1000}
    trial |= {"adapter_bytes": 4000, "best_epoch": 2, "mlflow_run_id": "r1"}
    return {
        "model_name": "emotune-corpus",
        "dataset": "corpus",
        "adapter_meta": meta,
        "trial": trial,
        "objective_metric": "uar",
        "larger_is_better": True,
        "candidates": 2,
        "trials": 3,
        "max_params": None,
        "search_file": "s/search.json",
        "registered_model": None,
    }


@pytest.mark.parametrize("method", METHODS.names())
def test_card_adds_the_methods_own_text(method: str) -> None:
    card = model_card(_facts(method), "champion")
    usage = METHODS.get(method).card_usage
    # The generic part ends with the load_adapter example; the method's text follows it.
    tail = 'loaded = load_adapter("DIR")  # .model, .labels, .meta\n```\n'
    assert card.endswith(usage) and card[: len(card) - len(usage)].endswith(tail)
    registered = model_card(_facts(method) | {"registered_model": "emotune-corpus"}, "champion")
    assert registered.startswith(card) and "models:/emotune-corpus@champion" in registered


def test_lora_card_text_is_unchanged() -> None:
    assert model_card(_facts("lora"), "champion").endswith(LORA_USAGE)
    assert "PeftModel" not in model_card(_facts("frozen"), "champion")


def test_driver_modules_do_not_import_the_trainer() -> None:
    modules = ("records", "pareto", "card", "export", "selection", "tracking", "figures")
    code = (
        "import sys\n"
        + "".join(f"import search.{m}\n" for m in modules)
        + "print('trainables.train' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_export_selection_imports_no_torch() -> None:
    """The CLI lists the export objectives from search.selection without loading torch."""
    code = "import sys\nimport search.selection\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
