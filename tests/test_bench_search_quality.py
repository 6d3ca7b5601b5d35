"""bench.replay and bench.search_quality: the replay of the product's searcher and scheduler on the table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.replay import DEFAULT, STRATEGIES, Table, Trace, replay
from bench.search_quality import band, first_reach, summarise
from bench.search_table import DEFAULT_OUT, EPOCHS, GRID, LRS, grid_points


@pytest.fixture(scope="module")
def table() -> Table:
    return Table(pd.read_parquet(DEFAULT_OUT))


def test_the_stored_table_covers_the_grid_with_several_seeds(table: Table) -> None:
    assert len(table.points) == len(grid_points()) == sum(map(len, GRID.values())) * len(LRS)
    assert table.epochs == EPOCHS
    assert all(len(curves) >= 1 for curves in table.curves)
    assert sum(len(curves) >= 2 for curves in table.curves) >= len(table.points) // 2
    for curves in table.curves:
        for c in curves:  # best-so-far curves never fall; every epoch cost time
            assert np.all(np.diff(c.best_dev_uar) >= 0) and np.all(c.seconds > 0)


def test_nearest_keeps_method_and_choices_and_rounds_in_log_space(table: Table) -> None:
    point = table.points[
        table.nearest({"method": "lora", "lora_rank": 5, "lora_targets": "ffn", "lr": 3e-3})
    ]
    # rank 5 is nearer 8 than 2 in log space (log 5/2 = 0.92 > log 8/5 = 0.47).
    assert (point["method"], point["lora_rank"], point["lora_targets"]) == ("lora", 8, "ffn")
    assert point["lr"] == min(LRS, key=lambda lr: abs(math.log(lr / 3e-3)))
    assert table.points[table.nearest({"method": "frozen", "lr": 1e-9})]["lr"] == LRS[0]


@pytest.mark.parametrize("strategy", ["random", "random+ASHA", DEFAULT, "NSGA-II"])
def test_a_replay_spends_its_budget_and_its_front_only_grows(table: Table, strategy: str) -> None:
    budget = 10 * table.mean_trial_seconds
    trace = replay(strategy, 0, table, budget, workers=2, grace=1, reduction=2, max_trials=60)
    assert trace.costs and trace.costs == sorted(trace.costs) and trace.costs[-1] <= budget
    assert all(b >= a for a, b in zip(trace.hvs, trace.hvs[1:]))
    if not strategy.startswith("random"):
        assert trace.methods == set(GRID)  # the first trials cover every method
    if strategy == "random":
        assert trace.pruned == 0
    if "ASHA" in strategy:  # stopping trials early leaves cost for more of them
        assert trace.pruned > 0 and trace.trials > len(trace.costs)


def test_curves_bands_and_the_cost_to_reach_a_target() -> None:
    a = Trace("random", 0, costs=[1.0, 3.0], hvs=[1.0, 2.0], test_hvs=[1.0, 2.0])
    b = Trace("random", 1, costs=[2.0], hvs=[3.0], test_hvs=[3.0])
    grid = np.array([0.0, 1.0, 2.0, 3.0])
    assert a.at(grid).tolist() == [0.0, 1.0, 1.0, 2.0]
    mean, half = band(np.stack([a.at(grid), b.at(grid)]))
    assert mean.tolist() == [0.0, 0.5, 2.0, 2.5]
    # Two seeds: t(0.975, 1) = 12.706, sd of (2, 3) = 0.7071, / sqrt 2 -> 6.353.
    assert half[-1] == pytest.approx(12.706 * 0.70711 / math.sqrt(2), rel=1e-3)
    assert first_reach(grid, mean, 2.0) == 2.0 and math.isinf(first_reach(grid, mean, 9.0))
    summary = summarise([a, b], budget=3.0)
    assert summary["rows"]["random"]["reach"] == pytest.approx(1.0)


def test_the_default_strategy_is_what_emotune_search_runs_by_default() -> None:
    from search.settings import SearchSettings

    settings = SearchSettings(manifests=())  # the CLI's defaults: tpe, objectives uar,params
    assert (settings.sampler, settings.scheduler_name) == STRATEGIES[DEFAULT]
