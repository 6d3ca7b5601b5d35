"""Search spaces: validation, YAML, conditional sampling and conversion to TrainConfig."""

from __future__ import annotations

import json
import pickle
import statistics
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from spaces import (
    DEFAULT_METHODS,
    DEFAULT_SPACE_PATH,
    METHOD_SPACES,
    Choice,
    Fixed,
    Range,
    SpaceConfig,
    SpaceError,
    define_by_run,
    describe,
    param_names,
    to_train_config,
)
from trainables.config import TrainConfig
from trainables.methods import METHODS, build_method
from trainables.methods.options import search_options

optuna.logging.set_verbosity(optuna.logging.WARNING)
LoraSpace = METHOD_SPACES["lora"]


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    return {"manifest": tmp_path / "manifest.parquet", "backbone": "tiny-wavlm", "seed": 3}


def _sample(space: SpaceConfig, n: int, sampler: optuna.samplers.BaseSampler) -> list[dict]:
    """Runs ``n`` ask/tell trials and returns each trial's params (plus returned constants)."""
    study = optuna.create_study(sampler=sampler)
    fn = define_by_run(space)
    points = []
    for i in range(n):
        trial = study.ask()
        constants = fn(trial)
        study.tell(trial, float(i % 7))
        points.append({**trial.params, **constants})
    return points


# --- defaults, YAML and the registry ------------------------------------------------------------


def test_default_yaml_equals_defaults() -> None:
    assert SpaceConfig.from_yaml(DEFAULT_SPACE_PATH) == SpaceConfig()


def test_default_yaml_states_what_the_methods_declare() -> None:
    """default.yaml is the readable default: it lists the default methods, and for each of them
    every option the method declares, with the range the method's own file gives."""
    raw = yaml.safe_load(DEFAULT_SPACE_PATH.read_text(encoding="utf-8"))
    assert tuple(raw["methods"]) == DEFAULT_METHODS == SpaceConfig().methods
    for method in DEFAULT_METHODS:
        declared = search_options(METHODS.get(method).config_cls)
        if not declared:
            assert method not in raw
            continue
        assert list(raw[method]) == [o.name for o in declared]
        section = METHOD_SPACES[method]
        assert section.from_dict(raw[method]) == section()
        for o in declared:  # the space checks values with the method's own domain
            assert section.domains()[f"{method}_{o.name}"] is o.domain


def test_method_config_and_space_share_one_check() -> None:
    """A value the method refuses is refused by the space too, with the same reason."""
    with pytest.raises(ValueError, match="lora rank must be >= 1, got 0"):
        build_method("lora", {"rank": 0})
    with pytest.raises(SpaceError, match=r"space\.lora\.rank: choice \(0\) must be >= 1"):
        LoraSpace(rank=Choice((0, 4)))
    with pytest.raises(ValueError, match="adapter width must be of type int, got 'wide'"):
        build_method("adapter", {"width": "wide"})
    assert build_method("adapter", {"width": 8.0}).config.width == 8  # a JSON round trip


def test_yaml_round_trip(tmp_path: Path) -> None:
    space = SpaceConfig(
        methods=("full", "lora", "prompt"),
        lora=LoraSpace(
            rank=Range(2, 16, log=True),
            alpha_ratio=Range(0.5, 4.0),
            targets=Choice(("ffn",)),
            dropout=Range(0.0, 0.2),
            use_dora=Choice((False, True)),
        ),
    )
    path = tmp_path / "space.yaml"
    space.to_yaml(path)
    assert SpaceConfig.from_yaml(path) == space
    assert SpaceConfig.from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_partial_yaml_keeps_defaults_and_reads_1e_strings(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1e-5, high: 1e-3, log: true}\n", encoding="utf-8")
    space = SpaceConfig.from_yaml(path)  # PyYAML reads 1e-5 as a string
    assert space.lr == Range(1e-5, 1e-3, log=True)
    assert space.lora == LoraSpace()
    assert SpaceConfig.from_dict({"epochs": 3}).epochs == Fixed(3)
    assert SpaceConfig.from_dict(None) == SpaceConfig()  # an empty YAML file


@pytest.mark.parametrize("method", sorted(METHOD_SPACES))
def test_method_spaces_belong_to_registered_methods(method: str) -> None:
    section = METHOD_SPACES[method]
    assert method in METHODS and section.key == method and section.prefix == f"{method}_"
    space = SpaceConfig(methods=(method,))
    point = _sample(space, 1, optuna.samplers.RandomSampler(seed=0))[0]
    options = to_train_config(point, {"manifest": "m.parquet"}).method_options
    build_method(method, options)  # options are the method's config fields


@pytest.mark.parametrize("method", METHODS.names())
def test_every_registered_method_is_searchable(method: str, base: dict[str, Any]) -> None:
    points = _sample(SpaceConfig(methods=(method,)), 3, optuna.samplers.RandomSampler(seed=1))
    for point in points:
        assert set(point) == set(param_names(method))
        config = to_train_config(point, base)
        assert config.method == method


