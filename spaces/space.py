"""The typed search-space config: which methods to search and the ranges of their options.

Every registered method with options gets a :class:`~spaces.section.MethodSpace` subclass
(``LoraSpace``, ``AdapterSpace``, ...) made here from the method's own option declarations
(:func:`trainables.methods.options.option`: domain and default range), and one field of
:class:`SpaceConfig` named after the method. Registered methods without options (``frozen``,
``full``) sample nothing extra. ``lr``, ``weight_decay`` and ``epochs`` are shared by every
method and sit at the top level, named like the TrainConfig fields they set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml

from spaces import section
from spaces.params import Domain, Fixed, Param, Range, Scalar, SpaceError, parse_param
from spaces.section import MethodSpace, param
from trainables.methods import METHODS
from trainables.methods.options import search_options

DEFAULT_SPACE_PATH = Path(__file__).with_name("default.yaml")
# The methods a search compares unless its space file says otherwise (spaces/default.yaml).
# Other registered methods (``full``, ...) are searched when a space lists them.
DEFAULT_METHODS: tuple[str, ...] = ("frozen", "lora", "adapter", "prompt")


def _method_space(method: str) -> type[MethodSpace] | None:
    """The MethodSpace subclass of ``method``, made from its option declarations (None: the
    method has no options)."""
    config_cls = METHODS.get(method).config_cls
    options = search_options(config_cls)
    if not options:
        return None
    name = "".join(part.capitalize() for part in method.split("_")) + "Space"
    fields = [
        (o.name, Param, param(parse_param(o.default, f"{config_cls.__name__}.{o.field}"), o.domain))
        for o in options
    ]
    cls = dataclasses.make_dataclass(
        name,
        fields,
        bases=(MethodSpace,),
        frozen=True,
        namespace={"key": method, "prefix": f"{method}_", "config_cls": config_cls},
    )
    cls.__module__ = __name__
    cls.__doc__ = f"Search options of method {method!r} (from {config_cls.__name__})."
    return cls


# Method name -> its options class (also module attributes, so spaces pickle by name); the
# default methods first, then the others in registration order.
METHOD_SPACES: dict[str, type[MethodSpace]] = {
    m: cls
    for m in sorted(
        METHODS.names(),
        key=lambda m: (
            m not in DEFAULT_METHODS,
            DEFAULT_METHODS.index(m) if m in DEFAULT_METHODS else 0,
        ),
    )
    if (cls := _method_space(m)) is not None
}
globals().update({cls.__name__: cls for cls in METHOD_SPACES.values()})


class _Space:
    """The behaviour of :class:`SpaceConfig`, whose fields are made below (one per method)."""

    methods: tuple[str, ...]

    def __post_init__(self) -> None:
        methods = self.methods
        if isinstance(methods, str) or not isinstance(methods, list | tuple):
            raise SpaceError(f"space.methods: expected a list of method names, got {methods!r}")
        if not methods:
            raise SpaceError("space.methods: must not be empty")
        registered = ", ".join(METHODS.names())
        for name in methods:
            if not isinstance(name, str) or name not in METHODS:
                raise SpaceError(
                    f"space.methods: unknown method {name!r}; registered: {registered}"
                )
            if methods.count(name) > 1:
                raise SpaceError(f"space.methods: {name!r} is listed more than once")
        object.__setattr__(self, "methods", tuple(methods))
        section.normalise(self, "space")
        for name, cls in METHOD_SPACES.items():
            if not isinstance(getattr(self, name), cls):
                raise SpaceError(f"space.{name}: expected a {cls.__name__}")

    def method_space(self, method: str) -> MethodSpace | None:
        """The options of ``method``, or None when it has none to search."""
        return getattr(self, method) if method in METHOD_SPACES else None

    def suggest_shared(self, trial: optuna.Trial) -> dict[str, Scalar]:
        """Suggests ``lr``, ``weight_decay`` and ``epochs`` on ``trial``."""
        return section.suggest(self, trial)

    @classmethod
    def shared_domains(cls) -> dict[str, Domain]:
        """Shared parameter name -> domain."""
        return section.domains(cls)

    def describe(self) -> dict[str, str]:
        """A flat, JSON-serialisable summary for run parameters (e.g. an MLflow parent run).

        Only the options of searched methods appear. Example: ``{"space.methods": "frozen,
        lora", "space.lr": "[0.0001, 0.005] log", "space.epochs": "10", "space.lora.rank":
        "[1, 64] log", "space.lora.targets": "{attention, ffn, both}", ...}``.
        """
        out = {"space.methods": ", ".join(self.methods), **section.describe(self, "space")}
        for method in self.methods:
            options = self.method_space(method)
            if options is not None:
                out.update(options.describe())
        return out

    @classmethod
    def from_dict(cls, data: object) -> SpaceConfig:
        """Builds a space from its YAML form; missing keys keep defaults, unknown keys fail."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise SpaceError(f"space: expected a mapping, got {data!r}")
        section.reject_unknown(data, [f.name for f in dataclasses.fields(cls)], "space")
        kwargs: dict[str, Any] = section.parse(cls, data, "space")
        if "methods" in data:
            kwargs["methods"] = data["methods"]
        for name, space_cls in METHOD_SPACES.items():
            if name in data:
                kwargs[name] = space_cls.from_dict(data[name])
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SpaceConfig:
        """Reads a space from a YAML file (see ``spaces/default.yaml``)."""
        with Path(path).open(encoding="utf-8") as fh:
            return cls.from_dict(yaml.safe_load(fh))

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (``from_dict(to_dict())`` gives an equal space)."""
        out: dict[str, Any] = {"methods": list(self.methods), **section.plain(self)}
        for name in METHOD_SPACES:
            out[name] = getattr(self, name).to_dict()
        return out

    def to_yaml(self, path: str | Path) -> None:
        """Writes the YAML form to ``path``."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")


SpaceConfig = dataclasses.make_dataclass(
    "SpaceConfig",
    [
        ("methods", tuple[str, ...], dataclasses.field(default=DEFAULT_METHODS)),
        ("lr", Param, param(Range(1e-4, 5e-3, log=True), Domain(float, gt=0))),
        ("weight_decay", Param, param(Range(1e-4, 1e-1, log=True), Domain(float, ge=0))),
        ("epochs", Param, param(Fixed(10), Domain(int, ge=1))),
        *[(m, cls, dataclasses.field(default_factory=cls)) for m, cls in METHOD_SPACES.items()],
    ],
    bases=(_Space,),
    frozen=True,
)
SpaceConfig.__module__ = __name__
SpaceConfig.__doc__ = """A conditional search space: first a method, then only that method's options.

Attributes:
    methods: registered method names to search over (default: :data:`DEFAULT_METHODS`).
    lr, weight_decay, epochs: shared by every method.
    <method>: option ranges of each method with options (``lora``, ``adapter``, ``prompt``, ...;
        used only if it is in ``methods``).
"""
