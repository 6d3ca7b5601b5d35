"""Trial records, Pareto fronts and hypervolume for a PEFT search (plots: search/figures.py).

Selection uses DEV metrics and the trainable-parameter count only; test metrics are carried
along for reporting and never decide which trial is on the front.
"""

from __future__ import annotations

import json
import logging
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from trainables.objectives import OBJECTIVES
from trainables.result import SUMMARY_KEYS, finished_every_fold

logger = logging.getLogger(__name__)

METRIC_KEYS: tuple[str, ...] = SUMMARY_KEYS  # the dev/test summary of every run
STATES: tuple[str, ...] = ("COMPLETE", "PRUNED", "FAILED")


@dataclass(frozen=True)
class TrialRecord:
    """Outcome of one finished trial, as the driver receives it from Ray and Optuna."""

    trial_id: str
    number: int | None = None
    state: str = "COMPLETE"
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    dev: dict[str, float | None] = field(default_factory=dict)
    test: dict[str, float | None] = field(default_factory=dict)
    trainable_params: int | None = None
    adapter_bytes: int | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    adapter_dir: str | None = None
    node: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # the run's data warnings (result.json)
    # --folds all: each finished fold's {"fold", "dev", "test"} summaries (a trial stopped
    # early keeps the folds it finished); None for a single-split search.
    folds: list[dict[str, Any]] | None = None
    # A trial the scheduler stopped (PRUNED): the reports it sent (epochs, or folds with
    # --folds all) and each objective's value in the last one (None: not finite); None else.
    rung: int | None = None
    rung_objectives: dict[str, float | None] | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {self.state!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        """Builds a record from its dict form; unknown keys are an error.

        Args:
            data: Mapping with the field names of this class (missing ones take defaults).

        Returns:
            The record.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrialRecord keys: {sorted(unknown)}")
        kwargs = dict(data)
        for key in ("params", "dev", "test"):
            kwargs[key] = dict(kwargs.get(key) or {})
        kwargs["history"] = [dict(h) for h in kwargs.get("history") or []]
        if kwargs.get("rung_objectives") is not None:
            kwargs["rung_objectives"] = dict(kwargs["rung_objectives"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict (the inverse of :meth:`from_dict`); ``folds`` is
        left out when None, so a single-split search's records read as before; ``rung`` and
        ``rung_objectives`` are always there (None unless the trial was stopped early)."""
        data = asdict(self)
        if data["folds"] is None:
            del data["folds"]
        return data

    def finished_folds(self) -> list[int]:
        """The folds this trial finished (``[]`` for a single-split search)."""
        return [int(f["fold"]) for f in self.folds or []]


def check_objectives(objectives: Sequence[str]) -> list[str]:
    """``objectives`` as a list, checked to be distinct names of
    :data:`trainables.objectives.OBJECTIVES`."""
    names = list(objectives)
    bad = [n for n in names if n not in OBJECTIVES]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"objectives must be distinct names among {sorted(OBJECTIVES)}: {names}")
    return names


