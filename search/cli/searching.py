"""``emotune search``: the PEFT search over datasets, and how its results are printed."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from search.choices import SAMPLERS, SCHEDULERS
from search.cli.shared import (
    add_allow_pickle_arg,
    add_eval_window_arg,
    add_speed_args,
    console,
    speed_options,
)
from trainables.objectives import help_text


def _add_search_plan_args(p: argparse.ArgumentParser) -> None:
    """What is searched: datasets, backbone, trials, resources, sampler, objectives, space."""
    p.add_argument(
        "--manifest",
        type=Path,
        action="append",
        required=True,
        help="dataset manifest (.parquet); repeat for one search per dataset (required)",
    )
    p.add_argument(
        "--backbone",
        default="tiny-wavlm",
        help="backbone of every trial: a tiny-* preset (random init), a local folder or a hub "
        "id (default: %(default)s)",
    )
    p.add_argument("--trials", type=int, default=8,
                   help="trials per dataset (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=2,
                   help="trials running at once (default: %(default)s)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs Ray reserves for each trial; fractions allowed "
                   "(default: %(default)s)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPUs Ray reserves for each trial; fractions allowed "
                   "(default: %(default)s)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="Optuna sampler (see README, 'Choosing a scheduler and a sampler') "
                   "(default: %(default)s)")
    p.add_argument("--objectives", default="uar,params",
                   help=f"comma list of objectives among: {help_text()} (default: %(default)s)")
    p.add_argument("--space", type=Path, default=None,
                   help="search space YAML (default: the built-in space, spaces/default.yaml)")


def _add_search_place_args(p: argparse.ArgumentParser) -> None:
    """Where it runs and is kept: Ray cluster, storage, MLflow, the search's name."""
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray on "
                   "127.0.0.1 only)")
    p.add_argument(
        "--storage",
        default="runs/search",
        help="folder (local or NFS) or s3:// / gs:// URI for checkpoints and state "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--shared-storage",
        action="store_true",
        help="the --storage folder is on every node (if not detected as NFS) (default: off)",
    )
    p.add_argument(
        "--tracking-uri", default=None,
        help="MLflow tracking URI (default: SQLite mlflow.db in the search's folder)",
    )
    p.add_argument("--name", default="search",
                   help="search name: its folder is <storage>/<name> (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted search of this --storage and --name "
                   "(default: off)")


def _add_trial_args(p: argparse.ArgumentParser) -> None:
    """How each trial trains and is scored, stopped and retried."""
    p.add_argument("--epochs", type=int, default=None,
                   help="every trial runs this many epochs (default: the space's epochs)")
    p.add_argument("--max-seconds", type=float, default=6.0,
                   help="crop length in seconds (default: %(default)s)")
    add_eval_window_arg(p)
    add_allow_pickle_arg(p)
    p.add_argument("--batch-size", type=int, default=16,
                   help="clips per batch (default: %(default)s)")
    p.add_argument("--fold", type=int, default=None,
                   help="fold manifests: score configurations on this test fold, fast "
                   "(default: use the split column)")
    p.add_argument("--folds", choices=["all"], default=None,
                   help="fold manifests: score each configuration by the mean over all folds "
                   "(default: one split or --fold)")
    _add_scheduler_args(p)
    p.add_argument("--max-failures", type=int, default=2,
                   help="retries of a crashed trial (default: %(default)s)")
    p.add_argument(
        "--reuse-actors",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run trial after trial in the same Ray worker (imports and start-up paid once) "
        "(default: on)",
    )
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sampler and of every trial (default: %(default)s)")


def _add_scheduler_args(p: argparse.ArgumentParser) -> None:
    """When trials are stopped early: the scheduler and its rungs."""
    p.add_argument(
        "--scheduler", choices=SCHEDULERS, default=None,
        help="early stopping: mo-asha promotes trials at each rung by non-dominated sorting on "
        "every objective, asha on dev UAR alone, none runs every trial to its end "
        "(default: mo-asha with several objectives, asha with one)",
    )
    p.add_argument(
        "--grace-period", type=int, default=1,
        help="epochs (folds with --folds all) every trial runs before the scheduler may stop "
        "it: the first rung (default: %(default)s)",
    )
    p.add_argument(
        "--reduction-factor", type=float, default=2.0,
        help="rungs at grace-period x factor^k epochs; at each rung about 1/factor of the "
        "trials go on (mo-asha: also every non-dominated one); > 1 (default: %(default)s)",
    )


def add_search_args(p: argparse.ArgumentParser) -> None:
    """Every flag of ``emotune search``."""
    _add_search_plan_args(p)
    _add_search_place_args(p)
    _add_trial_args(p)
    add_speed_args(p)


def settings_from_args(args: argparse.Namespace) -> Any:
    """The validated ``SearchSettings`` of parsed ``emotune search`` flags."""
    from search.settings import SearchSettings
    from spaces import SpaceConfig
    from spaces.params import Fixed

    space = SpaceConfig.from_yaml(args.space) if args.space else SpaceConfig()
    if args.epochs is not None:
        space = dataclasses.replace(space, epochs=Fixed(args.epochs))
    return SearchSettings(
        manifests=tuple(args.manifest),
        backbone=args.backbone,
        trials=args.trials,
        concurrency=args.concurrency,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        sampler=args.sampler,
        objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
        address=args.address,
        storage=args.storage if "://" in args.storage else Path(args.storage),
        shared_storage=args.shared_storage,
        tracking_uri=args.tracking_uri,
        name=args.name,
        resume=args.resume,
        space=space,
        seed=args.seed,
        grace_period=args.grace_period,
        scheduler=args.scheduler,
        reduction_factor=args.reduction_factor,
        max_failures=args.max_failures,
        reuse_actors=args.reuse_actors,
        all_folds=args.folds == "all",
        base={
            "max_seconds": args.max_seconds,
            "eval_max_seconds": args.eval_max_seconds,
            "allow_pickle_weights": args.allow_pickle_weights,
            "batch_size": args.batch_size,
            "fold": args.fold,
            "seed": args.seed,
            **speed_options(args),
        },
    )


