"""The search end to end on local Ray: Optuna study, MLflow runs, Pareto front, export, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import ray
from mlflow import MlflowClient

from search.searcher import PruneAwareOptunaSearch
from search.tune import SearchSettings, run_search
from spaces import SpaceConfig, define_by_run

SPACE = {
    "methods": ["frozen", "lora", "adapter"],
    "epochs": 2,
    "lora": {"rank": {"low": 1, "high": 4, "log": True}},
    "adapter": {"width": {"low": 4, "high": 8, "log": True}},
}
BASE = {"max_seconds": 1.0, "batch_size": 16, "seed": 0}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _children(client: MlflowClient, experiment_id: str, parent: str) -> list:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
        max_results=1000,
    )


def test_prune_aware_searcher_tells_optuna_pruned(tmp_path: Path) -> None:
    """A trial whose last report is not final (stopped by ASHA) must not count as complete."""
    searcher = PruneAwareOptunaSearch(
        space=define_by_run(SpaceConfig.from_dict(SPACE)),
        metric=["obj_uar", "obj_params"],
        mode=["max", "min"],
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db"),
        study_name="s",
    )
    searcher.suggest("stopped")
    searcher.suggest("finished")
    searcher.on_trial_complete("stopped", {"obj_uar": 0.9, "obj_params": 10.0, "final": False})
    searcher.on_trial_complete("finished", {"obj_uar": 0.5, "obj_params": 20.0, "final": True})
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert [t.values for t in study.best_trials] == [[0.5, 20.0]]


def test_search_end_to_end(local_ray, synth_corpus: Path, tmp_path: Path) -> None:
    settings = SearchSettings(
        manifests=(synth_corpus,),
        trials=3,
        concurrency=2,
        cpus_per_trial=1.0,
        storage=tmp_path,
        name="s",
        space=SpaceConfig.from_dict(SPACE),
        base=BASE,
    )
    summary = run_search(settings)[0]
    folder = tmp_path / "s" / summary["dataset"]
    on_disk = json.loads((folder / "search.json").read_text())
    # Trials shared one feature cache beside the search's storage (train, dev and test entries).
    entries = list((tmp_path / "feature-cache").glob("*/index.json"))
    assert len(entries) == 3
    assert len(on_disk["trials"]) == 3
    assert sorted(t["number"] for t in on_disk["trials"]) == [0, 1, 2]  # Optuna's numbers
    complete = [t for t in on_disk["trials"] if t["state"] == "COMPLETE"]
    assert complete and set(summary["front"]) <= {t["trial_id"] for t in complete}

    # Optuna agrees with our states: pruned trials are pruned there too.
    study = optuna.load_study(
        study_name=f"s-{summary['dataset']}", storage=f"sqlite:///{folder / 'study.db'}"
    )
    by_number = {t.number: t.state.name for t in study.trials}
    assert sorted(by_number.values()) == sorted(
        {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAILED": "FAIL"}[t["state"]]
        for t in on_disk["trials"]
    )

    # MLflow: one parent, one nested child per trial, metrics, pareto tags and artifacts.
    ml = on_disk["mlflow"]
    client = MlflowClient(ml["tracking_uri"])
    parent = client.get_run(ml["parent_run_id"])
    assert parent.info.status == "FINISHED" and "hypervolume" in parent.data.metrics
    # The sampler's and scheduler's settings are on the parent run.
    params = parent.data.params
    assert (params["scheduler"], params["sampler.name"]) == ("mo-asha", "tpe")
    assert params["sampler.multivariate"] == "true" and "sampler.cover_order" in params
    # The hypervolume-vs-trials curve: one point per finished trial, the last the summary's.
    curve = client.get_metric_history(parent.info.run_id, "hypervolume")
    by_step = {m.step: m.value for m in curve}
    assert sorted(by_step) == [1, 2, 3]
    assert by_step[3] == pytest.approx(summary["hypervolume"])
    assert by_step[1] <= by_step[2] <= by_step[3]
    children = _children(client, ml["experiment_id"], ml["parent_run_id"])
    assert sorted(c.data.tags["emotune.trial_id"] for c in children) == sorted(
        t["trial_id"] for t in on_disk["trials"]
    )
    for child in children:
        if child.data.tags["emotune.state"] == "COMPLETE":
            for key in (
                "dev_uar",
                "test_uar",
                "dev_uar_gap_gender",
                "trainable_params",
                "adapter_bytes",
            ):
                assert key in child.data.metrics, key
            assert child.data.tags["pareto"] in ("true", "false")
    assert {c.data.tags.get("pareto") for c in children} >= {"true"}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")}
    assert {f"pareto/pareto.{e}" for e in ("csv", "parquet", "png", "html")} <= artifacts
    complete = [c for c in children if c.data.tags["emotune.state"] == "COMPLETE"]
    assert all("speed_audio_seconds_per_second" in c.data.metrics for c in complete)

    # Where the time went, in search.json and on the parent run.
    timing = on_disk["timing"]
    assert timing["slots"] == 2 and timing["trial_seconds"] > timing["import_seconds"] > 0
    assert 0 <= timing["overhead_share"] < 1
    assert timing["wall_seconds"] >= timing["fit_seconds"] > 0
    assert parent.data.metrics["timing_overhead_share"] == pytest.approx(timing["overhead_share"])

    # Actor reuse: three trials ran in at most two workers (a fresh worker per trial would
    # give three pids), so some worker ran two trials and skipped the imports. How many
    # workers Tune started (one or two) depends on timing: a loaded machine may run all three
    # trials in the first worker.
    pids = set()
    for results in (folder / "ray" / "tune").glob("*/result.json"):
        pids |= {json.loads(line)["pid"] for line in results.read_text().splitlines()}
    assert 1 <= len(pids) <= 2
    # Trials keep their working folders out of what Tune uploads with the experiment state
    # (uploading them raced the checkpoint writes and stored every checkpoint twice).
    assert not list((folder / "ray" / "tune").glob("*/emotune"))


def test_search_timing_shares() -> None:
    """Hand-computed: work = (10 - 3) + (6 - 1) = 12 s over 2 slots x 10 s -> overhead 0.4."""
    from search.records import search_timing

    reports = [
        {"trial_seconds": 10.0, "import_seconds": 3.0},
        {"trial_seconds": 6.0, "import_seconds": 1.0},
        {},  # a trial that failed before its first report
    ]
    t = search_timing(reports, slots=2, wall_seconds=10.0, fit_seconds=9.0,
                      logging_seconds=0.5, finalise_seconds=0.7)
    assert (t["trial_seconds"], t["import_seconds"], t["trial_work_seconds"]) == (16, 4, 12)
    assert t["overhead_share"] == pytest.approx(0.4)


def test_resume_after_interrupt_leaves_no_duplicates(synth_corpus: Path, tmp_path: Path) -> None:
    """Ctrl-C during a search, then --resume: every trial once in MLflow, none left RUNNING.

    Enough trials that the search cannot finish between the first result and the interrupt
    (with the feature cache and reused workers a 2-epoch trial takes about a second).
    """
    TRIALS = 10  # noqa: N806
    space = tmp_path / "space.yaml"
    SpaceConfig.from_dict(SPACE).to_yaml(space)
    cmd = [
        sys.executable,
        "-m",
        "search.cli",
        "search",
        "--manifest",
        str(synth_corpus),
        "--trials",
        str(TRIALS),
        "--concurrency",
        "1",
        "--space",
        str(space),
        "--storage",
        str(tmp_path),
        "--name",
        "r",
        "--max-seconds",
        "1",
    ]
    env = {**os.environ, "RAY_DISABLE_DASHBOARD": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    trials = tmp_path / "r" / synth_corpus.parent.name / "trials"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(trials.glob("*/result.json"))) < 1:
        time.sleep(1)
    assert list(trials.glob("*/result.json")), "no trial finished before the interrupt"
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=180) != 0  # an interrupted search says so
    done = subprocess.run(cmd + ["--resume"], env=env, timeout=600)
    assert done.returncode == 0
    summary = json.loads((trials.parent / "search.json").read_text())
    assert len(summary["trials"]) == TRIALS
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    children = _children(
        client, summary["mlflow"]["experiment_id"], summary["mlflow"]["parent_run_id"]
    )
    ids = [c.data.tags["emotune.trial_id"] for c in children]
    assert len(ids) == len(set(ids)) == TRIALS
    assert all(c.info.status != "RUNNING" for c in children)


def test_cli_flags_reach_the_settings(synth_corpus: Path) -> None:
    from search.cli import build_parser
    from search.cli.searching import settings_from_args

    args = build_parser().parse_args([
        "search", "--manifest", str(synth_corpus), "--grace-period", "3", "--max-failures",
        "5", "--folds", "all", "--storage", "s3://bucket/x", "--shared-storage",
        "--objectives", "uar,params,fairness", "--sampler", "nsga2", "--no-feature-cache",
        "--feature-cache-dtype", "float16", "--no-bucketing"])
    s = settings_from_args(args)
    assert s.base["feature_cache"] is False and s.base["bucketing"] is False
    assert s.base["feature_cache_dtype"] == "float16" and "feature_cache_dir" not in s.base
    assert (s.grace_period, s.max_failures, s.all_folds) == (3, 5, True)
    assert s.storage == "s3://bucket/x" and s.shared_storage
    assert s.objectives == ("uar", "params", "fairness") and s.sampler == "nsga2"


def test_search_scores_by_the_mean_over_all_folds(local_ray, tmp_path: Path) -> None:
    """--folds all: each trial trains every fold; its score is the mean of the folds' dev UAR."""
    from trainables.data.synth import synthesize

    manifest = synthesize(tmp_path / "six", speakers=6, per_class=3, seed=1)
    settings = SearchSettings(
        manifests=(manifest,), trials=2, concurrency=2, storage=tmp_path, name="f",
        space=SpaceConfig.from_dict({**SPACE, "methods": ["frozen"], "epochs": 1}),
        base=BASE, all_folds=True, grace_period=3,
    )
    summary = run_search(settings)[0]
    for trial in summary["trials"]:
        assert trial["state"] == "COMPLETE"
        result = json.loads((Path(trial["adapter_dir"]).parent / "result.json").read_text())
        assert [f["fold"] for f in result["folds"]] == [0, 1, 2]
        mean = sum(f["dev"]["uar"] for f in result["folds"]) / 3
        assert trial["dev"]["uar"] == pytest.approx(mean)


