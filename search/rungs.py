"""Asynchronous successive halving, single- and multi-objective, in plain Python (no Ray).

:class:`RungCore` decides, for each report of a trial, whether it continues; the Ray
scheduler of :mod:`search.schedulers` and ``bench/search_quality.py`` drive it. It lives apart
from Ray so that its decisions can be tested and replayed in a loop; dominance is
:func:`search.pareto.pareto_mask`'s, the one the Pareto front uses.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from search.pareto import pareto_mask

RULES: tuple[str, ...] = ("mo-asha", "asha")
# A trial's clock in Ray's reports: reports received (epochs, or folds with --folds all).
TIME_ATTR = "training_iteration"


def milestones(max_t: float, grace_period: float, reduction_factor: float) -> tuple[float, ...]:
    """The rungs of one bracket: ``grace_period * reduction_factor**k`` for ``k = 0, 1, ...``
    while below ``max_t``.

    Ray's ASHA also has a rung at ``max_t`` itself when a power lands on it; a report at
    ``max_t`` ends the trial anyway, so such a rung decides nothing and is left out here.

    Raises:
        ValueError: ``grace_period`` or ``max_t`` not positive, ``reduction_factor`` not > 1.
    """
    if grace_period <= 0 or max_t <= 0:
        raise ValueError(f"grace_period and max_t must be > 0, got {grace_period} and {max_t}")
    if not reduction_factor > 1:
        raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
    out: list[float] = []
    k = 0
    while grace_period * reduction_factor**k < max_t:
        out.append(grace_period * reduction_factor**k)
        k += 1
    return tuple(out)


def nondominated_order(
    values: Sequence[Sequence[float]], senses: Sequence[str]
) -> tuple[list[int], int]:
    """The rows ordered by non-dominated sorting, crowding distance inside each front.

    Row ``j`` dominates row ``i`` when it is no worse in every objective and better in one.
    Fronts are peeled off: ``F1`` holds the rows no row dominates, ``F2`` those only ``F1``
    rows dominate, and so on. Inside a front the crowding distance orders the rows (larger
    first): per objective ``m``, with the front sorted by it, the two extreme rows get
    infinity (boundary points first) and each other row adds
    ``(v[next, m] - v[prev, m]) / (max_m - min_m)`` (nothing when ``max_m == min_m``); fronts of
    one or two rows are all boundary. Equal distances keep the rows' input order. Rows holding
    NaN come last, in input order, and are never in ``F1``.

    Args:
        values: ``n`` rows of ``k`` objective values.
        senses: ``k`` entries, ``"max"`` or ``"min"``.

    Returns:
        The row indices in promotion order, and ``|F1|`` (the first ``|F1|`` of the order).
    """
    v = np.asarray(values, dtype=float).reshape(len(values), len(senses))
    v = v * np.array([-1.0 if s == "max" else 1.0 for s in senses])  # smaller is better
    finite = np.flatnonzero(~np.isnan(v).any(axis=1))
    w = v[finite]
    minimise = ["min"] * len(senses)
    left = np.ones(len(w), dtype=bool)
    order: list[int] = []
    first = 0
    while left.any():
        rest = np.flatnonzero(left)
        front = rest[pareto_mask(w[rest], minimise)]  # the rows no remaining row dominates
        crowd = _crowding(w[front])
        ranked = sorted(range(len(front)), key=lambda i: -crowd[i])  # stable: input order
        order += [int(finite[front[i]]) for i in ranked]
        first = first or len(front)
        left[front] = False
    known = set(finite.tolist())
    order += [i for i in range(len(v)) if i not in known]
    return order, first


def _crowding(front: np.ndarray) -> np.ndarray:
    """Crowding distance of each row of one front (``(m, k)``, smaller is better)."""
    m, k = front.shape
    if m <= 2:
        return np.full(m, math.inf)
    distance = np.zeros(m)
    for col in range(k):
        by = np.argsort(front[:, col], kind="stable")
        low, high = front[by[0], col], front[by[-1], col]
        distance[by[0]] = distance[by[-1]] = math.inf
        if high > low:
            distance[by[1:-1]] += (front[by[2:], col] - front[by[:-2], col]) / (high - low)
    return distance


class RungCore:
    """Asynchronous successive halving with one bracket, on one or several objectives.

    The rungs are :func:`milestones`. A trial is judged once per rung: a report at time ``t``
    is judged at the highest milestone ``<= t`` the trial has not been recorded at yet (Ray's
    ``_Bracket.on_result`` rule); its values are then recorded there whatever the decision, and
    a report with no such milestone continues without a decision. With ``n`` trials recorded at
    the rung counting this one and reduction factor ``rf``:

    - ``"asha"`` (first objective only, Ray's ASHA): with ``x`` its first value and ``s = +1``
      for "max", ``-1`` for "min", the trial stops iff ``s * x < q``, ``q`` the ``(1 - 1/rf)`` quantile
      (``numpy.nanpercentile``, linear) of ``s * x`` over the trials recorded before it; the first
      trial at a rung, a NaN value or a NaN quantile continue.
    - ``"mo-asha"`` (every objective; Schmucker et al. 2021): the ``n`` vectors are ordered by
      :func:`nondominated_order` (fronts, then crowding distance, this trial last among equals)
      and the trial at position ``p`` (0-based) continues iff ``p < max(|F1|, n / rf)``: a
      trial non-dominated at its rung is never stopped, and dominated ones continue only inside
      the top ``n / rf``.

    Picklable (plain dicts and tuples), so Ray can save it with the experiment.

    Args:
        rule: ``"mo-asha"`` or ``"asha"``.
        senses: ``"max"`` or ``"min"`` per objective, in the order of the values reported.
        max_t: the most time units (epochs, folds) a trial runs.
        grace_period: the first rung; no trial stops before it.
        reduction_factor: ``rf > 1``: rung spacing and the share ``1/rf`` promoted.
    """

    def __init__(
        self,
        rule: str,
        senses: Sequence[str],
        max_t: float,
        grace_period: float = 1,
        reduction_factor: float = 2,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        if not senses or any(s not in ("max", "min") for s in senses):
            raise ValueError(f"senses must be 'max' or 'min' (at least one): {list(senses)}")
        self.rule = rule
        self.senses = tuple(senses)
        self.reduction_factor = float(reduction_factor)
        self.milestones = milestones(max_t, grace_period, reduction_factor)
        # recorded[k]: trial id -> its values at milestone k, in the order they arrived
        self._recorded: list[dict[str, tuple[float, ...]]] = [{} for _ in self.milestones]
        self.stopped: dict[str, float] = {}  # trial id -> the milestone that stopped it

    def on_result(self, trial_id: str, t: float, values: Sequence[float | None]) -> bool:
        """Judges one report; True: the trial continues, False: it stops here.

        Args:
            trial_id: the trial.
            t: its time (reports received: epochs, or folds).
            values: its objective values, one per sense (None counts as NaN).
        """
        if len(values) != len(self.senses):
            raise ValueError(f"expected {len(self.senses)} values, got {list(values)}")
        vector = tuple(math.nan if v is None else float(v) for v in values)
        for k in reversed(range(len(self.milestones))):
            recorded = self._recorded[k]
            if t < self.milestones[k] or trial_id in recorded:
                continue
            keep = self._judge(recorded, vector)
            recorded[trial_id] = vector
            if not keep:
                self.stopped[trial_id] = self.milestones[k]
            return keep
        return True

    def _judge(self, recorded: dict[str, tuple[float, ...]], vector: tuple[float, ...]) -> bool:
        if self.rule == "asha":
            return self._asha(recorded, vector)
        rows = [*recorded.values(), vector]
        order, first = nondominated_order(rows, self.senses)
        position = order.index(len(rows) - 1)
        return position < max(first, len(rows) / self.reduction_factor)

    def _asha(self, recorded: dict[str, tuple[float, ...]], vector: tuple[float, ...]) -> bool:
        if not recorded:
            return True
        sign = 1.0 if self.senses[0] == "max" else -1.0
        with warnings.catch_warnings():  # every recorded value NaN: a NaN cutoff, continue
            warnings.simplefilter("ignore", RuntimeWarning)
            cutoff = np.nanpercentile(
                [sign * v[0] for v in recorded.values()], (1 - 1 / self.reduction_factor) * 100
            )
        return not sign * vector[0] < cutoff

    def reached(self) -> dict[str, float]:
        """Trial id -> the highest milestone it was judged at (trials judged at least once)."""
        out: dict[str, float] = {}
        for milestone, recorded in zip(self.milestones, self._recorded):
            out.update(dict.fromkeys(recorded, milestone))
        return out

    def state(self) -> dict[str, Any]:
        """A JSON-able snapshot: rule, senses, and per rung its milestone and recorded values;
        ``reached`` (:meth:`reached`) and ``stopped`` (trial id -> milestone that stopped it)."""
        return {
            "rule": self.rule,
            "senses": list(self.senses),
            "reduction_factor": self.reduction_factor,
            "rungs": [
                {"milestone": m, "recorded": {t: list(v) for t, v in r.items()}}
                for m, r in zip(self.milestones, self._recorded)
            ],
            "reached": self.reached(),
            "stopped": dict(self.stopped),
        }
