"""Every row of ``trainables.objectives.OBJECTIVES`` reaches the search settings, Tune's
metric/mode lists, the Pareto front and hypervolume, the figures and the export, with no other
edit: the tests iterate the table, and a row added at run time is picked up everywhere."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from search.figures import front_figures, plot_axes
from search.pareto import TrialRecord, front_hypervolume, front_table
from search.selection import export_objectives, select_best
from search.settings import SearchSettings
from trainables.objectives import OBJECTIVES, PARAMS, Objective
from trainables.result import SUMMARY_KEYS

SEARCH = Path(__file__).resolve().parents[1] / "search"
DEV = dict.fromkeys(SUMMARY_KEYS, 0.1) | {"uar": 0.6, "wa": 0.7, "macro_f1": 0.65}
DEV |= {"uar_gap_gender": 0.2}
PARAMS_COUNT = 1000
# One trial (dev above, 1,000 params) against the references, by hand: its box is
# 0.6 (UAR above 0) times the other objective's distance to its reference.
HAND_HV = {
    "uar": 0.6,
    "params": 0.6 * (9 - 3),
    "fairness": 0.6 * (1 - 0.2),
    "wa": 0.6 * 0.7,
    "macro_f1": 0.6 * 0.65,
}
PARITY = Objective(
    "parity", "statistical_parity_gender", "min", False, 1.0, 1.0, "dev statistical parity gap"
)


def _pair(name: str) -> list[str]:
    """``uar`` (every search has it) and ``name``."""
    return list(dict.fromkeys(("uar", name)))


def _record(tid: str, dev: dict[str, float], params: int = PARAMS_COUNT) -> TrialRecord:
    return TrialRecord(
        trial_id=tid,
        number=int(tid[1:]),
        method="lora",
        params={"rank": 2},
        dev=dev,
        test=dict(dev),
        trainable_params=params,
        adapter_bytes=4 * params,
        best_epoch=1,
    )


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.parquet"
    path.touch()  # settings only check that it is a file
    return path


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_is_a_search_objective(name: str, tmp_path: Path) -> None:
    objectives = tuple(_pair(name))
    settings = SearchSettings(manifests=(_manifest(tmp_path),), objectives=objectives)
    assert settings.objectives == objectives


def test_settings_require_uar_and_known_objectives(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    with pytest.raises(ValueError, match="must include uar"):
        SearchSettings(manifests=(manifest,), objectives=("params",))
    with pytest.raises(ValueError, match=r"among \['uar', 'params', 'fairness'"):
        SearchSettings(manifests=(manifest,), objectives=("uar", "latency"))


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_has_a_front_and_hypervolume(name: str) -> None:
    obj, names = OBJECTIVES[name], _pair(name)
    df = front_table([_record("t1", DEV)], names)
    assert df[obj.column].tolist() == [obj.value(DEV, PARAMS_COUNT)]
    value = obj.value(DEV, PARAMS_COUNT)
    length = 1.0 if name == "uar" else abs(obj.scale(value) - obj.scale(obj.reference))
    assert front_hypervolume(df, names) == pytest.approx(0.6 * length)
    if name in HAND_HV:
        assert front_hypervolume(df, names) == pytest.approx(HAND_HV[name])


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_front_figure_plots_the_search_objectives(name: str) -> None:
    names = _pair(name)
    df = front_table([_record("t1", DEV), _record("t2", DEV | {"uar": 0.7}, 50_000)], names)
    x, y = plot_axes(names)
    assert y.name == "uar" and x.name == ("params" if name == "uar" else name)
    mpl, plotly = front_figures(df, names)
    ax = mpl.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == (x.label, y.label)
    scales = ("log" if x.log_scale else "linear", "log" if y.log_scale else "linear")
    assert (ax.get_xscale(), ax.get_yscale()) == scales
    assert (plotly.layout.xaxis.title.text, plotly.layout.yaxis.title.text) == (x.label, y.label)
    assert (plotly.layout.xaxis.type, plotly.layout.yaxis.type) == scales
    drawn = sorted(v for trace in plotly.data if trace.name == "lora" for v in trace.x)
    assert drawn == sorted(df[x.column].astype(float))


@pytest.mark.parametrize("names", [["uar", "params"], ["params", "uar"], ["uar"]])
def test_default_front_figure_is_dev_uar_against_parameters(names: list[str]) -> None:
    df = front_table([_record("t1", DEV)], names)
    ax = front_figures(df, names)[0].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("trainable parameters", "dev UAR")
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "linear")


def _candidate(tid: str, number: int, value: float, key: str) -> dict[str, Any]:
    return {
        "trial_id": tid,
        "number": number,
        "state": "COMPLETE",
        "method": "lora",
        "dev": dict(DEV) | {key: value},
        "test": {},
        "trainable_params": 1000,
        "adapter_dir": f"/x/{tid}/adapter",
    }


def test_export_objectives_are_the_dev_metric_rows() -> None:
    assert export_objectives() == tuple(n for n, o in OBJECTIVES.items() if o.key != PARAMS)
    assert {"uar", "wa", "macro_f1", "fairness"} <= set(export_objectives())
    with pytest.raises(ValueError, match=r"unknown objective 'params'; expected one of \['uar'"):
        select_best([_candidate("t1", 1, 0.5, "uar")], objective="params")


@pytest.mark.parametrize("name", export_objectives())
def test_export_chooses_by_every_dev_objective(name: str) -> None:
    obj = OBJECTIVES[name]
    trials = [_candidate("low", 1, 0.3, obj.key), _candidate("high", 2, 0.6, obj.key)]
    best = select_best(trials, objective=name)
    assert best["trial_id"] == ("high" if obj.larger_is_better else "low")


def test_a_new_row_is_all_it_takes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from search.searcher import make_searcher

    monkeypatch.setitem(OBJECTIVES, PARITY.name, PARITY)
    settings = SearchSettings(manifests=(_manifest(tmp_path),), objectives=("uar", "parity"))
    searcher = make_searcher(settings, "corpus", f"sqlite:///{tmp_path / 'study.db'}")
    assert (searcher._metric, searcher._mode) == (["obj_uar", "obj_parity"], ["max", "min"])
    trials = [_record("t1", DEV | {"statistical_parity_gender": 0.25})]
    df = front_table(trials, ["uar", "parity"])
    assert front_hypervolume(df, ["uar", "parity"]) == pytest.approx(0.6 * 0.75)
    ax = front_figures(df, ["uar", "parity"])[0].axes[0]
    assert ax.get_xlabel() == "dev statistical parity gap"
    assert "parity" in export_objectives()
    candidates = [
        _candidate("fair", 1, 0.05, PARITY.key),
        _candidate("unfair", 2, 0.5, PARITY.key),
    ]
    assert select_best(candidates, objective="parity")["trial_id"] == "fair"


def test_search_names_no_objective_by_hand() -> None:
    """Reports, tables and plots read the objective table: no ``obj_*`` key or ``Objective``
    row is spelled out anywhere under search/."""
    for path in sorted(SEARCH.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith("obj_"), f"{path}: {node.value!r}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "Objective", f"{path}:{node.lineno} builds an Objective"
