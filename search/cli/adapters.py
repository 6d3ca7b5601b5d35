"""``emotune export | predict``: the best adapter of a search, and classifying audio with it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from search.cli.shared import add_allow_pickle_arg, console
from search.selection import export_objectives
from trainables.objectives import help_text

EXPORT_OBJECTIVES: tuple[str, ...] = export_objectives()  # a champion is picked by a dev metric


def cmd_export(args: argparse.Namespace) -> int:
    """Exports the best adapter of each dataset of a search (fetched first from a bucket)."""
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
    """One JSON line per file on stdout; 1 when every file failed."""
    from search.predict import Predictor

    predictor = Predictor(args.adapter, allow_pickle_weights=args.allow_pickle_weights)
    failed = 0
    for row in predictor.predict_files(args.files):
        failed += "error" in row
        print(json.dumps(row, allow_nan=False), flush=True)  # NaN is not JSON: fail loudly
    return 1 if failed == len(args.files) else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``export`` and ``predict`` to the ``emotune`` sub-commands."""
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
    p.add_argument("--objective", default="uar", choices=EXPORT_OBJECTIVES,
                   help=f"dev metric that picks the trial, one of: {help_text(EXPORT_OBJECTIVES)}"
                   " (default: %(default)s)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("predict", help="classify audio files with an exported adapter")
    p.add_argument("--adapter", type=Path, required=True,
                   help="an exported adapter folder (holding emotune.json) (required)")
    p.add_argument("files", type=Path, nargs="+", help="audio files to classify")
    add_allow_pickle_arg(p)
    p.set_defaults(handler=cmd_predict)
