"""Ray + MLflow overhead of the demo search, with and without reusing Ray workers.

Runs the search of ``emotune demo`` (synthetic corpus, tiny-wavlm, same trials, epochs and
concurrency) twice on local Ray: once starting a fresh worker per trial (``--no-reuse-actors``)
and once reusing workers (the default). Each variant gets its own empty feature cache, as a first
demo does. The figures come from the search's own ``timing`` block (see
:func:`search.records.search_timing`): trial work is time inside trial functions minus their
imports; the overhead share is the rest of the search's slot-time (Ray scheduling and worker
start-up, imports, checkpoints and results, MLflow logging, the Pareto step, idle slots).

ASHA's decisions depend on timing, so the two variants need not train the same trials; the
table gives how many ran to the end and how many were pruned.

Run: ``.venv/bin/python -m bench.search_overhead [--trials 12 --epochs 8]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import ray

from bench.common import header, setup_logging, write_section

log = logging.getLogger("bench")


def run_variant(manifest: Path, root: Path, reuse: bool, trials: int, epochs: int) -> dict:
    from search.cli.demo import demo_settings
    from search.tune import run_search

    name = "reuse" if reuse else "fresh"
    settings = demo_settings(
        manifest, root, name, trials, epochs,
        reuse_actors=reuse,
        base={
            "max_seconds": 2.0, "batch_size": 16, "seed": 0,
            "feature_cache_dir": str(root / f"cache-{name}"),
        },
    )  # fmt: skip
    started = time.perf_counter()
    summary = run_search(settings)[0]
    seconds = time.perf_counter() - started
    states = [t["state"] for t in summary["trials"]]
    return {
        "name": name,
        "seconds": seconds,
        "timing": summary["timing"],
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    setup_logging()
    from trainables.data.synth import synthesize

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = synthesize(root / "corpus")
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)  # fmt: skip
        ray_init = time.perf_counter() - t0
        try:
            for reuse in (False, True):
                results.append(run_variant(manifest, root, reuse, args.trials, args.epochs))
                log.info("%s", results[-1])
        finally:
            ray.shutdown()
    rows.append(
        "| workers | wall s | trial work s | MLflow s | Pareto step s | overhead share | "
        "trials complete / pruned |"
    )
    rows.append("|---|---|---|---|---|---|---|")
    for r in results:
        t = r["timing"]
        rows.append(
            f"| {'reused' if r['name'] == 'reuse' else 'fresh per trial'} | "
            f"{t['wall_seconds']:.0f} | {t['trial_work_seconds']:.0f} | "
            f"{t['logging_seconds']:.1f} | {t['finalise_seconds']:.1f} | "
            f"**{100 * t['overhead_share']:.0f}%** | {r['complete']} / {r['pruned']} |"
        )
    for row in rows:
        log.info(row)
    fresh, reuse = (r["timing"] for r in results)
    body = header(
        f"Ray + MLflow overhead of the demo search ({args.trials} trials, {args.epochs} epochs, "
        "2 at a time)",
        f"python -m bench.search_overhead --trials {args.trials} --epochs {args.epochs}",
    )
    per_start = (fresh["wall_seconds"] - reuse["wall_seconds"]) * 2 / args.trials
    body += (
        f"- local Ray on 2 CPUs (`ray.init` {ray_init:.1f} s, not in the table); each variant "
        "starts with an empty feature cache; overhead share = 1 - trial work / (2 slots x wall)\n"
        "- a fresh worker imports torch, transformers and peft while Ray unpickles the trial "
        "function, before the trial's clock starts, so its start-up shows in the overhead, not "
        f"in trial work: fresh workers cost {fresh['wall_seconds'] - reuse['wall_seconds']:.0f} "
        f"s of wall time here, about {per_start:.1f} slot-seconds per trial start\n\n"
        + "\n".join(rows)
    )
    if not args.no_write:
        write_section("search-overhead", body)


if __name__ == "__main__":
    main()
