"""Search spaces, issue 12: training settings in a space, per-method learning rates, LoRA's
``alpha`` or ``alpha_ratio``, and the shipped space files (``spaces/*.yaml``)."""

from __future__ import annotations

import dataclasses
import pickle
import re
import typing
from pathlib import Path
from typing import Any

import optuna
import pytest

from spaces import (
    DEFAULT_SPACE_PATH,
    METHOD_SPACES,
    TRAIN_FIELDS,
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
from spaces.training import FIELDS, PER_METHOD, SPACE_OWNED
from trainables.config import TrainConfig
from trainables.data.augment import normalise_augment
from trainables.methods.lora import LoraConfig
from trainables.methods.options import search_options
from trainables.model import HeadConfig
from trainables.recipes import RECIPES

optuna.logging.set_verbosity(optuna.logging.WARNING)
LoraSpace = METHOD_SPACES["lora"]
SPACE_FILES = sorted(DEFAULT_SPACE_PATH.parent.glob("*.yaml"))

# A valid value of every training setting, none of them TrainConfig's default.
FIXED: dict[str, Any] = {
    "lr": 2e-4, "weight_decay": 0.003, "epochs": 3, "batch_size": 4, "optimizer": "adam",
    "adam_beta1": 0.8, "adam_beta2": 0.95, "schedule": "plateau", "plateau_metric": "loss",
    "plateau_patience": 3, "plateau_factor": 0.25, "min_lr": 1e-6, "warmup_ratio": 0.0,
    "grad_clip": 0.5, "patience": 2, "max_seconds": 3.0, "crop": "first", "eval_crop": "first",
    "augment": "noise,timemask", "augment_p": 0.5, "noise_snr_min": 5.0, "noise_snr_max": 20.0,
    "timemask_min": 0.05, "timemask_max": 0.2, "head_layers": "transformer", "head_width": 32,
    "pooling": "attentive", "head_dropout": 0.2,
}  # fmt: skip

# A searched form (range or choices) of every training setting.
SEARCHED: dict[str, Any] = {
    "lr": {"low": 1e-5, "high": 1e-3, "log": True},
    "weight_decay": {"low": 0.0, "high": 0.1},
    "epochs": {"low": 2, "high": 4},
    "batch_size": {"choices": [8, 32]},
    "optimizer": {"choices": ["adamw", "adam"]},
    "adam_beta1": {"low": 0.8, "high": 0.95},
    "adam_beta2": {"choices": [0.98, 0.999]},
    "schedule": {"choices": ["cosine", "plateau"]},
    "plateau_metric": {"choices": ["uar", "loss"]},
    "plateau_patience": {"low": 1, "high": 6},
    "plateau_factor": {"low": 0.1, "high": 0.9},
    "min_lr": {"low": 0.0, "high": 1e-5},
    "warmup_ratio": {"low": 0.0, "high": 0.2},
    "grad_clip": {"low": 0.0, "high": 2.0},
    "patience": {"choices": [0, 3]},
    "max_seconds": {"low": 2.0, "high": 8.0},
    "crop": {"choices": ["random", "first"]},
    "eval_crop": {"choices": ["center", "full", "first"]},
    "augment": {"choices": ["", "noise,timemask"]},
    "augment_p": {"low": 0.2, "high": 1.0},
    "noise_snr_min": {"low": 0.0, "high": 10.0},  # TrainConfig's default max is 30
    "noise_snr_max": {"low": 30.0, "high": 40.0},
    "timemask_min": {"low": 0.0, "high": 0.1},  # TrainConfig's default max is 0.15
    "timemask_max": {"low": 0.15, "high": 0.3},
    "head_layers": {"choices": ["all", "transformer"]},
    "head_width": {"low": 16, "high": 256, "log": True},
    "pooling": {"choices": ["mean", "attentive"]},
    "head_dropout": {"low": 0.0, "high": 0.5},
}


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    return {"manifest": tmp_path / "manifest.parquet", "backbone": "tiny-wavlm", "seed": 3}


def _trials(space: SpaceConfig, n: int, sampler: optuna.samplers.BaseSampler) -> list:
    study = optuna.create_study(sampler=sampler)
    fn, trials = define_by_run(space), []
    for i in range(n):
        trial = study.ask()
        fn(trial)
        study.tell(trial, float(i % 5))
        trials.append(trial)
    return trials


def _value(config: TrainConfig, name: str) -> Any:
    """The TrainConfig (or head) value that space setting ``name`` sets."""
    spec = FIELDS[name]
    return getattr(config.head if spec.in_head else config, spec.field)


# --- training settings -------------------------------------------------------------------------


def test_the_test_tables_cover_every_training_setting(base: dict[str, Any]) -> None:
    names = [f.name for f in TRAIN_FIELDS]
    assert list(FIXED) == names and list(SEARCHED) == names
    defaults = TrainConfig(manifest=base["manifest"])
    assert all(_value(defaults, n) != v for n, v in FIXED.items())  # each would be noticed


@pytest.mark.parametrize("name", list(FIXED))
def test_a_fixed_setting_reaches_the_trial_config(name: str, base: dict[str, Any]) -> None:
    space = SpaceConfig.from_dict({"methods": ["frozen", "lora"], name: FIXED[name]})
    for trial in _trials(space, 4, optuna.samplers.RandomSampler(seed=0)):
        assert trial.params[name] == FIXED[name]
        config = to_train_config(trial.params, base)
        assert _value(config, name) == FIXED[name]


@pytest.mark.parametrize("name", list(SEARCHED))
def test_a_searched_setting_reaches_the_trial_config(name: str, base: dict[str, Any]) -> None:
    raw = SEARCHED[name]
    space = SpaceConfig.from_dict({"methods": ["adapter"], name: raw})
    seen = set()
    for trial in _trials(space, 12, optuna.samplers.RandomSampler(seed=1)):
        value = trial.params[name]
        assert _value(to_train_config(trial.params, base), name) == value
        if "choices" in raw:
            assert value in raw["choices"]
        else:
            assert raw["low"] <= value <= raw["high"]
            assert isinstance(value, FIELDS[name].domain.kind)
        seen.add(value)
    assert len(seen) > 1  # really searched, not pinned


def test_settings_a_space_does_not_name_keep_the_base_values(base: dict[str, Any]) -> None:
    space = SpaceConfig.from_dict({"methods": ["frozen"], "pooling": "mean", "max_seconds": 4.0})
    search_base = {**base, "batch_size": 8, "max_seconds": 2.0, "head": {"proj_dim": 64}}
    for head in ({"proj_dim": 64, "dropout": 0.3}, HeadConfig(proj_dim=64, dropout=0.3)):
        (trial,) = _trials(space, 1, optuna.samplers.RandomSampler(seed=0))
        assert "batch_size" not in trial.params and "head_width" not in trial.params
        config = to_train_config(trial.params, {**search_base, "head": head})
        assert config.batch_size == 8  # not named: the base's
        assert config.max_seconds == 4.0  # named: the space's, over the base's
        assert config.head == HeadConfig(proj_dim=64, pooling="mean", dropout=0.3)
        assert config.optimizer == "adamw" and config.augment == ""  # TrainConfig's defaults


def test_the_default_space_samples_what_it_did(base: dict[str, Any]) -> None:
    assert SPACE_OWNED == ("lr", "weight_decay", "epochs")
    assert param_names("lora") == [
        "method", "lora_rank", "lora_alpha_ratio", "lora_targets", "lora_dropout",
        "lora_use_dora", "lr", "weight_decay", "epochs",
    ]  # fmt: skip
    assert param_names("frozen") == ["method", "lr", "weight_decay", "epochs"]
    with pytest.raises(SpaceError, match=r"base: \['epochs'\] are set by the search space"):
        to_train_config({"method": "frozen"}, {**base, "epochs": 3})


BAD_FILES = [
    ("optimizer: sgd", r"space\.optimizer: value \('sgd'\) must be one of 'adamw', 'adam'"),
    ("augment_p: 1.5", r"space\.augment_p: value \(1\.5\) must be <= 1"),
    ("crop: {choices: [random, middle]}", r"space\.crop: choice \('middle'\) must be one of"),
    ("head_width: {low: 0, high: 64}", r"space\.head_width: low \(0\) must be >= 1"),
    ("pooling: {low: 1, high: 2}", r"space\.pooling: a range needs a numeric parameter"),
    ('augment: "timemask,noise"', r"space\.augment: value \('timemask,noise'\) must be one of '', 'noise'"),
    ("timemask_max: 1.0", r"space\.timemask_max: value \(1\.0\) must be < 1"),
    ("batch_size: 8.5", r"space\.batch_size: value \(8\.5\) must be of type int"),
    ("lr: null", r"space\.lr: expected a value"),
    ("batch_sz: 8", r"space: unknown key\(s\) \['batch_sz'\]"),
    ("full: {lr: -1.0}", r"space\.full\.lr: value \(-1\.0\) must be > 0"),
    ("frozen: {rank: 4}", r"space\.frozen: unknown key\(s\) \['rank'\]; allowed: lr, weight_decay"),
    ("lora: {alpha: 0.0}", r"space\.lora\.alpha: value \(0\.0\) must be > 0"),
    ("lora: {alpha: 1.0, alpha_ratio: 2.0}", r"space\.lora: give alpha_ratio or alpha, not both"),
    ("lr: [1", r"not a YAML file"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_value_names_the_file_and_the_field(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"methods: [frozen, lora]\n{text}\n", encoding="utf-8")
    with pytest.raises(SpaceError, match=re.escape(str(path)) + ": " + message):
        SpaceConfig.from_yaml(path)


def test_null_leaves_an_optional_setting_to_the_base() -> None:
    assert SpaceConfig.from_dict({"batch_size": None}) == SpaceConfig()
    space = SpaceConfig.from_dict({"batch_size": 8, "full": {"lr": None}})
    assert SpaceConfig.from_dict(space.to_dict()) == space  # the null survives a round trip
    assert space.full.lr is None and space.to_dict()["full"] == {"lr": None}


def test_preflight_builds_both_ends_with_the_new_settings() -> None:
    from search.preflight import space_configs

    space = SpaceConfig.from_dict(
        {"methods": ["full"], "batch_size": {"choices": [4, 32]}, "pooling": "mean"}
    )
    low, high = space_configs(space, {"manifest": "/x/m.parquet", "batch_size": 16})
    assert (low.batch_size, high.batch_size) == (4, 32) and low.head.pooling == "mean"
    assert (low.lr, high.lr) == pytest.approx((1e-5, 1e-4))  # full's own range
    # A check between two settings is TrainConfig's; preflight finds it at the range's end.
    bad = SpaceConfig.from_dict({"methods": ["frozen"], "noise_snr_min": {"low": 20, "high": 40}})
    with pytest.raises(SpaceError, match="method 'frozen' with its high values.*noise_snr_min"):
        space_configs(bad, {"manifest": "/x/m.parquet"})


def test_space_domains_agree_with_train_configs_choices() -> None:
    hints = {
        False: typing.get_type_hints(TrainConfig),
        True: typing.get_type_hints(HeadConfig),
    }
    head_fields = {f.name for f in dataclasses.fields(HeadConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for spec in TRAIN_FIELDS:
        assert spec.field in (head_fields if spec.in_head else train_fields), spec.name
        allowed = spec.domain.allowed
        if spec.name == "augment":  # a free string TrainConfig normalises
            assert allowed is not None and all(normalise_augment(a) == a for a in allowed)
            assert "noise,timemask" in allowed and "" in allowed
        elif allowed is not None:
            literal = hints[spec.in_head][spec.field]
            assert typing.get_origin(literal) is typing.Literal, spec.name
            assert set(typing.get_args(literal)) == set(allowed), spec.name


# --- per-method learning rate -----------------------------------------------------------------


def test_full_has_its_own_learning_rate_range_by_default() -> None:
    space = SpaceConfig()
    assert space.full.lr == Range(1e-5, 1e-4, log=True)
    assert all(getattr(space, m).lr is None for m in METHOD_SPACES if m != "full")
    assert all(getattr(space, m).weight_decay is None for m in METHOD_SPACES)
    assert PER_METHOD == ("lr", "weight_decay")
    assert param_names("full") == ["method", "full.lr", "weight_decay", "epochs"]


def test_a_methods_own_lr_is_a_distinct_parameter(base: dict[str, Any]) -> None:
    space = SpaceConfig(methods=("full", "lora"))
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=6)
    trials = _trials(space, 24, sampler)
    assert {t.params["method"] for t in trials} == {"full", "lora"}
    for trial in trials:
        config = to_train_config(trial.params, base)
        if trial.params["method"] == "full":
            assert "lr" not in trial.params
            dist = trial.distributions["full.lr"]
            assert (dist.low, dist.high, dist.log) == (1e-5, 1e-4, True)
            assert config.lr == trial.params["full.lr"]
        else:
            assert "full.lr" not in trial.params and "lora.lr" not in trial.params
            dist = trial.distributions["lr"]
            assert (dist.low, dist.high, dist.log) == (1e-4, 5e-3, True)
            assert config.lr == trial.params["lr"]


def test_a_section_may_give_its_own_weight_decay_or_share_the_lr(base: dict[str, Any]) -> None:
    space = SpaceConfig.from_dict(
        {"methods": ["frozen", "lora", "full"], "lora": {"weight_decay": 0.0}, "full": {"lr": None}}
    )
    trials = _trials(space, 30, optuna.samplers.RandomSampler(seed=2))
    for trial in trials:
        method, params = trial.params["method"], trial.params
        config = to_train_config(params, base)
        assert "lr" in params and "full.lr" not in params  # full shares the lr range here
        if method == "lora":
            assert "weight_decay" not in params and params["lora.weight_decay"] == 0.0
            assert config.weight_decay == 0.0
        else:
            assert "lora.weight_decay" not in params and config.weight_decay > 0
    summary = describe(space)
    assert summary["space.lora.weight_decay"] == "0.0" and "space.full.lr" not in summary
    assert describe(SpaceConfig(methods=("full",)))["space.full.lr"] == "[1e-05, 0.0001] log"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"method": "full", "lr": 1e-3, "full.lr": 1e-5}, r"give lr or full\.lr, not both"),
        ({"method": "frozen", "full.lr": 1e-5}, r"\['full\.lr'\] do not belong to method 'frozen'"),
        ({"method": "full", "full.lr": 0.0}, r"params\.full\.lr: value \(0\.0\) must be > 0"),
        ({"method": "full", "full.epochs": 3}, r"unknown name\(s\) \['full\.epochs'\]"),
    ],
)
def test_to_train_config_refuses_bad_own_values(
    extra: dict[str, Any], message: str, base: dict[str, Any]
) -> None:
    with pytest.raises(SpaceError, match=message):
        to_train_config(extra, base)


