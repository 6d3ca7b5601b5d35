"""(a) Epoch time with vs without the frozen-feature cache, next to its FLOP bound.

For each model size (a WavLM-Base+-size config, and a small config whose CNN dominates; both
random init, saved with ``save_pretrained`` and loaded like a hub model) and each method with a
frozen front end (frozen, lora, adapter, prompt), ``trainables.train.train`` runs one epoch with
``feature_cache=True`` (entry built beforehand, as for every trial after the first) and with
``feature_cache=False`` (the CNN runs on every clip of every step), interleaved ``--repeats``
times; the table keeps the fastest train-epoch time of each.

FLOP bound: the cache removes the CNN's forward from every step, so the best possible speed-up
of a training epoch is ``(F_step + F_cnn) / F_step`` summed over the epoch's batches, with FLOPs
counted by ``torch.utils.flop_counter`` (matmuls and convolutions, forward and backward). The
clips are short (1.5-3 s, ``max_seconds`` 3), so the uncached run's CNN sees exactly what the
old waveform-crop code saw (no longer clips, no extra work).

Time bound: the same, measured in seconds instead of FLOPs: the front end's time over the
epoch's clips (per clip, no autograd, as the uncached epoch runs it) is what the cache can remove,
so ``T_off / (T_off - T_cnn)`` is the speed-up a free cache would give. The two bounds differ
when the CNN's FLOPs run faster or slower than the rest of the step's.

Run: ``.venv/bin/python -m bench.cache_epoch [--sizes base,small] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import (
    base_config,
    header,
    interleaved_min,
    save_backbone,
    setup_logging,
    small_config,
    write_section,
)
from trainables.config import TrainConfig
from trainables.data.splits import load_frame_splits, make_loaders
from trainables.data.synth import synthesize
from trainables.export import build_model
from trainables.train import StepContext, logits_of, train

log = logging.getLogger("bench")

METHODS = ("frozen", "lora", "adapter", "prompt")
OPTIONS = {"lora": {"rank": 16, "targets": "ffn"}, "adapter": {"width": 128}, "prompt": {}}


def epoch_flops(cfg: TrainConfig) -> tuple[float, float]:
    """``(F_cached_epoch, F_cnn_epoch)``: step FLOPs on cached features, and the CNN's."""
    model, _ = build_model(cfg.backbone, cfg.method, cfg.method_options, cfg.head, 4, cfg.seed)
    splits = load_frame_splits(cfg, model.backbone)
    loader = make_loaders(cfg, splits)["train"]
    loader.dataset.set_epoch(1)
    loader.batch_sampler.set_epoch(1)
    ctx = StepContext("cpu", False)
    model.train()
    step = cnn = 0.0
    for batch in loader:
        counter = FlopCounterMode(display=False)
        with counter:
            loss = logits_of(model, batch, ctx).logsumexp(-1).mean()
            if loss.requires_grad:
                loss.backward()
        step += counter.get_total_flops()
        # The CNN on the same audio: the window is the whole clip here (max_seconds >= clips).
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            for i in batch.indices.tolist():
                clip = splits.train.source.clips[i].wave
                model.backbone.frontend(clip[None], torch.tensor([clip.shape[0]]))
        cnn += counter.get_total_flops()
    return step, cnn


def cnn_seconds(cfg: TrainConfig, repeats: int) -> float:
    """Fastest of ``repeats`` passes of the frozen front end over every training clip once, as
    the uncached epoch runs it (per clip, no autograd): the time the cache can remove."""
    model, _ = build_model(cfg.backbone, cfg.method, cfg.method_options, cfg.head, 4, cfg.seed)
    clips = [c.wave for c in load_frame_splits(cfg, model.backbone).train.source.clips]
    model.train()

    def run() -> None:
        with torch.no_grad():
            for clip in clips:
                model.backbone.frontend(clip[None], torch.tensor([clip.shape[0]]))

    run()  # warm-up
    return interleaved_min({"CNN over the epoch": run}, repeats)["CNN over the epoch"]


