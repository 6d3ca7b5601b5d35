"""(d) Pareto hypervolume after N trials: TPE and NSGA-II against random search.

Each sampler (``random``, ``tpe``, ``nsga2``, built by ``search.samplers.make_sampler`` exactly as
the product builds them) drives an in-process Optuna study over the product's space
(``spaces.define_by_run(SpaceConfig.from_dict({"epochs": E}))``) for ``--trials`` trials, once
per seed. Each trial's point becomes a TrainConfig through ``spaces.to_train_config`` on the
demo's base (``max_seconds`` 2, batch 16, ``seed`` = the search seed, as ``emotune search
--seed`` sets both) and ``trainables.train.train`` runs it on the synthetic corpus with the
randomly initialised ``tiny-wavlm``. Optuna is told what the Ray search reports
(``trainables.ray_entry.epoch_metrics``): dev UAR at the best epoch (max) and trainable
parameters (min).

No Ray and no ASHA: trials run one after another, every one to its last epoch, so the only thing
that differs between rows is the sampler. Hypervolume after ``n`` trials is
``search.pareto.front_hypervolume`` of the first ``n`` trials against the fixed reference
(dev UAR 0, 1e9 parameters on a log10 axis).

Training is deterministic on CPU for a given config and seed, so a config drawn twice (e.g. the
method-covering start-up trials that TPE and NSGA-II share for one seed) is trained once and its
result reused; the table says how many trainings that left.

Trials use ``--threads`` torch threads (default 1, what a 1-CPU Ray trial gets): with two
threads on a shared 2-core machine, tiny-model epochs were up to ~90x slower whenever another
process took a core.

Run: ``.venv/bin/python -m bench.sampler_hv [--trials 12] [--epochs 6] [--seeds 0,1,2]
[--per-class 12] [--threads 1] [--records runs.json]`` (about 5 minutes on an idle 2-core CPU);
``--replay runs.json`` rebuilds the tables and the section from saved records without training.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import statistics
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch

from bench.common import header, machine, setup_logging, write_section
from search.pareto import TrialRecord, front_hypervolume, front_table
from search.samplers import make_sampler, population_size, startup_trials
from spaces import SpaceConfig, define_by_run, to_train_config
from trainables.data.synth import synthesize
from trainables.objectives import OBJECTIVES
from trainables.train import train

log = logging.getLogger("bench")

SAMPLERS = ("random", "tpe", "nsga2")
OBJECTIVE_NAMES = ("uar", "params")
TIE = 1e-3  # HV differences below this count as ties (a 0.0002 UAR change on a 4.2-wide box)


@dataclass
class Run:
    """One search: a sampler and a seed, with its trials in the order they ran."""

    sampler: str
    seed: int
    records: list[TrialRecord] = field(default_factory=list)
    hv: list[float] = field(default_factory=list)  # hv[n - 1]: after the first n trials


class Trainer:
    """Runs trials in-process in a scratch folder; a config seen before reuses its result."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.memo: dict[str, dict[str, Any]] = {}
        self.trained = 0
        self.seconds = 0.0
        self.reused = False  # whether the last call reused an earlier result

    def __call__(self, params: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        cfg = to_train_config(params, base)
        key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
        self.reused = key in self.memo
        if not self.reused:
            out = self.scratch / f"trial-{self.trained}"
            started = time.perf_counter()
            try:
                self.memo[key] = train(cfg, out).to_json()
            finally:
                shutil.rmtree(out, ignore_errors=True)
            self.seconds += time.perf_counter() - started
            self.trained += 1
        return self.memo[key]


def run_search(sampler: str, seed: int, trials: int, space: SpaceConfig,
               base: dict[str, Any], trainer: Trainer) -> Run:  # fmt: skip
    """One in-process search; returns its trials and the hypervolume after each."""
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=make_sampler(sampler, seed, trials, methods=space.methods),
    )
    fn = define_by_run(space)
    run = Run(sampler, seed)
    for n in range(trials):
        trial = study.ask()
        fn(trial)
        result = trainer(dict(trial.params), {**base, "seed": seed})
        # The values the Ray search reports as obj_uar / obj_params (ray_entry.epoch_metrics).
        uar, n_params = float(result["dev"]["uar"]), int(result["trainable_params"])
        study.tell(trial, [uar, float(n_params)])
        run.records.append(
            TrialRecord(
                trial_id=f"{sampler}-{seed}-{n}", number=n, method=result["method"],
                params=dict(trial.params), dev=dict(result["dev"]), test=dict(result["test"]),
                trainable_params=n_params, best_epoch=result["best_epoch"],
            )
        )  # fmt: skip
        table = front_table(run.records, OBJECTIVE_NAMES)
        run.hv.append(front_hypervolume(table, OBJECTIVE_NAMES))
        took = "reused" if trainer.reused else f"{result.get('seconds', 0.0):.1f} s"
        log.info("  %-6s seed %d trial %2d: %-7s UAR %.3f params %7d  HV %.4f  (%s)",
                 sampler, seed, n + 1, result["method"], uar, n_params, run.hv[-1], took)  # fmt: skip
    return run


