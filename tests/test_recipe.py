"""`--recipe peft-ser`: the recipe's values reach the run, flags still win, and the space agrees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.cli import main
from search.cli.app import build_parser
from search.cli.recipe import with_recipe
from search.cli.run import train_config_from_args
from trainables.config import TrainConfig
from trainables.methods import METHODS
from trainables.model import HeadConfig
from trainables.recipes import PEFT_SER, RECIPES


def _parse(*flags: str):  # noqa: ANN202 - argparse.Namespace
    argv = ["train", "--manifest", "m.parquet", "--out", "o", *flags]
    parser = build_parser()
    return with_recipe(parser, parser.parse_args(argv), argv)


@pytest.mark.parametrize("name", RECIPES.names())
@pytest.mark.parametrize("method", METHODS.names())
def test_recipe_values_reach_the_train_config(name: str, method: str) -> None:
    recipe = RECIPES.get(name)
    cfg = train_config_from_args(_parse("--recipe", name, "--method", method))
    for field, value in recipe.train.items():
        assert getattr(cfg, field) == value, field
    assert cfg.head == HeadConfig(**recipe.head)
    expected = {**METHODS.get(method).config_cls().__dict__, **recipe.method_options(method)}
    built = {**METHODS.get(method).config_cls(**cfg.method_options).__dict__}
    assert built == expected


def test_without_a_recipe_the_defaults_are_the_train_configs() -> None:
    cfg = train_config_from_args(_parse())
    default = TrainConfig(manifest=Path("m.parquet"))
    for field in PEFT_SER.train:
        assert getattr(cfg, field) == getattr(default, field), field
    assert cfg.head == default.head


@pytest.mark.parametrize("before", [True, False])
def test_a_flag_overrides_the_recipe_wherever_it_stands(before: bool) -> None:
    flags = ["--epochs", "2", "--lora-rank", "4", "--crop", "random"]
    recipe = ["--recipe", "peft-ser"]
    cfg = train_config_from_args(_parse(*(flags + recipe if before else recipe + flags)))
    assert (cfg.epochs, cfg.method_options["rank"], cfg.crop) == (2, 4, "random")
    assert cfg.method_options["alpha"] == 1.0  # the rest of the recipe still applies
    assert cfg.optimizer == "adam"


@pytest.mark.parametrize("method", METHODS.names())
def test_train_with_the_recipe_runs_every_method(
    synth_corpus: Path, tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOTUNE_SMOKE", "1")  # 1 epoch, 1 s crops: the rest is the recipe's
    out = tmp_path / "run"
    code = main(["train", "--manifest", str(synth_corpus), "--method", method,
                 "--recipe", "peft-ser", "--batch-size", "8", "--out", str(out)])  # fmt: skip
    assert code == 0
    config = json.loads((out / "result.json").read_text())["config"]
    assert (config["optimizer"], config["crop"], config["augment"]) == (
        "adam",
        "first",
        "noise,timemask",
    )
    assert config["head"]["layers"] == "transformer"
    assert config["method_options"] == {
        **config["method_options"],
        **PEFT_SER.method_options(method),
    }