def test_uri_storage_mirrors_the_driver_files(local_ray, synth_corpus, tmp_path, monkeypatch):
    """--storage URI: Ray writes there; the driver's files are mirrored and come back."""
    from search import storage as store

    monkeypatch.setenv("EMOTUNE_CACHE", str(tmp_path / "cache"))
    bucket = f"file://{tmp_path / 'bucket'}"
    settings = SearchSettings(manifests=(synth_corpus,), trials=2, concurrency=2, storage=bucket,
                              name="u", space=SpaceConfig.from_dict({**SPACE, "epochs": 1}),
                              base=BASE)
    summary = run_search(settings)[0]
    dataset = summary["dataset"]
    remote = tmp_path / "bucket" / "u" / dataset
    assert (remote / "ray" / "tune").is_dir()  # Tune's experiment went to the storage URI
    for name in ("search.json", "study.db", "pareto.csv"):
        assert (remote / "driver" / name).is_file(), name
    assert (tmp_path / "bucket" / "u" / "_tracking" / "mlflow.db").is_file()  # MLflow store too
    assert settings.root == tmp_path / "cache" / "searches" / "u"
    # The trials' feature cache was mirrored to the bucket for nodes without shared disks.
    assert len(list((tmp_path / "bucket" / "feature-cache").glob("*/index.json"))) == 3
    restored = tmp_path / "restored"
    assert store.download(bucket, "u", dataset, restored)
    assert json.loads((restored / "search.json").read_text())["dataset"] == dataset
