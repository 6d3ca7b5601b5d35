"""Groups of search parameters: dataclass fields holding a Param, with a Domain attached.

:func:`param` declares such a field. The helpers here validate, suggest, serialise and describe
the param fields of any dataclass, so :class:`MethodSpace` (one method's options) and the top level
of :class:`~spaces.space.SpaceConfig` (the shared options) share one code path.

A param field may be optional: None then means "not set here" (a training field a space leaves
to the base config, a method's own ``lr`` that falls back to the shared one, the unused name of
an option a space may give under two names). YAML writes it as ``null`` or leaves it out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import optuna

from spaces.params import (
    Choice,
    Domain,
    Fixed,
    Param,
    Range,
    Scalar,
    SpaceError,
    check,
    parse_param,
)
from trainables.methods import MethodConfig

_DOMAIN, _OPTIONAL = "domain", "optional"

# A flat trial parameter name -> the param a space gives it and the domain of its values.
Searched = dict[str, tuple[Param, Domain]]
# An option a space may give under two names: (search name, alternative, search name's default).
Group = tuple[str, str, Param]


def param(default: Param | None, domain: Domain, *, optional: bool = False) -> Any:
    """A param field: its default and the domain every value of it must stay in.

    Args:
        default: the param when none is given; None (not set) makes the field optional.
        domain: the values any param of the field may give.
        optional: None is allowed even though the default is a param.
    """
    metadata = {_DOMAIN: domain, _OPTIONAL: optional or default is None}
    return dataclasses.field(default=default, metadata=metadata)


def param_fields(obj: object) -> list[dataclasses.Field]:
    """The fields of dataclass (or instance) ``obj`` declared with :func:`param`."""
    return [f for f in dataclasses.fields(obj) if _DOMAIN in f.metadata]  # type: ignore[arg-type]


def domains(obj: object, prefix: str = "") -> dict[str, Domain]:
    """Flat trial parameter name (``prefix + field``) -> domain."""
    return {prefix + f.name: f.metadata[_DOMAIN] for f in param_fields(obj)}


def given(obj: object, prefix: str = "") -> Searched:
    """``prefix + field`` -> (param, domain) of the param fields of ``obj`` that are set."""
    return {
        prefix + f.name: (value, f.metadata[_DOMAIN])
        for f in param_fields(obj)
        if (value := getattr(obj, f.name)) is not None
    }


def normalise(obj: object, where: str) -> None:
    """Checks every param field of frozen dataclass ``obj`` and stores its normalised form.

    Raises:
        SpaceError: naming ``<where>.<field>``.
    """
    for f in param_fields(obj):
        value = getattr(obj, f.name)
        path = f"{where}.{f.name}"
        if value is None and f.metadata[_OPTIONAL]:
            continue
        if not isinstance(value, Fixed | Range | Choice):
            raise SpaceError(f"{path}: expected Fixed, Range or Choice, got {value!r}")
        object.__setattr__(obj, f.name, value.checked(f.metadata[_DOMAIN], path))


def suggest(trial: optuna.Trial, searched: Searched) -> dict[str, Scalar]:
    """Suggests every entry of ``searched`` on ``trial``; returns flat name -> value."""
    return {name: p.suggest(trial, name, domain) for name, (p, domain) in searched.items()}


def plain(obj: object) -> dict[str, Any]:
    """The YAML forms of the param fields of ``obj``; an unset field is left out, or written
    as None where its default is set (so that reading it back keeps it unset)."""
    out: dict[str, Any] = {}
    for f in param_fields(obj):
        value = getattr(obj, f.name)
        if value is not None:
            out[f.name] = value.to_plain()
        elif f.default is not None:
            out[f.name] = None
    return out


def describe(obj: object, where: str) -> dict[str, str]:
    """``<where>.<field>`` -> a short form of each set param field of ``obj``."""
    return {f"{where}.{name}": p.describe() for name, (p, _) in given(obj).items()}


def parse(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Param | None]:
    """Parses the entries of ``data`` that are param fields of ``cls`` (None for an optional
    field that ``data`` sets to null)."""
    fields = {f.name: f for f in param_fields(cls)}
    return {
        k: None if v is None and fields[k].metadata[_OPTIONAL] else parse_param(v, f"{where}.{k}")
        for k, v in data.items()
        if k in fields
    }


def reject_unknown(data: Mapping[str, Any], names: list[str], where: str) -> None:
    """Raises a :class:`SpaceError` naming ``where`` if ``data`` has a key not in ``names``."""
    unknown = sorted(str(k) for k in set(data) - set(names))
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(names)}")


@dataclasses.dataclass(frozen=True)
class MethodSpace:
    """The section of one registered method, validated (and normalised) at construction.

    Subclasses are frozen dataclasses whose fields are declared with :func:`param`;
    :mod:`spaces.space` makes one for every registered method, from the method's own option
    declarations, plus the shared fields the method may give its own range for
    (:data:`~spaces.training.PER_METHOD`, unset by default: the shared range applies).

    Attributes:
        key: the method name; also the YAML key and error path (``space.<key>.<field>``).
        prefix: prepended to option names to give the flat trial parameter names.
        config_cls: the method's config class, which turns sampled values into its options.
        overrides: the fields that are the method's own shared values, not options.
        groups: options a space gives under one of two names; when it gives neither, the first
            name gets its default (e.g. LoRA's ``alpha_ratio`` or ``alpha``).
    """

    key: ClassVar[str]
    prefix: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]]
    overrides: ClassVar[tuple[str, ...]] = ()
    groups: ClassVar[tuple[Group, ...]] = ()

    def __post_init__(self) -> None:
        where = f"space.{self.key}"
        for name, alternative, default in self.groups:
            first, second = getattr(self, name), getattr(self, alternative)
            if first is not None and second is not None:
                raise SpaceError(f"{where}: give {name} or {alternative}, not both")
            if first is None and second is None:
                object.__setattr__(self, name, default)
        normalise(self, where)

    @classmethod
    def domains(cls) -> dict[str, Domain]:
        """Flat trial parameter name -> domain of every option (both names of an option with
        two; not the method's own shared fields)."""
        return {n: d for n, d in domains(cls, cls.prefix).items() if not cls._own(n)}

    @classmethod
    def _own(cls, flat: str) -> bool:
        return flat.removeprefix(cls.prefix) in cls.overrides

    def searched(self) -> Searched:
        """Flat trial parameter name -> (param, domain) of the options this section samples."""
        return {n: v for n, v in given(self, self.prefix).items() if not self._own(n)}

    def own(self) -> Searched:
        """Shared field name -> (param, domain) of the method's own values (e.g. ``lr``)."""
        return {n: v for n, v in given(self).items() if n in self.overrides}

    def suggest(self, trial: optuna.Trial) -> dict[str, Scalar]:
        """Suggests every option on ``trial``; returns flat name -> value."""
        return suggest(trial, self.searched())

    def to_dict(self) -> dict[str, Any]:
        """The YAML form."""
        return plain(self)

    def describe(self) -> dict[str, str]:
        """``space.<key>.<field>`` -> a short form of its param."""
        return describe(self, f"space.{self.key}")

    @classmethod
    def from_dict(cls, data: object) -> Self:
        """Reads the YAML form; missing fields keep their defaults, unknown ones are an error."""
        where = f"space.{cls.key}"
        if not isinstance(data, Mapping):
            raise SpaceError(f"{where}: expected a mapping, got {data!r}")
        reject_unknown(data, [f.name for f in param_fields(cls)], where)
        return cls(**parse(cls, data, where))

    @classmethod
    def values(cls, params: Mapping[str, Any]) -> dict[str, Scalar]:
        """The checked options of one sampled point, keyed by name without the prefix.

        Raises:
            SpaceError: an option missing, an option given under both its names, or a value
                outside its domain (naming ``params.<flat name>``).
        """
        p = cls.prefix
        paired = {n for group in cls.groups for n in group[:2]}
        names = [n.removeprefix(p) for n in cls.domains()]
        missing = [p + n for n in names if n not in paired and p + n not in params]
        for name, alternative, _ in cls.groups:
            present = [p + n for n in (name, alternative) if p + n in params]
            if len(present) > 1:
                raise SpaceError(f"params: give {p + name} or {p + alternative}, not both")
            missing += [] if present else [p + name]
        if missing:
            raise SpaceError(f"params: missing {sorted(missing)}")
        return {
            n.removeprefix(p): check(d, params[n], f"params.{n}")
            for n, d in cls.domains().items()
            if n in params
        }

    @classmethod
    def options(cls, values: Mapping[str, Scalar]) -> dict[str, Any]:
        """The method's options (its ``MethodConfig`` fields) from values keyed by field name."""
        return cls.config_cls.from_search(values)
