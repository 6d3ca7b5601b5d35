"""(e) Search quality: hypervolume vs cost of each sampler and scheduler, replayed on a table.

The tabular benchmark (``bench/data/search_table.parquet``, built by ``bench.search_table`` from
real runs of the trainable) holds, for every point of a method x size x learning-rate grid and
several seeds, the per-epoch dev/test UAR, the trainable parameters and the epoch's wall time.

A replay is one search: the product's own searcher (``search.searcher.make_searcher``: Ray's
``OptunaSearch`` with the product's sampler from ``search.samplers.make_sampler``) and scheduler
(``search.schedulers.make_scheduler``) objects, built from a ``SearchSettings`` exactly as
``emotune search`` builds them, driven by a discrete-event loop instead of Ray's trial runner:

- ``--workers`` trials run at once (``--concurrency``); a free worker asks the searcher for a new
  trial (``suggest``), so the sampler sees the running trials as Optuna RUNNING trials, as in a
  real search (TPE's constant liar acts on them).
- A trial's point is served the curve of the nearest grid point (same method and categorical
  options; nearest in log-lr, log-size, prompt length), from one of the table's seeds drawn by
  the replay's seed. Epoch ``e`` arrives when the worker's simulated clock has spent the grid
  point's cost of that epoch, and is handed to the scheduler as the report Ray would
  send (``training_iteration`` = e, ``obj_uar`` = best dev UAR so far, ``obj_params``, ``final``).
- A STOP from the scheduler ends the trial as PRUNED in Optuna (``PruneAwareOptunaSearch``); the
  last epoch ends it COMPLETE. The front and hypervolume count COMPLETE trials only, like the
  product's.

One deviation: GP's acquisition optimiser runs with fewer candidates (``--gp-acquisition``,
256 preliminary samples, 2 local searches, 64 EHVI samples instead of Optuna's 2048 / 10 /
128), which cuts its cost per ask about 3x (to ~0.8 CPU-s) so that 30 GP replays fit in minutes.

Why faithful: every decision (which point to try, whether to stop a trial at a rung) is taken by
the same objects the product builds, in the same order of events Ray would deliver them for
these durations; only the training is looked up instead of run. What is not modelled: Ray's
own overhead per trial (a few seconds, see ``bench/search_overhead.py``), trial start-up beyond
what the first epoch's recorded time holds, and noise between runs beyond the table's seeds.

The table's wall times were recorded on a shared 2-core machine where other work slowed single
runs by up to 4x, so an epoch's cost is that of the least disturbed run of the same method and
size: the minimum, epoch by epoch, over its learning rates and seeds (the learning rate does
not change the compute).

Cost is the cumulative trial compute (the sum of the epoch times served), i.e. CPU/GPU-time;
every strategy gets the same budget (``--budget`` full trials' worth of the grid's mean cost)
and runs as many trials as fit, as a user who sizes ``--trials`` to a time budget.

Run: ``.venv/bin/python -m bench.search_quality [--seeds 30] [--jobs 2]`` (full, writes the
figure and BENCHMARKS.md section (e)); ``--seeds 2 --no-write`` is the CI smoke run.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import ROOT, header, setup_logging, write_section
from bench.search_table import CHOICES, DEFAULT_OUT, RANGES, bench_space

log = logging.getLogger("bench")

FIGURE = ROOT / "docs" / "search_quality.png"
OBJECTIVE_NAMES = ("uar", "params")
# Strategy label -> (--sampler, --scheduler). The default search is tpe + mo-asha.
STRATEGIES: dict[str, tuple[str, str]] = {
    "random": ("random", "none"),
    "random+ASHA": ("random", "asha"),
    "random+MO-ASHA": ("random", "mo-asha"),
    "TPE": ("tpe", "none"),
    "TPE+ASHA": ("tpe", "asha"),
    "TPE+MO-ASHA": ("tpe", "mo-asha"),
    "NSGA-II": ("nsga2", "none"),
    "GP": ("gp", "none"),
}
DEFAULT = "TPE+MO-ASHA"
BASELINE = "random"
GRID_POINTS = 101  # cost grid of the curves: 0 .. budget


@dataclass
class Curve:
    """One grid point's served values, epoch by epoch, for one table seed."""

    best_dev_uar: np.ndarray
    best_test_uar: np.ndarray
    seconds: np.ndarray  # each epoch's cost: see Table
    params: int


