"""``emotune synth | train``: the synthetic corpus and one fine-tune run without Ray."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from search.cli.shared import (
    add_allow_pickle_arg,
    add_eval_window_arg,
    add_method_flags,
    add_speed_args,
    console,
    method_options,
    speed_options,
)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Every flag of ``emotune train`` but ``--out``: a :class:`TrainConfig` field each."""
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
    add_method_flags(p)


def train_config_from_args(args: argparse.Namespace) -> Any:
    """The validated ``TrainConfig`` of parsed ``emotune train`` flags."""
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
    """Writes the synthetic corpus; prints its manifest's path on stdout."""
    from trainables.data.synth import synthesize

    with console.status("synthesising corpus"):
        manifest = synthesize(
            args.out, speakers=args.speakers, per_class=args.per_class, seed=args.seed
        )
    console.print(f"manifest: {manifest}")
    print(manifest)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """One training run, an epoch per line, then the best epoch's scores."""
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


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``synth`` and ``train`` to the ``emotune`` sub-commands."""
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
