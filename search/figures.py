"""Pareto-front plots and files: dev UAR against trainable parameters (PNG, HTML, CSV, Parquet)."""

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

logger = logging.getLogger(__name__)


def _hover(row: pd.Series) -> str:
    params = json.loads(row["params"])
    lines = [
        f"<b>{row['trial_id']}</b> ({row['method']})",
        f"dev UAR {row['dev_uar']:.4f}",
        f"trainable params {row['trainable_params']:,}",
    ]
    if not pd.isna(row["dev_uar_gap_gender"]):
        lines.append(f"dev UAR gap (gender) {row['dev_uar_gap_gender']:.4f}")
    lines += [f"{k} = {v}" for k, v in params.items()]
    return "<br>".join(lines)


def _mpl_figure(plotted: pd.DataFrame, front: pd.DataFrame, title: str) -> Figure:
    # A bare Figure (no pyplot) needs no GUI backend and leaves global state alone.
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for method, group in plotted.groupby("method", sort=True):
        x = group["trainable_params"].astype(float)
        ax.scatter(x, group["dev_uar"], label=str(method), alpha=0.75, s=28)
    if len(front):
        style = {"color": "black", "lw": 1, "ls": "--", "marker": "o", "mfc": "none", "ms": 11}
        x = front["trainable_params"].astype(float)
        ax.plot(x, front["dev_uar"], label="Pareto front", **style)
    ax.set(xscale="log", xlabel="trainable parameters", ylabel="dev UAR", title=title)
    ax.grid(True, which="both", alpha=0.3)
    if len(plotted):
        ax.legend(fontsize="small")
    return fig


def _plotly_figure(plotted: pd.DataFrame, front: pd.DataFrame, title: str) -> go.Figure:
    def scatter(part: pd.DataFrame, name: str, **style: Any) -> go.Scatter:
        hover = [_hover(row) for _, row in part.iterrows()]
        x = part["trainable_params"].astype(float)
        return go.Scatter(
            x=x, y=part["dev_uar"], name=name, hovertext=hover, hoverinfo="text", **style
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
        xaxis_title="trainable parameters",
        yaxis_title="dev UAR",
        xaxis_type="log",
        template="plotly_white",
    )
    return fig


def front_figures(df: pd.DataFrame, objectives: Sequence[str]) -> tuple[Figure, go.Figure]:
    """Dev UAR against trainable parameters (log x), coloured by method, front highlighted.

    Pareto points (on all the given objectives) are ringed and joined in order of parameter
    count; with a fairness objective the front need not look monotone in this 2-D view.
    Trials without dev UAR or parameter count are not drawn.

    Args:
        df: Table from :func:`front_table`.
        objectives: Objective names (used in the titles).

    Returns:
        A matplotlib figure (for PNG) and a plotly figure (HTML, hover shows the params).
    """
    title = "Pareto front on dev (" + ", ".join(check_objectives(objectives)) + ")"
    plotted = df.dropna(subset=["dev_uar", "trainable_params"])
    front = plotted[plotted["pareto"]].sort_values("trainable_params")
    return _mpl_figure(plotted, front, title), _plotly_figure(plotted, front, title)


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
