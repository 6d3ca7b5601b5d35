"""The ``emotune`` command line: synth, train (and, from search.commands, search/export/predict/demo)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

console = Console(stderr=True)

Handler = Callable[[argparse.Namespace], int]


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description from the ``Attributes:`` section of a class's docstring."""
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").splitlines()
    if not any(line.strip() == "Attributes:" for line in lines):
        return docs
    start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:") + 1
    current = None
    for line in lines[start:]:
        match = re.match(r"\s*(\w+): (.*)", line)
        if match and match.group(1) in {f.name for f in dataclasses.fields(cls)}:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return docs


def _method_flags(parser: argparse.ArgumentParser) -> None:
    """Adds ``--<method>-<option>`` flags generated from every registered method's config."""
    from trainables.methods import METHODS

    for name in METHODS:
        cls = METHODS.get(name).config_cls
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        group = parser.add_argument_group(f"{name} options")
        for f in dataclasses.fields(cls):
            flag = f"--{name}-{f.name.replace('_', '-')}"
            kind = hints[f.name]
            doc = docs.get(f.name, f.name.replace("_", " ")).replace("``", "").rstrip(".")
            text = f"{doc} (default: {f.default})"
            common: dict[str, Any] = dict(dest=f"opt__{name}__{f.name}", default=None, help=text)
            if kind is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
            elif typing.get_origin(kind) is typing.Literal:
                group.add_argument(flag, choices=typing.get_args(kind), **common)
            else:
                group.add_argument(flag, type=kind, metavar=f.name.upper(), **common)


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
        "same results either way; default: on)",
    )
    g.add_argument(
        "--feature-cache-dir",
        type=Path,
        default=None,
        help="cache folder (default: train: $EMOTUNE_FEATURE_CACHE or "
        "~/.cache/emotune/features; search: <storage>/feature-cache)",
    )
    g.add_argument(
        "--feature-cache-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="float16 halves the cache (logits move by ~1e-3; BENCHMARKS.md) "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--bucketing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="length-bucketed training batches (less padding; default: on)",
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


def add_allow_pickle_arg(p: argparse.ArgumentParser) -> None:
    """``--allow-pickle-weights`` (train, search, predict): see ``TrainConfig``."""
    p.add_argument(
        "--allow-pickle-weights",
        action="store_true",
        help="let a backbone without safetensors weights load pytorch_model.bin; unpickling "
        "runs code from the file, so only for weights you trust (default: refused)",
    )


def add_eval_window_arg(p: argparse.ArgumentParser) -> None:
    """``--eval-max-seconds`` (train, search): see ``TrainConfig.eval_max_seconds``."""
    p.add_argument("--eval-max-seconds", type=float, default=60.0,
                   help="longest audio the model sees at once in dev/test; longer clips are "
                   "scored as overlapping windows of this length, their logits averaged "
                   "(default: %(default)s)")


def add_train_args(p: argparse.ArgumentParser) -> None:
    from trainables.methods import METHODS

    p.add_argument("--manifest", type=Path, required=True, help="dataset manifest (.parquet)")
    p.add_argument(
        "--backbone",
        default="tiny-wavlm",
        help="tiny-wavlm|tiny-hubert|tiny-wav2vec2|tiny-whisper (random init), "
        "a local folder, or a hub id (default: %(default)s)",
    )
    add_allow_pickle_arg(p)
    p.add_argument("--method", choices=METHODS.names(), default="lora",
                   help="PEFT method (default: %(default)s)")
    p.add_argument("--fold", type=int, default=None,
                   help="fold manifests: the test fold (default: use the split column)")
    p.add_argument("--dev-fold", type=int, default=None,
                   help="fold manifests: the dev fold (default: the fold after --fold)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="clips per batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4,
                   help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.01,
                   help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--schedule", choices=["cosine", "plateau"], default="cosine",
                   help="cosine: warm-up then cosine decay; plateau: halve the LR when dev UAR "
                   "stalls (default: %(default)s)")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after this many epochs without a better dev UAR (default: 0, off)")
    p.add_argument("--max-seconds", type=float, default=6.0,
                   help="crop length in seconds: random crops in training, centre crops in "
                   "dev/test (default: %(default)s)")
    p.add_argument("--eval-crop", choices=["center", "full"], default="center",
                   help="dev/test: centre crop of --max-seconds, or the whole clip "
                   "(default: %(default)s)")
    add_eval_window_arg(p)
    p.add_argument(
        "--pooling",
        choices=["meanstd", "mean", "attentive"],
        default="meanstd",
        help="head pooling over valid frames (default: %(default)s)",
    )
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (default: off)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation, shuffling and crops (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
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
        eval_max_seconds=args.eval_max_seconds,
        allow_pickle_weights=args.allow_pickle_weights,
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
    d, t = result.dev, result.test
    console.print(
        f"best epoch {result.best_epoch}: dev UAR {d['uar']:.3f}, test UAR "
        f"{t['uar']:.3f} WA {t['wa']:.3f} F1 {t['macro_f1']:.3f}; trainable params "
        f"{result.trainable_params:,} (method {result.trainable_params_method:,}"
        f" + head {result.trainable_params_head:,}); skipped files "
        f"{result.skipped_files}"
    )
    console.print(f"wrote {Path(args.out).resolve() / 'result.json'} and adapter/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotune", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the traceback of an error (default: off)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write the synthetic emotional-speech corpus")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the audio and manifest.parquet")
    p.add_argument("--speakers", type=int, default=8,
                   help="number of speakers, half female (default: %(default)s)")
    p.add_argument("--per-class", type=int, default=24,
                   help="clips per speaker and emotion (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default: %(default)s)")
    p.set_defaults(handler=cmd_synth, smoke={"per_class": 2})

    p = sub.add_parser("train", help="one fine-tune run without Ray")
    add_train_args(p)
    p.add_argument("--out", type=Path, required=True,
                   help="run folder: new, empty or an earlier run of the same command "
                   "(which is resumed)")
    p.set_defaults(handler=cmd_train, smoke={"epochs": 1, "max_seconds": 1.0})

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
        apply_smoke(args)
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except Exception as err:  # every failure a user sees is one line; -v adds the traceback
        if type(err).__name__ == "SearchInterrupted":
            console.print(escape(one_line(err)), style="yellow", soft_wrap=True)
            return 130
        if args.verbose:
            console.print_exception()
        console.print(f"[red]error:[/red] {escape(one_line(err))}", soft_wrap=True)
        return 2


SMOKE_ENV = "EMOTUNE_SMOKE"


def apply_smoke(args: argparse.Namespace) -> None:
    """Under ``EMOTUNE_SMOKE=1`` cuts a command's sizes to its ``smoke`` caps and says so.

    This is how the tests run every command of README.md exactly as written (epochs, trials,
    corpus size and crops are capped; nothing else changes). Each sub-command declares its caps
    with ``set_defaults(smoke={option: cap})``.
    """
    caps: dict[str, int | float] = getattr(args, "smoke", None) or {}
    if os.environ.get(SMOKE_ENV, "") in ("", "0") or not caps:
        return
    cut = []
    for name, cap in caps.items():
        value = getattr(args, name, None)
        if value is None or value > cap:  # None: the default is unbounded (e.g. the space's)
            setattr(args, name, cap)
            cut.append(f"{name} {value} -> {cap}")
    console.print(
        f"[yellow]{SMOKE_ENV} is set: smoke run, sizes cut ({', '.join(cut) or 'none needed'})"
        "[/yellow]"
    )


def one_line(err: BaseException) -> str:
    """``err`` as one line: its message with whitespace collapsed; errors that are not about
    the user's input (a bug, most likely) also name their type and point at ``-v``."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    text = " ".join(str(message).split()) or type(err).__name__
    if isinstance(err, ValueError | OSError | KeyError):
        return text
    return f"{type(err).__name__}: {text} (run with -v for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
