"""The PEFT method protocol and its registry.

A method injects its modules into a backbone and names the backbone parameters it trains
(torchtune's ``adapter_params`` idea); :func:`attach` freezes everything else, whatever the method.
New methods register with ``@METHODS.register(name)`` and are picked up by the CLI, the search
space and the parametrised tests without any other edit.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from trainables.backbones import Backbone
from trainables.registry import Registry


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Options of a method. Subclasses add fields and validate them in ``__post_init__``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Method(ABC):
    """One parameter-efficient fine-tuning method.

    Attributes:
        name: registry name.
        config_cls: the dataclass of its options.
        frozen_frontend: True when the front end (CNN / log-mel) stays frozen, so its output can
            be cached across epochs and trials.
        card_usage: Markdown the model card of an exported adapter adds about this method's own
            files (``DIR`` stands for the adapter folder); empty when there is nothing to add.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    frozen_frontend: ClassVar[bool] = True
    card_usage: ClassVar[str] = ""

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_cls()

    @abstractmethod
    def apply(self, backbone: Backbone) -> list[nn.Parameter]:
        """Modifies ``backbone`` in place and returns the backbone parameters this method trains."""

    def save_extra(self, backbone: Backbone, out_dir: Path) -> None:
        """Writes method-specific files beside the exported weights (e.g. a peft folder)."""


METHODS: Registry[type[Method]] = Registry("method")


def build_method(name: str, options: Mapping[str, Any] | None = None) -> Method:
    """Instantiates method ``name`` with ``options``; unknown options are an error.

    Raises:
        KeyError: unknown method name.
        ValueError: an option the method does not have, or a bad value (NaN and infinite
            floats included).
    """
    cls = METHODS.get(name)
    options = dict(options or {})
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise ValueError(f"method {name!r} has no option(s) {unknown}; allowed: {allowed}")
    config = cls.config_cls(**options)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"method {name!r}: {f.name}={value} must be a finite number")
    return cls(config)


def attach(backbone: Backbone, method: Method) -> list[nn.Parameter]:
    """Freezes ``backbone``, applies ``method`` and unfreezes exactly the parameters it trains."""
    backbone.requires_grad_(False)
    params = method.apply(backbone)
    for p in params:
        p.requires_grad_(True)
    return params