# --- LoRA: alpha or alpha_ratio ----------------------------------------------------------------


def test_lora_declares_alpha_as_the_alternative_of_alpha_ratio() -> None:
    (alpha,) = [o for o in search_options(LoraConfig) if o.field == "alpha"]
    assert (alpha.name, alpha.alternative) == ("alpha_ratio", "alpha")


def test_neither_alpha_nor_alpha_ratio_keeps_the_default_ratio() -> None:
    section = LoraSpace()
    assert section.alpha_ratio == Choice((0.5, 1.0, 2.0, 4.0)) and section.alpha is None
    assert SpaceConfig.from_dict({"lora": {"rank": 4}}).lora.alpha_ratio == section.alpha_ratio
    assert LoraSpace.from_dict({"alpha_ratio": None, "alpha": None}) == section


def test_alpha_alone_is_sampled_as_alpha(base: dict[str, Any]) -> None:
    space = SpaceConfig.from_dict(
        {"methods": ["lora"], "lora": {"rank": 16, "alpha": {"choices": [1.0, 8.0]}}}
    )
    assert space.lora.alpha_ratio is None
    seen = set()
    for trial in _trials(space, 10, optuna.samplers.RandomSampler(seed=0)):
        assert "lora_alpha_ratio" not in trial.params
        options = to_train_config(trial.params, base).method_options
        assert options["alpha"] == trial.params["lora_alpha"]  # as given, not times the rank
        seen.add(options["alpha"])
    assert seen == {1.0, 8.0}
    assert SpaceConfig.from_dict(space.to_dict()) == space
    assert "alpha_ratio" not in space.to_dict()["lora"]


