"""Faults on a two-node Ray cluster started on this machine (ray.cluster_utils.Cluster).

Each test starts its own head (1 CPU) and worker (1 CPU) so two 1-CPU trials must land on
different nodes. What is checked: placement on both nodes, a killed trial process, a killed
driver, a trial whose loss turns NaN, and a worker node removed mid-search. Goal: nothing lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest
import ray
from mlflow import MlflowClient
from ray.cluster_utils import Cluster

from search.tune import SearchSettings, run_search
from spaces import SpaceConfig

pytestmark = pytest.mark.cluster

SPACE = {
    "methods": ["frozen", "adapter"],
    "epochs": 4,
    "adapter": {"width": {"low": 4, "high": 8, "log": True}},
}
BASE = {"max_seconds": 1.0, "batch_size": 16, "seed": 0}


@pytest.fixture(scope="module")
def longer_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough audio that a trial lasts several seconds, so faults land mid-trial."""
    from trainables.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("longer"), speakers=4, per_class=24, seed=3)


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    c.worker = worker
    yield c
    ray.shutdown()
    c.shutdown()


def _settings(manifest: Path, root: Path, cluster: Cluster, **kw) -> SearchSettings:
    defaults = dict(
        manifests=(manifest,),
        trials=2,
        concurrency=2,
        cpus_per_trial=1.0,
        storage=root,
        name="c",
        space=SpaceConfig.from_dict(SPACE),
        base=BASE,
        address=cluster.address,
        shared_storage=True,
        grace_period=4,
        max_failures=2,
    )
    return SearchSettings(**{**defaults, **kw})


def _ray_results(root: Path) -> list[dict]:
    rows = []
    for f in root.glob("c/*/ray/tune/*/result.json"):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


def _wait_for(predicate, timeout: float = 180.0, stop: threading.Event | None = None) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and not (stop is not None and stop.is_set()):
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _checkpointed_trials(root: Path) -> list[dict]:
    """Last report of each trial that has a checkpoint on storage."""
    rows = []
    for folder in root.glob("c/*/ray/tune/*"):
        lines = (
            (folder / "result.json").read_text().splitlines()
            if (folder / "result.json").is_file()
            else []
        )
        if lines and any(folder.glob("checkpoint_*")):
            rows.append(json.loads(lines[-1]))
    return rows


def _during_search(settings: SearchSettings, action) -> dict:
    """Runs the search; ``action(stop_event)`` runs beside it in a thread."""
    stop = threading.Event()
    thread = threading.Thread(target=action, args=(stop,))
    thread.start()
    try:
        return run_search(settings)[0]
    finally:
        stop.set()
        thread.join()


def test_local_storage_is_refused_on_a_multi_node_cluster(cluster, synth_corpus, tmp_path):
    settings = _settings(synth_corpus, tmp_path, cluster, shared_storage=False)
    with pytest.raises(ValueError, match="local folder .* 2 nodes"):
        run_search(settings)
    assert not list(tmp_path.glob("c/*/ray"))  # refused before any trial started


