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


def _wait_for(predicate, timeout: float = 180.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _checkpointed(root: Path) -> bool:
    return any(root.glob("c/*/ray/tune/*/checkpoint_000000"))


def test_local_storage_is_refused_on_a_multi_node_cluster(cluster, synth_corpus, tmp_path):
    settings = _settings(synth_corpus, tmp_path, cluster, shared_storage=False)
    with pytest.raises(ValueError, match="local folder .* 2 nodes"):
        run_search(settings)
    assert not list(tmp_path.glob("c/*/ray"))  # refused before any trial started


def test_trials_run_on_both_nodes(cluster, synth_corpus, tmp_path):
    summary = run_search(_settings(synth_corpus, tmp_path, cluster))[0]
    assert {t["state"] for t in summary["trials"]} == {"COMPLETE"}
    nodes = {row["node_id"] for row in _ray_results(tmp_path)}
    assert len(nodes) == 2


def test_killed_trial_process_resumes_from_its_checkpoint(cluster, synth_corpus, tmp_path):
    killed: list[int] = []

    raylets = {info.process.pid for node in cluster.list_all_nodes()
               for info in node.all_processes.get("raylet", [])}

    def ours(proc: psutil.Process) -> bool:  # a trial worker of THIS cluster, not another Ray
        try:
            return any(p.pid in raylets for p in proc.parents())
        except psutil.Error:
            return False

    def kill_one_trial() -> None:
        if _wait_for(lambda: _checkpointed(tmp_path)):
            for proc in psutil.process_iter(["cmdline"]):
                if "ImplicitFunc" in " ".join(proc.info["cmdline"] or []) and ours(proc):
                    proc.kill()
                    killed.append(proc.pid)
                    return

    thread = threading.Thread(target=kill_one_trial)
    thread.start()
    summary = run_search(_settings(synth_corpus, tmp_path, cluster))[0]
    thread.join()
    assert killed, "no trial process was found to kill"
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


def test_removed_worker_node_reschedules_its_trial(cluster, synth_corpus, tmp_path):
    def remove_worker() -> None:
        if _wait_for(lambda: _checkpointed(tmp_path)):
            cluster.remove_node(cluster.worker, allow_graceful=False)

    thread = threading.Thread(target=remove_worker)
    thread.start()
    summary = run_search(_settings(synth_corpus, tmp_path, cluster))[0]
    thread.join()
    assert len(cluster.list_all_nodes()) == 1
    assert {t["state"] for t in summary["trials"]} == {"COMPLETE"}


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
