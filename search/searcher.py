"""The Optuna searcher of a search: Ray's OptunaSearch, told PRUNED for stopped trials.

Built by :func:`make_searcher` from the search's settings; :mod:`search.samplers` makes its
sampler. ``bench/search_quality.py`` drives the same objects without Ray's trial runner.
"""

from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch

from search.records import rung_of
from search.samplers import describe_sampler, make_sampler
from search.settings import SearchSettings
from spaces import define_by_run
from trainables.objectives import OBJECTIVES

RUNG_ATTR = "rung"  # Optuna user attr of a pruned trial: the reports it sent (epochs, folds)
RUNG_OBJECTIVE_ATTR = "rung_obj_{}"  # ... and each objective's value in its last report


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for trials that never sent their final report.

    Ray's OptunaSearch marks a trial stopped by the scheduler as COMPLETE with whatever it last
    reported, which would put partially trained configurations on the Pareto front. A pruned
    trial keeps where it stopped as user attributes: ``rung`` (reports received: epochs, or
    folds with ``--folds all``) and ``rung_obj_<name>`` per objective (None when not finite).
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
            self._record_rung(trial_id, result)
            result = None  # the parent then records PRUNED (val is None and no error)
        super().on_trial_complete(trial_id, result=result, error=error)

    def _record_rung(self, trial_id: str, result: dict) -> None:
        """Sets the rung user attributes of a trial about to be told PRUNED."""
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials:
            return  # unknown, or already told: the parent only warns
        keys = self._metric if isinstance(self._metric, list) else [self._metric]
        by_key = {o.report_key: o.name for o in OBJECTIVES.values()}
        where = rung_of(result, [by_key[k] for k in keys if k in by_key and k in result])
        if where["rung"] is not None:
            trial.set_user_attr(RUNG_ATTR, where["rung"])
        for name, value in where["rung_objectives"].items():
            trial.set_user_attr(RUNG_OBJECTIVE_ATTR.format(name), value)


def _sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    return make_sampler(
        settings.sampler,
        settings.seed,
        settings.trials,
        methods=settings.space.methods,
        concurrency=settings.concurrency,
    )


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
        sampler=_sampler(settings),
        storage=None if storage is None else optuna.storages.RDBStorage(storage),
        study_name=study_name,
    )


def sampler_settings(settings: SearchSettings) -> dict[str, str | int | float | bool]:
    """The settings of the sampler :func:`make_searcher` builds for ``settings`` (the build is
    deterministic), for the MLflow parent run's ``sampler.<key>`` params."""
    return describe_sampler(_sampler(settings))