def test_trials_run_on_the_node_with_room(synth_corpus, tmp_path):
    """Trials go to another node of the cluster than the driver's. The head has no CPU, so
    every trial must run on the worker: this does not depend on two trials overlapping in time
    (on a loaded machine a reused worker may run both trials one after the other)."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        summary = run_search(_settings(synth_corpus, tmp_path, c))[0]
    finally:
        ray.shutdown()
        c.shutdown()
    assert {t["state"] for t in summary["trials"]} == {"COMPLETE"}
    assert {row["node_id"] for row in _ray_results(tmp_path)} == {worker.node_id}


def test_killed_trial_process_resumes_from_its_checkpoint(cluster, longer_corpus, tmp_path):
    killed: list[int] = []

    def kill_a_checkpointed_trial(stop: threading.Event) -> None:
        def unfinished() -> list[dict]:
            return [r for r in _checkpointed_trials(tmp_path) if not r.get("final")]

        if _wait_for(lambda: unfinished(), timeout=900, stop=stop):
            pid = unfinished()[0]["pid"]
            psutil.Process(pid).kill()
            killed.append(pid)

    settings = _settings(longer_corpus, tmp_path, cluster, base={**BASE, "max_seconds": 2.0})
    summary = _during_search(settings, kill_a_checkpointed_trial)
    assert killed, "no trial process was killed"
    assert {t["state"] for t in summary["trials"]} == {"COMPLETE"}
    # The restarted trial continued after its checkpointed epoch instead of starting again.
    assert max(row.get("resumed_from_epoch", 0) for row in _ray_results(tmp_path)) >= 1


def test_failing_trial_is_failed_everywhere_and_the_search_goes_on(cluster, synth_corpus, tmp_path):
    space = {**SPACE, "methods": ["frozen"], "lr": {"choices": [0.001, 1.0e30]}}
    settings = _settings(
        synth_corpus,
        tmp_path,
        cluster,
        trials=4,
        sampler="random",
        seed=2,
        space=SpaceConfig.from_dict(space),
        max_failures=0,
    )
    summary = run_search(settings)[0]
    states = {t["trial_id"]: t["state"] for t in summary["trials"]}
    lrs = {t["trial_id"]: t["params"]["lr"] for t in summary["trials"]}
    assert set(lrs.values()) == {0.001, 1.0e30}, "the seed must sample both learning rates"
    for trial_id, lr in lrs.items():
        assert states[trial_id] == ("FAILED" if lr > 1 else "COMPLETE")
    failed = [t for t in summary["trials"] if t["state"] == "FAILED"]
    assert all("loss is" in (t["error"] or "") for t in failed)
    folder = tmp_path / "c" / summary["dataset"]
    study = optuna.load_study(
        study_name=f"c-{summary['dataset']}", storage=f"sqlite:///{folder / 'study.db'}"
    )
    assert sorted(t.state.name for t in study.trials) == sorted(
        "FAIL" if s == "FAILED" else s for s in states.values()
    )
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    for t in failed:
        assert client.get_run(t["mlflow_run_id"]).info.status == "FAILED"


def test_removed_worker_node_reschedules_its_trial(cluster, longer_corpus, tmp_path):
    worker_id = cluster.worker.node_id
    removed: list[str] = []

    def remove_worker(stop: threading.Event) -> None:
        def on_worker() -> bool:
            return any(
                r["node_id"] == worker_id and not r.get("final")
                for r in _checkpointed_trials(tmp_path)
            )

        if _wait_for(on_worker, timeout=900, stop=stop):
            cluster.remove_node(cluster.worker, allow_graceful=False)
            removed.append(worker_id)

    settings = _settings(longer_corpus, tmp_path, cluster, base={**BASE, "max_seconds": 2.0})
    summary = _during_search(settings, remove_worker)
    assert removed, "the worker node ran no trial to interrupt"
    assert {t["state"] for t in summary["trials"]} == {"COMPLETE"}
    # The interrupted trial finished on the head, the only node left.
    final_nodes = {r["node_id"] for r in _ray_results(tmp_path) if r.get("final")}
    assert worker_id not in final_nodes


def test_killed_driver_then_resume_leaves_one_run_per_trial(cluster, synth_corpus, tmp_path):
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
        "3",
        "--concurrency",
        "2",
        "--space",
        str(space),
        "--storage",
        str(tmp_path),
        "--name",
        "c",
        "--max-seconds",
        "1",
        "--address",
        cluster.address,
        "--shared-storage",
        "--grace-period",
        "4",
    ]
    proc = subprocess.Popen(cmd, start_new_session=True)
    trials = tmp_path / "c" / synth_corpus.parent.name / "trials"
    assert _wait_for(lambda: any(trials.glob("*/result.json")), timeout=300)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to save anything on the way out
    proc.wait(timeout=60)
    done = subprocess.run(cmd + ["--resume"], timeout=600)
    assert done.returncode == 0
    summary = json.loads((trials.parent / "search.json").read_text())
    assert len(summary["trials"]) == 3
    assert {t["state"] for t in summary["trials"]} == {"COMPLETE"}
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    children = client.search_runs(
        [summary["mlflow"]["experiment_id"]],
        filter_string=f"tags.`mlflow.parentRunId` = '{summary['mlflow']['parent_run_id']}'",
    )
    ids = [c.data.tags["emotune.trial_id"] for c in children]
    assert sorted(ids) == sorted(t["trial_id"] for t in summary["trials"])
    assert all(c.info.status == "FINISHED" for c in children)
