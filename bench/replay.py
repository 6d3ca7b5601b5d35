"""The replay of ``bench/search_quality.py``: a search over the tabular benchmark.

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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.search_table import CHOICES, RANGES, bench_space

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
