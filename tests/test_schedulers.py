"""Early stopping: the rung rules (ASHA parity with Ray, MO-ASHA), the Ray scheduler, settings and
CLI, and where a stopped trial stopped (Optuna, search.json, MLflow, the printed table)."""

from __future__ import annotations

import json
import math
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import ray
from mlflow import MlflowClient
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from search.choices import SCHEDULERS
from search.pareto import TrialRecord, pareto_mask
from search.records import record_of
from search.rungs import RungCore, milestones, nondominated_order
from search.schedulers import RungScheduler, make_scheduler
from search.searcher import PruneAwareOptunaSearch
from search.settings import SearchSettings
from search.tune import run_search
from spaces import SpaceConfig, define_by_run

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


class _Trial:
    """What a scheduler reads of a trial (the bench drives it the same way)."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _settings(**kw: Any) -> SearchSettings:
    return SearchSettings(manifests=(), **kw)


def _report(t: int, uar: float, params: float = 1e3, final: bool = False) -> dict[str, Any]:
    return {"training_iteration": t, "obj_uar": uar, "obj_params": params, "final": final}


# ---- the rung rules ---------------------------------------------------------------------------


def test_milestones_are_powers_of_the_reduction_factor_below_max_t() -> None:
    assert milestones(8, 1, 2) == (1, 2, 4)  # Ray's 8 too, but a report at max_t ends the trial
    assert milestones(20, 2, 3) == (2, 6, 18)
    assert milestones(10, 1, 1.5) == (1, 1.5, 2.25, 3.375, 5.0625, 7.59375)
    assert milestones(3, 3, 2) == ()  # grace period at max_t: no trial stops early
    with pytest.raises(ValueError, match="reduction_factor"):
        milestones(8, 1, 1)
    with pytest.raises(ValueError, match="grace_period"):
        milestones(8, 0, 2)


def _stream(seed: int, max_t: int, trials: int = 40) -> list[tuple[str, int, float, bool]]:
    """A random asynchronous stream: ``(trial, t, obj_uar, last)``; at most 5 trials run at
    once, some trials end before ``max_t`` (fewer epochs), values tie and are sometimes NaN."""
    rng = random.Random(seed)
    pending = [f"t{i:02d}" for i in range(trials)]
    epochs = {t: rng.choice([max_t, max_t, max(1, max_t // 2)]) for t in pending}
    running: dict[str, int] = {}
    out = []
    while pending or running:
        while pending and len(running) < 5:
            running[pending.pop(0)] = 0
        trial = rng.choice(sorted(running))
        running[trial] += 1
        value = rng.choice([math.nan, 0.5, 0.5, rng.random(), rng.random(), rng.random()])
        out.append((trial, running[trial], value, running[trial] == epochs[trial]))
        if out[-1][3]:
            del running[trial]
    return out


@pytest.mark.parametrize(("grace", "rf", "max_t"), [(1, 2, 8), (2, 3, 20), (1, 1.5, 10), (1, 4, 9)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # Ray's cutoff of NaNs only
def test_asha_decides_like_rays_asha(grace: int, rf: float, max_t: int, seed: int) -> None:
    """Same stream of results into Ray's ASHAScheduler and ours: identical decisions."""
    theirs = ASHAScheduler(
        time_attr="training_iteration", metric="obj_uar", mode="max", max_t=max_t,
        grace_period=grace, reduction_factor=rf, brackets=1,
    )  # fmt: skip
    ours = make_scheduler(
        _settings(objectives=("uar",), grace_period=grace, reduction_factor=rf), max_t
    )
    assert isinstance(ours, RungScheduler) and (ours.rule, ours.keys) == ("asha", ("obj_uar",))
    trials: dict[str, _Trial] = {}
    stopped: set[str] = set()
    decisions = []
    for trial_id, t, value, last in _stream(seed, max_t):
        if trial_id in stopped:
            continue
        if trial_id not in trials:
            trials[trial_id] = _Trial(trial_id)
            theirs.on_trial_add(None, trials[trial_id])
            ours.on_trial_add(None, trials[trial_id])
        result = _report(t, value)
        decision = ours.on_trial_result(None, trials[trial_id], result)
        assert decision == theirs.on_trial_result(None, trials[trial_id], result), (trial_id, t)
        decisions.append((t, decision))
        if decision == STOP or last:
            theirs.on_trial_complete(None, trials[trial_id], result)
            ours.on_trial_complete(None, trials[trial_id], result)
            stopped.add(trial_id)
    early = [d for t, d in decisions if t < max_t]
    assert STOP in early and CONTINUE in early  # the stream exercised both outcomes


