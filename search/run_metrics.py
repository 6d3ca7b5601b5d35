"""The MLflow metrics of a search's runs: a trial's curves and final values, the parent's front
summary and timing (built here, logged by :mod:`search.tracking`)."""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import Metric

from search.nested import nested_run_metrics
from search.pareto import TrialRecord

# Per-epoch dev/test curves live under this prefix so that the bare names (dev_uar, ...) hold
# the selected (best-epoch) values; the MLflow UI groups "epoch/..." charts in one section.
CURVE_PREFIX = "epoch/"


def _now() -> int:
    return int(time.time() * 1000)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


def _epoch_metrics(entry: Mapping[str, Any], now: int) -> list[Metric]:
    """One history entry as metrics at step = its epoch (non-numeric values skipped)."""
    step = int(entry.get("epoch", 0))
    named: list[tuple[str, Any]] = [(key, entry.get(key)) for key in ("train_loss", "lr")]
    # seconds, padding, audio s / s
    named += [(f"speed_{key}", raw) for key, raw in (entry.get("speed") or {}).items()]
    for split in ("dev", "test"):
        named += [
            (f"{CURVE_PREFIX}{split}_{name}", raw) for name, raw in (entry.get(split) or {}).items()
        ]
    return [
        Metric(key, value, now, step)
        for key, value in ((k, _numeric(raw)) for k, raw in named)
        if value is not None
    ]


def trial_metrics(trial: TrialRecord) -> list[Metric]:
    """Per-epoch curves (step = epoch), final values (step 0) and, cross-validated, each
    finished fold's ``fold/dev_uar`` and ``fold/test_uar`` (step = fold) of one trial."""
    now = _now()
    metrics = [m for entry in trial.history for m in _epoch_metrics(entry, now)]
    finals: dict[str, Any] = {
        f"{split}_{k}": v for split in ("dev", "test") for k, v in getattr(trial, split).items()
    }
    finals.update(
        trainable_params=trial.trainable_params,
        adapter_bytes=trial.adapter_bytes,
        best_epoch=trial.best_epoch,
    )
    for key, raw in finals.items():
        value = _numeric(raw)
        if value is not None:
            metrics.append(Metric(key, value, now, 0))
    for fold in trial.folds or []:  # --folds all: each finished fold's UAR at step = fold
        for split in ("dev", "test"):
            value = _numeric((fold.get(split) or {}).get("uar"))
            if value is not None:
                metrics.append(Metric(f"fold/{split}_uar", value, now, int(fold["fold"])))
    return metrics


def front_metrics(trials: Sequence[TrialRecord], hypervolume: float, n_pareto: int) -> list[Metric]:
    """The parent's ``hypervolume`` and trial counts by state, at step = number of trials."""
    states = [t.state for t in trials]
    counts = {
        "n_trials": len(trials),
        "n_complete": states.count("COMPLETE"),
        "n_pruned": states.count("PRUNED"),
        "n_failed": states.count("FAILED"),
        "n_pareto": n_pareto,
    }
    now, step = _now(), len(trials)
    metrics = [Metric("hypervolume", hypervolume, now, step)]
    return metrics + [Metric(k, float(v), now, step) for k, v in counts.items()]


def timing_metrics(timing: Mapping[str, float]) -> list[Metric]:
    """A search's ``timing`` (see :func:`search.records.search_timing`) as ``timing_<key>``."""
    now = _now()
    return [Metric(f"timing_{k}", float(v), now, 0) for k, v in timing.items()]


def nested_metrics(block: Mapping[str, Any]) -> list[Metric]:
    """A ``nested_cv`` block's parent metrics (:func:`search.nested.nested_run_metrics`)."""
    now = _now()
    return [Metric(k, v, now, 0) for k, v in nested_run_metrics(dict(block)).items()]
