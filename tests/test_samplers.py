"""search.samplers: the method cover, TPE / NSGA-II / GP as built for a search, their settings.

In-memory Optuna studies over the product's space (``spaces.define_by_run``) with a stand-in
objective: no training, no Ray.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest

from search.samplers import (
    SAMPLERS,
    MethodCoverSampler,
    MethodGPSampler,
    describe_sampler,
    make_sampler,
    population_size,
    startup_trials,
)
from search.settings import SearchSettings
from spaces import METHOD_PARAM, SpaceConfig, define_by_run

SPACE = SpaceConfig()  # the default space: frozen, lora, adapter, prompt
METHODS = tuple(SPACE.methods)
MODEL_BASED = ("tpe", "nsga2", "gp")
SIZES = {"lora_rank": 4_000, "adapter_width": 3_000, "prompt_length": 700}


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def fake_objective(params: dict[str, Any]) -> tuple[float, float]:
    """(dev UAR, trainable params) from the point alone: a trade-off between methods."""
    base = {"frozen": 0.4, "lora": 0.6, "adapter": 0.55, "prompt": 0.5}[params[METHOD_PARAM]]
    uar = base - 0.05 * (math.log10(params["lr"]) + 2.7) ** 2
    uar += sum(0.01 * math.log(params[k]) for k in SIZES if k in params)
    return uar, 10_000.0 + sum(w * params[k] for k, w in SIZES.items() if k in params)


def _study(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)


def _run(study: optuna.Study, n: int, batch: int = 1, space: SpaceConfig = SPACE) -> None:
    """``n`` trials, asked ``batch`` at a time before any of them is told."""
    fn = define_by_run(space)
    while len(study.trials) < n:
        asked = []
        for _ in range(min(batch, n - len(study.trials))):
            trial = study.ask()
            fn(trial)
            asked.append(trial)
        for trial in asked:
            study.tell(trial, fake_objective(trial.params))


def _cheap(sampler: optuna.samplers.BaseSampler) -> optuna.samplers.BaseSampler:
    """A GP whose acquisition optimisation is small enough for a unit test."""
    if isinstance(sampler, MethodCoverSampler) and isinstance(sampler.base, MethodGPSampler):
        sampler.base.set_acquisition(preliminary_samples=64, local_searches=2, ehvi_samples=16)
    return sampler


def _methods(study: optuna.Study) -> list[str]:
    return [t.params[METHOD_PARAM] for t in sorted(study.trials, key=lambda t: t.number)]


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
@pytest.mark.parametrize("name", MODEL_BASED)
@pytest.mark.parametrize("batch", [1, 4])
def test_first_trials_cover_every_method(name: str, seed: int, batch: int) -> None:
    sampler = make_sampler(name, seed, trials=40, methods=METHODS, concurrency=batch)
    assert isinstance(sampler, MethodCoverSampler)
    n_cover = sampler.n_cover
    assert n_cover >= len(METHODS) and n_cover % len(METHODS) == 0
    study = _study(sampler)
    _run(study, n_cover, batch=batch)
    methods = _methods(study)
    assert set(methods[: len(METHODS)]) == set(METHODS)  # the first k trials: every method
    # Cycling through one permutation: a stratified batch, the same whatever the batch size.
    assert methods == [sampler.order[n % len(METHODS)] for n in range(n_cover)]
    assert set(Counter(methods).values()) == {n_cover // len(METHODS)}


def test_cover_is_the_same_with_concurrent_asks() -> None:
    one, four = (
        _study(make_sampler("nsga2", 3, 40, METHODS)),
        _study(make_sampler("nsga2", 3, 40, METHODS)),
    )
    _run(one, 12)
    _run(four, 12, batch=4)
    assert _methods(one) == _methods(four)


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_same_search(name: str) -> None:
    runs = []
    for _ in range(2):
        study = _study(_cheap(make_sampler(name, 5, trials=12, methods=METHODS)))
        _run(study, 7 if name == "gp" else 16)  # past the start-up: model-based trials too
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


def test_seeds_change_the_cover_order() -> None:
    orders = {make_sampler("tpe", seed, 40, METHODS).order for seed in range(6)}
    assert len(orders) > 1 and all(sorted(o) == sorted(METHODS) for o in orders)


def test_model_samplers_are_told_after_the_cover() -> None:
    """Past the cover, the method comes from the model (here: TPE's relative sampling)."""
    sampler = make_sampler("tpe", 0, trials=40, methods=METHODS)
    study = _study(sampler)
    _run(study, sampler.n_cover + 6)
    late = [t for t in study.trials if t.number >= sampler.n_cover]
    assert all(any(k.startswith("tpe:relative_params") for k in t.system_attrs) for t in late)


def test_nsga2_children_change_method() -> None:
    """Once every parent has one method, children still try the other (mutation)."""
    two = SpaceConfig(methods=("frozen", "lora"))
    switched = children = 0
    for seed in range(4):
        sampler = make_sampler("nsga2", seed, trials=12, methods=two.methods)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        fn = define_by_run(two)
        for _ in range(48):  # lora dominates frozen in both objectives
            trial = study.ask()
            fn(trial)
            lora = trial.params[METHOD_PARAM] == "lora"
            study.tell(trial, [0.9 if lora else 0.1, 1.0 if lora else 2.0])
        base = sampler.base
        for trial in study.trials:
            generation = base.get_trial_generation(study, trial)
            parents = base.get_parent_population(study, generation)
            if parents and {p.params[METHOD_PARAM] for p in parents} == {"lora"}:
                children += 1
                switched += trial.params[METHOD_PARAM] == "frozen"
    assert children >= 60  # elitism made the parents all-lora after a generation or two
    # Expected 0.2 of them (METHOD_MUTATION_PROB); Optuna's 1/n rule over (method, lr,
    # weight_decay) gives (1/3)(1/2), and a method that is never mutated gives 0.
    assert 0.1 <= switched / children <= 0.35


def test_nsga2_first_generation_is_the_cover() -> None:
    sampler = make_sampler("nsga2", 1, trials=30, methods=METHODS)
    study = _study(sampler)
    _run(study, sampler.n_cover + 1)
    assert sampler.base.population_size == sampler.n_cover == population_size(30, len(METHODS))
    first = sampler.base.get_population(study, 0)
    assert Counter(t.params[METHOD_PARAM] for t in first) == {
        m: sampler.n_cover // len(METHODS) for m in METHODS
    }


def test_gp_runs_on_the_default_space_with_two_objectives() -> None:
    sampler = _cheap(make_sampler("gp", 0, trials=8, methods=METHODS, concurrency=2))
    study = _study(sampler)
    _run(study, sampler.n_cover)
    _run(study, sampler.n_cover + 4, batch=2)  # a running trial: q-batch acquisition
    gp_trials = [t for t in study.trials if any(k.startswith("gp:relative_params")
                                                 for k in t.system_attrs)]  # fmt: skip
    assert len(gp_trials) == 4  # every trial past the start-up was the GP's
    assert all({"method", "lr", "weight_decay"} <= set(t.params) for t in gp_trials)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_gp_falls_back_when_nothing_shared_is_numeric(caplog: pytest.LogCaptureFixture) -> None:
    space = SpaceConfig.from_dict({"methods": ["lora", "adapter"], "lr": 1.0e-3,
                                   "weight_decay": 1.0e-2})  # fmt: skip
    study = _study(_cheap(make_sampler("gp", 0, trials=8, methods=space.methods)))
    with caplog.at_level(logging.WARNING, logger="search.samplers"):
        _run(study, 8, space=space)
    warnings = [r for r in caplog.records if "nothing numeric" in r.getMessage()]
    assert len(warnings) == 1 and "method" in warnings[0].getMessage()
    assert not any(k.startswith("gp:relative_params") for t in study.trials for k in t.system_attrs)


@pytest.mark.parametrize("name", SAMPLERS)
def test_describe_sampler_keys(name: str) -> None:
    info = describe_sampler(make_sampler(name, 3, trials=20, methods=METHODS, concurrency=2))
    common = {"class", "name", "seed", "trials", "concurrency", "methods"}
    own = {
        "tpe": {"startup_trials", "multivariate", "group", "constant_liar", "cover_trials",
                "cover_order"},
        "nsga2": {"population_size", "crossover", "crossover_prob", "swapping_prob",
                  "mutation_prob", "method_mutation_prob", "cover_trials", "cover_order"},
        "gp": {"startup_trials", "gp_params", "conditional_sampler", "preliminary_samples",
               "local_searches", "ehvi_samples", "cover_trials", "cover_order"},
        "random": set(),
    }[name]  # fmt: skip
    assert set(info) == common | own
    assert all(isinstance(v, str | int | float | bool) for v in info.values())
    assert (info["name"], info["seed"], info["trials"], info["concurrency"]) == (name, 3, 20, 2)
    assert info["methods"] == ",".join(METHODS)
    if name == "tpe":
        assert info["class"] == "TPESampler" and info["multivariate"] and info["group"]
        assert info["constant_liar"] and info["startup_trials"] >= len(METHODS)
    if name != "random":
        assert sorted(str(info["cover_order"]).split(",")) == sorted(METHODS)


def test_random_stays_the_plain_baseline() -> None:
    assert type(make_sampler("random", 0, 12, METHODS)) is optuna.samplers.RandomSampler
    assert describe_sampler(optuna.samplers.TPESampler()) == {"class": "TPESampler"}


@pytest.mark.parametrize("name", SAMPLERS)
def test_pickle_round_trip_continues_the_search(name: str) -> None:
    """Ray's OptunaSearch pickles its study (sampler included) to resume a search."""
    study = _study(_cheap(make_sampler(name, 2, trials=8, methods=METHODS)))
    _run(study, 6)
    again = pickle.loads(pickle.dumps(study))
    assert type(again.sampler) is type(study.sampler)
    assert describe_sampler(again.sampler) == describe_sampler(study.sampler)
    fn = define_by_run(SPACE)
    first, second = study.ask(), again.ask()
    fn(first)
    fn(second)
    assert first.params == second.params


class Recording(optuna.samplers.RandomSampler):
    """A base that records the hooks it receives."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.calls: list[str] = []

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.calls.append("before_trial")

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self.calls.append(f"after_trial:{state.name}")

    def reseed_rng(self) -> None:
        self.calls.append("reseed_rng")


def test_cover_delegates_every_hook() -> None:
    base = Recording()
    cover = MethodCoverSampler(base, METHODS, n_cover=4, seed=0)
    study = _study(cover)
    _run(study, 2)
    cover.reseed_rng()
    assert base.calls == ["before_trial", "after_trial:COMPLETE"] * 2 + ["reseed_rng"]
    assert cover.order == MethodCoverSampler(Recording(), METHODS, 4, seed=0).order  # kept


def test_sizes_of_the_start() -> None:
    for trials in (1, 5, 12, 30, 60, 200):
        for k in (1, 3, 4, 5):
            n = startup_trials(trials, k)
            assert n >= k and n % k == 0 and n <= max(10, k)
            p = population_size(trials, k)
            assert p >= max(2, k) and p % k == 0
    assert startup_trials(60, 4) == 8 and population_size(60, 4) == 20
    assert startup_trials(12, 0) == 4  # no methods: no cover, Optuna-like start-up


@pytest.mark.parametrize("name", SAMPLERS)
def test_single_objective_searches_run(name: str) -> None:
    study = optuna.create_study(direction="maximize")
    study.sampler = _cheap(make_sampler(name, 0, trials=8, methods=METHODS))
    fn = define_by_run(SPACE)
    for _ in range(7):  # past the start-up of 4
        trial = study.ask()
        fn(trial)
        study.tell(trial, fake_objective(trial.params)[0])
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 7


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sampler must be one of tpe, nsga2, gp, random"):
        make_sampler("cmaes", 0, 12, METHODS)
    with pytest.raises(ValueError, match="n_cover must be >= 4"):
        MethodCoverSampler(Recording(), METHODS, n_cover=3, seed=0)
    gp = make_sampler("gp", 0, 12, METHODS)
    assert isinstance(gp, MethodCoverSampler) and isinstance(gp.base, MethodGPSampler)
    with pytest.raises(ValueError, match="local_searches >= 2"):
        gp.base.set_acquisition(preliminary_samples=64, local_searches=1, ehvi_samples=16)


def test_settings_accept_every_sampler(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"")
    for name in SAMPLERS:
        assert SearchSettings(manifests=(manifest,), sampler=name).sampler == name
    with pytest.raises(ValueError, match="sampler must be one of tpe, nsga2, gp, random"):
        SearchSettings(manifests=(manifest,), sampler="cmaes")