def mean_spread(values: list[float], digits: int = 3) -> str:
    """``mean ± sample std`` (just the value for one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def budgets(trials: int) -> list[int]:
    return sorted({max(1, trials // 4), max(1, trials // 2), trials})


def summary_rows(runs: list[Run], trials: int) -> list[str]:
    ns = budgets(trials)
    rows = [
        "| sampler | " + " | ".join(f"HV after {n}" for n in ns)
        + " | HV after N per seed | best dev UAR (mean, per seed) | methods tried per seed "
        "| trials per method (all seeds) |",
        "|---|" + "---|" * (len(ns) + 4),
    ]  # fmt: skip
    for sampler in SAMPLERS:
        mine = [r for r in runs if r.sampler == sampler]
        if not mine:
            continue
        hv_cells = [mean_spread([r.hv[n - 1] for r in mine]) for n in ns]
        per_seed = ", ".join(f"{r.hv[-1]:.3f}" for r in mine)
        best = [max(float(t.dev["uar"]) for t in r.records) for r in mine]
        methods = ", ".join(str(len({t.method for t in r.records})) for r in mine)
        counts = Counter(t.method for r in mine for t in r.records)
        mix = ", ".join(f"{m} {c}" for m, c in sorted(counts.items()))
        rows.append(
            f"| {sampler} | " + " | ".join(hv_cells) + f" | {per_seed} | "
            f"{statistics.fmean(best):.3f} ({', '.join(f'{b:.3f}' for b in best)}) | "
            f"{methods} | {mix} |"
        )  # fmt: skip
    return rows


def curve_rows(runs: list[Run], trials: int) -> list[str]:
    present = [s for s in SAMPLERS if any(r.sampler == s for r in runs)]
    rows = ["| trials | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
    for n in range(1, trials + 1):
        cells = [statistics.fmean(r.hv[n - 1] for r in runs if r.sampler == s) for s in present]
        rows.append(f"| {n} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return rows


def front_rows(runs: list[Run]) -> list[str]:
    """The Pareto front of every search (dev UAR @ params, by method)."""
    rows = ["| sampler | seed | front (method: dev UAR @ trainable params) |", "|---|---|---|"]
    for r in runs:
        table = front_table(r.records, OBJECTIVE_NAMES)
        front = table[table["pareto"]].sort_values("trainable_params")
        points = "; ".join(
            f"{m}: {u:.3f} @ {int(p):,}"
            for m, u, p in zip(front["method"], front["dev_uar"], front["trainable_params"])
        )
        rows.append(f"| {r.sampler} | {r.seed} | {points} |")
    return rows


def paired(runs: list[Run], sampler: str, n: int = 0) -> list[float]:
    """Per-seed ``HV(sampler) - HV(random)`` after ``n`` trials (0: all)."""
    base = {r.seed: r.hv[n - 1] for r in runs if r.sampler == "random"}
    return [r.hv[n - 1] - base[r.seed] for r in runs if r.sampler == sampler and r.seed in base]


def signed(values: list[float]) -> str:
    return ", ".join(f"{round(v, 3) + 0.0:+.3f}" for v in values)  # + 0.0: no "-0.000"


def verdict(runs: list[Run], trials: int, n_dev: int) -> str:
    """Plain-words reading of the figures, with the reasons that hold at this scale."""
    counts = [float(t.trainable_params) for r in runs for t in r.records if t.trainable_params]
    lo, hi = min(counts), max(counts)
    reach = 9 - math.log10(lo)
    k = len(SpaceConfig().methods)  # the searches' space keeps the default methods
    lines, means = [], []
    for sampler in ("tpe", "nsga2"):
        diffs = paired(runs, sampler)
        if not diffs:
            continue
        means.append(statistics.fmean(diffs))
        wins, losses = sum(d > TIE for d in diffs), sum(d < -TIE for d in diffs)
        word = "beats" if wins == len(diffs) else "does not reliably beat"
        half = paired(runs, sampler, max(1, trials // 2))
        lines.append(
            f"- **{sampler} {word} random** after {trials} trials: HV difference per seed "
            f"{signed(diffs)} (mean {statistics.fmean(diffs):+.3f}; higher on {wins}, lower on "
            f"{losses}, tied on {len(diffs) - wins - losses} of {len(diffs)} seeds); after "
            f"{max(1, trials // 2)} trials {signed(half)} (mean {statistics.fmean(half):+.3f})."
        )
    spreads = [statistics.stdev([r.hv[-1] for r in runs if r.sampler == name])
               for name in SAMPLERS if sum(r.sampler == name for r in runs) > 1]  # fmt: skip
    lines.append(
        f"- Why they are hard to tell apart here: trainable params only span {lo:,.0f}-"
        f"{hi:,.0f} (log10 {math.log10(lo):.2f}-{math.log10(hi):.2f}) because the head "
        "dominates on this tiny backbone (`frozen` = head only is always the cheapest point), "
        f"so every point's box is {9 - math.log10(hi):.2f}-{reach:.2f} wide on the params "
        f"axis and HV is close to {reach:.2f} x the best dev UAR found: the samplers differ mostly in how high a UAR "
        f"they find. The budget is small: TPE's first {startup_trials(trials, k)} trials "
        f"and NSGA-II's first generation of {population_size(trials, k)} are random draws "
        "(stratified over the methods), which leaves few guided trials. "
        f"Dev UAR on {n_dev} dev clips moves in steps of 1/{n_dev} = {1 / n_dev:.3f} (one clip)"
        + (f", and the spread of HV between seeds (std up to {max(spreads):.3f}) is "
           + ("larger" if max(spreads) > max(map(abs, means), default=0) else "smaller")
           + " than the mean differences between samplers." if spreads else ".")
    )  # fmt: skip
    locked = [r for r in runs if len({t.method for t in r.records}) == 1]
    for r in locked:
        lines.append(
            f"- {r.sampler} seed {r.seed} tried only `{r.records[0].method}`"
            + (": its random first generation drew only that method, and NSGA-II children "
               "inherit a parent's method unless mutation (probability 1 / number of "
               "parameters) resamples it." if r.sampler == "nsga2" else ".")
        )  # fmt: skip
    return "\n".join(lines)


def search_all(args: argparse.Namespace) -> tuple[list[Run], dict[str, Any]]:
    """Runs every (seed, sampler) search on one corpus; returns the runs and run statistics."""
    space = SpaceConfig.from_dict({"epochs": args.epochs})
    started, where = time.perf_counter(), machine()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["EMOTUNE_FEATURE_CACHE"] = str(tmp / "features")
        manifest = synthesize(tmp / "corpus", speakers=8, per_class=args.per_class, seed=0)
        base = {"manifest": str(manifest), "backbone": "tiny-wavlm", "max_seconds": 2.0,
                "batch_size": 16}  # fmt: skip
        n_dev = int((pd.read_parquet(manifest)["split"] == "dev").sum())
        trainer = Trainer(tmp / "trials")
        for seed in args.seed_list:  # sampler innermost: the machine's load hits all alike
            for sampler in args.sampler_list:
                runs.append(run_search(sampler, seed, args.trials, space, base, trainer))
    stats = {"wall": time.perf_counter() - started, "trained": trainer.trained,
             "train_seconds": trainer.seconds, "n_dev": n_dev, "machine": where}  # fmt: skip
    return runs, stats


def section(args: argparse.Namespace, runs: list[Run], stats: dict[str, Any]) -> str:
    """The BENCHMARKS.md section: settings, summary, HV curve, fronts and a reading."""
    body = header(
        "(d) Pareto hypervolume after N trials: TPE and NSGA-II vs random search",
        f"python -m bench.sampler_hv --trials {args.trials} --epochs {args.epochs} "
        f"--seeds {args.seeds} --per-class {args.per_class} --threads {args.threads}",
    )
    if "machine" in stats:  # the load when the searches ran, also when replayed later
        line = f"- machine: {stats['machine']}"
        body = re.sub(r"^- machine: .*$", lambda _: line, body, count=1, flags=re.M)
    return body + (
        f"- data: synthetic corpus, 8 speakers x 4 emotions x {args.per_class} takes "
        f"({int(stats['n_dev'])} dev clips); `tiny-wavlm` (**random init**), {args.epochs} "
        f"epochs, max_seconds 2, batch 16, training seed = search seed, {args.threads} torch "
        "thread(s) per trial (what `OMP_NUM_THREADS` gives a 1-CPU Ray trial; two threads on "
        "a shared 2-core machine made tiny-model epochs up to ~90x slower)\n"
        f"- space: the product's default (frozen / lora / adapter / prompt, their sizes, lr, "
        f"weight decay), epochs fixed at {args.epochs}; samplers from `search.samplers.make_sampler`"
        f" (budget {args.trials}); objectives dev UAR at the best epoch (max), trainable "
        "params (min)\n"
        f"- hypervolume: `search.pareto.front_hypervolume` against the fixed reference (dev UAR "
        f"{OBJECTIVES['uar'].reference:g}, {OBJECTIVES['params'].reference:.0e} params) with params on a log10 axis (so each point's box is UAR x (9 - log10 params)); mean ± sample std over "
        f"seeds {args.seeds}\n"
        "- in-process Optuna, trials one after another, **no Ray and no ASHA pruning**: every "
        "trial runs all its epochs and the sampler always sees every earlier result, which "
        "isolates the sampler\n"
        f"- wall {stats['wall'] / 60:.1f} min; {int(stats['trained'])} trainings for "
        f"{len(runs) * args.trials} trials (a config drawn again reuses its deterministic "
        "result)\n\n" + "\n".join(summary_rows(runs, args.trials))
        + "\n\nMean hypervolume after n trials (TPE's and NSGA-II's first trials are the same "
        "method-covering draws for a seed):\n\n" + "\n".join(curve_rows(runs, args.trials))
        + "\n\nPareto front of each search:\n\n" + "\n".join(front_rows(runs))
        + "\n\nReading:\n\n" + verdict(runs, args.trials, int(stats["n_dev"])) + "\n"
    )  # fmt: skip


def save_runs(path: Path, runs: list[Run], stats: dict[str, Any]) -> None:
    data = {"stats": stats, "runs": [
        {"sampler": r.sampler, "seed": r.seed, "hv": r.hv,
         "records": [t.to_dict() for t in r.records]} for r in runs
    ]}  # fmt: skip
    path.write_text(json.dumps(data, indent=1))


def load_runs(path: Path) -> tuple[list[Run], dict[str, Any]]:
    data = json.loads(path.read_text())
    runs = [
        Run(r["sampler"], r["seed"], [TrialRecord.from_dict(t) for t in r["records"]], r["hv"])
        for r in data["runs"]
    ]
    return runs, data["stats"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12, help="trials per search (the budget N)")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of every trial")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated search seeds")
    ap.add_argument("--per-class", type=int, default=12, help="takes per speaker and emotion")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a 1-CPU Ray trial: 1)")
    ap.add_argument("--records", type=Path, help="also save every trial to this JSON file")
    ap.add_argument("--replay", type=Path, help="rebuild the tables from a --records file")
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = ap.parse_args()
    setup_logging()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers deprecations
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.sampler_list = [s for s in args.samplers.split(",") if s]
    if args.trials < 1 or any(s not in SAMPLERS for s in args.sampler_list):
        ap.error(f"--trials must be >= 1 and --samplers among {SAMPLERS}")
    torch.set_num_threads(args.threads)
    runs, stats = load_runs(args.replay) if args.replay else search_all(args)
    if args.records:
        save_runs(args.records, runs, stats)
    for row in summary_rows(runs, args.trials) + [""] + curve_rows(runs, args.trials):
        log.info(row)
    log.info("wall %.0f s; %d trainings (%.0f s) for %d trials", stats["wall"],
             stats["trained"], stats["train_seconds"], len(runs) * args.trials)  # fmt: skip
    body = section(args, runs, stats)
    log.info("%s", body.split("Reading:", 1)[1])
    if not args.no_write:
        write_section("sampler-hv", body)


if __name__ == "__main__":
    main()
