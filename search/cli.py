"""The ``emotune`` command line: synth, train (and, from search.commands, search/export/predict/demo)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)

Handler = Callable[[argparse.Namespace], int]


def _method_flags(parser: argparse.ArgumentParser) -> None:
    """Adds ``--<method>-<option>`` flags generated from every registered method's config."""
    from trainables.methods import METHODS

    for name in METHODS:
        cls = METHODS.get(name).config_cls
        hints = typing.get_type_hints(cls)
        group = parser.add_argument_group(f"{name} options")
        for f in dataclasses.fields(cls):
            flag = f"--{name}-{f.name.replace('_', '-')}"
            dest = f"opt__{name}__{f.name}"
            kind = hints[f.name]
            if kind is bool:
                group.add_argument(
                    flag,
                    dest=dest,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=f"(default {f.default})",
                )
            elif typing.get_origin(kind) is typing.Literal:
                group.add_argument(
                    flag,
                    dest=dest,
                    choices=typing.get_args(kind),
                    default=None,
                    help=f"(default {f.default})",
                )
            else:
                group.add_argument(
                    flag, dest=dest, type=kind, default=None, help=f"(default {f.default})"
                )


def method_options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """Collects the ``--<method>-*`` flags given; flags of another method are an error."""
    options: dict[str, Any] = {}
    for key, value in vars(args).items():
        if not key.startswith("opt__") or value is None:
            continue
        _, owner, field = key.split("__", 2)
        if owner != method:
            flag = f"--{owner}-{field.replace('_', '-')}"
            raise SystemExit(f"error: {flag} is an option of method {owner!r}, not {method!r}")
        options[field] = value
    return options


def add_speed_args(p: argparse.ArgumentParser) -> None:
    """Options that make runs faster (``train`` and ``search``); see ``TrainConfig``."""
    g = p.add_argument_group("speed options")
    g.add_argument(
        "--feature-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute the frozen front end once and memory-map it (all methods but full; "
        "same results either way)",
    )
    g.add_argument(
        "--feature-cache-dir",
        type=Path,
        default=None,
        help="cache folder (train: $EMOTUNE_FEATURE_CACHE or ~/.cache/emotune/features; "
        "search: <storage>/feature-cache)",
    )
    g.add_argument(
        "--feature-cache-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="float16 halves the cache (logits move by ~1e-3; BENCHMARKS.md)",
    )
    g.add_argument(
        "--bucketing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="length-bucketed training batches (less padding)",
    )


def speed_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` fields of :func:`add_speed_args` (a dir only when given)."""
    out: dict[str, Any] = {
        "feature_cache": args.feature_cache,
        "feature_cache_dtype": args.feature_cache_dtype,
        "bucketing": args.bucketing,
    }
    if args.feature_cache_dir is not None:
        out["feature_cache_dir"] = str(args.feature_cache_dir.expanduser().resolve())
    return out


def add_train_args(p: argparse.ArgumentParser) -> None:
    from trainables.methods import METHODS

    p.add_argument("--manifest", type=Path, required=True, help="dataset manifest (.parquet)")
    p.add_argument(
        "--backbone",
        default="tiny-wavlm",
        help="tiny-wavlm|tiny-hubert|tiny-wav2vec2|tiny-whisper (random init), "
        "a local folder, or a hub id",
    )
    p.add_argument("--method", choices=METHODS.names(), default="lora")
    p.add_argument("--fold", type=int, default=None, help="test fold (fold manifests)")
    p.add_argument("--dev-fold", type=int, default=None, help="dev fold (default: next fold)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--schedule", choices=["cosine", "plateau"], default="cosine")
    p.add_argument("--patience", type=int, default=0, help="early stopping (0: off)")
    p.add_argument("--max-seconds", type=float, default=6.0, help="crop length in seconds")
    p.add_argument("--eval-crop", choices=["center", "full"], default="center")
    p.add_argument(
        "--pooling",
        choices=["meanstd", "mean", "attentive"],
        default="meanstd",
        help="head pooling over valid frames",
    )
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    add_speed_args(p)
    _method_flags(p)


def train_config_from_args(args: argparse.Namespace) -> Any:
    from trainables.config import TrainConfig
    from trainables.model import HeadConfig

    return TrainConfig(
        manifest=args.manifest,
        backbone=args.backbone,
        method=args.method,
        method_options=method_options(args, args.method),
        fold=args.fold,
        dev_fold=args.dev_fold,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        patience=args.patience,
        max_seconds=args.max_seconds,
        eval_crop=args.eval_crop,
        bf16=args.bf16,
        seed=args.seed,
        device=args.device,
        head=HeadConfig(pooling=args.pooling),
        **speed_options(args),
    )


def cmd_synth(args: argparse.Namespace) -> int:
    from trainables.data.synth import synthesize

    with console.status("synthesising corpus"):
        manifest = synthesize(
            args.out, speakers=args.speakers, per_class=args.per_class, seed=args.seed
        )
    console.print(f"manifest: {manifest}")
    print(manifest)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from trainables.train import EpochReport, train

    cfg = train_config_from_args(args)
    if cfg.backbone.startswith("tiny-"):
        console.print(
            f"[yellow]backbone {cfg.backbone} is RANDOMLY INITIALISED "
            "(a test preset, not pre-trained)[/yellow]"
        )

    def show(r: EpochReport) -> None:
        mark = " *" if r.is_best else ""
        console.print(
            f"epoch {r.epoch:3d}/{cfg.epochs}  loss {r.train_loss:.4f}  "
            f"dev UAR {r.dev.uar:.3f}  test UAR {r.test.uar:.3f}  "
            f"({r.seconds:.1f}s){mark}"
        )

    result = train(cfg, args.out, on_epoch=show)
    d, t = result["dev"], result["test"]
    console.print(
        f"best epoch {result['best_epoch']}: dev UAR {d['uar']:.3f}, test UAR "
        f"{t['uar']:.3f} WA {t['wa']:.3f} F1 {t['macro_f1']:.3f}; trainable params "
        f"{result['trainable_params']:,} (method {result['trainable_params_method']:,}"
        f" + head {result['trainable_params_head']:,}); skipped files "
        f"{result['skipped_files']}"
    )
    console.print(f"wrote {Path(args.out).resolve() / 'result.json'} and adapter/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotune", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write the synthetic emotional-speech corpus")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--speakers", type=int, default=8)
    p.add_argument("--per-class", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_synth)

    p = sub.add_parser("train", help="one fine-tune run without Ray")
    add_train_args(p)
    p.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    p.set_defaults(handler=cmd_train)

    from search import commands

    commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    for noisy in ("transformers", "urllib3", "filelock", "peft", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    except RuntimeError as err:
        if type(err).__name__ != "SearchInterrupted":
            raise
        console.print(f"[yellow]{err}[/yellow]")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
