"""(c) Padding fraction and throughput with and without length-bucketed batches.

A corpus of clips with an IEMOCAP-like spread of durations (log-normal, median 3.5 s, 0.8-20 s;
content: band-limited noise, labels at random) is trained for one epoch with ``max_seconds`` 6
(the recipe's crop), batch 16, cached features, with ``bucketing`` on and off, interleaved
``--repeats`` times. Padding fraction = padded frames / all frames of the training batches;
throughput = seconds of (cropped) training audio per second of training-epoch wall time.

Run: ``.venv/bin/python -m bench.bucketing [--models base,small] [--clips 96] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

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
from trainables.train import train

log = logging.getLogger("bench")


def spread_corpus(folder: Path, clips: int, seed: int = 0) -> Path:
    """Writes ``clips`` WAVs with log-normal durations and a split manifest; returns its path."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(clips):
        seconds = float(np.clip(rng.lognormal(np.log(3.5), 0.6), 0.8, 20.0))
        noise = rng.standard_normal(int(seconds * 16000)).astype(np.float32)
        wave = np.convolve(noise, np.ones(8, dtype=np.float32) / 8, mode="same") * 0.2
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, wave, 16000, subtype="PCM_16")
        split = "train" if i % 4 < 2 else ("dev" if i % 4 == 2 else "test")
        rows.append(
            dict(path=path.name, label=["neu", "hap", "ang", "sad"][(i // 4) % 4],
                 speaker=f"s{i % 6}", gender="F" if i % 2 else "M", split=split)
        )  # fmt: skip
    manifest = folder / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest)
    return manifest


def one_epoch(cfg: TrainConfig, out: Path, sink: list[dict]) -> None:
    """Trains ``cfg`` for its one epoch in a fresh folder; appends the epoch's speed figures."""
    sink.append(train(cfg, out.with_name(f"{out.name}{len(sink)}"))["history"][0]["speed"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="base,small")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    setup_logging()
    configs = {"base": base_config, "small": small_config}
    rows = [
        "| model | batching | padding fraction | train audio s / s | epoch s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        manifest = spread_corpus(tmp / "corpus", args.clips)
        for model in args.models.split(","):
            folder = save_backbone(configs[model](), tmp / f"backbone-{model}")
            common = dict(
                manifest=manifest, backbone=str(folder), method=args.method, epochs=1,
                batch_size=16, max_seconds=6.0, feature_cache_dir=tmp / "cache",
            )  # fmt: skip
            train(TrainConfig(**common), tmp / f"{model}-warm")  # builds the cache
            speeds: dict[str, list[dict]] = {"bucketed": [], "shuffled": []}
            interleaved_min(
                {tag: partial(one_epoch, TrainConfig(**common, bucketing=tag == "bucketed"),
                              tmp / f"{model}-{tag}", speeds[tag])
                 for tag in speeds},
                args.repeats,
            )  # fmt: skip
            best = {k: min(v, key=lambda s: s["train_seconds"]) for k, v in speeds.items()}
            for tag in ("shuffled", "bucketed"):
                s = best[tag]
                ratio = best["shuffled"]["train_seconds"] / s["train_seconds"]
                rows.append(
                    f"| {model} | {tag} | {s['padding_fraction']:.1%} | "
                    f"{s['audio_seconds_per_second']:.1f} | {s['train_seconds']:.2f} | "
                    f"{ratio:.2f}x |"
                )
                log.info(rows[-1])
    body = header(
        f"(c) Length bucketing: padding and throughput ({args.method}, batch 16, crop 6 s)",
        f"python -m bench.bucketing --models {args.models} --clips {args.clips} "
        f"--repeats {args.repeats}",
    )
    body += (
        f"- data: {args.clips} clips (half for training), log-normal durations (median 3.5 s, "
        "0.8-20 s), cached features, fp32, one epoch; fastest of the interleaved repeats\n\n"
        + "\n".join(rows)
    )
    if not args.no_write:
        write_section("bucketing", body)


if __name__ == "__main__":
    main()
