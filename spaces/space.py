"""The typed search-space config: which methods to search and the ranges of their options.

Every registered method gets a :class:`~spaces.section.MethodSpace` subclass (``LoraSpace``,
``AdapterSpace``, ``FullSpace``, ...) made here from the method's own option declarations
(:func:`trainables.methods.options.option`: domain and default range), and one field of
:class:`SpaceConfig` named after the method. Methods without options (``frozen``, ``full``)
sample no options. The training settings of :data:`spaces.training.TRAIN_FIELDS` (``lr``,
``weight_decay``, ``epochs``, ``batch_size``, ``optimizer``, ...) are shared by every method and
sit at the top level, named like the TrainConfig fields they set; a method's section may give
its own ``lr`` / ``weight_decay`` (the default space does so for ``full``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml

from spaces import section
from spaces.params import Domain, Param, Scalar, SpaceError, parse_param
from spaces.section import MethodSpace, Searched, param
from spaces.training import FIELDS, METHOD_DEFAULTS, PER_METHOD, TRAIN_FIELDS, own_name
from trainables.methods import METHODS
from trainables.methods.options import search_options

DEFAULT_SPACE_PATH = Path(__file__).with_name("default.yaml")
# The methods a search compares unless its space file says otherwise (spaces/default.yaml).
# Other registered methods (``full``, ...) are searched when a space lists them.
DEFAULT_METHODS: tuple[str, ...] = ("frozen", "lora", "adapter", "prompt")


def _method_space(method: str) -> type[MethodSpace]:
    """The MethodSpace subclass of ``method``: its declared options (an option with an
    alternative name gets both, unset, resolved at construction) and its own shared fields."""
    config_cls = METHODS.get(method).config_cls
    where = config_cls.__name__
    fields: list[tuple[str, Any, Any]] = []
    groups: list[tuple[str, str, Param]] = []
    for o in search_options(config_cls):
        default = parse_param(o.default, f"{where}.{o.field}")
        if o.alternative is None:
            fields.append((o.name, Param, param(default, o.domain)))
            continue
        groups.append((o.name, o.alternative, default))
        fields += [(n, Param | None, param(None, o.domain)) for n in (o.name, o.alternative)]
    declared = {name for name, _, _ in fields}
    for name in PER_METHOD:
        if name in declared:
            raise TypeError(f"{where}: option {name!r} clashes with the shared field {name!r}")
        raw = METHOD_DEFAULTS.get(method, {}).get(name)
        default = None if raw is None else parse_param(raw, f"{method} default {name}")
        fields.append((name, Param | None, param(default, FIELDS[name].domain, optional=True)))
    cls = dataclasses.make_dataclass(
        "".join(part.capitalize() for part in method.split("_")) + "Space",
        fields,
        bases=(MethodSpace,),
        frozen=True,
        namespace={
            "key": method,
            "prefix": f"{method}_",
            "config_cls": config_cls,
            "overrides": PER_METHOD,
            "groups": tuple(groups),
        },
    )
    cls.__module__ = __name__
    cls.__doc__ = f"Search options of method {method!r} (from {config_cls.__name__})."
    return cls


# Method name -> its section class (also module attributes, so spaces pickle by name); the
# default methods first, then the others in registration order.
METHOD_SPACES: dict[str, type[MethodSpace]] = {
    m: _method_space(m)
    for m in sorted(
        METHODS.names(),
        key=lambda m: (
            m not in DEFAULT_METHODS,
            DEFAULT_METHODS.index(m) if m in DEFAULT_METHODS else 0,
        ),
    )
}
_unknown = sorted(set(METHOD_DEFAULTS) - set(METHOD_SPACES))
if _unknown:
    raise TypeError(f"spaces.training.METHOD_DEFAULTS: {_unknown} are not registered methods")
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

    def method_space(self, method: str) -> MethodSpace:
        """The section of ``method`` (its options and its own shared values)."""
        return getattr(self, method)

    def searched(self, method: str) -> Searched:
        """Flat trial parameter name -> (param, domain) of everything a trial of ``method``
        samples, in suggestion order: the method's options, then the shared fields this space
        sets, each under ``<method>.<field>`` where the method's section gives its own."""
        options = self.method_space(method)
        own = options.own()
        out = options.searched()
        for name, value in {**section.given(self), **own}.items():
            out[own_name(method, name) if name in own else name] = value
        return out

    def params_of(self, method: str) -> dict[str, Param]:
        """Flat trial parameter name -> param of everything a trial of ``method`` samples."""
        return {name: p for name, (p, _) in self.searched(method).items()}

    def suggest(self, trial: optuna.Trial, method: str) -> dict[str, Scalar]:
        """Suggests everything a trial of ``method`` samples on ``trial``."""
        return section.suggest(trial, self.searched(method))

    @classmethod
    def shared_domains(cls) -> dict[str, Domain]:
        """Shared parameter name -> domain (every field a space may set)."""
        return section.domains(cls)

    def describe(self) -> dict[str, str]:
        """A flat, JSON-serialisable summary for run parameters (e.g. an MLflow parent run).

        Only the settings the space sets and the sections of searched methods appear. Example:
        ``{"space.methods": "frozen, lora", "space.lr": "[0.0001, 0.005] log", "space.epochs":
        "10", "space.lora.rank": "[1, 64] log", "space.lora.targets": "{attention, ffn,
        both}", ...}``.
        """
        out = {"space.methods": ", ".join(self.methods), **section.describe(self, "space")}
        for method in self.methods:
            out.update(self.method_space(method).describe())
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
        """Reads a space from a YAML file (see ``spaces/default.yaml``).

        Raises:
            SpaceError: ``<path>: space.<field>: ...`` for an invalid space, or the file is not
                YAML.
        """
        with Path(path).open(encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as err:
                raise SpaceError(f"{path}: not a YAML file: {err}") from None
        try:
            return cls.from_dict(data)
        except SpaceError as err:
            raise SpaceError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (``from_dict(to_dict())`` gives an equal space)."""
        out: dict[str, Any] = {"methods": list(self.methods), **section.plain(self)}
        for name in METHOD_SPACES:
            out[name] = getattr(self, name).to_dict()
        return out

    def to_yaml(self, path: str | Path) -> None:
        """Writes the YAML form to ``path``."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")


def _shared_field(name: str) -> tuple[str, Any, Any]:
    spec = FIELDS[name]
    default = None if spec.default is None else parse_param(spec.default, f"default {name}")
    return (name, Param | None, param(default, spec.domain))


SpaceConfig = dataclasses.make_dataclass(
    "SpaceConfig",
    [
        ("methods", tuple[str, ...], dataclasses.field(default=DEFAULT_METHODS)),
        *[_shared_field(f.name) for f in TRAIN_FIELDS],
        *[(m, cls, dataclasses.field(default_factory=cls)) for m, cls in METHOD_SPACES.items()],
    ],
    bases=(_Space,),
    frozen=True,
)
SpaceConfig.__module__ = __name__
SpaceConfig.__doc__ = """A conditional search space: first a method, then only that method's options.

Attributes:
    methods: registered method names to search over (default: :data:`DEFAULT_METHODS`).
    lr, weight_decay, epochs: shared by every method (always searched; the default ranges
        unless given).
    batch_size, optimizer, ..., pooling: the other rows of :data:`spaces.training.TRAIN_FIELDS`;
        None (the default): not searched, the base config's value is kept.
    <method>: the section of each registered method (``lora``, ``adapter``, ``full``, ...):
        its option ranges and its own ``lr`` / ``weight_decay`` (used only if the method is in
        ``methods``).
"""
