"""The trial schedulers of ``emotune search --scheduler``: when a trial is stopped early.

``mo-asha`` (the default of a multi-objective search) promotes at each rung by non-dominated
sorting on the search's objectives, so a trial that trades a little UAR for far fewer
parameters is not stopped for its UAR alone; ``asha`` (the default with one objective) ranks on
dev UAR like Ray's ASHA; ``none`` runs every trial to its end. The decisions are
:class:`~search.rungs.RungCore`'s; :class:`RungScheduler` feeds it Ray's reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.choices import SCHEDULERS
from search.rungs import RULES, TIME_ATTR, RungCore
from search.settings import REQUIRED_OBJECTIVE, SearchSettings
from trainables.objectives import OBJECTIVES

__all__ = ["SCHEDULERS", "TIME_ATTR", "RungCore", "RungScheduler", "make_scheduler"]


class RungScheduler(FIFOScheduler):
    """Ray's TrialScheduler for the :class:`~search.rungs.RungCore` rules (``mo-asha``, ``asha``).

    Each report's objective values are read under the objectives' report keys (``obj_uar``,
    ``obj_params``, ...), its time under ``time_attr``. A report at ``t >= max_t`` stops the
    trial (it is done, as with Ray's ASHA); a report lacking a key continues undecided. A
    finished trial's last report is recorded too (``on_trial_complete``, as Ray's ASHA does).
    Trials are run in submission order (FIFO). Picklable: Tune saves it with the experiment.

    Also drivable without Tune (``bench/search_quality.py``): ``on_trial_add(None, trial)``,
    ``on_trial_result(None, trial, result) -> CONTINUE | STOP``,
    ``on_trial_complete(None, trial, result)``, ``trial`` any object with ``.trial_id``.

    Args:
        rule: ``"mo-asha"`` or ``"asha"`` (reads the first objective only).
        objectives: names in :data:`trainables.objectives.OBJECTIVES`, the search's order.
        max_t: the most time units (epochs, folds) a trial runs.
        grace_period: the first rung (clipped to ``max_t``).
        reduction_factor: ``> 1``.
        time_attr: the result key holding the trial's time.
    """

    def __init__(
        self,
        rule: str,
        objectives: Sequence[str],
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 2,
        time_attr: str = TIME_ATTR,
    ) -> None:
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        unknown = [n for n in objectives if n not in OBJECTIVES]
        if unknown or not objectives:
            raise ValueError(f"objectives must be among {list(OBJECTIVES)}: {list(objectives)}")
        names = list(objectives)[:1] if rule == "asha" else list(objectives)
        self.rule = rule
        self.objectives = tuple(names)
        self.keys = tuple(OBJECTIVES[n].report_key for n in names)
        self.max_t = max_t
        self.time_attr = time_attr
        self.core = RungCore(
            rule,
            [OBJECTIVES[n].sense for n in names],
            max_t=max_t,
            grace_period=min(grace_period, max_t),
            reduction_factor=reduction_factor,
        )
        self.num_stopped = 0

    def _read(self, result: Mapping[str, Any]) -> tuple[float, list[float]] | None:
        """``(time, values)`` of a report, or None when it lacks one of the keys."""
        if self.time_attr not in result or any(k not in result for k in self.keys):
            return None
        values = [math.nan if result[k] is None else float(result[k]) for k in self.keys]
        return result[self.time_attr], values

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        read = self._read(result)
        if read is None:
            return TrialScheduler.CONTINUE
        t, values = read
        if t >= self.max_t or not self.core.on_result(trial.trial_id, t, values):
            self.num_stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        read = self._read(result or {})
        if read is not None:  # records a trial that ended between rungs (fewer epochs)
            self.core.on_result(trial.trial_id, *read)

    def debug_string(self) -> str:
        return (
            f"Using {self.rule} on {','.join(self.objectives)} (rungs "
            f"{list(self.core.milestones)}, reduction factor {self.core.reduction_factor}): "
            f"{len(self.core.stopped)} trial(s) stopped early"
        )


def make_scheduler(settings: SearchSettings, max_t: int) -> TrialScheduler:
    """The scheduler of ``settings.scheduler_name`` for trials of at most ``max_t`` time units.

    ``mo-asha``: :class:`RungScheduler` on every objective of the search; ``asha``: on the
    required one (dev UAR, ``obj_uar``); ``none``: a FIFOScheduler (no trial stops early).
    """
    name = settings.scheduler_name
    if name == "none":
        return FIFOScheduler()
    objectives = settings.objectives if name == "mo-asha" else (REQUIRED_OBJECTIVE,)
    return RungScheduler(
        name,
        objectives,
        max_t=max_t,
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
    )
