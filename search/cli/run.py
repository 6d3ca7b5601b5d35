"""``emotune synth | train``: the synthetic corpus and one fine-tune run without Ray."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from search.cli.recipe import add_recipe_arg
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
    add_recipe_arg(p)
    p.add_argument("--fold", type=int, default=None,
                   help="fold manifests: the test fold (default: use the split column)")
    p.add_argument("--dev-fold", type=int, default=None,
                   help="fold manifests: the dev fold (default: the fold after --fold)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="clips per batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4,
                   help="learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.01,
                   help="weight decay: decoupled with adamw, an L2 term on the gradient with "
                   "adam (default: %(default)s)")
    p.add_argument("--schedule", choices=["cosine", "plateau"], default="cosine",
                   help="cosine: warm-up then cosine decay; plateau: cut the LR when "
                   "--plateau-metric stalls (default: %(default)s)")
    add_optimiser_args(p)
    p.add_argument("--warmup-ratio", type=float, default=0.1,
                   help="cosine schedule: fraction of steps of linear warm-up (default: "
                   "%(default)s)")
    p.add_argument("--grad-clip", type=float, default=1.0,
                   help="clip the gradient norm to this (0: off) (default: %(default)s)")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after this many epochs without a better dev UAR (default: 0, off)")
    p.add_argument("--max-seconds", type=float, default=6.0,
                   help="crop length in seconds: --crop in training, --eval-crop in dev/test "
                   "(default: %(default)s)")
    add_crop_args(p)
    add_eval_window_arg(p)
    p.add_argument(
        "--pooling",
        choices=["meanstd", "mean", "attentive"],
        default="meanstd",
        help="head pooling over valid frames (default: %(default)s)",
    )
    add_head_args(p)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (default: off)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation, shuffling and crops (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    add_speed_args(p)
    add_method_flags(p)


def add_optimiser_args(p: argparse.ArgumentParser) -> None:
    """``--optimizer``, ``--betas`` and the plateau schedule's flags."""
    p.add_argument("--optimizer", choices=["adamw", "adam"], default="adamw",
                   help="adamw (decoupled weight decay) or adam (L2 weight decay, as PEFT-SER) "
                   "(default: %(default)s)")
    p.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"), default=[0.9, 0.999],
                   help="Adam(W) moment decay rates, each in [0, 1); PEFT-SER: 0.9 0.98 "
                   "(default: 0.9 0.999)")
    p.add_argument("--plateau-metric", choices=["uar", "loss"], default="uar",
                   help="plateau schedule: follow dev UAR (higher is better) or the dev loss "
                   "(class-weighted cross-entropy, lower is better) (default: %(default)s)")
    p.add_argument("--plateau-patience", type=int, default=1,
                   help="plateau schedule: epochs without improvement before the LR is cut "
                   "(default: %(default)s)")
    p.add_argument("--plateau-factor", type=float, default=0.5,
                   help="plateau schedule: the LR is multiplied by this at each cut, in (0, 1) "
                   "(default: %(default)s)")
    p.add_argument("--min-lr", type=float, default=0.0,
                   help="plateau schedule: never cut the LR below this (default: %(default)s)")


def add_head_args(p: argparse.ArgumentParser) -> None:
    """``--head-layers``, ``--head-width`` and ``--head-dropout`` (beside ``--pooling``)."""
    p.add_argument("--head-layers", choices=["all", "transformer"], default="all",
                   help="head's weighted sum over every hidden state (all: the transformer's "
                   "input too) or the transformer layers' outputs only (as PEFT-SER) "
                   "(default: %(default)s)")
    p.add_argument("--head-width", type=int, default=128,
                   help="width of the head's projection and hidden layer (default: %(default)s)")
    p.add_argument("--head-dropout", type=float, default=0.1,
                   help="dropout inside the head, in [0, 1) (default: %(default)s)")


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
        optimizer=args.optimizer,
        adam_beta1=args.betas[0],
        adam_beta2=args.betas[1],
        schedule=args.schedule,
        plateau_metric=args.plateau_metric,
        plateau_patience=args.plateau_patience,
        plateau_factor=args.plateau_factor,
        min_lr=args.min_lr,
        grad_clip=args.grad_clip,
        warmup_ratio=args.warmup_ratio,
        patience=args.patience,
        max_seconds=args.max_seconds,
        eval_crop=args.eval_crop,
        crop=args.crop,
        augment=args.augment,
        augment_p=args.augment_p,
        noise_snr_min=args.noise_snr[0],
        noise_snr_max=args.noise_snr[1],
        timemask_min=args.timemask[0],
        timemask_max=args.timemask[1],
        eval_max_seconds=args.eval_max_seconds,
        allow_pickle_weights=args.allow_pickle_weights,
        bf16=args.bf16,
        seed=args.seed,
        device=args.device,
        head=HeadConfig(
            proj_dim=args.head_width,
            pooling=args.pooling,
            dropout=args.head_dropout,
            layers=args.head_layers,
        ),
        **speed_options(args),
    )


def add_crop_args(p: argparse.ArgumentParser) -> None:
    """``--crop``, ``--eval-crop`` and the training augmentation's flags."""
    p.add_argument("--crop", choices=["random", "center", "first"], default="random",
                   help="training clips: a random, the centre or the first --max-seconds "
                   "(PEFT-SER: first) (default: %(default)s)")
    p.add_argument("--eval-crop", choices=["center", "full", "first"], default="center",
                   help="dev/test: the centre or the first --max-seconds, or the whole clip "
                   "(default: %(default)s)")
    p.add_argument("--augment", default="",
                   help="training augmentation, a comma list from noise,timemask ('' or none: "
                   "off); frozen-front-end methods then run the front end on every training "
                   "step (default: off)")
    p.add_argument("--augment-p", type=float, default=1.0,
                   help="probability of each listed augmentation per clip (default: %(default)s)")
    p.add_argument("--noise-snr", type=float, nargs=2, metavar=("MIN", "MAX"),
                   default=[10.0, 30.0],
                   help="noise: SNR range in dB, drawn uniformly (default: 10 30)")
    p.add_argument("--timemask", type=float, nargs=2, metavar=("MIN", "MAX"),
                   default=[0.1, 0.15],
                   help="timemask: fraction of the clip zeroed, drawn uniformly "
                   "(default: 0.1 0.15)")


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
    if args.recipe:
        from trainables.recipes import RECIPES

        console.print(f"recipe {args.recipe}: {RECIPES.get(args.recipe).title}; flags given win")
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
