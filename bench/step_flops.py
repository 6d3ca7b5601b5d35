"""(b) Training-step FLOP/s of a WavLM-Base-size LoRA step vs the bf16 GEMM FLOP/s of this CPU.

Variants (same random-init model config, same batch):

* naive fp32 / naive bf16: what a plain HF + peft loop does: the CNN runs every step with
  autograd on (HF's feature encoder marks its input as requiring grad, so the frozen CNN also
  pays a backward), ``nn.Dropout``, for-loop AdamW, optional ``torch.autocast``.
* emotune fp32 / emotune bf16: the project's step (``trainables.train.logits_of``): cached CNN
  features, bulk-random dropout, fused AdamW and, in bf16, the frozen transformer stored in bf16.

FLOPs are counted by ``torch.utils.flop_counter`` on one step (forward + backward + nothing for
the optimiser); "rate" is counted FLOPs / step time and "of peak" divides it by the best bf16
GEMM rate measured in the same process just before. A short fine-tune on the synthetic corpus
(tiny model, cached features) checks that the bf16 fast path leaves dev UAR where fp32 has it.

Run: ``.venv/bin/python -m bench.step_flops [--batch 8] [--seconds 3] [--repeats 5]``; with
``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` in the environment oneDNN leaves AMX unused, which gives
the AVX512-BF16 figures (the GEMM peak the issue's 50 % target was set against).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.common import (
    base_config,
    gemm_flops,
    header,
    interleaved_min,
    setup_logging,
    write_section,
)
from trainables.backbones.speed import cast_frozen_to_bf16, use_fast_dropout
from trainables.backbones.w2v import WavLMBackbone
from trainables.data.frames import FrameBatch
from trainables.methods import attach, build_method
from trainables.model import HeadConfig, SERModel
from trainables.train import StepContext, logits_of

log = logging.getLogger("bench")

Step = Callable[[], None]


def _model(method: str, seed: int = 0) -> SERModel:
    from transformers import WavLMModel

    torch.manual_seed(seed)
    bb = WavLMBackbone(WavLMModel(base_config()), "wavlm-base-size", True, 16000, True)
    options = {"rank": 16, "targets": "ffn"} if method == "lora" else {}
    attach(bb, build_method(method, options))
    return SERModel(bb, 4, HeadConfig()).train()


def naive_step(method: str, bf16: bool, waves: torch.Tensor, labels: torch.Tensor) -> Step:
    model = _model(method)
    bb = model.backbone
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    lengths = torch.full((waves.shape[0],), waves.shape[1])

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            feats, frames = bb.frontend(waves, lengths)  # autograd on, as HF does
            out = bb.encode(feats, frames)
            logits = model.head(out.hidden_states, out.frame_mask)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def emotune_step(method: str, bf16: bool, waves: torch.Tensor, labels: torch.Tensor) -> Step:
    model = _model(method)
    bb = model.backbone
    with torch.no_grad():
        feats, frames = bb.frontend(waves, torch.full((waves.shape[0],), waves.shape[1]))
    use_fast_dropout(model)
    bf16_inputs = bool(bf16 and cast_frozen_to_bf16(bb))
    ctx = StepContext("cpu", bf16, bf16_inputs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    batch = FrameBatch(feats, frames, labels, ["F"] * len(labels), torch.arange(len(labels)))

    def step() -> None:
        loss = F.cross_entropy(logits_of(model, batch, ctx).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()

    return step


def count_flops(step: Step) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def uar_check(epochs: int, seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, list[float]]:
    """Dev UAR of the same short LoRA fine-tune in fp32 and in the bf16 fast path, per seed."""
    from trainables.config import TrainConfig
    from trainables.data.synth import synthesize
    from trainables.train import train

    out: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = synthesize(Path(tmp) / "corpus", speakers=4, per_class=12, seed=0)
        for seed in seeds:
            for name, bf16 in (("fp32", False), ("bf16", True)):
                cfg = TrainConfig(
                    manifest=manifest, backbone="tiny-wavlm", method="lora", epochs=epochs,
                    batch_size=8, max_seconds=2.0, lr=2e-3, bf16=bf16, seed=seed,
                    feature_cache_dir=Path(tmp) / "cache",
                )  # fmt: skip
                result = train(cfg, Path(tmp) / f"{name}-{seed}")
                out[name].append(float(result.dev["uar"]))
        log.info("dev UAR fp32 %s, bf16 %s", out["fp32"], out["bf16"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--method", default="lora")
    ap.add_argument("--uar-epochs", type=int, default=10)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    setup_logging()
    torch.manual_seed(0)
    waves = torch.randn(args.batch, int(args.seconds * 16000)) * 0.1
    labels = torch.randint(0, 4, (args.batch,))
    variants = {
        "naive fp32": naive_step(args.method, False, waves, labels),
        "naive bf16 autocast": naive_step(args.method, True, waves, labels),
        "emotune fp32": emotune_step(args.method, False, waves, labels),
        "emotune bf16": emotune_step(args.method, True, waves, labels),
    }
    flops = {k: count_flops(s) for k, s in variants.items()}
    for step in variants.values():  # warm-up
        step()
    peak_bf16, peak_fp32 = gemm_flops(torch.bfloat16), gemm_flops(torch.float32)
    log.info("GEMM 2048^3: bf16 %.0f GFLOP/s, fp32 %.0f GFLOP/s", peak_bf16 / 1e9, peak_fp32 / 1e9)
    times = interleaved_min(variants, args.repeats)
    peak_bf16 = max(peak_bf16, gemm_flops(torch.bfloat16))  # again, after the steps
    uar = uar_check(args.uar_epochs) if args.uar_epochs > 0 else {}
    rows = [
        "| variant | step GFLOP | step s | GFLOP/s | of bf16 GEMM peak | speed-up vs naive fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for name in variants:
        rate = flops[name] / times[name]
        rows.append(
            f"| {name} | {flops[name] / 1e9:.1f} | {times[name]:.3f} | {rate / 1e9:.0f} | "
            f"{rate / peak_bf16:.0%} | {times['naive fp32'] / times[name]:.2f}x |"
        )
        log.info("%-22s %s", name, rows[-1])
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    body = header(
        f"(b) WavLM-Base-size {args.method} step FLOP/s vs bf16 GEMM "
        f"(batch {args.batch} x {args.seconds:g} s{', oneDNN ISA ' + isa if isa else ''})",
        f"{'ONEDNN_MAX_CPU_ISA=' + isa + ' ' if isa else ''}python -m bench.step_flops "
        f"--batch {args.batch} --seconds {args.seconds:g} --repeats {args.repeats} "
        f"--uar-epochs {args.uar_epochs}",
    )
    body += (
        f"- bf16 GEMM peak (2048^3, best of 14): {peak_bf16 / 1e9:.0f} GFLOP/s; fp32 GEMM: "
        f"{peak_fp32 / 1e9:.0f} GFLOP/s (ratio {peak_bf16 / peak_fp32:.1f}x)\n\n" + "\n".join(rows)
    )
    if uar:
        mean = {k: sum(v) / len(v) for k, v in uar.items()}
        body += (
            f"\n\nDev UAR after {args.uar_epochs} epochs (tiny-wavlm LoRA, synthetic corpus, "
            f"cached features, seeds 0-2): fp32 {mean['fp32']:.3f} "
            f"({', '.join(f'{x:.3f}' for x in uar['fp32'])}), bf16 fast path "
            f"{mean['bf16']:.3f} ({', '.join(f'{x:.3f}' for x in uar['bf16'])})."
        )
    if not args.no_write:
        write_section(f"step-flops{'-' + isa.lower() if isa else ''}", body)


if __name__ == "__main__":
    main()
