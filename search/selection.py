"""Which trial of a finished search an export takes: the best dev value of an objective.

Only dev metrics and the trainable-parameter count decide; test metrics are never read. The
objectives come from :data:`trainables.objectives.OBJECTIVES` (no torch import, so the CLI can
list them cheaply).
"""

from __future__ import annotations

import math
from typing import Any

from trainables.objectives import OBJECTIVES, PARAMS, Objective
from trainables.result import finished_every_fold


def export_objectives() -> tuple[str, ...]:
    """The objectives an export may choose its champion by: every row of
    :data:`trainables.objectives.OBJECTIVES` that reads a dev metric (the trainable-parameter
    count is bounded by ``max_params`` instead)."""
    return tuple(name for name, o in OBJECTIVES.items() if o.key != PARAMS)


def export_objective(name: str) -> Objective:
    """The objective ``name`` among :func:`export_objectives`.

    Raises:
        ValueError: any other name, listing the allowed ones.
    """
    allowed = export_objectives()
    if name not in allowed:
        raise ValueError(f"unknown objective {name!r}; expected one of {list(allowed)}")
    return OBJECTIVES[name]


def _dev_value(trial: dict[str, Any], objective: Objective) -> float | None:
    value = objective.value(trial.get("dev") or {}, None)
    return None if value is None or not math.isfinite(value) else value


def select_best(
    trials: list[dict[str, Any]],
    objective: str = "uar",
    max_params: int | None = None,
    folds: list[int] | None = None,
) -> dict[str, Any]:
    """Chooses the trial to export from dev metrics only.

    Candidates are COMPLETE trials with an ``adapter_dir`` and a finite dev value of the
    objective, with ``trainable_params <= max_params`` when a budget is given, and with
    ``folds`` (``--folds all``: the search's folds) only those whose ``folds`` list every one
    of them, so means over different folds are never compared. The best has the
    best dev value in the objective's sense (highest dev UAR, WA or macro-F1, lowest dev
    per-gender UAR gap for ``fairness``: see :func:`export_objectives`); ties go to fewer
    trainable parameters, then to the earlier trial. Test metrics are never read.

    Raises:
        ValueError: unknown objective, or no trial qualifies (the message says why).
    """
    obj = export_objective(objective)
    complete = [t for t in trials if t.get("state") == "COMPLETE" and t.get("adapter_dir")]
    if folds is not None:
        complete = [t for t in complete if finished_every_fold(t.get("folds"), folds)]
    if not complete:
        states: dict[str, int] = {}
        for t in trials:
            states[str(t.get("state"))] = states.get(str(t.get("state")), 0) + 1
        every = "" if folds is None else f" that finished every fold {list(folds)}"
        raise ValueError(
            f"no COMPLETE trial with an adapter{every} among {len(trials)} trial(s) "
            f"(states: {states})"
        )
    scored = [t for t in complete if _dev_value(t, obj) is not None]
    if not scored:
        raise ValueError(f"no COMPLETE trial has a finite dev {obj.key} (objective {objective!r})")
    if max_params is not None:
        within = [t for t in scored if int(t["trainable_params"]) <= max_params]
        if not within:
            smallest = min(scored, key=lambda t: int(t["trainable_params"]))
            raise ValueError(
                f"no COMPLETE trial has <= {max_params:,} trainable params; the smallest is "
                f"trial {smallest['trial_id']} with {int(smallest['trainable_params']):,}"
            )
        scored = within
    sign = -1.0 if obj.larger_is_better else 1.0

    def rank(t: dict[str, Any]) -> tuple[float, int, int]:
        return (sign * _dev_value(t, obj), int(t["trainable_params"]), int(t.get("number") or 0))

    return min(scored, key=rank)
