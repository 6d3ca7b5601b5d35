"""The Optuna searcher of a search: Ray's OptunaSearch, told PRUNED for stopped trials.

Built by :func:`make_searcher` from the search's settings; :mod:`search.samplers` makes its
sampler. ``bench/search_quality.py`` drives the same objects without Ray's trial runner.
"""

from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch

from search.samplers import make_sampler
from search.settings import SearchSettings
from spaces import define_by_run
from trainables.objectives import OBJECTIVES


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for trials that never sent their final report.

    Ray's OptunaSearch marks a trial stopped by ASHA as COMPLETE with whatever it last reported,
    which would put partially trained configurations on the Pareto front.
    """

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:  # lets search.json name each trial's Optuna number
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if result is not None and not error and not result.get("final", False):
            result = None  # the parent then records PRUNED (val is None and no error)
        super().on_trial_complete(trial_id, result=result, error=error)


def make_searcher(
    settings: SearchSettings, study_name: str, storage: str | None
) -> PruneAwareOptunaSearch:
    """Optuna on the search's objectives (``obj_<name>``: dev values, never test; --folds all:
    means over every fold, see :mod:`search.nested`).

    Args:
        settings: the search (space, objectives, sampler, seed, trials, concurrency).
        study_name: the Optuna study's name.
        storage: an RDB URL (``sqlite:///.../study.db``); None: in memory (benchmarks).
    """
    objectives = [OBJECTIVES[name] for name in settings.objectives]
    return PruneAwareOptunaSearch(
        space=define_by_run(settings.space),
        metric=[o.report_key for o in objectives],
        mode=[o.sense for o in objectives],
        sampler=make_sampler(
            settings.sampler,
            settings.seed,
            settings.trials,
            methods=settings.space.methods,
            concurrency=settings.concurrency,
        ),
        storage=None if storage is None else optuna.storages.RDBStorage(storage),
        study_name=study_name,
    )
