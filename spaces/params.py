"""One search dimension: a fixed value, a numeric range or a list of choices.

A :class:`~trainables.methods.options.Domain` says what a parameter may be at all (an int >= 1,
a float in [0, 1), one of ``attention/ffn/both``); methods declare it with their options. A
:class:`Param` says which part of that domain a space searches. Params are checked against their
domain when the space is built, so a bad space fails before any trial.

YAML forms: ``0.05`` (fixed), ``{low: 1, high: 64, log: true}`` (range),
``{choices: [attention, ffn]}`` (choices).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna

from trainables.methods.options import Domain, Scalar


class SpaceError(ValueError):
    """A search space or a sampled point is invalid; the message starts with the field path
    (``space.lora.rank: ...``), after the file's path when the space was read from a file."""


def check(domain: Domain, value: object, where: str, what: str = "value") -> Scalar:
    """``value`` as ``domain.kind`` if the domain allows it.

    Raises:
        SpaceError: ``<where>: <what> (<value>) <why not>``.
    """
    v, why = domain.judge(value)
    if why is not None:
        raise SpaceError(f"{where}: {what} ({v!r}) {why}")
    return v  # type: ignore[return-value]


def coerce(domain: Domain, value: object, where: str, what: str = "value") -> Scalar:
    """``value`` as ``domain.kind`` (bounds not checked), or a :class:`SpaceError`."""
    v, why = domain.coerce(value)
    if why is not None:
        raise SpaceError(f"{where}: {what} ({v!r}) {why}")
    return v  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Fixed:
    """A dimension that is not searched.

    It is still suggested (as a one-choice categorical), so the value lands in Optuna's
    ``trial.params`` and in Ray's trial config like any sampled value.
    """

    value: Scalar

    def checked(self, domain: Domain, where: str) -> Fixed:
        """Returns the normalised param or raises :class:`SpaceError` naming ``where``."""
        return Fixed(check(domain, self.value, where))

    def suggest(self, trial: optuna.Trial, name: str, domain: Domain) -> Scalar:
        """Asks ``trial`` for this dimension under ``name``."""
        return trial.suggest_categorical(name, [self.value])

    def to_plain(self) -> Scalar:
        """The YAML form."""
        return self.value

    def describe(self) -> str:
        """A short human form for run parameters."""
        return str(self.value)


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric interval ``[low, high]``, uniform or log-uniform; ints are sampled as ints."""

    low: float
    high: float
    log: bool = False

    def checked(self, domain: Domain, where: str) -> Range:
        """Returns the normalised param or raises :class:`SpaceError` naming ``where``."""
        if not domain.numeric:
            raise SpaceError(f"{where}: a range needs a numeric parameter; give choices or a value")
        if not isinstance(self.log, bool):
            raise SpaceError(f"{where}: log ({self.log!r}) must be true or false")
        low = coerce(domain, self.low, where, "low")
        high = coerce(domain, self.high, where, "high")
        if self.log:
            if domain.kind is int and low < 1:
                raise SpaceError(f"{where}: low ({low}) must be >= 1 for a log scale")
            if low <= 0:
                raise SpaceError(f"{where}: low ({low}) must be > 0 for a log scale")
        check(domain, low, where, "low")
        check(domain, high, where, "high")
        if not low < high:
            raise SpaceError(f"{where}: low ({low}) must be < high ({high})")
        return Range(low, high, self.log)

    def suggest(self, trial: optuna.Trial, name: str, domain: Domain) -> Scalar:
        """Asks ``trial`` for this dimension under ``name``."""
        if domain.kind is int:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def to_plain(self) -> dict[str, Any]:
        """The YAML form."""
        return {"low": self.low, "high": self.high, "log": self.log}

    def describe(self) -> str:
        """A short human form for run parameters."""
        return f"[{self.low}, {self.high}]" + (" log" if self.log else "")


@dataclasses.dataclass(frozen=True)
class Choice:
    """A categorical dimension over distinct ``choices``."""

    choices: tuple[Scalar, ...]

    def checked(self, domain: Domain, where: str) -> Choice:
        """Returns the normalised param or raises :class:`SpaceError` naming ``where``."""
        if isinstance(self.choices, str | bytes) or not isinstance(self.choices, tuple | list):
            raise SpaceError(f"{where}: choices must be a list, got {self.choices!r}")
        if not self.choices:
            raise SpaceError(f"{where}: choices must not be empty")
        values = tuple(check(domain, c, where, "choice") for c in self.choices)
        if len(set(values)) != len(values):
            raise SpaceError(f"{where}: choices repeat a value: {list(values)}")
        return Choice(values)

    def suggest(self, trial: optuna.Trial, name: str, domain: Domain) -> Scalar:
        """Asks ``trial`` for this dimension under ``name``."""
        return trial.suggest_categorical(name, list(self.choices))

    def to_plain(self) -> dict[str, Any]:
        """The YAML form."""
        return {"choices": list(self.choices)}

    def describe(self) -> str:
        """A short human form for run parameters."""
        return "{" + ", ".join(str(c) for c in self.choices) + "}"


Param = Fixed | Range | Choice

_RANGE_KEYS = {"low", "high", "log"}


def parse_param(raw: object, where: str) -> Param:
    """Reads the YAML form of a param (scalar, ``{low, high[, log]}`` or ``{choices}``).

    Only the shape is checked here; values are checked against the domain by the section.

    Raises:
        SpaceError: a shape that is none of the three forms.
    """
    if isinstance(raw, bool | int | float | str):
        return Fixed(raw)
    if not isinstance(raw, Mapping):
        raise SpaceError(
            f"{where}: expected a value, {{low, high, log}} or {{choices}}, got {raw!r}"
        )
    keys = set(raw)
    if "choices" in keys:
        if keys != {"choices"}:
            raise SpaceError(
                f"{where}: choices cannot be combined with {sorted(keys - {'choices'})}"
            )
        choices = raw["choices"]
        if not isinstance(choices, list | tuple):
            raise SpaceError(f"{where}: choices must be a list, got {choices!r}")
        return Choice(tuple(choices))
    unknown = sorted(keys - _RANGE_KEYS)
    if unknown:
        raise SpaceError(
            f"{where}: unknown key(s) {unknown}; allowed: low, high, log (a range) or choices"
        )
    missing = sorted({"low", "high"} - keys)
    if missing:
        raise SpaceError(f"{where}: a range needs {' and '.join(missing)}")
    return Range(raw["low"], raw["high"], raw.get("log", False))
