"""Optuna define-by-run search spaces built from the PEFT method registry.

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
    param_names,
    to_train_config,
)
from spaces.section import MethodSpace, param
from spaces.space import (
    DEFAULT_SPACE_PATH,
    METHOD_SPACES,
    AdapterSpace,
    LoraSpace,
    PromptSpace,
    SpaceConfig,
)

__all__ = [
    "DEFAULT_SPACE_PATH",
    "METHOD_PARAM",
    "METHOD_SPACES",
    "AdapterSpace",
    "Choice",
    "DefineByRun",
    "Domain",
    "Fixed",
    "LoraSpace",
    "MethodSpace",
    "Param",
    "PromptSpace",
    "Range",
    "SpaceConfig",
    "SpaceError",
    "define_by_run",
    "describe",
    "param",
    "param_names",
    "to_train_config",
]
