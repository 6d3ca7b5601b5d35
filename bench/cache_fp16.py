"""float16 vs float32 feature cache: how far features, logits and results move.

Same run (tiny-wavlm and a small random-init WavLM whose CNN dominates, LoRA, synthetic corpus)
with ``feature_cache_dtype`` float32 (bit-identical to no cache) and float16. Reports the largest
relative error of the cached features, the largest absolute difference of the trained models'
test logits, and dev / test UAR of both runs.

Run: ``.venv/bin/python -m bench.cache_fp16 [--epochs 6]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch

from bench.common import header, save_backbone, setup_logging, small_config, write_section
from trainables.config import TrainConfig
from trainables.data.splits import load_frame_splits, make_loaders
from trainables.data.synth import synthesize
from trainables.export import load_adapter
from trainables.train import StepContext, logits_of, train

log = logging.getLogger("bench")


def test_logits(cfg: TrainConfig, run: Path) -> torch.Tensor:
    """Logits of the run's exported model on ``cfg``'s (cached) test split, in dataset order."""
    model = load_adapter(run / "adapter").model
    splits = load_frame_splits(cfg, model.backbone)
    out = []
    with torch.no_grad():
        for batch in make_loaders(cfg, splits)["test"]:
            logits = logits_of(model, batch, StepContext("cpu", False))
            out.append((batch.indices, logits))
    order = torch.cat([i for i, _ in out]).argsort()
    return torch.cat([x for _, x in out])[order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    setup_logging()
    rows = [
        "| backbone | max rel. feature error | same model: max abs. test-logit diff | "
        "same predictions | trained on fp32 / fp16 cache: dev UAR | test UAR |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        manifest = synthesize(tmp / "corpus", speakers=4, per_class=12, seed=0)
        small = save_backbone(small_config(), tmp / "small")
        for name, backbone in (("tiny-wavlm", "tiny-wavlm"), ("small (CNN 7x256)", str(small))):
            results, cfgs = {}, {}
            for dtype in ("float32", "float16"):
                cfgs[dtype] = TrainConfig(
                    manifest=manifest, backbone=backbone, method="lora", epochs=args.epochs,
                    batch_size=8, max_seconds=2.0, lr=2e-3, feature_cache_dtype=dtype,
                    feature_cache_dir=tmp / "cache", eval_crop="center",
                )  # fmt: skip
                results[dtype] = train(cfgs[dtype], tmp / f"{name[:5]}-{dtype}")
            run32 = tmp / f"{name[:5]}-float32"
            model = load_adapter(run32 / "adapter").model
            f32 = load_frame_splits(cfgs["float32"], model.backbone).dev.source
            f16 = load_frame_splits(cfgs["float16"], model.backbone).dev.source
            rel = max(
                float((f16.features(i) - f32.features(i)).abs().max()
                       / f32.features(i).abs().max().clamp(min=1e-12))
                for i in range(len(f32))
            )  # fmt: skip
            # The same trained model on float32 vs float16 features: the storage error alone.
            a, b = test_logits(cfgs["float32"], run32), test_logits(cfgs["float16"], run32)
            same = float((a.argmax(-1) == b.argmax(-1)).float().mean())
            r32, r16 = results["float32"], results["float16"]
            rows.append(
                f"| {name} | {rel:.1e} | {float((a - b).abs().max()):.1e} | {same:.0%} | "
                f"{r32.dev['uar']:.3f} / {r16.dev['uar']:.3f} | "
                f"{r32.test['uar']:.3f} / {r16.test['uar']:.3f} |"
            )
            log.info(rows[-1])
    body = header(
        f"float16 feature cache: accuracy check (LoRA, {args.epochs} epochs)",
        f"python -m bench.cache_fp16 --epochs {args.epochs}",
    )
    body += (
        "- a float32 cache gives bit-identical runs (tests/test_cache.py); float16 halves disk "
        "and page cache. 'Same model' columns: the model trained on the float32 cache, "
        "evaluated on test features read from each cache (the storage error alone). The UAR "
        "columns train once on each cache: rounding the inputs changes the optimisation path, "
        "and on these small random-init runs that alone moves UAR by several points.\n\n"
        + "\n".join(rows)
    )
    if not args.no_write:
        write_section("cache-fp16", body)


if __name__ == "__main__":
    main()
