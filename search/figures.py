"""Pareto-front plots and files: the search's objectives against each other (PNG, HTML, CSV,
Parquet)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure

from search.pareto import check_objectives
from trainables.objectives import OBJECTIVES, PARAMS, Objective

logger = logging.getLogger(__name__)


def plot_axes(objectives: Sequence[str]) -> tuple[Objective, Objective]:
    """The ``(x, y)`` objectives of the front figure.

    The first two objectives of the search; a log-scale one (a count) goes on x, so the default
    ``uar, params`` draws dev UAR against trainable parameters. A single objective is drawn
    against the trainable-parameter count (that one alone, against the table's first row).
    """
    chosen = [OBJECTIVES[n] for n in check_objectives(objectives)]
    if len(chosen) == 1:
        others = [o for o in OBJECTIVES.values() if o != chosen[0]]
        chosen.append(next((o for o in others if o.key == PARAMS), others[0]))
    y, x = chosen[:2]
    if y.log_scale and not x.log_scale:
        x, y = y, x
    return x, y


def _shown(obj: Objective, value: float) -> str:
    # Log-scale objectives are counts: grouped digits, no decimals.
    return f"{value:,.0f}" if obj.log_scale else f"{value:.4f}"


def _hover(row: pd.Series) -> str:
    params = json.loads(row["params"])
    lines = [f"<b>{row['trial_id']}</b> ({row['method']})"]
    lines += [
        f"{o.label} {_shown(o, float(row[o.column]))}"
        for o in OBJECTIVES.values()
        if not pd.isna(row[o.column])
    ]
    lines += [f"{k} = {v}" for k, v in params.items()]
    return "<br>".join(lines)


def _scale(obj: Objective) -> str:
    return "log" if obj.log_scale else "linear"


def _mpl_figure(
    plotted: pd.DataFrame, front: pd.DataFrame, axes: tuple[Objective, Objective], title: str
) -> Figure:
    # A bare Figure (no pyplot) needs no GUI backend and leaves global state alone.
    x, y = axes
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for method, group in plotted.groupby("method", sort=True):
        ax.scatter(
            group[x.column].astype(float),
            group[y.column].astype(float),
            label=str(method),
            alpha=0.75,
            s=28,
        )
    if len(front):
        style = {"color": "black", "lw": 1, "ls": "--", "marker": "o", "mfc": "none", "ms": 11}
        ax.plot(
            front[x.column].astype(float),
            front[y.column].astype(float),
            label="Pareto front",
            **style,
        )
    ax.set(xscale=_scale(x), yscale=_scale(y), xlabel=x.label, ylabel=y.label, title=title)
    ax.grid(True, which="both", alpha=0.3)
    if len(plotted):
        ax.legend(fontsize="small")
    return fig


def _plotly_figure(
    plotted: pd.DataFrame, front: pd.DataFrame, axes: tuple[Objective, Objective], title: str
) -> go.Figure:
    x, y = axes

    def scatter(part: pd.DataFrame, name: str, **style: Any) -> go.Scatter:
        hover = [_hover(row) for _, row in part.iterrows()]
        return go.Scatter(
            x=part[x.column].astype(float),
            y=part[y.column].astype(float),
            name=name,
            hovertext=hover,
            hoverinfo="text",
            **style,
        )

    fig = go.Figure()
    for method, group in plotted.groupby("method", sort=True):
        fig.add_trace(
            scatter(group, str(method), mode="markers", marker={"size": 9, "opacity": 0.8})
        )
    if len(front):
        line = {"color": "black", "dash": "dash", "width": 1}
        marker = {"size": 16, "symbol": "circle-open", "color": "black"}
        fig.add_trace(
            scatter(front, "Pareto front", mode="lines+markers", line=line, marker=marker)
        )
    fig.update_layout(
        title=title,
        xaxis_title=x.label,
        yaxis_title=y.label,
        xaxis_type=_scale(x),
        yaxis_type=_scale(y),
        template="plotly_white",
    )
    return fig


def front_figures(df: pd.DataFrame, objectives: Sequence[str]) -> tuple[Figure, go.Figure]:
    """Two objectives of the search against each other (see :func:`plot_axes`), coloured by
    method, front highlighted; axes named by each objective's ``label``, log for ``log_scale``.

    Pareto points (on all the given objectives) are ringed and joined in order of the x value;
    with a third objective the front need not look monotone in this 2-D view. Trials lacking
    either plotted value are not drawn.

    Args:
        df: Table from :func:`front_table`.
        objectives: Objective names (the axes and the title).

    Returns:
        A matplotlib figure (for PNG) and a plotly figure (HTML, hover shows the params).
    """
    title = "Pareto front on dev (" + ", ".join(check_objectives(objectives)) + ")"
    axes = plot_axes(objectives)
    plotted = df.dropna(subset=[axes[0].column, axes[1].column])
    front = plotted[plotted["pareto"]].sort_values(axes[0].column)
    return _mpl_figure(plotted, front, axes, title), _plotly_figure(plotted, front, axes, title)


def write_front(df: pd.DataFrame, figs: tuple[Figure, go.Figure], folder: Path) -> dict[str, Path]:
    """Writes pareto.csv, pareto.parquet, pareto.png and pareto.html into ``folder``.

    The HTML embeds plotly.js (about 5 MB) so it opens offline and inside the MLflow UI.

    Args:
        df: Table from :func:`front_table`.
        figs: Figures from :func:`front_figures`.
        folder: Output folder (created if needed).

    Returns:
        Mapping ``csv|parquet|png|html`` -> written path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mpl_fig, plotly_fig = figs
    paths = {ext: folder / f"pareto.{ext}" for ext in ("csv", "parquet", "png", "html")}
    df.to_csv(paths["csv"], index=False)
    df.to_parquet(paths["parquet"], index=False)
    mpl_fig.savefig(paths["png"], dpi=120)
    plotly_fig.write_html(paths["html"], include_plotlyjs=True, full_html=True)
    logger.info(
        "wrote Pareto front (%d rows, %d on front) to %s",
        len(df),
        int(df["pareto"].sum()) if len(df) else 0,
        folder,
    )
    return paths
