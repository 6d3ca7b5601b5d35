"""(e) Search quality: hypervolume vs cost of each sampler and scheduler, replayed on a table.

Each strategy (a sampler and a scheduler of ``emotune search``) is replayed by
:func:`bench.replay.replay` on the tabular benchmark, once per seed; this module turns the
replays into mean hypervolume-vs-cost curves with 95% confidence bands, the figure and the
table of BENCHMARKS.md section (e).

Cost is the cumulative trial compute (the sum of the epoch times served), i.e. CPU/GPU-time;
every strategy gets the same budget (``--budget`` full trials' worth of the grid's mean cost)
and runs as many trials as fit, as a user who sizes ``--trials`` to a time budget.

Run: ``.venv/bin/python -m bench.search_quality [--seeds 30] [--jobs 2]`` (full, writes the
figure and BENCHMARKS.md section (e)); ``--seeds 2 --no-write`` prints a quick table. CI's smoke
run is ``tests/test_bench_search_quality.py`` (a few strategies, one seed, a small budget).
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import ROOT, header, setup_logging, write_section
from bench.replay import DEFAULT, STRATEGIES, Table, Trace, replay
from bench.search_table import DEFAULT_OUT

log = logging.getLogger("bench")

FIGURE = ROOT / "docs" / "search_quality.png"
BASELINE = "random"
GRID_POINTS = 101  # cost grid of the curves: 0 .. budget


def _job(args: tuple[Any, ...]) -> Trace:
    warnings.filterwarnings("ignore")
    logging.getLogger("optuna").setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    strategy, seed, table, opts = args
    return replay(strategy, seed, table, **opts)


def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (axis 0) and the half-width of its 95% confidence interval (Student t)."""
    from scipy import stats

    n = values.shape[0]
    mean = values.mean(axis=0)
    if n < 2:
        return mean, np.zeros_like(mean)
    half = stats.t.ppf(0.975, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, half


def first_reach(grid: np.ndarray, curve: np.ndarray, target: float) -> float:
    """The first cost of ``grid`` where ``curve`` reaches ``target`` (inf if never)."""
    hit = np.nonzero(curve >= target - 1e-12)[0]
    return float(grid[hit[0]]) if len(hit) else math.inf


def summarise(traces: list[Trace], budget: float) -> dict[str, Any]:
    """Per strategy: mean/CI curves on the cost grid and the table's figures."""
    grid = np.linspace(0.0, budget, GRID_POINTS)
    out: dict[str, Any] = {"grid": grid, "rows": {}}
    for strategy in STRATEGIES:
        mine = [t for t in traces if t.strategy == strategy]
        if not mine:
            continue
        hv = np.stack([t.at(grid) for t in mine])
        test = np.stack([t.at(grid, test=True) for t in mine])
        mean, half = band(hv)
        out["rows"][strategy] = {
            "mean": mean,
            "half": half,
            "test_mean": band(test)[0],
            "test_half": band(test)[1],
            "seeds": len(mine),
            "trials": statistics.fmean(t.trials for t in mine),
            "pruned": statistics.fmean(t.pruned / max(t.trials, 1) for t in mine),
            "methods": statistics.fmean(len(t.methods) for t in mine),
            "seconds": statistics.fmean(t.seconds for t in mine),
        }
    base = out["rows"].get(BASELINE)
    if base is not None:
        target = float(base["mean"][-1])
        for row in out["rows"].values():
            row["reach"] = first_reach(grid, row["mean"], target) / budget
    return out


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = summary["grid"] / 3600.0
    fig, ax = plt.subplots(figsize=(8, 5))
    for strategy, row in summary["rows"].items():
        lw = 2.5 if strategy == DEFAULT else 1.2
        (line,) = ax.plot(grid, row["mean"], label=strategy, lw=lw)
        ax.fill_between(grid, row["mean"] - row["half"], row["mean"] + row["half"],
                        color=line.get_color(), alpha=0.15)  # fmt: skip
    ax.set_xlabel("cumulative trial compute (CPU-hours)")
    ax.set_ylabel("dev hypervolume (UAR x log10 params, ref 0 / 1e9)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    lo = min(float(np.min(r["mean"][GRID_POINTS // 10 :])) for r in summary["rows"].values())
    ax.set_ylim(bottom=max(0.0, lo - 0.1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ci(row: dict[str, Any], key: str = "mean", i: int = -1) -> str:
    half = row["half" if key == "mean" else "test_half"][i]
    return f"{row[key][i]:.3f} ± {half:.3f}"


def table_rows(summary: dict[str, Any]) -> list[str]:
    third = GRID_POINTS // 3
    rows = [
        "| strategy | dev HV at 1/3 budget | final dev HV (95% CI) | final test HV of the "
        "front | cost to reach random's final HV | trials | pruned | methods tried |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for strategy, row in summary["rows"].items():
        reach = row.get("reach", math.inf)
        reach_s = "never" if math.isinf(reach) else f"{reach:.2f} x random's"
        name = f"**{strategy}** (default)" if strategy == DEFAULT else strategy
        rows.append(
            f"| {name} | {_ci(row, i=third)} | {_ci(row)} | {_ci(row, 'test_mean')} | {reach_s} "
            f"| {row['trials']:.1f} | {100 * row['pruned']:.0f}% | {row['methods']:.1f} |"
        )
    return rows


def main() -> int:
    from search.settings import SearchSettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--budget", type=float, default=40.0,
                   help="cost budget in full trials of the grid's mean cost (default: 40)")  # fmt: skip
    p.add_argument("--workers", type=int, default=4, help="trials at once (default: 4)")
    p.add_argument("--grace-period", type=int, default=SearchSettings.grace_period,
                   help="the product's default: %(default)s")  # fmt: skip
    p.add_argument("--reduction-factor", type=float, default=SearchSettings.reduction_factor,
                   help="the product's default: %(default)s")  # fmt: skip
    p.add_argument("--max-trials", type=int, default=400)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--gp-acquisition", default="256,2,64",
                   help="GP: preliminary samples, local searches, EHVI samples of its "
                   "acquisition optimiser; 'default': Optuna's (2048,10,128), about 3x slower "
                   "per ask (default: %(default)s)")  # fmt: skip
    p.add_argument("--no-write", action="store_true", help="print only (CI smoke run)")
    args = p.parse_args()
    setup_logging()
    started = time.perf_counter()
    table = Table(pd.read_parquet(args.table))
    budget = args.budget * table.mean_trial_seconds
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        p.error(f"--strategies: unknown {unknown}; known: {', '.join(STRATEGIES)}")
    gp = None if args.gp_acquisition == "default" else tuple(
        int(x) for x in args.gp_acquisition.split(",")
    )
    opts = dict(budget=budget, workers=args.workers, grace=args.grace_period,
                reduction=args.reduction_factor, max_trials=args.max_trials,
                gp_acquisition=gp)  # fmt: skip
    jobs = [(s, seed, table, opts) for seed in range(args.seeds) for s in strategies]
    with mp.get_context("fork").Pool(args.jobs) as pool:
        traces = pool.map(_job, jobs, chunksize=1)
    summary = summarise(traces, budget)
    rows = table_rows(summary)
    took = time.perf_counter() - started
    for line in rows:
        log.info(line)
    log.info("replay of %d searches took %.0f s", len(jobs), took)
    for strategy, row in summary["rows"].items():
        log.info("  %-15s %.2f s per replay", strategy, row["seconds"])
    if args.no_write:
        return 0
    title = (f"{args.seeds} seeds, {args.workers} trials at once, budget {args.budget:g} mean "
             f"full trials; mean ± 95% CI")  # fmt: skip
    plot(summary, FIGURE, title)
    write_section("search_quality", report(args, table, summary, rows, took))
    return 0


def report(args: argparse.Namespace, table: Table, summary: dict[str, Any], rows: list[str],
           took: float) -> str:  # fmt: skip
    cmd = (f".venv/bin/python -m bench.search_quality --seeds {args.seeds} --budget "
           f"{args.budget:g} --workers {args.workers} --grace-period {args.grace_period} "
           f"--reduction-factor {args.reduction_factor:g} --gp-acquisition "
           f"{args.gp_acquisition}")  # fmt: skip
    default = summary["rows"].get(DEFAULT, {})
    gp_each = summary["rows"].get("GP", {}).get("seconds", 0.0)
    gp_share = gp_each * args.seeds / args.jobs
    others = [r["seconds"] for k, r in summary["rows"].items() if k != "GP"] or [0.0]
    lo, hi = min(others), max(others)
    reach = default.get("reach", math.inf)
    lines = [
        header("(e) Search quality: hypervolume vs cost, replayed on a tabular benchmark", cmd),
        f"- table: `{args.table.relative_to(ROOT)}` ({len(table.points)} grid points x "
        f"{len(table.curves[0])} seeds x {table.epochs} epochs; see its `.json` for the command "
        f"and build time); mean full trial {table.mean_trial_seconds:.1f} s",
        f"- replay: {len(summary['rows'])} strategies x {args.seeds} seeds in {took:.0f} s on "
        f"{args.jobs} processes; GP's model fitting took about {gp_share:.0f} s of it (one GP "
        f"replay {gp_each:.0f} s; the others {lo:.1f} to {hi:.1f} s each)",
        f"- headline: the default search ({DEFAULT}) reaches random search's final dev "
        f"hypervolume at **{reach:.2f}x** random's cost"
        if not math.isinf(reach)
        else f"- headline: the default search ({DEFAULT}) never reached random's final HV",
        "",
        f"![hypervolume vs cost]({FIGURE.relative_to(ROOT)})",
        "",
        *rows,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
