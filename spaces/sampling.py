"""From a :class:`SpaceConfig` to Optuna trials, and from sampled points to TrainConfigs.

Flat trial parameter names: ``method``; ``<method>_<option>`` for the chosen method's section
(``lora_rank``, ``lora_alpha_ratio`` or ``lora_alpha``, ``lora_targets``, ``lora_dropout``,
``lora_use_dora``, ``adapter_width``, ``adapter_scale``, ``prompt_length``, ``prompt_deep``);
the shared training settings under their :data:`~spaces.training.TRAIN_FIELDS` names (``lr``,
``weight_decay``, ``epochs`` always; ``batch_size``, ``optimizer``, ``pooling``, ... when the
space sets them); and ``<method>.lr`` / ``<method>.weight_decay`` instead of ``lr`` /
``weight_decay`` where the method's section gives its own range (``full.lr`` in the default
space).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from spaces.params import SpaceError, check
from spaces.space import METHOD_SPACES, SpaceConfig
from spaces.training import SPACE_OWNED, TRAIN_FIELDS, own_name, train_values
from trainables.config import TrainConfig
from trainables.methods import METHODS

METHOD_PARAM = "method"


class DefineByRun:
    """Optuna define-by-run function over a space (picklable, unlike a closure, because Ray's
    ``OptunaSearch.save`` pickles its space along with the searcher state).

    Calling it suggests ``method``, then only that method's options, then the shared settings
    the space sets (the method's own ``lr`` under ``<method>.lr`` where it has one); fixed
    values are suggested as one-choice categoricals so every value is in ``trial.params``.
    Only ``trial.suggest_*`` is used, so Ray's trial wrapper works too.
    """

    def __init__(self, space: SpaceConfig) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        """Samples one point on ``trial``; returns the constants to merge (none: ``{}``)."""
        method = trial.suggest_categorical(METHOD_PARAM, list(self.space.methods))
        self.space.suggest(trial, method)
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


def param_names(method: str | None = None, space: SpaceConfig | None = None) -> list[str]:
    """The flat parameter names a trial of ``method`` has in ``space``, in suggestion order.

    Args:
        method: a registered method; None: the names of every registered method's trials.
        space: default: ``SpaceConfig()`` (the default space).
    """
    space = SpaceConfig() if space is None else space
    names = {METHOD_PARAM: None}
    for name in METHOD_SPACES if method is None else [method]:
        names.update(dict.fromkeys(space.params_of(name)))
    return list(names)


def known_names(method: str | None = None) -> list[str]:
    """Every flat parameter name a trial of ``method`` (None: of any method) may have in some
    space: its options under each of their names, its own shared values and every shared
    setting."""
    names = [METHOD_PARAM]
    for name, section in METHOD_SPACES.items():
        if method is None or name == method:
            names += list(section.domains()) + [own_name(name, f) for f in section.overrides]
    return names + [f.name for f in TRAIN_FIELDS]


def to_train_config(params: Mapping[str, Any], base: Mapping[str, Any]) -> TrainConfig:
    """Builds the TrainConfig of one sampled point.

    Args:
        params: flat sampled values (``trial.params`` or the search part of Ray's config):
            ``method``, all of that method's ``<method>_*`` options, and any shared settings
            (``lr``, ``batch_size``, ``pooling``, ...; ``<method>.lr`` for the method's own).
            A setting the point does not have keeps its ``base`` value (or TrainConfig's
            default); one it has replaces the base value.
        base: the other TrainConfig fields (manifest, backbone, batch_size, seed, fold, ...).

    Returns:
        The validated config; ``method_options`` come from the method's section
        (for LoRA ``alpha = alpha_ratio * rank``, or ``alpha`` as sampled).

    Raises:
        SpaceError: a missing ``method``, an unknown name, a name of another method, a missing
            option, a value outside its domain, a setting given both shared and as the method's
            own, or a base field every space sets (``lr``, ``weight_decay``, ``epochs``).
        ValueError: ``base`` fails TrainConfig validation.
    """
    if METHOD_PARAM not in params:
        raise SpaceError(f"params: missing {METHOD_PARAM!r}; got {sorted(params)}")
    method = params[METHOD_PARAM]
    if not isinstance(method, str) or method not in METHODS:
        raise SpaceError(
            f"params.method: unknown method {method!r}; registered: {', '.join(METHODS.names())}"
        )
    unknown = sorted(set(params) - set(known_names()))
    if unknown:
        raise SpaceError(f"params: unknown name(s) {unknown}; known: {', '.join(known_names())}")
    foreign = sorted(set(params) - set(known_names(method)))
    if foreign:
        raise SpaceError(f"params: {foreign} do not belong to method {method!r}")
    owned = sorted(set(base) & {METHOD_PARAM, "method_options", *SPACE_OWNED})
    if owned:
        raise SpaceError(f"base: {owned} are set by the search space, not the base config")

    section = METHOD_SPACES[method]
    options = section.options(section.values(params))
    shared = train_values(_shared(params, method), base)
    return TrainConfig.from_dict({**base, **shared, "method": method, "method_options": options})


def _shared(params: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The checked shared settings of a point, keyed by field name (``full.lr`` -> ``lr``)."""
    out = {}
    for spec in TRAIN_FIELDS:
        own = own_name(method, spec.name)
        if own in params and spec.name in params:
            raise SpaceError(f"params: give {spec.name} or {own}, not both")
        name = own if own in params else spec.name  # only PER_METHOD ones are known names
        if name in params:
            out[spec.name] = check(spec.domain, params[name], f"params.{name}")
    return out


def describe(space: SpaceConfig) -> dict[str, str]:
    """A flat, JSON-serialisable summary of ``space`` (see :meth:`SpaceConfig.describe`)."""
    return space.describe()
