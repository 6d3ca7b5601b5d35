"""The trial schedulers of ``emotune search --scheduler``: when a trial is stopped early."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler

from search.settings import REQUIRED_OBJECTIVE, SearchSettings
from trainables.objectives import OBJECTIVES


def make_scheduler(settings: SearchSettings, max_t: int) -> ASHAScheduler:
    """ASHA on the required objective's dev value of each report (``dev_uar``: every report
    carries ``dev_<key>`` of its epoch, named like the Pareto table's column)."""
    prune_on = OBJECTIVES[REQUIRED_OBJECTIVE]
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=prune_on.column,
        mode=prune_on.sense,
        max_t=max_t,
        grace_period=min(settings.grace_period, max_t),
        reduction_factor=2,
    )
