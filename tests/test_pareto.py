"""Pareto front, hypervolume (hand-computed) and front outputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.figures import front_figures, write_front
from search.pareto import (
    TrialRecord,
    front_hypervolume,
    front_table,
    hypervolume,
    pareto_mask,
)
from trainables.objectives import OBJECTIVES

METRICS = (
    "uar",
    "wa",
    "macro_f1",
    "uar_gap_gender",
    "statistical_parity_gender",
    "equal_opportunity_gender",
)


def _trial(
    tid: str,
    uar: float,
    params: int,
    *,
    state: str = "COMPLETE",
    gap: float = 0.1,
    method: str = "lora",
) -> TrialRecord:
    dev = dict.fromkeys(METRICS, 0.5) | {"uar": uar, "uar_gap_gender": gap}
    test = dict.fromkeys(METRICS, 0.4) | {"equal_opportunity_gender": None}
    return TrialRecord(
        trial_id=tid,
        number=int(tid[1:]),
        state=state,
        method=method,
        params={"lr": 1e-3, "rank": 8} if method == "lora" else {"lr": 5e-4, "init": "normal"},
        dev=dev,
        test=test,
        trainable_params=params,
        adapter_bytes=4 * params,
        best_epoch=2,
        history=[{"epoch": 0, "train_loss": 1.2, "lr": 1e-3, "dev": {"uar": 0.3}, "test": {}}],
    )


def test_pareto_mask_max_min_mix() -> None:
    # columns: uar (max), params (min)
    values = np.array([[0.7, 100.0], [0.6, 10.0], [0.6, 50.0], [0.8, 1000.0], [0.5, 1000.0]])
    mask = pareto_mask(values, ["max", "min"])
    assert mask.tolist() == [True, True, False, True, False]


def test_pareto_mask_ties_and_nan() -> None:
    values = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [np.nan, 0.0]])
    mask = pareto_mask(values, ["min", "min"])
    assert mask.tolist() == [True, True, True, False, False]
    assert pareto_mask(np.zeros((0, 2)), ["min", "max"]).shape == (0,)


def test_hypervolume_one_point_2d() -> None:
    # uar .5, params 1e3 -> (1 - .5, log10 1e3) = (.5, 3) vs reference (1, 9): .5 * 6 = 3
    assert hypervolume(np.array([[0.5, 3.0]]), ["max", "min"], [0.0, 9.0]) == pytest.approx(3.0)
    df = front_table([_trial("t1", 0.5, 1000)], ["uar", "params"])
    assert front_hypervolume(df, ["uar", "params"]) == pytest.approx(3.0)


def test_hypervolume_two_points_2d() -> None:
    # minimisation, ref (1, 9): boxes [.5,1]x[3,9] = 3.0 and [.3,1]x[5,9] = 2.8, overlap
    # [.5,1]x[5,9] = 2.0 -> union 3.8; a dominated third point changes nothing
    pts = np.array([[0.5, 3.0], [0.3, 5.0], [0.6, 6.0]])
    assert hypervolume(pts, ["min", "min"], [1.0, 9.0]) == pytest.approx(3.8)
    trials = [_trial("t1", 0.5, 1000), _trial("t2", 0.7, 100_000)]
    df = front_table(trials, ["uar", "params"])
    assert front_hypervolume(df, ["uar", "params"]) == pytest.approx(3.8)


def test_hypervolume_3d() -> None:
    ref = [1.0, 1.0, 1.0]
    one = np.array([[0.5, 0.5, 0.5]])
    assert hypervolume(one, ["min"] * 3, ref) == pytest.approx(0.125)
    # boxes [0,1]x[.5,1]x[.5,1] = .25 and [.5,1]x[0,1]x[.5,1] = .25 overlap in [.5,1]^3 = .125
    two = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    assert hypervolume(two, ["min"] * 3, ref) == pytest.approx(0.375)
    # a third box [.5,1]^2 x [0,1] adds only its new slab [.5,1]^2 x [0,.5] = .125
    three = np.vstack([two, [[0.5, 0.5, 0.0]]])
    assert hypervolume(three, ["min"] * 3, ref) == pytest.approx(0.5)
    # the same with a maximised first axis
    flipped = three * np.array([-1.0, 1.0, 1.0])
    assert hypervolume(flipped, ["max", "min", "min"], [-1.0, 1.0, 1.0]) == pytest.approx(0.5)


def test_hypervolume_beyond_reference() -> None:
    pts = np.array([[0.5, 9.0], [1.0, 3.0], [0.5, 12.0]])  # on or past the reference
    assert hypervolume(pts, ["min", "min"], [1.0, 9.0]) == 0.0
    pts = np.vstack([pts, [[0.5, 3.0]]])
    assert hypervolume(pts, ["min", "min"], [1.0, 9.0]) == pytest.approx(3.0)
    assert hypervolume(np.zeros((0, 2)), ["min", "min"], [1.0, 9.0]) == 0.0
    # 2e9 params lies beyond the 1e9 reference
    df = front_table([_trial("t1", 0.9, 2_000_000_000)], ["uar", "params"])
    assert front_hypervolume(df, ["uar", "params"]) == 0.0


def test_reference_and_objectives() -> None:
    reference = {name: OBJECTIVES[name].reference for name in ("uar", "params", "fairness")}
    assert reference == {"uar": 0.0, "params": 1e9, "fairness": 1.0}
    trial = _trial("t1", 0.6, 1000, gap=0.2)

    def read(name: str) -> float | None:
        return OBJECTIVES[name].value(trial.dev, trial.trainable_params)

    assert read("uar") == 0.6 and OBJECTIVES["uar"].sense == "max"
    assert read("params") == 1000 and OBJECTIVES["params"].sense == "min"
    assert read("fairness") == 0.2 and OBJECTIVES["fairness"].sense == "min"
    assert math.isclose(OBJECTIVES["params"].scale(1e9), 9.0)


def test_trial_record_round_trip() -> None:
    trial = _trial("t3", 0.6, 1000, state="PRUNED")
    assert TrialRecord.from_dict(trial.to_dict()) == trial
    with pytest.raises(ValueError):
        TrialRecord.from_dict({"trial_id": "x", "bogus": 1})
    with pytest.raises(ValueError):
        TrialRecord(trial_id="x", state="RUNNING")


def test_front_table_excludes_pruned_and_failed() -> None:
    trials = [
        _trial("t1", 0.6, 1000),
        _trial("t2", 0.7, 50_000, method="adapter"),
        _trial("t3", 0.5, 2000),  # dominated by t1
        _trial("t4", 0.99, 10, state="PRUNED"),  # would dominate everything
        _trial("t5", 0.99, 10, state="FAILED"),
    ]
    df = front_table(trials, ["uar", "params"])
    assert df["trial_id"].tolist() == ["t2", "t1", "t3"]  # sorted by dev UAR
    assert df["pareto"].tolist() == [True, True, False]
    assert {
        "params",
        "param_lr",
        "param_rank",
        "param_init",
        "dev_uar",
        "test_uar",
        "trainable_params",
        "adapter_bytes",
    } <= set(df.columns)
    assert df["param_rank"].isna().tolist() == [True, False, False]
    # fairness changes the front: t3 has the smallest gap
    trials[2] = _trial("t3", 0.5, 2000, gap=0.01)
    df3 = front_table(trials, ["uar", "params", "fairness"])
    assert df3.set_index("trial_id")["pareto"].to_dict() == {"t1": True, "t2": True, "t3": True}


def test_write_front(tmp_path: Path) -> None:
    trials = [
        _trial("t1", 0.6, 1000),
        _trial("t2", 0.7, 50_000, method="adapter"),
        _trial("t3", 0.5, 2000),
    ]
    df = front_table(trials, ["uar", "params"])
    files = write_front(df, front_figures(df, ["uar", "params"]), tmp_path / "out")
    assert set(files) == {"csv", "parquet", "png", "html"}
    for path in files.values():
        assert path.parent == tmp_path / "out" and path.stat().st_size > 0
    back = pd.read_parquet(files["parquet"])
    assert back["pareto"].tolist() == df["pareto"].tolist()
    assert "rank" in files["html"].read_text()  # hover carries the params


def test_write_front_empty(tmp_path: Path) -> None:
    df = front_table([_trial("t1", 0.6, 1000, state="FAILED")], ["uar", "params"])
    assert len(df) == 0
    files = write_front(df, front_figures(df, ["uar", "params"]), tmp_path)
    assert all(p.stat().st_size > 0 for p in files.values())
    assert front_hypervolume(df, ["uar", "params"]) == 0.0