def _as_min(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(senses):
        raise ValueError(f"values must be (n, {len(senses)}), got {values.shape}")
    if any(s not in ("max", "min") for s in senses):
        raise ValueError(f"senses must be 'max' or 'min': {list(senses)}")
    sign = np.array([-1.0 if s == "max" else 1.0 for s in senses])
    return values * sign


def pareto_mask(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Marks the non-dominated rows.

    Row ``j`` dominates row ``i`` when it is at least as good in every column and strictly
    better in one. Equal rows do not dominate each other, so duplicates of a front point are
    all on the front. Rows holding NaN are never on the front and dominate nothing.

    Args:
        values: ``(n, k)`` objective values.
        senses: ``k`` entries, ``"max"`` or ``"min"``.

    Returns:
        ``(n,)`` boolean mask, True for non-dominated rows.
    """
    v = _as_min(values, senses)  # (n, k), smaller is better
    ok = ~np.isnan(v).any(axis=1)
    mask = np.zeros(len(v), dtype=bool)
    w = v[ok]
    if len(w):
        le = (w[:, None, :] <= w[None, :, :]).all(axis=2)  # le[j, i]: j no worse than i
        lt = (w[:, None, :] < w[None, :, :]).any(axis=2)
        mask[ok] = ~(le & lt).any(axis=0)
    return mask


def _hv_min(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of minimisation points (all strictly below ``ref``) by slicing."""
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    if points.shape[1] == 2:
        order = np.lexsort((points[:, 1], points[:, 0]))
        volume, best_y = 0.0, ref[1]
        for x, y in points[order]:  # sweep in x; each point adds the strip it improves
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    # Slice along the last axis: between consecutive levels the (k-1)-D section is constant.
    last = points[:, -1]
    levels = np.unique(last)
    bounds = np.append(levels[1:], ref[-1])
    volume = 0.0
    for level, upper in zip(levels, bounds):
        section = points[last <= level, :-1]
        volume += (upper - level) * _hv_min(section, ref[:-1])
    return float(volume)


def hypervolume(values: np.ndarray, senses: Sequence[str], reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by a point set, bounded by a reference point.

    With every column turned into minimisation (max columns negated, reference too), the
    hypervolume is the Lebesgue measure of ``union_i [v_i, r]``, the set of points that are
    dominated by some ``v_i`` and dominate the reference ``r``. Points not strictly better than
    ``r`` in every column, and rows with NaN, contribute nothing. Exact for any ``k`` by
    slicing (cost about ``n^(k-1) log n``), meant for k = 1..3 and small ``n``.

    Args:
        values: ``(n, k)`` values on the axes where volume is measured (already scaled).
        senses: ``k`` entries, ``"max"`` or ``"min"``.
        reference: ``k`` reference coordinates on the same axes.

    Returns:
        The hypervolume (0.0 for an empty set).
    """
    v = _as_min(values, senses)
    ref = _as_min(np.asarray(reference, dtype=float)[None, :], senses)[0]
    keep = ~np.isnan(v).any(axis=1) & (v < ref).all(axis=1)
    v = v[keep]
    return _hv_min(v[pareto_mask(v, ["min"] * v.shape[1])], ref) if len(v) else 0.0


def scaled_values(df: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    """Objective values of a front table on hypervolume axes (e.g. log10 of params).

    Args:
        df: Table from :func:`front_table`.
        objectives: Objective names.

    Returns:
        ``(n, k)`` float array; missing values are NaN.
    """
    cols = []
    for name in check_objectives(objectives):
        obj = OBJECTIVES[name]
        raw = pd.to_numeric(df[obj.column], errors="coerce").to_numpy(float)
        cols.append(np.array([np.nan if np.isnan(x) else obj.scale(x) for x in raw]))
    return np.stack(cols, axis=1) if len(df) else np.zeros((0, len(cols)))


def front_hypervolume(df: pd.DataFrame, objectives: Sequence[str]) -> float:
    """Hypervolume of a front table's rows against each objective's fixed reference.

    Every axis is :meth:`~trainables.objectives.Objective.scale` of the raw value, the
    reference scaled alike: e.g. ``uar`` as is (maximised, reference 0, the same lengths as
    ``1 - uar`` against 1), ``params`` as ``log10`` (reference 9), ``fairness`` as the dev UAR
    gap (reference 1).
    """
    names = check_objectives(objectives)
    return objective_hypervolume(scaled_values(df, names), names)


def objective_hypervolume(scaled: np.ndarray, objectives: Sequence[str]) -> float:
    """Hypervolume of ``(n, k)`` values already on the objectives' axes
    (:meth:`~trainables.objectives.Objective.scale`), against each one's scaled reference."""
    names = check_objectives(objectives)
    ref = [OBJECTIVES[n].scale(OBJECTIVES[n].reference) for n in names]
    return hypervolume(scaled, [OBJECTIVES[n].sense for n in names], ref)


def _param_column(values: list[Any]) -> list[Any]:
    """Keeps a numeric column numeric; anything else becomes text so parquet accepts it."""
    present = [v for v in values if v is not None]
    numeric = all(
        isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in present
    )
    if numeric:
        return [np.nan if v is None else v for v in values]
    return [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values]


def front_table(
    trials: Sequence[TrialRecord], objectives: Sequence[str], folds: Sequence[int] | None = None
) -> pd.DataFrame:
    """One row per COMPLETE trial, with a ``pareto`` column for the non-dominated ones.

    Columns: trial_id, number, method, params (JSON), param_<name> for every sampled
    parameter, dev_<metric> and test_<metric>, trainable_params, adapter_bytes, best_epoch,
    adapter_dir, pareto. Rows are sorted by dev UAR, best first. PRUNED and FAILED trials are
    left out; a COMPLETE trial lacking an objective value is kept but is not on the front.

    Args:
        trials: Every trial of the search.
        objectives: Objective names among :data:`trainables.objectives.OBJECTIVES`.
        folds: ``--folds all``: every fold of the search. Only trials that finished all of
            them are rows (means over different folds are not comparable); a trial stopped
            early is never COMPLETE, this also holds if a record says otherwise.

    Returns:
        The table (empty, with the same columns, when nothing completed).
    """
    names = check_objectives(objectives)
    done = [t for t in trials if t.state == "COMPLETE"]
    if folds is not None:
        done = [t for t in done if finished_every_fold(t.folds, folds)]
    param_names = sorted({k for t in done for k in t.params})
    rows: dict[str, list[Any]] = {
        "trial_id": [t.trial_id for t in done],
        "number": [t.number for t in done],
        "method": [t.method for t in done],
        "params": [json.dumps(t.params, sort_keys=True, default=str) for t in done],
    }
    for name in param_names:
        rows[f"param_{name}"] = _param_column([t.params.get(name) for t in done])
    for split in ("dev", "test"):
        for key in METRIC_KEYS:
            rows[f"{split}_{key}"] = [_float(getattr(t, split).get(key)) for t in done]
    for key in ("trainable_params", "adapter_bytes", "best_epoch"):
        rows[key] = [getattr(t, key) for t in done]
    rows["adapter_dir"] = [t.adapter_dir for t in done]
    df = pd.DataFrame(rows)
    for key in ("number", "trainable_params", "adapter_bytes", "best_epoch"):
        df[key] = df[key].astype("Int64")
    values = scaled_values(df, names)
    missing = np.isnan(values).any(axis=1)
    if missing.any():
        logger.warning(
            "%d complete trial(s) lack an objective value; kept off the front", int(missing.sum())
        )
    df["pareto"] = pareto_mask(values, [OBJECTIVES[n].sense for n in names])
    return df.sort_values(
        "dev_uar", ascending=False, na_position="last", kind="stable"
    ).reset_index(drop=True)


def _float(value: Any) -> float:
    return np.nan if value is None else float(value)