def test_alpha_ratio_alone_scales_with_the_rank(base: dict[str, Any]) -> None:
    space = SpaceConfig.from_dict({"methods": ["lora"], "lora": {"rank": 8, "alpha_ratio": 2.0}})
    (trial,) = _trials(space, 1, optuna.samplers.RandomSampler(seed=0))
    assert "lora_alpha" not in trial.params
    assert to_train_config(trial.params, base).method_options["alpha"] == 16.0


def test_alpha_and_alpha_ratio_together_are_refused(base: dict[str, Any]) -> None:
    with pytest.raises(SpaceError, match=r"space\.lora: give alpha_ratio or alpha, not both"):
        LoraSpace(alpha=Fixed(1.0), alpha_ratio=Fixed(2.0))
    assert LoraSpace(alpha=Fixed(1.0)).alpha_ratio is None  # Python construction, one name
    point = {"method": "lora", "lora_rank": 4, "lora_targets": "ffn", "lora_dropout": 0.0,
             "lora_use_dora": False}  # fmt: skip
    with pytest.raises(SpaceError, match="give lora_alpha_ratio or lora_alpha, not both"):
        to_train_config({**point, "lora_alpha": 1.0, "lora_alpha_ratio": 2.0}, base)
    with pytest.raises(SpaceError, match=r"params: missing \['lora_alpha_ratio'\]"):
        to_train_config(point, base)


