"""--folds all: the honest (nested) test estimate, per-fold values of stopped trials, the front
and the export compare trials on the same folds, and a restarted trial reports each fold once.

Bug named: under --folds all the winner (best mean dev UAR over folds, where each fold's test
data is another fold's dev data) had only its mean test UAR reported, an optimistic figure.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow import MlflowClient

from search.card import model_card
from search.nested import nested_cv, nested_run_metrics
from search.pareto import TrialRecord, front_table
from search.records import record_of
from search.selection import select_best
from search.tune import SearchSettings, run_search
from spaces import SpaceConfig
from trainables.ray_entry import fold_metrics, fold_reporter
from trainables.result import SUMMARY_KEYS, RunResult

FOLDS = [0, 1, 2]


def _summary(uar: float, wa: float | None = None) -> dict[str, float | None]:
    return dict.fromkeys(SUMMARY_KEYS, None) | {"uar": uar, "wa": wa, "macro_f1": uar}


def _folds(dev: list[float], test: list[float], folds: list[int] = FOLDS) -> list[dict]:
    return [
        {"fold": k, "dev": _summary(d), "test": _summary(t, wa=t - 0.1)}
        for k, d, t in zip(folds, dev, test, strict=True)
    ]


def _record(tid: str, number: int, folds: list[dict], state: str = "COMPLETE") -> TrialRecord:
    dev = statistics.fmean(f["dev"]["uar"] for f in folds)
    test = statistics.fmean(f["test"]["uar"] for f in folds)
    return TrialRecord(
        trial_id=tid, number=number, state=state, method="lora", dev={"uar": dev},
        test={"uar": test}, trainable_params=1000 * (number + 1), folds=folds,
        adapter_dir=f"/x/{tid}/adapter" if state == "COMPLETE" else None,
    )  # fmt: skip


# Hand-made: A has the best mean dev UAR (0.800 vs 0.793) but B wins fold 1 on its own dev
# UAR; P (stopped by ASHA after fold 0) wins fold 0 and takes no part in anything else.
A = _record("a", 0, _folds(dev=[0.80, 0.70, 0.90], test=[0.60, 0.50, 0.55]))
B = _record("b", 1, _folds(dev=[0.75, 0.78, 0.85], test=[0.70, 0.65, 0.68]))
P = _record("p", 2, _folds(dev=[0.95], test=[0.40], folds=[0]), state="PRUNED")


def test_nested_estimate_chooses_per_fold_on_that_folds_dev_only() -> None:
    block = nested_cv([A, B, P], FOLDS)
    chosen = [(f["fold"], f["trial_id"], f["candidates"]) for f in block["per_fold"]]
    assert chosen == [(0, "p", 3), (1, "b", 2), (2, "a", 2)]
    assert [f["selection_dev_uar"] for f in block["per_fold"]] == [0.95, 0.78, 0.90]
    assert [f["test_uar"] for f in block["per_fold"]] == [0.40, 0.65, 0.55]
    # nested = (0.40 + 0.65 + 0.55) / 3; sample std over the three folds.
    assert block["nested_test_uar"] == pytest.approx(1.60 / 3)
    assert block["nested_test_uar_std"] == pytest.approx(statistics.stdev([0.40, 0.65, 0.55]))
    assert block["nested_test_wa"] == pytest.approx((0.30 + 0.55 + 0.45) / 3)
    assert block["n_folds"] == 3 and block["cv_folds"] == FOLDS
    # Leaky: best mean dev among full-CV trials is A (P's 0.95 covers one fold only).
    assert block["leaky_trial_id"] == "a"
    assert block["leaky_best_mean_test_uar"] == pytest.approx(0.55)
    assert block["leaky_best_mean_test_uar"] != pytest.approx(block["nested_test_uar"])
    assert "dev" not in block["definition"].split("=")[0]  # the name is not a dev score
    means = {t["trial_id"]: t for t in block["trials"]}
    assert means["p"]["folds_finished"] == [0]
    assert means["b"]["mean_dev_uar_over_folds"] == pytest.approx((0.75 + 0.78 + 0.85) / 3)
    assert means["b"]["mean_test_uar_over_folds"] == pytest.approx((0.70 + 0.65 + 0.68) / 3)


def test_ties_go_to_the_lower_trial_number_and_missing_folds_void_the_estimate() -> None:
    late = _record("late", 5, _folds(dev=[0.8, 0.8, 0.8], test=[0.1, 0.1, 0.1]))
    early = _record("early", 3, _folds(dev=[0.8, 0.8, 0.8], test=[0.9, 0.9, 0.9]))
    block = nested_cv([late, early], FOLDS)
    assert {f["trial_id"] for f in block["per_fold"]} == {"early"}
    assert block["leaky_trial_id"] == "early"
    only_fold_0 = nested_cv([P], FOLDS)
    assert only_fold_0["nested_test_uar"] is None
    assert [f["candidates"] for f in only_fold_0["per_fold"]] == [1, 0, 0]
    metrics = nested_run_metrics(only_fold_0)
    assert "nested_cv_test_uar" not in metrics and metrics["nested_cv_test_uar_fold_0"] == 0.40


def test_nested_run_metrics_names() -> None:
    metrics = nested_run_metrics(nested_cv([A, B, P], FOLDS))
    assert metrics["nested_cv_test_uar"] == pytest.approx(1.60 / 3)
    assert metrics["leaky_best_mean_test_uar"] == pytest.approx(0.55)
    assert [metrics[f"nested_cv_test_uar_fold_{k}"] for k in FOLDS] == [0.40, 0.65, 0.55]
    assert metrics["nested_cv_candidates_fold_0"] == 3 and metrics["nested_cv_n_folds"] == 3


def test_front_and_export_take_only_trials_that_finished_every_fold() -> None:
    # A record that claims COMPLETE with one fold (never made today, but the rule must hold).
    odd = _record("odd", 4, _folds(dev=[0.99], test=[0.1], folds=[0]))
    df = front_table([A, B, P, odd], ["uar", "params"], folds=FOLDS)
    assert set(df["trial_id"]) == {"a", "b"}
    assert set(front_table([A, B, P, odd], ["uar", "params"])["trial_id"]) == {"a", "b", "odd"}
    trials = [t.to_dict() for t in (A, B, P, odd)]
    assert select_best(trials, folds=FOLDS)["trial_id"] == "a"
    assert select_best(trials)["trial_id"] == "odd"
    with pytest.raises(ValueError, match=r"finished every fold \[0, 1, 2\]"):
        select_best([odd.to_dict()], folds=FOLDS)


def test_single_split_records_have_no_folds_key() -> None:
    assert "folds" not in TrialRecord(trial_id="t").to_dict()
    assert TrialRecord.from_dict(A.to_dict()) == A


def _aggregate(folds: list[dict]) -> RunResult:
    return RunResult(
        method="frozen", method_options={}, backbone="tiny-wavlm", random_init=True,
        labels=["a", "b"], dev=folds[-1]["dev"], test=folds[-1]["test"], trainable_params=9,
        trainable_params_method=0, trainable_params_head=9, adapter_bytes=1, best_epoch=1,
        skipped_files=0, seconds=1.0, history=[], folds=folds, selected_fold=0,
    )  # fmt: skip


def test_a_stopped_trials_record_keeps_the_folds_it_finished(tmp_path: Path) -> None:
    """The last report of a trial that ASHA stops after fold 1 carries folds 0 and 1."""
    folds = _folds(dev=[0.7, 0.6], test=[0.5, 0.4], folds=[0, 1])
    folds[1]["test"]["uar_gap_gender"] = None  # None -> NaN for Ray -> None again
    last = fold_metrics(_aggregate(folds), folds_done=2, last=False)
    assert last["fold"] == 1 and last["fold_0_dev_uar"] == 0.7 and last["fold_1_test_uar"] == 0.4
    record = record_of("t", {"method": "frozen"}, last, None, tmp_path / "none", number=0)
    assert record.state == "PRUNED"
    assert record.folds == folds
    assert nested_cv([record], [0, 1])["nested_test_uar"] == pytest.approx(0.45)


class _Sent:
    """Stands in for a trial: records what would be reported to Tune."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.reports: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], folder: Path) -> None:
        self.reports.append(metrics)