def test_nondominated_order_fronts_then_crowding() -> None:
    """Hand-computed. One front of four (uar max, params min) points on a staircase:
    the extremes (rows 0 and 3) are boundary points (infinite distance); row 1 gets
    (0.9 - 0.7) / 0.4 + (1000 - 400) / 900 = 1.1667, row 2 (0.8 - 0.5) / 0.4 +
    (500 - 100) / 900 = 1.1944, so row 2 comes before row 1."""
    staircase = [(0.9, 1000), (0.8, 500), (0.7, 400), (0.5, 100)]
    assert nondominated_order(staircase, ["max", "min"]) == ([0, 3, 2, 1], 4)
    # F1 = {0, 3}, F2 = {1} (dominated by 0), the NaN row last and never in F1.
    mixed = [(0.5, 100), (0.4, 200), (math.nan, 50), (0.6, 300)]
    assert nondominated_order(mixed, ["max", "min"]) == ([0, 3, 1, 2], 2)
    assert nondominated_order([(math.nan, 1.0)], ["max", "min"]) == ([0], 0)
    # Equal rows do not dominate each other: both in F1.
    assert nondominated_order([(0.5, 10), (0.5, 10)], ["max", "min"])[1] == 2


def test_mo_asha_keeps_a_non_dominated_trial_that_asha_on_uar_stops() -> None:
    """The same stream into both default schedulers (one objective: asha, two: mo-asha).

    At rung 1: a (0.60 UAR, 500k params), b (0.55, 400k), then c (0.40, 1k). ASHA's cutoff for
    c is the median UAR of a and b, 0.575, so it stops c; c has the fewest parameters, so it is
    non-dominated at the rung and MO-ASHA keeps it. d (0.30, 2k) is dominated by c and its
    position (4th of 4) is beyond n / rf = 2: both stop it.
    """
    mo = make_scheduler(_settings(objectives=("uar", "params"), grace_period=1), 4)
    asha = make_scheduler(_settings(objectives=("uar",), grace_period=1), 4)
    assert (mo.rule, asha.rule) == ("mo-asha", "asha")
    stream = [("a", 0.60, 5e5), ("b", 0.55, 4e5), ("c", 0.40, 1e3), ("d", 0.30, 2e3)]
    got = {
        name: [s.on_trial_result(None, _Trial(t), _report(1, u, p)) for t, u, p in stream]
        for name, s in (("mo-asha", mo), ("asha", asha))
    }
    values = np.array([[u, p] for _, u, p in stream])
    assert pareto_mask(values, ["max", "min"]).tolist() == [True, True, True, False]
    assert got["asha"] == [CONTINUE, STOP, STOP, STOP]
    assert got["mo-asha"] == [CONTINUE, CONTINUE, CONTINUE, STOP]
    assert mo.core.stopped == {"d": 1} and set(asha.core.stopped) == {"b", "c", "d"}