class Table:
    """The tabular benchmark: grid points, their curves per seed, nearest-point lookup."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.axes = ["lr", *[k for k in RANGES if k != "lr"]]
        self.epochs = int(df["epoch"].max())
        self.points: list[dict[str, Any]] = []
        self.curves: list[list[Curve]] = []
        keys = ["method", *self.axes, *CHOICES]
        sizes = [k for k in keys if k != "lr"]
        # Epoch cost of a method and size: the least disturbed run's (minimum over its learning
        # rates and seeds, which do not change the compute), epoch by epoch.
        cost = {
            _plain(size): g.groupby("epoch")["epoch_seconds"].min().sort_index().to_numpy()
            for size, g in df.groupby(sizes, dropna=False)
        }
        for key, g in df.groupby(keys, dropna=False, sort=True):
            point = {k: (None if _missing(v) else v) for k, v in zip(keys, key)}
            seconds = cost[_plain(tuple(key[keys.index(k)] for k in sizes))]
            curves = []
            for _, run in g.groupby("seed"):
                run = run.sort_values("epoch")
                if len(run) != self.epochs:
                    raise ValueError(f"table: {point} seed has {len(run)} epochs, not {self.epochs}")
                curves.append(
                    Curve(
                        run["best_dev_uar"].to_numpy(float),
                        run["best_test_uar"].to_numpy(float),
                        seconds,
                        int(run["trainable_params"].iloc[0]),
                    )
                )
            self.points.append(point)
            self.curves.append(curves)
        self.mean_trial_seconds = float(
            np.mean([c[0].seconds.sum() for c in self.curves])
        )

    def nearest(self, params: dict[str, Any]) -> int:
        """Index of the grid point nearest to a sampled point (same method and choices)."""
        best, best_d = -1, math.inf
        for i, point in enumerate(self.points):
            if point["method"] != params["method"]:
                continue
            if any(point[k] is not None and point[k] != params.get(k) for k in CHOICES):
                continue
            d = 0.0
            for axis in self.axes:
                if point[axis] is None:
                    continue
                low, high, log_scale = RANGES[axis]
                f = math.log if log_scale else float
                d += abs(f(params[axis]) - f(point[axis])) / (f(high) - f(low))
            if d < best_d:
                best, best_d = i, d
        if best < 0:
            raise KeyError(f"no grid point for {params}")
        return best


def _plain(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(None if _missing(v) else v for v in key)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


@dataclass
class Trace:
    """One replayed search: the hypervolume after each finished trial, against cost."""

    strategy: str
    seed: int
    costs: list[float] = field(default_factory=list)
    hvs: list[float] = field(default_factory=list)
    test_hvs: list[float] = field(default_factory=list)
    trials: int = 0
    pruned: int = 0
    methods: set[str] = field(default_factory=set)
    seconds: float = 0.0  # wall time of the replay itself

    def at(self, grid: np.ndarray, test: bool = False) -> np.ndarray:
        """The hypervolume reached by each cost of ``grid`` (a step function; 0 before any)."""
        hv = self.test_hvs if test else self.hvs
        idx = np.searchsorted(np.asarray(self.costs), grid, side="right") - 1
        return np.where(idx >= 0, np.asarray(hv + [0.0])[idx], 0.0)


class _Trial:
    """What a Ray scheduler reads of a trial."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _hypervolume(points: list[tuple[float, float]]) -> float:
    """The product's hypervolume (search.pareto) of raw (dev UAR, parameters) points."""
    from search.pareto import objective_hypervolume
    from trainables.objectives import OBJECTIVES

    objs = [OBJECTIVES[n] for n in OBJECTIVE_NAMES]
    scaled = np.array([[o.scale(v) for o, v in zip(objs, p)] for p in points])
    return objective_hypervolume(scaled, OBJECTIVE_NAMES)