@pytest.mark.parametrize(("restored", "epochs"), [(set(), [1, 2, 3]), ({0, 1}, [3]),
                                                   ({0, 1, 2}, [3])])  # fmt: skip
def test_a_restarted_trial_reports_each_fold_once(
    tmp_path: Path, restored: set[int], epochs: list[int]
) -> None:
    """Tune restores training_iteration with the checkpoint: folds it holds must not be
    reported again, or ASHA's clock (finished folds) runs ahead; the final report always goes."""
    trial = _Sent(tmp_path / "emotune")
    (trial.out_dir / "adapter").mkdir(parents=True)  # what the last report stages
    (trial.out_dir / "result.json").write_text("{}")
    report = fold_reporter(trial, restored)  # type: ignore[arg-type]
    folds = _folds(dev=[0.7, 0.6, 0.5], test=[0.5, 0.4, 0.3])
    for n in (1, 2, 3):
        report(_aggregate(folds[:n]), n == 3)
    assert [r["epoch"] for r in trial.reports] == epochs
    assert [r["fold"] for r in trial.reports] == [e - 1 for e in epochs]
    assert trial.reports[-1]["final"] is True and trial.reports[-1]["fold_2_dev_uar"] == 0.5


def test_card_names_the_honest_estimate() -> None:
    block = nested_cv([A, B, P], FOLDS)
    meta = {
        "labels": ["a", "b"], "backbone": "tiny-wavlm", "random_init": True, "method": "frozen",
        "method_options": {}, "sample_rate": 16000, "eval_crop": "center", "max_seconds": 1.0,
    }  # fmt: skip
    trial = {**A.to_dict(), "adapter_bytes": 10}
    facts = {
        "adapter_meta": meta, "trial": trial, "model_name": "m", "dataset": "d",
        "objective_metric": "uar", "larger_is_better": True, "candidates": 2, "trials": 3,
        "max_params": None, "search_file": "s.json", "registered_model": None,
        "nested_cv": {k: v for k, v in block.items() if k != "trials"},
    }  # fmt: skip
    card = model_card(facts, "champion")
    section = card.split("## Cross-validated test estimate")[1].split("## Usage")[0]
    assert f"**{block['nested_test_uar']:.4f}**" in section and "over\n3 folds" in section
    assert f"{0.55:.4f}" in section  # the trial's own mean test UAR, and the leaky one
    assert "## Cross-validated" not in model_card({**facts, "nested_cv": None}, "champion")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _recompute(trials: list[dict[str, Any]], fold: int) -> tuple[str, float]:
    """Independent of search.nested: the trial with the best fold-``fold`` dev UAR."""
    rows = [
        (-f["dev"]["uar"], t["number"], t["trial_id"], f["test"]["uar"])
        for t in trials
        for f in t.get("folds") or []
        if f["fold"] == fold and f["dev"]["uar"] is not None and math.isfinite(f["dev"]["uar"])
    ]
    best = min(rows)
    return best[2], best[3]


