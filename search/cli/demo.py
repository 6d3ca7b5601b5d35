"""``emotune demo``: synthetic corpus, a small search, export and prediction, offline."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from search.cli.searching import report, show_record
from search.cli.shared import console

# On tiny-wavlm the head is most of what a trial stores (about 58k of a LoRA trial's 64k
# parameters at the default width 128), so the demo also searches the head's width: its front
# then trades UAR for size instead of collapsing to one point.
DEMO_HEAD_WIDTHS = {"choices": [8, 32, 128]}


def demo_settings(
    manifest: Path, storage: Path, name: str, trials: int, epochs: int, **overrides: Any
) -> Any:
    """The demo's search: tiny-wavlm, 2 trials at a time, 2 s crops, the head's width searched
    (also used by bench/)."""
    from search.settings import SearchSettings
    from spaces import SpaceConfig

    settings: dict[str, Any] = dict(
        manifests=(manifest,),
        backbone="tiny-wavlm",
        trials=trials,
        concurrency=2,
        cpus_per_trial=1.0,
        storage=storage,
        name=name,
        space=SpaceConfig.from_dict({"epochs": epochs, "head_width": DEMO_HEAD_WIDTHS}),
        base={"max_seconds": 2.0, "batch_size": 16, "seed": 0},
    )
    return SearchSettings(**{**settings, **overrides})


def cmd_demo(args: argparse.Namespace) -> int:
    """Runs the demo; 1 when the search completed no trial."""
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
    summary = run_search(settings, on_record=show_record)[0]
    if not report(summary):
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


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``demo`` to the ``emotune`` sub-commands."""
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
