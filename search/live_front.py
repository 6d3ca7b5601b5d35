"""The parent run's hypervolume-vs-trials curve, logged as each trial finishes.

The search's final summary logs ``hypervolume`` at step = number of trials
(:func:`search.run_metrics.front_metrics`); this logs the same metric at every earlier step, so
MLflow's chart of the parent shows how the front grew during the search.
"""

from __future__ import annotations

from collections.abc import Sequence

from search.pareto import TrialRecord, front_hypervolume, front_table


class HypervolumeCurve:
    """Finished trials so far and the hypervolume of the front of their COMPLETE ones.

    A trial reported twice (a resumed driver logs again what its last snapshot missed) counts
    once: the step of a finished trial is the number of distinct trials finished up to it.
    """

    def __init__(self, objectives: Sequence[str], folds: Sequence[int] | None = None) -> None:
        self.objectives = list(objectives)
        self.folds = None if folds is None else list(folds)  # --folds all: every fold counts
        self.finished: set[str] = set()
        self.complete: list[TrialRecord] = []

    def add(self, record: TrialRecord) -> tuple[int, float] | None:
        """Counts ``record``; returns ``(step, hypervolume)`` to log, None if seen before."""
        if record.trial_id in self.finished:
            return None
        self.finished.add(record.trial_id)
        if record.state == "COMPLETE":
            self.complete.append(record)
        table = front_table(self.complete, self.objectives, self.folds)
        hv = front_hypervolume(table, self.objectives)
        return len(self.finished), hv