def test_mo_asha_promotes_dominated_trials_only_within_n_over_rf() -> None:
    """At one rung (uar max, params min), rf = 2. x dominates every later trial; each later
    one dominates a and b. Positions (0-based) against n / rf, n counting the trial itself."""
    core = RungCore("mo-asha", ["max", "min"], max_t=4, grace_period=1, reduction_factor=2)
    assert core.on_result("x", 1, [0.6, 1e3])  # alone: F1
    assert not core.on_result("a", 1, [0.2, 9e5])  # position 1, n / rf = 1
    assert not core.on_result("b", 1, [0.1, 9e5])  # position 2, 1.5
    assert core.on_result("y", 1, [0.5, 2e3])  # dominated, yet position 1 < 2
    assert core.on_result("z", 1, [0.45, 3e3])  # position 2 < 2.5
    assert not core.on_result("w", 1, [0.3, 5e3])  # position 3, n / rf = 3
    assert core.stopped == {"a": 1, "b": 1, "w": 1}


def test_mo_asha_never_stops_a_non_dominated_trial() -> None:
    """rf = 10: n / rf < 1, so only F1 goes on, however many trials are non-dominated."""
    core = RungCore("mo-asha", ["max", "min"], max_t=20, grace_period=2, reduction_factor=10)
    for i in range(8):  # each has more UAR and more parameters than the last: all in F1
        assert core.on_result(f"t{i}", 2, [0.1 * (i + 1), 10.0 * (i + 1)])
    assert not core.on_result("worse", 2, [0.05, 100.0])
    assert core.reached() == {**{f"t{i}": 2 for i in range(8)}, "worse": 2}


def test_a_trial_is_judged_once_per_rung_at_the_highest_milestone_reached() -> None:
    core = RungCore("asha", ["max"], max_t=8, grace_period=1, reduction_factor=2)
    assert core.on_result("a", 1, [0.9])
    assert core.on_result("b", 1, [0.1]) is False
    assert core.on_result("b", 1, [0.1]) is True  # already judged at rung 1: no decision
    assert core.on_result("a", 3, [0.9])  # rung 2 (the highest <= 3)
    assert core.on_result("c", 5, [0.5])  # first report at t = 5: judged at rung 4, alone
    assert core.reached() == {"a": 2, "b": 1, "c": 4}
    state = core.state()
    assert [r["milestone"] for r in state["rungs"]] == [1, 2, 4]
    assert state["rungs"][0]["recorded"] == {"a": [0.9], "b": [0.1]}
    assert state["stopped"] == {"b": 1}
    json.dumps(state)


def test_scheduler_reads_report_keys_and_stops_at_max_t() -> None:
    s = make_scheduler(_settings(objectives=("uar", "params"), grace_period=1), 3)
    trial = _Trial("a")
    s.on_trial_add(None, trial)
    assert s.on_trial_result(None, trial, {"training_iteration": 1}) == CONTINUE  # no values
    assert s.core.reached() == {}
    assert s.on_trial_result(None, trial, _report(1, 0.5)) == CONTINUE
    assert s.on_trial_result(None, trial, _report(3, 0.5, final=True)) == STOP  # done
    assert s.core.stopped == {}  # reaching max_t is not being stopped early


def test_scheduler_pickles_mid_search_and_decides_the_same() -> None:
    s = make_scheduler(_settings(objectives=("uar", "params"), grace_period=1), 8)
    rng = random.Random(3)
    reports = [(f"t{i}", t, rng.random(), rng.choice([1e3, 1e4, 1e5])) for t in (1, 2) for i in
               range(10)]  # fmt: skip
    for trial_id, t, u, p in reports[:8]:
        s.on_trial_result(None, _Trial(trial_id), _report(t, u, p))
    copy = pickle.loads(pickle.dumps(s))
    assert isinstance(copy, RungScheduler) and copy.core.state() == s.core.state()
    for trial_id, t, u, p in reports[8:]:
        result = _report(t, u, p)
        got = copy.on_trial_result(None, _Trial(trial_id), result)
        assert got == s.on_trial_result(None, _Trial(trial_id), result)


# ---- settings and CLI -------------------------------------------------------------------------


