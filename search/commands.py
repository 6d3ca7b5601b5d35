"""``emotune search | export | predict | demo`` (registered on the CLI in search/cli.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from search.cli import (
    add_allow_pickle_arg,
    add_eval_window_arg,
    add_speed_args,
    console,
    speed_options,
)


def add_search_args(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--sampler", choices=["tpe", "nsga2", "random"], default="tpe",
                   help="Optuna sampler (default: %(default)s)")
    p.add_argument(
        "--objectives",
        default="uar,params",
        help="comma list: uar (max dev UAR), params (min), fairness (min gender UAR gap) "
        "(default: %(default)s)",
    )
    p.add_argument("--space", type=Path, default=None,
                   help="search space YAML (default: the built-in space, spaces/default.yaml)")
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
    p.add_argument(
        "--grace-period", type=int, default=2,
        help="epochs (folds with --folds all) before ASHA may stop a trial early "
        "(default: %(default)s)",
    )
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
    add_speed_args(p)


def settings_from_args(args: argparse.Namespace) -> Any:
    from search.tune import SearchSettings
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


def _show_record(record: Any) -> None:
    dev = record.dev.get("uar")
    uar = "-" if dev is None else f"{dev:.3f}"
    params = record.trainable_params or 0
    console.print(
        f"  trial {record.trial_id} {record.method:8s} {record.state:9s} "
        f"dev UAR {uar}  params {params:,}"
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
    summaries = run_search(settings, on_record=_show_record)
    reported = [_report(s) for s in summaries]  # a list, not all(...): report every dataset
    return 0 if all(reported) else 1


def _report(summary: dict[str, Any]) -> bool:
    """Prints a dataset's front and any failures; False when no trial completed."""
    trials = summary["trials"]
    complete = any(t["state"] == "COMPLETE" for t in trials)
    if complete:
        _print_front(summary)
    if not complete or any(t["state"] == "FAILED" for t in trials):
        from search.records import failure_lines

        style = "yellow" if complete else "red"
        head = "some trials failed" if complete else "no trial completed"
        console.print(f"[{style}]{summary['dataset']}: {head}[/{style}]")
        for line in failure_lines(trials):
            console.print(f"  {escape(line)}", soft_wrap=True)
    return complete


def _print_front(summary: dict[str, Any]) -> None:
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
    t = summary.get("timing")
    if t:
        console.print(
            f"time: {t['wall_seconds']:.0f} s; trial work {t['trial_work_seconds']:.0f} s over "
            f"{t['slots']:.0f} slot(s); overhead (Ray, worker start-up, MLflow, Pareto, idle "
            f"slots) {100 * t['overhead_share']:.0f}% of slot-time; MLflow "
            f"{t['logging_seconds']:.1f} s, Pareto step {t['finalise_seconds']:.1f} s"
        )


