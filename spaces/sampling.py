"""From a :class:`SpaceConfig` to Optuna trials, and from sampled points to TrainConfigs.

Flat trial parameter names: ``method``; ``<method>_<option>`` for the chosen method's section
(``lora_rank``, ``lora_alpha_ratio``, ``lora_targets``, ``lora_dropout``, ``lora_use_dora``,
``adapter_width``, ``adapter_scale``, ``prompt_length``, ``prompt_deep``); and the shared
``lr``, ``weight_decay``, ``epochs`` (TrainConfig field names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from spaces.params import Scalar, SpaceError, check
from spaces.space import METHOD_SPACES, SpaceConfig
from trainables.config import TrainConfig
from trainables.methods import METHODS

METHOD_PARAM = "method"


class DefineByRun:
    """Optuna define-by-run function over a space (picklable, unlike a closure, because Ray's
    ``OptunaSearch.save`` pickles its space along with the searcher state).

    Calling it suggests ``method``, then only that method's options, then the shared options;
    fixed values are suggested as one-choice categoricals so every value is in
    ``trial.params``. Only ``trial.suggest_*`` is used, so Ray's trial wrapper works too.
    """

    def __init__(self, space: SpaceConfig) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        """Samples one point on ``trial``; returns the constants to merge (none: ``{}``)."""
        method = trial.suggest_categorical(METHOD_PARAM, list(self.space.methods))
        section = self.space.method_space(method)
        if section is not None:
            section.suggest(trial)
        self.space.suggest_shared(trial)
        return {}


def define_by_run(space: SpaceConfig) -> DefineByRun:
    """The define-by-run function for ``OptunaSearch(space=...)`` or a plain Optuna study.

    Args:
        space: a validated space.

    Returns:
        A callable ``fn(trial) -> dict``: it suggests the parameters on ``trial`` and returns
        ``{}`` (no constants); the sampled point is ``trial.params`` (or Ray's trial config).
    """
    return DefineByRun(space)


def param_names(method: str | None = None) -> list[str]:
    """Every flat parameter name (or those a trial of ``method`` has), in suggestion order."""
    names = [METHOD_PARAM]
    for name, section in METHOD_SPACES.items():
        if method is None or name == method:
            names += list(section.domains())
    return names + list(SpaceConfig.shared_domains())


def to_train_config(params: Mapping[str, Any], base: Mapping[str, Any]) -> TrainConfig:
    """Builds the TrainConfig of one sampled point.

    Args:
        params: flat sampled values (``trial.params`` or the search part of Ray's config):
            ``method``, all of that method's ``<method>_*`` options, and any of ``lr``,
            ``weight_decay``, ``epochs`` (missing shared ones fall back to ``base`` / defaults).
        base: the other TrainConfig fields (manifest, backbone, batch_size, seed, fold, ...).

    Returns:
        The validated config; ``method_options`` come from the method's section
        (for LoRA ``alpha = alpha_ratio * rank``).

    Raises:
        SpaceError: a missing ``method``, an unknown name, a name of another method, a missing
            option, a value outside its domain, or a base field the space owns.
        ValueError: ``base`` fails TrainConfig validation.
    """
    if METHOD_PARAM not in params:
        raise SpaceError(f"params: missing {METHOD_PARAM!r}; got {sorted(params)}")
    method = params[METHOD_PARAM]
    if not isinstance(method, str) or method not in METHODS:
        raise SpaceError(
            f"params.method: unknown method {method!r}; registered: {', '.join(METHODS.names())}"
        )
    unknown = sorted(set(params) - set(param_names()))
    if unknown:
        raise SpaceError(f"params: unknown name(s) {unknown}; known: {', '.join(param_names())}")
    foreign = sorted(set(params) - set(param_names(method)))
    if foreign:
        raise SpaceError(f"params: {foreign} do not belong to method {method!r}")
    owned = sorted(set(base) & {METHOD_PARAM, "method_options", *param_names(method)})
    if owned:
        raise SpaceError(f"base: {owned} are set by the search space, not the base config")

    options: dict[str, Any] = {}
    section = METHOD_SPACES.get(method)
    if section is not None:
        values = _checked(params, section.domains(), require=True)
        options = section.options({k.removeprefix(section.prefix): v for k, v in values.items()})
    shared = _checked(params, SpaceConfig.shared_domains(), require=False)
    return TrainConfig.from_dict({**base, **shared, "method": method, "method_options": options})


def _checked(
    params: Mapping[str, Any], domains: Mapping[str, Any], require: bool
) -> dict[str, Scalar]:
    missing = sorted(set(domains) - set(params))
    if require and missing:
        raise SpaceError(f"params: missing {missing}")
    return {n: check(d, params[n], f"params.{n}") for n, d in domains.items() if n in params}


def describe(space: SpaceConfig) -> dict[str, str]:
    """A flat, JSON-serialisable summary of ``space`` (see :meth:`SpaceConfig.describe`)."""
    return space.describe()