def test_settings_default_scheduler_follows_the_objectives() -> None:
    assert SCHEDULERS == ("mo-asha", "asha", "none")
    assert _settings().scheduler_name == "mo-asha"
    assert _settings(objectives=("uar",)).scheduler_name == "asha"
    assert _settings(objectives=("uar",), scheduler="mo-asha").scheduler_name == "mo-asha"
    none = make_scheduler(_settings(scheduler="none"), 8)
    assert type(none) is FIFOScheduler
    assert none.on_trial_result(None, _Trial("a"), _report(1, 0.0)) == CONTINUE


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scheduler", "hyperband", "scheduler must be one of mo-asha, asha, none"),
        ("reduction_factor", 1, "reduction-factor must be a finite number > 1"),
        ("reduction_factor", float("inf"), "reduction-factor"),
        ("grace_period", 0, "grace-period must be a whole number >= 1"),
        ("grace_period", 1.5, "grace-period"),
    ],
)
def test_settings_reject_bad_scheduler_options(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _settings(**{field: value})


def test_cli_scheduler_flags_reach_the_settings(tmp_path: Path) -> None:
    from search.cli import build_parser
    from search.cli.searching import settings_from_args

    manifest = tmp_path / "m.parquet"
    manifest.touch()
    parse = build_parser().parse_args
    base = ["search", "--manifest", str(manifest)]
    s = settings_from_args(parse(base))
    # The CLI's defaults are SearchSettings' (grace 1: chosen on the benchmark, BENCHMARKS.md (e)).
    assert (s.scheduler, s.scheduler_name, s.reduction_factor, s.grace_period) == (
        None, "mo-asha", 2.0, 1)  # fmt: skip
    assert (s.grace_period, s.reduction_factor) == (
        SearchSettings.grace_period, SearchSettings.reduction_factor)  # fmt: skip
    flags = ["--scheduler", "asha", "--reduction-factor", "3", "--grace-period", "3"]
    s = settings_from_args(parse(base + flags))
    assert (s.scheduler_name, s.reduction_factor, s.grace_period) == ("asha", 3.0, 3)
    with pytest.raises(ValueError, match="reduction-factor"):
        settings_from_args(parse(base + ["--reduction-factor", "0.5"]))
    with pytest.raises(SystemExit):
        parse(base + ["--scheduler", "hyperband"])


# ---- where a stopped trial stopped ------------------------------------------------------------

SPACE = {
    "methods": ["frozen", "lora", "adapter"],
    "epochs": 2,
    "lora": {"rank": {"low": 1, "high": 4, "log": True}},
    "adapter": {"width": {"low": 4, "high": 8, "log": True}},
}


def test_searcher_keeps_a_pruned_trials_rung_in_optuna() -> None:
    searcher = PruneAwareOptunaSearch(
        space=define_by_run(SpaceConfig.from_dict(SPACE)),
        metric=["obj_uar", "obj_params"],
        mode=["max", "min"],
    )
    searcher.suggest("stopped")
    searcher.suggest("finished")
    searcher.on_trial_complete("stopped", _report(2, 0.4, 1e3))
    searcher.on_trial_complete("finished", _report(4, math.nan, 2e3, final=True))
    stopped, finished = searcher._ot_study.trials  # noqa: SLF001
    assert stopped.state == optuna.trial.TrialState.PRUNED
    assert stopped.user_attrs == {
        "ray_trial_id": "stopped", "rung": 2, "rung_obj_uar": 0.4, "rung_obj_params": 1e3,
    }  # fmt: skip
    assert "rung" not in finished.user_attrs


def test_record_and_search_json_entry_of_a_pruned_trial(tmp_path: Path) -> None:
    last = {**_report(2, 0.4, 1e3), "dev_uar": 0.35, "trainable_params": 1000, "obj_wa": 0.5}
    pruned = record_of("t1", {"method": "lora"}, last, None, tmp_path, objectives=["uar", "params"])
    assert (pruned.state, pruned.rung, pruned.rung_objectives) == (
        "PRUNED", 2, {"uar": 0.4, "params": 1e3})  # fmt: skip
    every = record_of("t1", {"method": "lora"}, last, None, tmp_path)  # all it reported
    assert every.rung_objectives == {"uar": 0.4, "params": 1e3, "wa": 0.5}
    entry = json.loads(json.dumps(pruned.to_dict()))
    assert (entry["rung"], entry["rung_objectives"]) == (2, {"uar": 0.4, "params": 1e3})
    assert TrialRecord.from_dict(entry) == pruned
    failed = record_of("t2", {"method": "lora"}, last, "boom", tmp_path)
    assert (failed.rung, failed.rung_objectives) == (None, None)
    assert TrialRecord(trial_id="t3").to_dict()["rung"] is None


def test_stopped_early_table_lists_pruned_trials(tmp_path: Path) -> None:
    from search.cli.searching import report
    from search.cli.shared import console

    pruned = record_of("t1", {"method": "lora"}, {**_report(2, 0.4, 1e3), "trainable_params": 1234},
                       None, tmp_path, objectives=["uar", "params"]).to_dict()  # fmt: skip
    summary = {"dataset": "corpus", "hypervolume": 0.0, "front": [], "trials": [pruned]}
    with console.capture() as captured:
        assert report(summary) is False  # no trial completed
    text = captured.get()
    assert "stopped early" in text and "rung (epochs)" in text
    row = next(line for line in text.splitlines() if "t1" in line)
    assert "lora" in row and "1,234" in row and " 2 " in row and "0.400" in row


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_a_real_search_records_where_pruned_trials_stopped(
    local_ray, synth_corpus: Path, tmp_path: Path
) -> None:
    """Tiny search, default scheduler (MO-ASHA, one rung at epoch 1 of 2). One trial at a time
    and the plain random sampler make the order of reports, and so the decisions, the same on
    every run."""
    from search.cli.searching import report
    from search.cli.shared import console

    settings = SearchSettings(
        manifests=(synth_corpus,), trials=5, concurrency=1, cpus_per_trial=0.5, storage=tmp_path,
        name="r", space=SpaceConfig.from_dict(SPACE), sampler="random", grace_period=1,
        base={"max_seconds": 1.0, "batch_size": 16, "seed": 0},
    )  # fmt: skip
    assert settings.scheduler_name == "mo-asha"
    summary = run_search(settings)[0]
    folder = tmp_path / "r" / summary["dataset"]
    trials = json.loads((folder / "search.json").read_text())["trials"]
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    assert pruned, f"no trial was stopped: {[(t['method'], t['state']) for t in trials]}"
    for t in trials:
        if t["state"] == "COMPLETE":
            assert (t["rung"], t["rung_objectives"]) == (None, None)
    for t in pruned:  # the only rung below 2 epochs is epoch 1
        assert t["rung"] == 1 and {"uar", "params"} <= set(t["rung_objectives"])
        assert t["rung_objectives"]["params"] == t["trainable_params"]

    study = optuna.load_study(study_name=f"r-{summary['dataset']}",
                              storage=f"sqlite:///{folder / 'study.db'}")  # fmt: skip
    by_number = {ot.number: ot for ot in study.trials}
    ml = summary["mlflow"]
    client = MlflowClient(ml["tracking_uri"])
    for t in pruned:
        attrs = by_number[t["number"]].user_attrs
        assert by_number[t["number"]].state == optuna.trial.TrialState.PRUNED
        assert attrs["rung"] == 1
        assert attrs["rung_obj_uar"] == pytest.approx(t["rung_objectives"]["uar"])
        assert attrs["rung_obj_params"] == t["rung_objectives"]["params"]
        child = client.get_run(t["mlflow_run_id"])
        assert child.data.tags["emotune.rung"] == "1" and child.info.status == "KILLED"
        assert child.data.metrics["rung/uar"] == pytest.approx(t["rung_objectives"]["uar"])

    with console.capture() as captured:
        report(summary)
    assert "stopped early" in captured.get() and pruned[0]["trial_id"] in captured.get()
