"""``--recipe NAME``: a recipe's values become a command's defaults; flags given still win.

The command line is parsed twice: once to learn the recipe and the method, then again after
the recipe's values were set as the sub-command's defaults, so an explicit flag (wherever it
stands on the line) overrides the recipe, and the recipe overrides the built-in defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from trainables.recipes import RECIPES, Recipe

# TrainConfig / HeadConfig fields whose flag takes several of them, or has another name.
_PAIRS = {
    "betas": ("adam_beta1", "adam_beta2"),
    "noise_snr": ("noise_snr_min", "noise_snr_max"),
    "timemask": ("timemask_min", "timemask_max"),
}
_HEAD_DESTS = {"layers": "head_layers", "proj_dim": "head_width", "dropout": "head_dropout"}


def add_recipe_arg(p: argparse.ArgumentParser) -> None:
    """``--recipe`` (``train``): see :mod:`trainables.recipes`."""
    p.add_argument(
        "--recipe",
        choices=RECIPES.names(),
        default=None,
        help="start from a published protocol's settings (flags given still override them): "
        + "; ".join(f"{n}: {RECIPES.get(n).title}" for n in RECIPES)
        + " (default: none)",
    )
    p.set_defaults(recipe_parser=p)


def recipe_defaults(recipe: Recipe, method: str) -> dict[str, Any]:
    """The argparse ``dest -> value`` defaults that ``recipe`` gives a run of ``method``."""
    train = dict(recipe.train)
    out: dict[str, Any] = {}
    for dest, (first, second) in _PAIRS.items():
        if first in train or second in train:
            out[dest] = [train.pop(first), train.pop(second)]
    out.update(train)
    for field, value in recipe.head.items():
        out[_HEAD_DESTS.get(field, field)] = value
    for field, value in recipe.method_options(method).items():
        out[f"opt__{method}__{field}"] = value
    return out


def with_recipe(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> argparse.Namespace:
    """``args`` re-parsed with the recipe's values as defaults (unchanged without a recipe).

    Raises:
        KeyError: the recipe names a setting the command has no flag for (a bug in the recipe
            table, caught by the tests).
    """
    name = getattr(args, "recipe", None)
    if not name:
        return args
    sub: argparse.ArgumentParser = args.recipe_parser
    defaults = recipe_defaults(RECIPES.get(name), args.method)
    dests = {action.dest for action in sub._actions}
    unknown = sorted(set(defaults) - dests)
    if unknown:
        raise KeyError(f"recipe {name!r}: no flag of `emotune {args.command}` for {unknown}")
    sub.set_defaults(**defaults)
    return parser.parse_args(argv)