# --- sampling -------------------------------------------------------------------------------------


def test_every_sampled_point_parses(base: dict[str, Any]) -> None:
    space = SpaceConfig(methods=("frozen", "full", "lora", "adapter", "prompt"))
    points = _sample(space, 200, optuna.samplers.RandomSampler(seed=0))
    assert {p["method"] for p in points} == set(space.methods)
    for point in points:
        method = point["method"]
        assert set(point) == set(param_names(method))  # conditional: nothing of other methods
        config = to_train_config(point, base)
        assert isinstance(config, TrainConfig)
        assert (config.method, config.seed, config.backbone) == (method, 3, "tiny-wavlm")
        assert config.epochs == 10 and 1e-4 <= config.weight_decay <= 1e-1
        if method == "full":  # its own learning-rate range, under its own name
            assert "lr" not in point and config.lr == point["full.lr"]
            assert 1e-5 <= config.lr <= 1e-4
        else:
            assert config.lr == point["lr"] and 1e-4 <= config.lr <= 5e-3
        if method == "lora":
            opts = config.method_options
            assert isinstance(opts["rank"], int) and 1 <= opts["rank"] <= 64
            assert opts["alpha"] == point["lora_alpha_ratio"] * opts["rank"]
            assert point["lora_alpha_ratio"] in (0.5, 1.0, 2.0, 4.0)
            assert opts["targets"] in ("attention", "ffn", "both") and opts["dropout"] == 0.05
        elif method == "adapter":
            assert 8 <= config.method_options["width"] <= 256
        elif method == "prompt":
            assert 1 <= config.method_options["length"] <= 32
            assert config.method_options["deep"] in (False, True)
        else:
            assert config.method_options == {}


