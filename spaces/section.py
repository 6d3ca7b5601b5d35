"""Groups of search parameters: dataclass fields holding a Param, with a Domain attached.

:func:`param` declares such a field. The helpers here validate, suggest, serialise and describe
the param fields of any dataclass, so :class:`MethodSpace` (one method's options) and the top level
of :class:`~spaces.space.SpaceConfig` (the shared options) share one code path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import optuna

from spaces.params import Choice, Domain, Fixed, Param, Range, Scalar, SpaceError, parse_param
from trainables.methods import MethodConfig

_DOMAIN = "domain"


def param(default: Param, domain: Domain) -> Any:
    """A param field: its default and the domain every value of it must stay in."""
    return dataclasses.field(default=default, metadata={_DOMAIN: domain})


def param_fields(obj: object) -> list[dataclasses.Field]:
    """The fields of dataclass (or instance) ``obj`` declared with :func:`param`."""
    return [f for f in dataclasses.fields(obj) if _DOMAIN in f.metadata]  # type: ignore[arg-type]


def domains(obj: object, prefix: str = "") -> dict[str, Domain]:
    """Flat trial parameter name (``prefix + field``) -> domain."""
    return {prefix + f.name: f.metadata[_DOMAIN] for f in param_fields(obj)}


def normalise(obj: object, where: str) -> None:
    """Checks every param field of frozen dataclass ``obj`` and stores its normalised form.

    Raises:
        SpaceError: naming ``<where>.<field>``.
    """
    for f in param_fields(obj):
        value = getattr(obj, f.name)
        path = f"{where}.{f.name}"
        if not isinstance(value, Fixed | Range | Choice):
            raise SpaceError(f"{path}: expected Fixed, Range or Choice, got {value!r}")
        object.__setattr__(obj, f.name, value.checked(f.metadata[_DOMAIN], path))


def suggest(obj: object, trial: optuna.Trial, prefix: str = "") -> dict[str, Scalar]:
    """Suggests every param field of ``obj`` on ``trial``; returns flat name -> value."""
    return {
        prefix + f.name: getattr(obj, f.name).suggest(trial, prefix + f.name, f.metadata[_DOMAIN])
        for f in param_fields(obj)
    }


def plain(obj: object) -> dict[str, Any]:
    """The YAML forms of the param fields of ``obj``."""
    return {f.name: getattr(obj, f.name).to_plain() for f in param_fields(obj)}


def describe(obj: object, where: str) -> dict[str, str]:
    """``<where>.<field>`` -> a short form of each param field of ``obj``."""
    return {f"{where}.{f.name}": getattr(obj, f.name).describe() for f in param_fields(obj)}


def parse(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Param]:
    """Parses the entries of ``data`` that are param fields of ``cls``."""
    names = {f.name for f in param_fields(cls)}
    return {k: parse_param(v, f"{where}.{k}") for k, v in data.items() if k in names}


def reject_unknown(data: Mapping[str, Any], names: list[str], where: str) -> None:
    """Raises a :class:`SpaceError` naming ``where`` if ``data`` has a key not in ``names``."""
    unknown = sorted(str(k) for k in set(data) - set(names))
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(names)}")


@dataclasses.dataclass(frozen=True)
class MethodSpace:
    """The options of one registered method, validated (and normalised) at construction.

    Subclasses are frozen dataclasses whose fields are declared with :func:`param`;
    :mod:`spaces.space` makes one for every registered method with options, from the method's
    own option declarations.

    Attributes:
        key: the method name; also the YAML key and error path (``space.<key>.<field>``).
        prefix: prepended to field names to give the flat trial parameter names.
        config_cls: the method's config class, which turns sampled values into its options.
    """

    key: ClassVar[str]
    prefix: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]]

    def __post_init__(self) -> None:
        normalise(self, f"space.{self.key}")

    @classmethod
    def domains(cls) -> dict[str, Domain]:
        """Flat trial parameter name -> domain."""
        return domains(cls, cls.prefix)

    def suggest(self, trial: optuna.Trial) -> dict[str, Scalar]:
        """Suggests every option on ``trial``; returns flat name -> value."""
        return suggest(self, trial, self.prefix)

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
    def options(cls, values: Mapping[str, Scalar]) -> dict[str, Any]:
        """The method's options (its ``MethodConfig`` fields) from values keyed by field name."""
        return cls.config_cls.from_search(values)