def test_search_folds_all_reports_the_nested_estimate(local_ray, tmp_path: Path) -> None:
    from trainables.data.synth import synthesize

    manifest = synthesize(tmp_path / "six", speakers=6, per_class=3, seed=1)
    space = {"methods": ["frozen", "lora"], "epochs": 1, "lora": {"rank": {"low": 1, "high": 2}}}
    settings = SearchSettings(
        manifests=(manifest,), trials=3, concurrency=2, storage=tmp_path, name="n",
        space=SpaceConfig.from_dict(space), base={"max_seconds": 1.0, "batch_size": 16, "seed": 0},
        all_folds=True, grace_period=1,
    )  # fmt: skip
    summary = run_search(settings)[0]
    on_disk = json.loads((tmp_path / "n" / summary["dataset"] / "search.json").read_text())
    block, trials = on_disk["nested_cv"], on_disk["trials"]
    assert block["cv_folds"] == FOLDS and block["definition"]
    for t in trials:  # every trial's finished folds reached the driver, in the same order
        assert [f["fold"] for f in t["folds"]] == FOLDS[: len(t["folds"])]
        if t["state"] == "COMPLETE":
            assert [f["fold"] for f in t["folds"]] == FOLDS
    scores = []
    for entry, k in zip(block["per_fold"], FOLDS, strict=True):
        trial_id, test_uar = _recompute(trials, k)
        assert (entry["fold"], entry["trial_id"]) == (k, trial_id)
        assert entry["test_uar"] == pytest.approx(test_uar)
        assert entry["candidates"] == sum(k in [f["fold"] for f in t["folds"]] for t in trials)
        scores.append(test_uar)
    assert block["nested_test_uar"] == pytest.approx(statistics.fmean(scores))
    assert set(on_disk["front"]) <= {t["trial_id"] for t in trials if t["state"] == "COMPLETE"}

    client = MlflowClient(on_disk["mlflow"]["tracking_uri"])
    parent = client.get_run(on_disk["mlflow"]["parent_run_id"]).data
    assert parent.metrics["nested_cv_test_uar"] == pytest.approx(block["nested_test_uar"])
    for k, score in zip(FOLDS, scores, strict=True):
        assert parent.metrics[f"nested_cv_test_uar_fold_{k}"] == pytest.approx(score)
    assert parent.metrics["leaky_best_mean_test_uar"] == pytest.approx(
        block["leaky_best_mean_test_uar"]
    )
    assert json.loads(parent.tags["emotune.nested_cv_trials"]) == {
        str(f["fold"]): f["trial_id"] for f in block["per_fold"]
    }
