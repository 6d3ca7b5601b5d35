"""The search objectives, one row each: the only table that names them (no torch import).

A trial reports each objective as ``obj_<name>`` (:meth:`Objective.report_key`); Ray Tune's
metric/mode lists, the Pareto front and its hypervolume, the export's choice of champion, the
CLI help and the figures all read :data:`OBJECTIVES`. Adding an objective is one row here (and a
test): its value is read from a run's dev summary or its trainable-parameter count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from trainables.result import SUMMARY_KEYS

Sense = Literal["max", "min"]
PARAMS = "trainable_params"  # the key that reads the trainable-parameter count


@dataclass(frozen=True)
class Objective:
    """One objective of a search, or a metric an export may choose its champion by.

    Attributes:
        name: what users type (``--objectives uar,params``, ``--objective fairness``).
        key: a :data:`~trainables.result.SUMMARY_KEYS` name, read from the DEV summary (test is
            never an objective), or :data:`PARAMS` for the trainable-parameter count.
        sense: ``"max"`` or ``"min"``.
        log_scale: compared (hypervolume, plot axes) on a log10 scale.
        reference: the hypervolume reference point, in raw units: the worst value that still
            counts (a front's hypervolume is measured from it).
        worst: the value a trial reports when it cannot measure the objective (e.g. a fairness
            gap without gender labels), so the search treats it as the worst outcome.
        label: how plots, tables and help name it.
    """

    name: str
    key: str
    sense: Sense
    log_scale: bool
    reference: float
    worst: float
    label: str

    @property
    def report_key(self) -> str:
        """The key of the objective in a trial's Ray reports."""
        return f"obj_{self.name}"

    @property
    def column(self) -> str:
        """The column of the Pareto table holding the raw value (``dev_uar``,
        ``trainable_params``)."""
        return self.key if self.key == PARAMS else f"dev_{self.key}"

    @property
    def larger_is_better(self) -> bool:
        return self.sense == "max"

    def value(self, dev: Mapping[str, float | None], trainable_params: float | None) -> float | None:
        """The raw value from a run's dev summary and trainable-parameter count (None: unknown)."""
        raw = trainable_params if self.key == PARAMS else dev.get(self.key)
        return None if raw is None else float(raw)

    def reported(self, dev: Mapping[str, float | None], trainable_params: float | None) -> float:
        """The value a trial reports: :meth:`value`, or :attr:`worst` when unknown."""
        raw = self.value(dev, trainable_params)
        return self.worst if raw is None or math.isnan(raw) else raw

    def scale(self, value: float) -> float:
        """The value on the axis where hypervolume is measured (log10 for counts, at least 1)."""
        return math.log10(max(value, 1.0)) if self.log_scale else value


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("uar", "uar", "max", False, 0.0, 0.0, "dev UAR"),
        Objective("params", PARAMS, "min", True, 1e9, 1e9, "trainable parameters"),
        Objective("fairness", "uar_gap_gender", "min", False, 1.0, 1.0, "dev UAR gender gap"),
        Objective("wa", "wa", "max", False, 0.0, 0.0, "dev WA"),
        Objective("macro_f1", "macro_f1", "max", False, 0.0, 0.0, "dev macro-F1"),
    )
}
assert all(o.key == PARAMS or o.key in SUMMARY_KEYS for o in OBJECTIVES.values())


def get_objective(name: str) -> Objective:
    """The objective called ``name``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}") from None


def report_values(
    names: tuple[str, ...] | list[str], dev: Mapping[str, float | None], trainable_params: float
) -> dict[str, float]:
    """``obj_<name>`` -> reported value, for a trial's report."""
    return {OBJECTIVES[n].report_key: OBJECTIVES[n].reported(dev, trainable_params) for n in names}


def help_text(names: tuple[str, ...] | list[str] | None = None) -> str:
    """``name (label, max|min)`` of each objective, for CLI help."""
    chosen = OBJECTIVES if names is None else {n: OBJECTIVES[n] for n in names}
    return ", ".join(f"{o.name} ({o.label}, {o.sense})" for o in chosen.values())
