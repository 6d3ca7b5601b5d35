"""Shared helpers of the benchmark scripts: configs, timing, GEMM peak, BENCHMARKS.md sections.

Timings on a shared 2-core machine are noisy (other processes take cores for seconds at a time),
so every figure is the minimum over interleaved repeats: A and B alternate, and the minimum is
the run least disturbed by others.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import WavLMConfig

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("trainables", "transformers", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def base_config(**overrides: object) -> WavLMConfig:
    """A WavLM Base+-size config: 7-layer 512-channel CNN, 12 x 768 transformer (~95M).

    Dropouts as in ``microsoft/wavlm-base-plus`` (hidden, attention and feature projection 0.1,
    activation 0.0; HF's ``WavLMConfig`` defaults have activation dropout 0.1).
    """
    settings: dict[str, object] = dict(
        layerdrop=0.0,
        mask_time_prob=0.0,
        activation_dropout=0.0,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        feat_proj_dropout=0.1,
    )
    settings.update(overrides)
    return WavLMConfig(**settings)


def small_config(**overrides: object) -> WavLMConfig:
    """A small model whose CNN dominates: Base's CNN strides with 256 channels, 2 x 192 layers."""
    settings: dict[str, object] = dict(
        conv_dim=(256,) * 7,
        hidden_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=768,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=8,
        num_buckets=64,
        max_bucket_distance=200,
    )
    settings.update(overrides)
    return base_config(**settings)  # type: ignore[arg-type]


def save_backbone(config: WavLMConfig, folder: Path, seed: int = 0) -> Path:
    """Saves a random-init WavLM of ``config`` so ``load_backbone(folder)`` takes the user path."""
    from transformers import WavLMModel

    torch.manual_seed(seed)
    WavLMModel(config).save_pretrained(folder)
    return folder


def gemm_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 7) -> float:
    """Best-of-``repeats`` FLOP/s of an ``n x n x n`` matmul in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def interleaved_min(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Minimum seconds of each function over ``repeats`` interleaved rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        log.info("  %-28s min %.3f s  median %.3f s", name, min(ts), statistics.median(ts))
    return {k: min(v) for k, v in times.items()}


def machine() -> str:
    """One line naming the CPU, cores, torch and the load when measured."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = [f for f in ("avx512_bf16", "amx_bf16") if f in text]
        flags = f" ({', '.join(found)})" if found else ""
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{cpu}{flags}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load:.1f} at start"
    )


def git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_section(name: str, body: str) -> None:
    """Replaces (or appends) the section between ``<!-- bench:name -->`` markers."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    BENCHMARKS.write_text(text)
    log.info("wrote section %r of %s", name, BENCHMARKS)


def header(title: str, command: str) -> str:
    return (
        f"### {title}\n\n"
        f"- command: `{command}`\n"
        f"- machine: {machine()}\n"
        f"- code: {git_rev()} + working tree, {time.strftime('%Y-%m-%d %H:%M')}\n"
    )