# --- the shipped space files -------------------------------------------------------------------


@pytest.mark.parametrize("path", SPACE_FILES, ids=[p.name for p in SPACE_FILES])
def test_every_space_file_gives_a_config_for_each_method(path: Path, base: dict[str, Any]) -> None:
    space = SpaceConfig.from_yaml(path)
    for method in space.methods:
        one = dataclasses.replace(space, methods=(method,))
        for trial in _trials(one, 2, optuna.samplers.RandomSampler(seed=0)):
            assert set(trial.params) == set(param_names(method, space))
            assert to_train_config(trial.params, base).method == method


def test_define_by_run_with_new_settings_pickles_for_ray() -> None:
    space = SpaceConfig.from_yaml(DEFAULT_SPACE_PATH.with_name("peft-ser.yaml"))
    space = dataclasses.replace(space, methods=("full", *space.methods), lr=Range(1e-4, 1e-3))
    fn = pickle.loads(pickle.dumps(define_by_run(space)))
    optuna_search = pytest.importorskip("ray.tune.search.optuna.optuna_search")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        captor = optuna_search._OptunaTrialSuggestCaptor(trial)
        constants = fn(captor)
        assert {**captor.captured_values, **constants} == trial.params


@pytest.mark.parametrize("name", RECIPES.names())
def test_a_recipes_space_file_fixes_the_recipes_values(name: str, base: dict[str, Any]) -> None:
    """``spaces/<recipe>.yaml`` is the recipe as a space: every value fixed (a search over it
    samples only the method), and each method's config holds the recipe's settings."""
    recipe = RECIPES.get(name)
    space = SpaceConfig.from_yaml(DEFAULT_SPACE_PATH.with_name(f"{name}.yaml"))
    assert set(recipe.methods) <= set(space.methods)
    for method in space.methods:
        params = space.params_of(method)
        assert all(isinstance(p, Fixed) for p in params.values()), method
        config = to_train_config(
            {"method": method, **{k: p.value for k, p in params.items()}}, base
        )
        assert {k: getattr(config, k) for k in recipe.train} == dict(recipe.train)
        assert {k: getattr(config.head, k) for k in recipe.head} == dict(recipe.head)
        options = recipe.method_options(method)
        assert {k: config.method_options[k] for k in options} == options, method