def show_record(record: Any) -> None:
    """One line per finished trial, as the search runs."""
    dev = record.dev.get("uar")
    uar = "-" if dev is None else f"{dev:.3f}"
    params = record.trainable_params or 0
    rung = "" if record.rung is None else f"  at rung {record.rung}"
    console.print(
        f"  trial {record.trial_id} {record.method:8s} {record.state:9s} "
        f"dev UAR {uar}  params {params:,}{rung}"
    )


def cmd_search(args: argparse.Namespace) -> int:
    """Runs the search; 1 when a dataset has no COMPLETE trial (its failures are listed)."""
    from search.tune import run_search

    settings = settings_from_args(args)
    if settings.backbone.startswith("tiny-"):
        console.print(f"[yellow]backbone {settings.backbone} is RANDOMLY INITIALISED[/yellow]")
    console.print(
        f"search {settings.root}: {settings.trials} trials per dataset, "
        f"{settings.concurrency} at a time"
    )
    summaries = run_search(settings, on_record=show_record)
    reported = [report(s) for s in summaries]  # a list, not all(...): report every dataset
    return 0 if all(reported) else 1


def report(summary: dict[str, Any]) -> bool:
    """Prints a dataset's front and any failures; False when no trial completed."""
    trials = summary["trials"]
    complete = any(t["state"] == "COMPLETE" for t in trials)
    if complete:
        _print_front(summary)
    _print_stopped(summary)
    if complete:
        _print_timing(summary)
    if not complete or any(t["state"] == "FAILED" for t in trials):
        from search.records import failure_lines

        style = "yellow" if complete else "red"
        head = "some trials failed" if complete else "no trial completed"
        console.print(f"[{style}]{summary['dataset']}: {head}[/{style}]")
        for line in failure_lines(trials):
            console.print(f"  {escape(line)}", soft_wrap=True)
    return complete


def _print_front(summary: dict[str, Any]) -> None:
    """The Pareto front as a table."""
    table = Table(
        title=f"Pareto front: {summary['dataset']} (hypervolume {summary['hypervolume']:.4f})"
    )
    for col in ("trial", "method", "params", "dev UAR", "test UAR", "UAR gap F/M"):
        table.add_column(col)
    front = set(summary["front"])
    for t in sorted(
        (t for t in summary["trials"] if t["trial_id"] in front),
        key=lambda t: t["trainable_params"] or 0,
    ):
        gap = t["test"].get("uar_gap_gender")
        table.add_row(
            t["trial_id"],
            t["method"],
            f"{t['trainable_params']:,}",
            f"{t['dev']['uar']:.3f}",
            f"{t['test']['uar']:.3f}",
            "-" if gap is None else f"{gap:.3f}",
        )
    console.print(table)


def _print_stopped(summary: dict[str, Any]) -> None:
    """The trials the scheduler stopped early: where (their rung) and their dev UAR there,
    those that went furthest first; nothing when no trial was stopped."""
    stopped = [t for t in summary["trials"] if t["state"] == "PRUNED"]
    if not stopped:
        return
    unit = "folds" if "nested_cv" in summary else "epochs"
    table = Table(title=f"stopped early: {summary['dataset']} ({len(stopped)} trial(s))")
    for col in ("trial", "method", "params", f"rung ({unit})", "dev UAR at the rung"):
        table.add_column(col)

    def uar(t: dict[str, Any]) -> float | None:
        return (t.get("rung_objectives") or {}).get("uar")

    for t in sorted(stopped, key=lambda t: (-(t.get("rung") or 0), -(uar(t) or 0.0))):
        params, rung, value = t.get("trainable_params"), t.get("rung"), uar(t)
        table.add_row(
            t["trial_id"],
            t["method"],
            "-" if params is None else f"{params:,}",
            "-" if rung is None else str(rung),
            "-" if value is None else f"{value:.3f}",
        )
    console.print(table)


def _print_timing(summary: dict[str, Any]) -> None:
    """Where the search's time went (search.json's ``timing``), if recorded."""
    t = summary.get("timing")
    if t:
        console.print(
            f"time: {t['wall_seconds']:.0f} s; trial work {t['trial_work_seconds']:.0f} s over "
            f"{t['slots']:.0f} slot(s); overhead (Ray, worker start-up, MLflow, Pareto, idle "
            f"slots) {100 * t['overhead_share']:.0f}% of slot-time; MLflow "
            f"{t['logging_seconds']:.1f} s, Pareto step {t['finalise_seconds']:.1f} s"
        )


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``search`` to the ``emotune`` sub-commands."""
    p = sub.add_parser("search", help="PEFT search with Ray Tune + Optuna, tracked in MLflow")
    add_search_args(p)
    p.set_defaults(handler=cmd_search, smoke={"trials": 2, "epochs": 1, "max_seconds": 1.0})