def cmd_export(args: argparse.Namespace) -> int:
    from search import storage as store
    from search.export import export_best, resolve_search

    if store.is_uri(args.storage):  # the driver's local mirror of a bucket-backed search
        local = store.local_root(args.storage, args.search)
        if not any(local.glob("*/search.json")):  # another machine ran it: fetch the mirror
            store.download_search(args.storage, args.search, local)
        root = resolve_search(str(local))
    else:
        root = resolve_search(args.search, Path(args.storage))
    for e in export_best(root, args.out, objective=args.objective, max_params=args.max_params):
        console.print(
            f"{e.dataset}: {e.method} trial {e.trial_id} -> {e.path} (dev UAR "
            f"{e.dev_uar:.3f}, test UAR {e.test_uar:.3f}, {e.trainable_params:,} "
            f"params, registered version {e.registered_version})"
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from search.predict import Predictor

    predictor = Predictor(args.adapter, allow_pickle_weights=args.allow_pickle_weights)
    failed = 0
    for row in predictor.predict_files(args.files):
        failed += "error" in row
        print(json.dumps(row, allow_nan=False), flush=True)  # NaN is not JSON: fail loudly
    return 1 if failed == len(args.files) else 0


def demo_settings(
    manifest: Path, storage: Path, name: str, trials: int, epochs: int, **overrides: Any
) -> Any:
    """The demo's search: tiny-wavlm, 2 trials at a time, 2 s crops (also used by bench/)."""
    from search.tune import SearchSettings
    from spaces import SpaceConfig

    settings: dict[str, Any] = dict(
        manifests=(manifest,),
        backbone="tiny-wavlm",
        trials=trials,
        concurrency=2,
        cpus_per_trial=1.0,
        storage=storage,
        name=name,
        space=SpaceConfig.from_dict({"epochs": epochs}),
        base={"max_seconds": 2.0, "batch_size": 16, "seed": 0},
    )
    return SearchSettings(**{**settings, **overrides})


def cmd_demo(args: argparse.Namespace) -> int:
    from search.export import export_best
    from search.predict import Predictor
    from search.tracking import ui_hint
    from search.tune import run_search
    from trainables import rundir
    from trainables.data.manifest import partition
    from trainables.data.synth import synthesize

    started = time.perf_counter()
    # The demo writes its corpus and searches here: never into a folder emotune did not make.
    out = rundir.claim(Path(args.out).resolve(), "demo")
    console.print(
        "[yellow]demo: synthetic corpus + tiny-wavlm (RANDOMLY INITIALISED backbone)[/yellow]"
    )
    manifest = out / "corpus" / "manifest.parquet"
    if not manifest.is_file():  # deterministic: an existing corpus is the same corpus
        with console.status("synthesising corpus"):
            manifest = synthesize(out / "corpus")
    # Each demo is a new search (earlier ones stay); --resume continues the latest one.
    earlier = sorted(p.name for p in out.glob("demo-*") if p.is_dir())
    if args.resume and not earlier:
        raise ValueError(f"no earlier demo search under {out} to resume")
    name = earlier[-1] if args.resume else time.strftime("demo-%Y%m%d-%H%M%S")
    settings = demo_settings(manifest, out, name, args.trials, args.epochs, resume=args.resume)
    summary = run_search(settings, on_record=_show_record)[0]
    if not _report(summary):
        return 1
    exported = export_best(settings.root, settings.root / "export")
    adapter = exported[0].path
    console.print(f"exported best adapter: {adapter}")
    # One held-out (test split) file per emotion.
    firsts = {u.label: u.path for u in reversed(partition(manifest).test)}
    files = [firsts[label] for label in sorted(firsts)]
    for row in Predictor(adapter).predict_files(files):
        print(json.dumps(row), flush=True)
    mlflow = summary["mlflow"]
    console.print(ui_hint(mlflow["tracking_uri"], mlflow["experiment_id"]))
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from trainables.corpora import prepare_corpus

    options: dict[str, Any] = {}
    if args.labels is not None:
        options["labels"] = args.labels
    if args.folds is not None:
        options["folds"] = args.folds
    if args.song:
        options["song"] = True
    with console.status(f"reading {args.corpus} under {args.root}"):
        manifest, text = prepare_corpus(args.corpus, args.root, args.out, args.classes, **options)
    console.print(text)
    console.print(f"manifest: {manifest}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from trainables.corpora import CORPORA

    p = sub.add_parser("prepare", help="turn a corpus on disk into a manifest")
    p.add_argument("corpus", choices=CORPORA.names(), help="which corpus the folder holds")
    p.add_argument("--root", type=Path, required=True,
                   help="the corpus folder as distributed (required)")
    p.add_argument("--out", type=Path, required=True,
                   help="manifest to write (.parquet) (required)")
    p.add_argument("--classes", default="4", choices=["4", "all"],
                   help="4: neutral/happy/angry/sad; all: every labelled emotion "
                   "(default: %(default)s)")
    p.add_argument("--labels", choices=["filename", "voice"], default=None,
                   help="CREMA-D: labels from file names or voice-only votes "
                   "(default: filename)")
    p.add_argument("--folds", type=int, default=None,
                   help="CREMA-D / RAVDESS: number of speaker-independent actor folds "
                   "(default: CREMA-D 5, RAVDESS 6)")
    p.add_argument("--song", action="store_true",
                   help="RAVDESS: include the song recordings (default: off)")
    p.set_defaults(handler=cmd_prepare)

    p = sub.add_parser("search", help="PEFT search with Ray Tune + Optuna, tracked in MLflow")
    add_search_args(p)
    p.set_defaults(handler=cmd_search, smoke={"trials": 2, "epochs": 1, "max_seconds": 1.0})

    p = sub.add_parser("export", help="export the best adapter of each dataset")
    p.add_argument("--search", required=True,
                   help="search name (under --storage) or search folder (required)")
    p.add_argument("--storage", default="runs/search",
                   help="the search's --storage: a folder, or the s3:// / gs:// URI whose "
                   "search is fetched when this machine has no copy (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the exported adapters, one per dataset (required)")
    p.add_argument("--max-params", type=int, default=None,
                   help="export the best trial with at most this many trainable parameters "
                   "(default: no limit)")
    p.add_argument("--objective", default="uar", choices=["uar", "wa", "macro_f1", "fairness"],
                   help="dev metric that picks the trial (default: %(default)s)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("predict", help="classify audio files with an exported adapter")
    p.add_argument("--adapter", type=Path, required=True,
                   help="an exported adapter folder (holding emotune.json) (required)")
    p.add_argument("files", type=Path, nargs="+", help="audio files to classify")
    add_allow_pickle_arg(p)
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("demo", help="offline demo: synth corpus, search, export, predict")
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="folder for the corpus and the demo searches: new, empty or an "
                   "earlier demo's (default: %(default)s)")
    p.add_argument("--trials", type=int, default=12,
                   help="trials of the search (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=8,
                   help="epochs per trial (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest demo search in --out (default: off, a new one)")
    p.set_defaults(handler=cmd_demo, smoke={"trials": 2, "epochs": 1})
