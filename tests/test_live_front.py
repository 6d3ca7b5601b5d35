"""The parent run's hypervolume-vs-trials curve (search/live_front.py)."""

from __future__ import annotations

import pytest

from search.live_front import HypervolumeCurve
from search.pareto import TrialRecord


def _record(trial_id: str, uar: float, params: int, state: str = "COMPLETE") -> TrialRecord:
    return TrialRecord(
        trial_id=trial_id, state=state, method="lora", dev={"uar": uar}, trainable_params=params
    )


def test_each_finished_trial_is_one_step_and_only_complete_ones_count() -> None:
    curve = HypervolumeCurve(["uar", "params"])
    # Hand-computed on the axes dev UAR (ref 0) x log10 params (ref 9):
    # (0.5, 1e3): 0.5 * (9 - 3) = 3.0; adding (0.8, 1e5): 3.0 + (0.8 - 0.5) * (9 - 5) = 4.2.
    assert curve.add(_record("a", 0.5, 1_000)) == (1, pytest.approx(3.0))
    # A pruned trial is a step, but its partial score never reaches the front.
    assert curve.add(_record("b", 0.99, 10, state="PRUNED")) == (2, pytest.approx(3.0))
    assert curve.add(_record("c", 0.8, 100_000)) == (3, pytest.approx(4.2))


def test_a_trial_logged_again_after_a_resume_counts_once() -> None:
    curve = HypervolumeCurve(["uar", "params"])
    curve.add(_record("a", 0.5, 1_000))
    assert curve.add(_record("a", 0.5, 1_000)) is None
    assert curve.add(_record("c", 0.8, 100_000))[0] == 2
