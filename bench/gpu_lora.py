"""WavLM Base+-size throughput on one CUDA GPU: frozen and LoRA, with and without cached features.

Self-contained: a random-init WavLM Base+-size model (no download), random audio, batch of
8 x 6 s, bf16 autocast, AdamW; each variant runs ``--warmup`` steps and then ``--steps`` timed
steps (CUDA-synchronised). "CNN every step" runs the frozen CNN in each step (no feature cache,
no autograd through it); "cached features" feeds the transformer precomputed CNN features, as a
trial does with the feature cache. Prints steps/s and audio seconds/s per variant; finishes in
well under 3 minutes on an H100 including the model builds.

Run: ``python -m bench.gpu_lora [--steps 20] [--write]``
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
import torch.nn.functional as F

from bench.common import base_config, header, setup_logging, write_section

# Only modules whose imports the GPU image has (no soundfile / soxr there): the step below is
# ``trainables.train.logits_of`` spelled out.
from trainables.backbones.w2v import WavLMBackbone
from trainables.methods import attach, build_method
from trainables.model import HeadConfig, SERModel

log = logging.getLogger("bench")


def build(method: str, device: str) -> SERModel:
    from transformers import WavLMModel

    torch.manual_seed(0)
    bb = WavLMBackbone(WavLMModel(base_config()), "wavlm-base-plus-size", True, 16000, True)
    options = {"rank": 16, "targets": "ffn"} if method == "lora" else {}
    attach(bb, build_method(method, options))
    return SERModel(bb, 4, HeadConfig()).to(device).train()


def measure(
    method: str,
    cached: bool,
    waves: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    warmup: int,
    profile: bool = False,
) -> float:
    """Seconds per training step (mean over ``steps`` after ``warmup``); ``profile`` also
    prints the top kernels of one more step."""
    device = str(waves.device)
    model = build(method, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    lengths = torch.full((waves.shape[0],), waves.shape[1], device=device)
    feats = frames = None
    if cached:
        with torch.no_grad():
            feats, frames = model.backbone.frontend(waves, lengths)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if feats is not None:
                out = model.backbone.encode(feats, frames)  # cached CNN features
                logits = model.head(out.hidden_states, out.frame_mask)
            else:
                logits = model(waves, lengths)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t) / steps
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=20)
        log.info("%s %s profile:\n%s", method, "cached" if cached else "CNN", table)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    ap.add_argument("--profile", action="store_true", help="print the top kernels of LoRA")
    args = ap.parse_args()
    setup_logging()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for the GPU machine")
    started = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = "cuda"
    gen = torch.Generator(device="cpu").manual_seed(0)
    waves = (torch.randn(args.batch, int(args.seconds * 16000), generator=gen) * 0.1).to(device)
    labels = torch.randint(0, 4, (args.batch,), generator=gen).to(device)
    audio = args.batch * args.seconds
    rows = [
        "| method | CNN | steps/s | audio s / s | ms / step |",
        "|---|---|---|---|---|",
    ]
    for method in ("frozen", "lora"):
        for cached in (False, True):
            prof = args.profile and method == "lora" and cached
            sec = measure(method, cached, waves, labels, args.steps, args.warmup, prof)
            torch.cuda.empty_cache()  # the model of the last variant is gone by now
            where = "cached features" if cached else "CNN every step"
            rows.append(
                f"| {method} | {where} | {1 / sec:.2f} | {audio / sec:.0f} | {1000 * sec:.1f} |"
            )
            log.info(rows[-1])
    name = torch.cuda.get_device_name()
    total = time.perf_counter() - started
    log.info("device %s, total %.0f s (incl. model builds)", name, total)
    print("\n".join(rows))  # noqa: T201 - a benchmark's output is its table
    if args.write:
        body = header(
            f"GPU: WavLM Base+-size LoRA throughput, batch {args.batch} x {args.seconds:g} s, "
            "bf16 autocast",
            f"python -m bench.gpu_lora --steps {args.steps}",
        )
        body += f"- device: {name}; whole script {total:.0f} s\n\n" + "\n".join(rows)
        write_section("gpu-lora", body)


if __name__ == "__main__":
    main()
