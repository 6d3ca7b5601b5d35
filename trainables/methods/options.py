"""Method options declared once: default, the values allowed, and the range a search tries.

A method's config is a frozen dataclass whose fields are declared with :func:`option`::

    rank: int = option(16, Domain(int, ge=1), search={"low": 1, "high": 64, "log": True})

:class:`~trainables.methods.base.MethodConfig` checks every field against its :class:`Domain`;
``spaces`` derives the method's section of the search space (parameter names, domains, default
ranges) from the same declarations, so neither the check nor the range is written twice.

``search`` takes the YAML form of ``spaces`` (``spaces/default.yaml``): a value (not searched),
``{low, high, log}`` or ``{choices: [...]}``. Without it the option is fixed at its default.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from typing import Any

Scalar = bool | int | float | str

_DOMAIN, _SEARCH, _SEARCH_AS, _ALTERNATIVE = "domain", "search", "search_as", "alternative"


@dataclasses.dataclass(frozen=True)
class Domain:
    """The values an option may take, whatever range a search gives it.

    Attributes:
        kind: ``int``, ``float``, ``bool`` or ``str``.
        ge: inclusive lower bound (numbers).
        gt: exclusive lower bound (numbers).
        lt: exclusive upper bound (numbers).
        allowed: the only legal values (categorical options).
        le: inclusive upper bound (numbers).
    """

    kind: type
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    allowed: tuple[Scalar, ...] | None = None
    le: float | None = None

    @property
    def numeric(self) -> bool:
        """True for int and float options (the ones that may have a range)."""
        return self.kind in (int, float)

    def coerce(self, value: object) -> tuple[object, str | None]:
        """``(value as kind, None)``, or ``(value, why not)`` when it is not of this kind.

        Floats also accept numeric strings, because PyYAML reads ``1e-4`` (no dot) as a string.
        Ints accept integral floats (``8.0``), as a JSON round trip may produce them.
        """
        bad = (value, f"must be of type {self.kind.__name__}")
        if self.kind is bool or self.kind is str:
            return (value, None) if isinstance(value, self.kind) else bad
        if isinstance(value, bool):
            return bad
        if self.kind is int:
            if isinstance(value, float) and value.is_integer():
                return int(value), None
            return (int(value), None) if isinstance(value, numbers.Integral) else bad
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return bad
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            return bad
        return float(value), None

    def judge(self, value: object) -> tuple[object, str | None]:
        """``(value as kind, None)`` when ``value`` is allowed, else ``(value, why not)``."""
        v, why = self.coerce(value)
        if why is not None:
            return v, why
        if self.allowed is not None and v not in self.allowed:
            return v, f"must be one of {', '.join(repr(a) for a in self.allowed)}"
        bounds = [
            (self.ge, ">=", operator.ge),
            (self.gt, ">", operator.gt),
            (self.lt, "<", operator.lt),
            (self.le, "<=", operator.le),
        ]
        for bound, op, holds in bounds:
            if bound is not None and not holds(v, bound):
                return v, f"must be {op} {bound}"
        return v, None


def option(
    default: Scalar,
    domain: Domain,
    *,
    search: object = None,
    search_as: str | None = None,
    alternative: str | None = None,
) -> Any:
    """A method option field (see the module docstring).

    Args:
        default: the value when none is given.
        domain: the values allowed, checked when a config is made and when a space is read.
        search: the default search range in the YAML form of ``spaces``; None: the default value.
        search_as: the name the search samples instead of the field, when the config class
            turns it into the field in :meth:`~trainables.methods.base.MethodConfig.from_search`
            (LoRA searches ``alpha_ratio`` and sets ``alpha = alpha_ratio * rank``).
        alternative: another name a space may search the option under, instead of its search
            name (a space's section gives one of the two, or neither for the default range);
            ``from_search`` turns either into the field. It has no default range and shares
            the domain. LoRA: ``alpha_ratio`` by default, or ``alpha`` itself.
    """
    metadata = {_DOMAIN: domain, _SEARCH: default if search is None else search}
    if search_as is not None:
        metadata[_SEARCH_AS] = search_as
    if alternative is not None:
        metadata[_ALTERNATIVE] = alternative
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class SearchOption:
    """One option as a search sees it: its name there, its domain and its default range.

    ``alternative`` (or None) is the other name a space may give the option under instead of
    ``name``; the default range is ``name``'s.
    """

    name: str
    field: str
    domain: Domain
    default: object
    alternative: str | None = None


def option_fields(config_cls: type) -> list[dataclasses.Field]:
    """The fields of ``config_cls`` declared with :func:`option`, in declaration order."""
    return [f for f in dataclasses.fields(config_cls) if _DOMAIN in f.metadata]


def search_options(config_cls: type) -> list[SearchOption]:
    """What a search samples for a method, in declaration order."""
    return [
        SearchOption(
            f.metadata.get(_SEARCH_AS, f.name),
            f.name,
            f.metadata[_DOMAIN],
            f.metadata[_SEARCH],
            f.metadata.get(_ALTERNATIVE),
        )
        for f in option_fields(config_cls)
    ]


def domain_of(field: dataclasses.Field) -> Domain:
    """The domain of an :func:`option` field."""
    return field.metadata[_DOMAIN]
