"""MLflow tracking of a search on a temporary SQLite store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from search.pareto import TrialRecord
from search.tracking import SearchTracker, default_tracking_uri, ui_hint

OBJ = ["uar", "params"]


def _trial(tid: str, uar: float, params: int, state: str = "COMPLETE") -> TrialRecord:
    return TrialRecord(
        trial_id=tid,
        number=int(tid.split("_")[-1]),
        state=state,
        method="lora",
        params={"lr": 1e-3, "rank": 8},
        dev={
            "uar": uar,
            "wa": 0.5,
            "macro_f1": 0.4,
            "uar_gap_gender": 0.1,
            "statistical_parity_gender": 0.05,
            "equal_opportunity_gender": None,
        },
        test={"uar": uar - 0.05, "wa": 0.45},
        trainable_params=params,
        adapter_bytes=None if state != "COMPLETE" else 4 * params,
        best_epoch=1,
        history=[
            {
                "epoch": e,
                "train_loss": 1.0 / (e + 1),
                "lr": 1e-3,
                "dev": {"uar": uar - 0.1 + 0.05 * e},
                "test": {"uar": uar - 0.2 + 0.05 * e},
            }
            for e in range(3)
        ],
        error="Traceback: boom" if state == "FAILED" else None,
    )


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite file (creating the schema costs seconds; copying is free)."""
    root = tmp_path_factory.mktemp("mlflow_template")
    MlflowClient(default_tracking_uri(root)).search_experiments()
    return root / "mlflow.db"


@pytest.fixture
def tracker(tmp_path: Path, empty_db: Path) -> SearchTracker:
    (tmp_path / "search").mkdir()
    shutil.copy(empty_db, tmp_path / "search" / "mlflow.db")
    return SearchTracker(default_tracking_uri(tmp_path / "search"), "emotune-test")


def _parent(tracker: SearchTracker) -> str:
    return tracker.parent_run(
        "wavlm/iemocap/abc123",
        {"backbone": "wavlm", "dataset": "iemocap", "objectives": OBJ, "space": "x" * 7000},
        {"emotune.dataset": "iemocap"},
    )


def test_uri_and_hint(tmp_path: Path) -> None:
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db" and uri.startswith("sqlite:////")
    hint = ui_hint(uri, "3")
    assert "--host 127.0.0.1 --port 5000" in hint
    assert "http://127.0.0.1:5000/#/experiments/3/runs" in hint


def test_parent_created_once(tracker: SearchTracker, tmp_path: Path) -> None:
    first = _parent(tracker)
    assert _parent(tracker) == first
    # another tracker (a resumed driver) on the same store finds it too
    again = SearchTracker(tracker.tracking_uri, "emotune-test")
    assert _parent(again) == first
    run = tracker.client.get_run(first)
    assert run.info.status == "RUNNING"
    assert run.data.params["backbone"] == "wavlm"
    assert len(run.data.params["space"]) <= 6000  # clipped; full value in the JSON artifact
    assert run.data.tags["emotune.search_key"] == "wavlm/iemocap/abc123"
    arts = [a.path for a in tracker.client.list_artifacts(first)]
    assert arts == ["search_params.json"]
    # artifacts sit beside the database, not in the working directory
    assert (tmp_path / "search" / "mlartifacts").is_dir()


def test_log_trial_nested_and_idempotent(tracker: SearchTracker) -> None:
    parent = _parent(tracker)
    trial = _trial("abc_00001", 0.6, 1000)
    child = tracker.log_trial(parent, trial)
    assert tracker.log_trial(parent, trial) == child
    assert tracker.child_run_id(parent, "abc_00001") == child
    assert tracker.child_run_id(parent, "abc_00009") is None
    assert [r.info.run_id for r in tracker.children(parent)] == [child]
    run = tracker.client.get_run(child)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert tags["emotune.trial_id"] == "abc_00001"
    assert tags["emotune.state"] == "COMPLETE" and tags["method"] == "lora"
    assert run.data.params == {"lr": "0.001", "rank": "8", "method": "lora"}
    m = run.data.metrics
    assert m["dev_uar"] == pytest.approx(0.6) and m["test_uar"] == pytest.approx(0.55)
    assert m["trainable_params"] == 1000 and m["adapter_bytes"] == 4000
    assert "dev_equal_opportunity_gender" not in m  # None is skipped
    hist = tracker.client.get_metric_history(child, "epoch/dev_uar")
    assert [h.step for h in hist] == [0, 1, 2]
    assert [h.step for h in tracker.client.get_metric_history(child, "train_loss")] == [0, 1, 2]


