"""Optuna define-by-run search spaces built from the PEFT method registry.

The machinery is generic: each method's section (``space.lora``, ``space.adapter``, ...) is made
from the options the method declares in its own file; ``METHOD_SPACES[name]`` is its class.
The training settings a space may set are one table, :data:`spaces.training.TRAIN_FIELDS`.

Typical use::

    space = SpaceConfig.from_yaml("spaces/default.yaml")
    searcher = OptunaSearch(space=define_by_run(space), ...)   # in search/
    config = to_train_config(trial_params, base={"manifest": ..., "backbone": ...})
"""

from spaces.params import Choice, Domain, Fixed, Param, Range, SpaceError
from spaces.sampling import (
    METHOD_PARAM,
    DefineByRun,
    define_by_run,
    describe,
    known_names,
    param_names,
    to_train_config,
)
from spaces.section import MethodSpace, param
from spaces.space import DEFAULT_METHODS, DEFAULT_SPACE_PATH, METHOD_SPACES, SpaceConfig
from spaces.training import TRAIN_FIELDS, TrainField

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_SPACE_PATH",
    "METHOD_PARAM",
    "METHOD_SPACES",
    "Choice",
    "DefineByRun",
    "Domain",
    "Fixed",
    "MethodSpace",
    "Param",
    "Range",
    "SpaceConfig",
    "SpaceError",
    "TRAIN_FIELDS",
    "TrainField",
    "define_by_run",
    "describe",
    "known_names",
    "param",
    "param_names",
    "to_train_config",
]
