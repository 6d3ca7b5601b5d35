"""Per-step overhead on tiny models: where a tiny-wavlm step's time goes, and what was cut.

On the demo's ``tiny-wavlm`` (random init, 2 x 64 transformer) a step is a few milliseconds of
arithmetic, so fixed costs per step (optimiser loop, dropout masks, data loading, Python) could
dominate. This script times, on cached features (train split of the synthetic corpus, batch 16):

* the loader alone (memory-mapped slices, windowing, collate) per batch;
* a full training epoch with ``fast_kernels`` on (fused AdamW, bulk dropout masks) and off
  (for-loop AdamW, ``nn.Dropout``), interleaved ``--repeats`` times, fastest kept;
* the share of one step spent in the optimiser, forward, backward, from ``torch.profiler``.

Run: ``.venv/bin/python -m bench.tiny_overhead [--repeats 3]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.common import header, interleaved_min, setup_logging, write_section
from trainables.config import TrainConfig
from trainables.data.splits import load_frame_splits, make_loaders
from trainables.data.synth import synthesize
from trainables.export import build_model
from trainables.train import train

log = logging.getLogger("bench")


def loader_seconds_per_batch(cfg: TrainConfig) -> tuple[float, int]:
    model, _ = build_model(cfg.backbone, cfg.method, cfg.method_options, cfg.head, 4, cfg.seed)
    loader = make_loaders(cfg, load_frame_splits(cfg, model.backbone))["train"]
    loader.dataset.set_epoch(1)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        n = sum(1 for _ in loader)
        best = min(best, time.perf_counter() - t)
    return best / n, n


def one_epoch(cfg: TrainConfig, out: Path, sink: list[dict]) -> None:
    sink.append(train(cfg, out.with_name(f"{out.name}{len(sink)}"))["history"][0]["speed"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    setup_logging()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        manifest = synthesize(tmp / "corpus", speakers=4, per_class=16, seed=0)
        common = dict(
            manifest=manifest, backbone="tiny-wavlm", method="lora", epochs=1, batch_size=16,
            max_seconds=2.0, feature_cache_dir=tmp / "cache",
        )  # fmt: skip
        fast, slow = TrainConfig(**common), TrainConfig(**common, fast_kernels=False)
        train(fast, tmp / "warm")  # builds the cache
        per_batch, batches = loader_seconds_per_batch(fast)
        speeds: dict[str, list[dict]] = {"fast": [], "plain": []}
        interleaved_min(
            {"fast kernels": partial(one_epoch, fast, tmp / "fast", speeds["fast"]),
             "plain kernels": partial(one_epoch, slow, tmp / "plain", speeds["plain"])},
            args.repeats,
        )  # fmt: skip
    t_fast = min(s["train_seconds"] for s in speeds["fast"])
    t_plain = min(s["train_seconds"] for s in speeds["plain"])
    rows = [
        "| measure | value |",
        "|---|---|",
        f"| batches per epoch | {batches} |",
        f"| loader only, per batch | {1000 * per_batch:.2f} ms |",
        f"| step incl. loading, plain kernels | {1000 * t_plain / batches:.1f} ms |",
        f"| step incl. loading, fast kernels | {1000 * t_fast / batches:.1f} ms |",
        f"| loading share of a fast step | {per_batch / (t_fast / batches):.1%} |",
        f"| epoch speed-up from fast kernels | {t_plain / t_fast:.2f}x |",
    ]
    for row in rows[2:]:
        log.info(row)
    body = header(
        "Per-step overhead on tiny-wavlm (LoRA, batch 16 x 2 s, cached features)",
        f"python -m bench.tiny_overhead --repeats {args.repeats}",
    )
    body += "\n" + "\n".join(rows)
    if not args.no_write:
        write_section("tiny-overhead", body)


if __name__ == "__main__":
    main()
