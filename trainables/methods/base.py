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
from trainables.methods.options import domain_of, option_fields
from trainables.registry import Registry


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Options of a method: subclasses declare each field with
    :func:`~trainables.methods.options.option` (default, allowed values, default search range).

    Every option is checked against its domain when the config is made, and stored as its
    domain's kind (``8.0`` from a JSON round trip becomes the int 8).
    """

    method: ClassVar[str] = "method"  # set to the method's name when the method registers

    def __post_init__(self) -> None:
        fields = option_fields(self)
        if len(fields) != len(dataclasses.fields(self)):
            plain = sorted({f.name for f in dataclasses.fields(self)} - {f.name for f in fields})
            raise TypeError(f"{type(self).__name__}: declare {plain} with options.option()")
        for f in fields:
            value, why = domain_of(f).judge(getattr(self, f.name))
            if why is not None:
                raise ValueError(f"{self.method} {f.name} {why}, got {value!r}")
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_search(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """The options (field name -> value) of one sampled point, keyed by the names of
        :func:`~trainables.methods.options.search_options`. Override when a field is searched
        under another name (``search_as``)."""
        return dict(values)


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_cls" in cls.__dict__ and "name" in cls.__dict__:
            cls.config_cls.method = cls.name  # names the method in the config's errors

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
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"method {name!r}: {key}={value} must be a finite number")
    return cls(cls.config_cls(**options))


def attach(backbone: Backbone, method: Method) -> list[nn.Parameter]:
    """Freezes ``backbone``, applies ``method`` and unfreezes exactly the parameters it trains."""
    backbone.requires_grad_(False)
    params = method.apply(backbone)
    for p in params:
        p.requires_grad_(True)
    return params
