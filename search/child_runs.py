"""What a search's MLflow runs are tagged with, and how values fit MLflow's limits.

The tag names (found again by :class:`~search.tracking.SearchTracker` on resume), the tags and
params of a trial's child run, and the metrics of where a stopped trial stopped. The child's
curves and final values are :func:`search.run_metrics.trial_metrics`.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from mlflow.entities import Metric

from search.pareto import TrialRecord

MAX_PARAM_CHARS = 6000  # MLflow 3 limit on a param value
MAX_TAG_CHARS = 8000  # MLflow 3 limit on a tag value
MAX_ERROR_CHARS = 4000
TAG_KEY = "emotune.search_key"
TAG_TRIAL = "emotune.trial_id"
TAG_STATE = "emotune.state"
TAG_LOGGED = "emotune.logged"  # set once a child holds everything; absent = half-written
TAG_PARENT = "mlflow.parentRunId"
TAG_RUNG = "emotune.rung"  # a stopped trial's reports received (epochs, or folds)
RUNG_PREFIX = "rung/"  # rung/<objective>: a stopped trial's objective values where it stopped
END_STATUS: dict[str, str] = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAILED": "FAILED"}


def as_text(value: Any) -> str:
    """A param or tag value as text: strings as they are, anything else as sorted JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else text[: limit - 20] + f"...[{len(text)} chars]"


def quoted(value: str, what: str) -> str:
    """``value`` as a literal of MLflow's filter grammar (named ``what`` in the error).

    Raises:
        ValueError: an empty value, or one holding quotes (the grammar cannot escape them).
    """
    if not value or "'" in value or '"' in value:
        raise ValueError(f"{what} must be non-empty and free of quotes: {value!r}")
    return f"'{value}'"


def child_tags(parent_id: str, trial: TrialRecord) -> dict[str, str]:
    """The tags of a trial's child run: parent, trial, state, method, and what is known of it
    (Optuna number, node, adapter folder, ``emotune.rung`` of a stopped trial, the error, the
    number of data warnings)."""
    tags = {
        TAG_PARENT: parent_id,
        TAG_TRIAL: trial.trial_id,
        TAG_STATE: trial.state,
        "method": trial.method,
    }
    extra = {
        "emotune.number": trial.number,
        "emotune.node": trial.node,
        "emotune.adapter_dir": trial.adapter_dir,
        TAG_RUNG: trial.rung,
    }
    tags.update({k: str(v) for k, v in extra.items() if v is not None})
    if trial.error:
        tags["emotune.error"] = clip(trial.error, MAX_ERROR_CHARS)
    if trial.warnings:  # the text is in warnings.txt; the tag lets the UI filter on it
        tags["emotune.warnings"] = str(len(trial.warnings))
    return tags


def rung_metrics(trial: TrialRecord) -> list[Metric]:
    """``rung/<objective>`` of a stopped trial (step = its rung); none for other trials and
    for values that are not finite."""
    if trial.rung is None or not trial.rung_objectives:
        return []
    now = int(time.time() * 1000)
    return [
        Metric(f"{RUNG_PREFIX}{name}", float(value), now, int(trial.rung))
        for name, value in trial.rung_objectives.items()
        if value is not None and math.isfinite(value)
    ]