def one_epoch(cfg: TrainConfig, out: Path, sink: list[dict]) -> None:
    """Trains ``cfg`` for its one epoch in a fresh folder; appends the epoch's speed figures."""
    sink.append(train(cfg, out.with_name(f"{out.name}{len(sink)}"))["history"][0]["speed"])


def run_size(name: str, folder: Path, manifest: Path, tmp: Path, repeats: int) -> list[str]:
    rows = []
    for method in METHODS:
        common = dict(
            manifest=manifest, backbone=str(folder), method=method,
            method_options=OPTIONS.get(method, {}), epochs=1, batch_size=8, max_seconds=3.0,
            feature_cache_dir=tmp / f"cache-{name}",
        )  # fmt: skip
        on, off = TrainConfig(**common), TrainConfig(**common, feature_cache=False)
        build = train(on, tmp / f"{name}-{method}-build")["history"][0]["speed"]
        f_step, f_cnn = epoch_flops(off)
        bound = (f_step + f_cnn) / f_step
        speeds: dict[str, list[dict]] = {"on": [], "off": []}
        log.info("%s %s: bound %.2fx (CNN %.1f%% of step FLOPs)", name, method, bound,
                 100 * f_cnn / (f_step + f_cnn))  # fmt: skip
        interleaved_min(
            {"cache on": partial(one_epoch, on, tmp / f"{name}-{method}-on", speeds["on"]),
             "cache off": partial(one_epoch, off, tmp / f"{name}-{method}-off", speeds["off"])},
            repeats,
        )  # fmt: skip
        seconds = {k: [s["train_seconds"] for s in v] for k, v in speeds.items()}
        full = {k: [s["epoch_seconds"] for s in v] for k, v in speeds.items()}
        t_on, t_off = min(seconds["on"]), min(seconds["off"])
        speedup = t_off / t_on
        t_cnn = cnn_seconds(off, max(repeats, 3))
        time_bound = t_off / max(t_off - t_cnn, 1e-9)
        rows.append(
            f"| {name} | {method} | {100 * f_cnn / (f_step + f_cnn):.0f}% | {bound:.2f}x | "
            f"{t_off:.2f} | {t_on:.2f} | **{speedup:.2f}x** | {speedup / bound:.0%} | "
            f"{t_cnn / t_off:.0%} | {time_bound:.2f}x | {speedup / time_bound:.0%} | "
            f"{min(full['off']) / min(full['on']):.2f}x | {build['train_seconds']:.2f} |"
        )
        log.info(rows[-1])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="base,small")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=4, help="takes per speaker and emotion")
    ap.add_argument("--section", default="cache-epoch", help="BENCHMARKS.md section to write")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    setup_logging()
    configs = {"base": base_config, "small": small_config}
    rows = [
        "| model | method | CNN share of step FLOPs | FLOP bound | epoch s, no cache | "
        "epoch s, cache | speed-up | of FLOP bound | CNN share of epoch time | time bound | "
        "of time bound | speed-up incl. dev+test eval | first epoch (builds cache) s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        manifest = synthesize(tmp / "corpus", speakers=4, per_class=args.per_class, seed=0)
        for size in args.sizes.split(","):
            folder = save_backbone(configs[size](), tmp / f"backbone-{size}")
            rows += run_size(size, folder, manifest, tmp, args.repeats)
    body = header(
        "(a) Train-epoch time with vs without the feature cache",
        f"python -m bench.cache_epoch --sizes {args.sizes} --repeats {args.repeats} "
        f"--per-class {args.per_class}"
        + ("" if args.section == "cache-epoch" else f" --section {args.section}"),
    )
    body += (
        f"- data: synthetic corpus, {8 * args.per_class} training clips of 1.5-3 s, batch 8, "
        "fp32, one epoch; times are the fastest of the interleaved repeats\n"
        "- base: WavLM Base+ size (CNN 7x512, 12 x 768); small: CNN 7x256, 2 x 192 "
        "(the CNN dominates)\n\n" + "\n".join(rows)
    )
    if not args.no_write:
        write_section(args.section, body)


if __name__ == "__main__":
    main()