def test_pruned_and_failed_status(tracker: SearchTracker) -> None:
    parent = _parent(tracker)
    pruned = tracker.log_trial(parent, _trial("abc_00002", 0.3, 1000, "PRUNED"))
    failed = tracker.log_trial(parent, _trial("abc_00003", 0.0, 1000, "FAILED"))
    assert tracker.client.get_run(pruned).info.status == "KILLED"
    run = tracker.client.get_run(failed)
    assert run.info.status == "FAILED"
    assert run.data.tags["emotune.error"] == "Traceback: boom"


def test_data_warnings_reach_the_child_run(tracker: SearchTracker) -> None:
    import dataclasses

    parent = _parent(tracker)
    warnings = ["2 speaker(s) appear in both train and test", "test: 1 file(s) clipped"]
    trial = dataclasses.replace(_trial("abc_00004", 0.6, 1000), warnings=warnings)
    child = tracker.log_trial(parent, trial)
    assert tracker.client.get_run(child).data.tags["emotune.warnings"] == "2"
    folder = tracker.client.download_artifacts(child, "warnings.txt")
    assert Path(folder).read_text().splitlines() == warnings
    quiet = tracker.log_trial(parent, _trial("abc_00005", 0.6, 1000))
    assert "emotune.warnings" not in tracker.client.get_run(quiet).data.tags


def test_close_dangling(tracker: SearchTracker) -> None:
    parent = _parent(tracker)
    done = tracker.log_trial(parent, _trial("abc_00001", 0.6, 1000))
    # a child left half-written by a crashed driver
    stuck = tracker.client.create_run(
        tracker.experiment_id,
        tags={"mlflow.parentRunId": parent, "emotune.trial_id": "abc_00002"},
    ).info.run_id
    assert tracker.child_run_id(parent, "abc_00002") is None  # half-written does not count
    assert tracker.close_dangling(parent) == [stuck]
    assert tracker.client.get_run(stuck).info.status == "FAILED"
    assert tracker.client.get_run(done).info.status == "FINISHED"
    assert tracker.close_dangling(parent) == []
    # logging that trial later replaces the half-written child
    fresh = tracker.log_trial(parent, _trial("abc_00002", 0.5, 1000))
    assert fresh != stuck
    assert [r.info.run_id for r in tracker.children(parent, "abc_00002")] == [fresh]


def test_finish_parent(tracker: SearchTracker, tmp_path: Path) -> None:
    parent = _parent(tracker)
    trials = [
        _trial("abc_00001", 0.5, 1000),  # front
        _trial("abc_00002", 0.7, 100_000),  # front
        _trial("abc_00003", 0.4, 5000),  # dominated
        _trial("abc_00004", 0.9, 10, "PRUNED"),
        _trial("abc_00005", 0.0, 10, "FAILED"),
    ]
    ids = {t.trial_id: tracker.log_trial(parent, t) for t in trials[:4]}  # 5 not yet logged
    out = tracker.finish_parent(parent, trials, OBJ, tmp_path / "front")
    assert out["hypervolume"] == pytest.approx(3.8)  # see test_pareto two-point case
    assert sorted(out["front"]) == ["abc_00001", "abc_00002"]
    assert set(out["files"]) == {"csv", "parquet", "png", "html"}
    client = MlflowClient(tracker.tracking_uri)
    tag = {t: client.get_run(r).data.tags.get("pareto") for t, r in ids.items()}
    assert tag == {
        "abc_00001": "true",
        "abc_00002": "true",
        "abc_00003": "false",
        "abc_00004": None,
    }
    assert len(tracker.children(parent)) == 5  # the missing trial was logged, none duplicated
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["hypervolume"] == pytest.approx(3.8)
    counts = {k: run.data.metrics[k] for k in ("n_trials", "n_complete", "n_pruned", "n_failed")}
    assert counts == {"n_trials": 5, "n_complete": 3, "n_pruned": 1, "n_failed": 1}
    arts = sorted(a.path for a in client.list_artifacts(parent, "pareto"))
    assert arts == [f"pareto/pareto.{e}" for e in ("csv", "html", "parquet", "png")]
    # a resumed search gets the same parent back, running again
    assert _parent(tracker) == parent
    assert client.get_run(parent).info.status == "RUNNING"
