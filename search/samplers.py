"""The Optuna samplers of ``emotune search --sampler`` (also used by ``bench/``)."""

from __future__ import annotations

from collections.abc import Sequence

import optuna

SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random")


def make_sampler(
    name: str,
    seed: int,
    trials: int,
    methods: Sequence[str] = (),
    concurrency: int = 1,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``--sampler`` for a budget of ``trials`` (also used by bench/)."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, trials // 3))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3)))