def replay(strategy: str, seed: int, table: Table, budget: float, workers: int,
           grace: int, reduction: float, max_trials: int,
           gp_acquisition: tuple[int, int, int] | None = None) -> Trace:  # fmt: skip
    """One search of ``strategy`` with ``seed`` until its cost reaches ``budget`` seconds.

    The settings' ``trials`` (what sizes TPE's start-up and NSGA-II's population) is the budget
    in full trials, as a user who sets ``--trials`` to their budget; a scheduler that stops
    trials early leaves cost for more, so the loop asks on until the cost is spent.
    """
    import heapq

    from ray.tune.schedulers import TrialScheduler

    from search.schedulers import make_scheduler
    from search.searcher import make_searcher
    from search.settings import SearchSettings

    sampler, scheduler_name = STRATEGIES[strategy]
    settings = SearchSettings(
        manifests=(),
        space=bench_space(),
        sampler=sampler,
        scheduler=scheduler_name,
        objectives=OBJECTIVE_NAMES,
        trials=max(1, round(budget / table.mean_trial_seconds)),
        concurrency=workers,
        seed=seed,
        grace_period=grace,
        reduction_factor=reduction,
    )
    searcher = make_searcher(settings, f"replay-{strategy}-{seed}", None)
    if sampler == "gp" and gp_acquisition is not None:  # the replay's one deviation: see main()
        searcher._ot_study.sampler.base.set_acquisition(*gp_acquisition)  # noqa: SLF001
    scheduler = make_scheduler(settings, table.epochs)
    rng = np.random.default_rng([seed, 2026])
    trace = Trace(strategy, seed)
    started = time.perf_counter()
    events: list[tuple[float, int, str, int]] = []  # (time, tie-break, trial id, epoch)
    running: dict[str, tuple[_Trial, Curve]] = {}
    complete: list[tuple[float, float]] = []
    complete_test: list[tuple[float, float]] = []
    cost, launched, seq = 0.0, 0, 0

    def launch(now: float) -> None:
        nonlocal launched, seq
        trial_id = f"t{launched:04d}"
        if searcher.suggest(trial_id) is None:
            return
        params = dict(searcher._ot_trials[trial_id].params)  # noqa: SLF001 (flat names)
        i = table.nearest(params)
        curve = table.curves[i][int(rng.integers(len(table.curves[i])))]
        trial = _Trial(trial_id)
        scheduler.on_trial_add(None, trial)
        running[trial_id] = (trial, curve)
        trace.methods.add(params["method"])
        launched += 1
        seq += 1
        heapq.heappush(events, (now + curve.seconds[0], seq, trial_id, 1))

    for _ in range(workers):
        launch(0.0)
    while events:
        now, _, trial_id, epoch = heapq.heappop(events)
        trial, curve = running[trial_id]
        cost += curve.seconds[epoch - 1]
        if cost > budget:
            break
        last = epoch == table.epochs
        result = {
            "training_iteration": epoch,
            "obj_uar": float(curve.best_dev_uar[epoch - 1]),
            "obj_params": float(curve.params),
            "final": last,
        }
        decision = scheduler.on_trial_result(None, trial, result)
        if last or decision == TrialScheduler.STOP:
            searcher.on_trial_complete(trial_id, result)
            scheduler.on_trial_complete(None, trial, result)
            del running[trial_id]
            trace.trials += 1
            if last:
                complete.append((result["obj_uar"], curve.params))
                complete_test.append((float(curve.best_test_uar[-1]), curve.params))
                trace.costs.append(cost)
                trace.hvs.append(_hypervolume(complete))
                trace.test_hvs.append(_hypervolume(complete_test))
            else:
                trace.pruned += 1
            if launched < max_trials:
                launch(now)
        else:
            seq += 1
            heapq.heappush(events, (now + curve.seconds[epoch], seq, trial_id, epoch + 1))
    trace.seconds = time.perf_counter() - started
    return trace


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