def test_bounds_choices_and_log_scale() -> None:
    space = SpaceConfig(
        methods=("lora", "prompt"),
        lora=LoraSpace(rank=Range(2, 32, log=True), targets=Choice(("attention", "both"))),
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    fn = define_by_run(space)
    ranks, targets, deep = [], set(), set()
    for _ in range(150):
        trial = study.ask()
        fn(trial)
        study.tell(trial, 0.0)
        if trial.params["method"] == "lora":
            dist = trial.distributions["lora_rank"]
            assert isinstance(dist, optuna.distributions.IntDistribution) and dist.log
            ranks.append(trial.params["lora_rank"])
            targets.add(trial.params["lora_targets"])
        else:
            deep.add(trial.params["prompt_deep"])
    assert all(isinstance(r, int) and 2 <= r <= 32 for r in ranks)
    assert statistics.median(ranks) < 12  # log-uniform on [2, 32]: median ~8; uniform: ~17
    assert targets == {"attention", "both"} and deep == {False, True}


def test_conditional_space_with_tpe(base: dict[str, Any]) -> None:
    points = _sample(SpaceConfig(), 30, optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
    for point in points:
        to_train_config(point, base)


def test_epochs_range_and_fixed_values_are_recorded() -> None:
    space = SpaceConfig.from_dict({"methods": ["adapter"], "epochs": {"low": 2, "high": 5}})
    for point in _sample(space, 20, optuna.samplers.RandomSampler(seed=0)):
        assert 2 <= point["epochs"] <= 5 and point["adapter_scale"] == 1.0


def test_define_by_run_pickles_and_works_through_rays_trial_wrapper() -> None:
    # Ray's OptunaSearch pickles its space with the searcher state and wraps the trial.
    fn = pickle.loads(pickle.dumps(define_by_run(SpaceConfig())))
    optuna_search = pytest.importorskip("ray.tune.search.optuna.optuna_search")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        captor = optuna_search._OptunaTrialSuggestCaptor(trial)
        constants = fn(captor)
        assert {**captor.captured_values, **constants} == trial.params


# --- invalid spaces -------------------------------------------------------------------------------

INVALID = [
    ({"lora": {"rank": {"low": 8, "high": 8}}}, r"space\.lora\.rank: low \(8\) must be < high \(8\)"),
    ({"lora": {"rank": {"low": 0, "high": 8, "log": True}}}, r"space\.lora\.rank: low \(0\) must be >= 1 for a log scale"),
    ({"weight_decay": {"low": 0, "high": 0.1, "log": True}}, r"space\.weight_decay: low \(0\.0\) must be > 0 for a log scale"),
    ({"epochs": {"low": 0, "high": 5}}, r"space\.epochs: low \(0\) must be >= 1"),
    ({"methods": ["lora", "bitfit"]}, r"space\.methods: unknown method 'bitfit'; registered: .*adapter.*frozen.*full.*lora.*prompt"),
    ({"methods": []}, r"space\.methods: must not be empty"),
    ({"methods": "lora"}, r"space\.methods: expected a list"),
    ({"methods": ["lora", "lora"]}, r"space\.methods: 'lora' is listed more than once"),
    ({"lora": {"targets": {"choices": ["attention", "mlp"]}}}, r"space\.lora\.targets: choice \('mlp'\) must be one of 'attention', 'ffn', 'both'"),
    ({"lora": {"targets": {"choices": []}}}, r"space\.lora\.targets: choices must not be empty"),
    ({"lora": {"targets": {"low": 1, "high": 2}}}, r"space\.lora\.targets: a range needs a numeric"),
    ({"prompt": {"deep": {"choices": [True, True]}}}, r"space\.prompt\.deep: choices repeat"),
    ({"lora": {"dropout": 1.0}}, r"space\.lora\.dropout: value \(1\.0\) must be < 1"),
    ({"lora": {"rank": {"low": 1.5, "high": 8}}}, r"space\.lora\.rank: low \(1\.5\) must be of type int"),
    ({"adapter": {"width": {"choices": [16, "wide"]}}}, r"space\.adapter\.width: choice \('wide'\) must be of type int"),
    ({"loraa": {}}, r"space: unknown key\(s\) \['loraa'\]"),
    ({"lora": {"rnk": 4}}, r"space\.lora: unknown key\(s\) \['rnk'\]"),
    ({"lora": {"rank": {"low": 1, "hi": 8}}}, r"space\.lora\.rank: unknown key\(s\) \['hi'\]"),
    ({"lora": {"rank": [1, 8]}}, r"space\.lora\.rank: expected a value"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), INVALID)
def test_invalid_space_names_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        SpaceConfig.from_dict(data)


def test_python_construction_is_validated_too() -> None:
    with pytest.raises(SpaceError, match=r"space\.lora\.rank: low \(0\) must be >= 1 for a log"):
        LoraSpace(rank=Range(0, 8, log=True))
    with pytest.raises(SpaceError, match="space.methods: unknown method 'nope'"):
        SpaceConfig(methods=("nope",))
    assert LoraSpace(alpha_ratio=Choice([1, 2])).alpha_ratio == Choice((1.0, 2.0))


# --- to_train_config ------------------------------------------------------------------------------

GOOD = {
    "method": "lora",
    "lora_rank": 8,
    "lora_alpha_ratio": 2.0,
    "lora_targets": "both",
    "lora_dropout": 0.1,
    "lora_use_dora": False,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "epochs": 4,
}


def test_to_train_config_builds_options(base: dict[str, Any]) -> None:
    config = to_train_config(GOOD, {**base, "batch_size": 8, "fold": 1})
    assert config.method_options == {
        "rank": 8,
        "alpha": 16.0,
        "targets": "both",
        "dropout": 0.1,
        "use_dora": False,
    }
    assert (config.lr, config.weight_decay, config.epochs) == (1e-3, 0.01, 4)
    assert (config.batch_size, config.fold, config.seed) == (8, 1, 3)


@pytest.mark.parametrize(
    ("params", "base_extra", "message"),
    [
        ({**GOOD, "lora_rnk": 8}, {}, r"params: unknown name\(s\) \['lora_rnk'\]"),
        ({**GOOD, "adapter_width": 16}, {}, r"\['adapter_width'\] do not belong to method 'lora'"),
        ({k: v for k, v in GOOD.items() if k != "method"}, {}, r"params: missing 'method'"),
        (
            {k: v for k, v in GOOD.items() if k != "lora_rank"},
            {},
            r"params: missing \['lora_rank'\]",
        ),
        ({**GOOD, "method": "bitfit"}, {}, r"params\.method: unknown method 'bitfit'"),
        (
            {**GOOD, "lora_targets": "mlp"},
            {},
            r"params\.lora_targets: value \('mlp'\) must be one of",
        ),
        ({**GOOD, "lora_rank": 0}, {}, r"params\.lora_rank: value \(0\) must be >= 1"),
        (GOOD, {"lr": 0.1}, r"base: \['lr'\] are set by the search space"),
        (GOOD, {"method_options": {}}, r"base: \['method_options'\]"),
    ],
)
def test_to_train_config_rejects_bad_points(
    params: dict[str, Any], base_extra: dict[str, Any], message: str, base: dict[str, Any]
) -> None:
    with pytest.raises(SpaceError, match=message):
        to_train_config(params, {**base, **base_extra})


def test_to_train_config_rejects_unknown_base_fields(base: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['bogus'\]"):
        to_train_config(GOOD, {**base, "bogus": 1})


# --- describe -------------------------------------------------------------------------------------


def test_describe_is_flat_json_for_searched_methods_only() -> None:
    space = SpaceConfig(methods=("frozen", "prompt"))
    summary = describe(space)
    assert summary == space.describe()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["space.methods"] == "frozen, prompt"
    assert summary["space.prompt.length"] == "[1, 32]"
    assert summary["space.lr"] == "[0.0001, 0.005] log"
    assert summary["space.epochs"] == "10"
    assert not any(k.startswith(("space.lora", "space.adapter")) for k in summary)
