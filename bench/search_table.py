"""Builds the tabular benchmark of ``bench/search_quality.py``: real runs of the trainable.

Every point of a grid over method x size x learning rate (:data:`GRID`) is trained with
``trainables.train.train`` for :data:`EPOCHS` epochs, once per seed, on the synthetic corpus with
a small randomly initialised WavLM (:func:`backbone_config`: 4 x 128 transformer, saved to a
folder and loaded through the product's ``from_pretrained`` path). Each epoch becomes one row:
the point, the seed, the epoch, its dev and test UAR (the epoch's own and the best-dev-epoch
value the search reports), the trainable parameters (method + head) and the epoch's wall time
(training, dev and test evaluation; the first epoch also pays the run's start-up).

Each point is turned into a TrainConfig by ``spaces.to_train_config`` from a point of
:func:`bench_space` (the space the replay samples), so the table holds exactly what a search over
that space would have trained. The head is fixed at width 32, small enough that the method's
own parameters move the parameter objective (with the default width 128 the head dominates).

Runs go to ``--jobs`` processes of one torch thread each (what a 1-CPU Ray trial gets); each
writes one JSON line per finished run to ``<out>.parts/``, so an interrupted build resumes.
The table is written as Parquet, with a JSON sidecar naming the command, the grid, the build
time and the machine.

Run: ``.venv/bin/python -m bench.search_table [--jobs 2] [--seeds 0,1]
[--out bench/data/search_table.parquet]`` (168 runs: about 40 minutes on an idle 2-core CPU).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "data" / "search_table.parquet"
EPOCHS = 8
HEAD_WIDTH = 32
PER_CLASS = 12  # synthetic corpus: takes per speaker and emotion
LRS = (2.0e-4, 5.0e-4, 1.0e-3, 2.5e-3, 5.0e-3, 1.25e-2)
# Method -> the grid of its searched options (every other option is fixed by bench_space()).
GRID: dict[str, list[dict[str, Any]]] = {
    "frozen": [{}],
    "lora": [
        {"lora_rank": r, "lora_targets": t}
        for r, t in itertools.product((2, 8, 32), ("attention", "ffn"))
    ],
    "adapter": [{"adapter_width": w} for w in (8, 32, 128)],
    "prompt": [
        {"prompt_length": n, "prompt_deep": d} for n, d in itertools.product((2, 16), (False, True))
    ],
}
# Option name -> (low, high, log) of the replay's space: the grid's hull.
RANGES = {
    "lr": (LRS[0], LRS[-1], True),
    "lora_rank": (2, 32, True),
    "adapter_width": (8, 128, True),
    "prompt_length": (2, 16, False),
}
CHOICES = {"lora_targets": ["attention", "ffn"], "prompt_deep": [False, True]}


def bench_space() -> Any:
    """The space the table covers (and the replay samples): the grid's hull, the rest fixed."""
    from spaces import SpaceConfig

    def rng(name: str) -> dict[str, Any]:
        low, high, log = RANGES[name]
        return {"low": low, "high": high, "log": log}

    return SpaceConfig.from_dict(
        {
            "methods": list(GRID),
            "lr": rng("lr"),
            "weight_decay": 1.0e-2,
            "epochs": EPOCHS,
            "head_width": HEAD_WIDTH,
            "lora": {
                "rank": rng("lora_rank"),
                "alpha_ratio": 1.0,
                "targets": {"choices": CHOICES["lora_targets"]},
            },
            "adapter": {"width": rng("adapter_width")},
            "prompt": {
                "length": rng("prompt_length"),
                "deep": {"choices": CHOICES["prompt_deep"]},
            },
        }
    )


def fixed_params(space: Any, method: str) -> dict[str, Any]:
    """The one-value params of a ``method`` trial of ``space`` (what the grid does not vary)."""
    from spaces.params import Fixed

    return {n: p.value for n, p in space.params_of(method).items() if isinstance(p, Fixed)}


def grid_points() -> list[dict[str, Any]]:
    """Every point of the grid as flat trial params (``method``, options, ``lr``)."""
    space = bench_space()
    points = []
    for method, options in GRID.items():
        for opts, lr in itertools.product(options, LRS):
            points.append({**fixed_params(space, method), "method": method, **opts, "lr": lr})
    return points


def point_key(point: dict[str, Any], seed: int) -> str:
    return json.dumps({**point, "seed": seed}, sort_keys=True)


def backbone_config() -> Any:
    """A small WavLM (CNN of 4 x 32 channels, 4 x 128 transformer, ~0.6M weights)."""
    from transformers import WavLMConfig

    return WavLMConfig(
        conv_dim=(32, 32, 32, 32),
        conv_kernel=(10, 8, 4, 4),
        conv_stride=(5, 4, 4, 4),
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        layerdrop=0.0,
        mask_time_prob=0.0,
        num_buckets=32,
        max_bucket_distance=64,
    )


def prepare(scratch: Path) -> tuple[Path, Path]:
    """Writes the corpus and the randomly initialised backbone folder; returns their paths."""
    import torch
    from transformers import WavLMModel

    from trainables.data.synth import synthesize

    manifest = synthesize(scratch / "corpus", per_class=PER_CLASS)
    torch.manual_seed(0)
    backbone = scratch / "small-wavlm"
    WavLMModel(backbone_config()).save_pretrained(backbone, safe_serialization=True)
    return manifest, backbone


def run_one(point: dict[str, Any], seed: int, manifest: Path, backbone: Path,
            scratch: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Trains one point with one seed; one row per epoch."""
    from spaces import to_train_config
    from trainables.train import train

    base = {
        "manifest": str(manifest),
        "backbone": str(backbone),
        "max_seconds": 2.0,
        "batch_size": 16,
        "seed": seed,
        "feature_cache_dir": str(scratch / "cache"),
    }
    cfg = to_train_config(point, base)
    rows: list[dict[str, Any]] = []
    clock = [time.perf_counter()]

    def on_epoch(r: Any) -> None:
        now = time.perf_counter()
        best = r.history[r.best_epoch - 1]
        rows.append(
            {
                "epoch": r.epoch,
                "epoch_seconds": now - clock[0],
                "dev_uar": float(r.dev.uar),
                "test_uar": float(r.test.uar),
                "best_dev_uar": float(best["dev"]["uar"]),
                "best_test_uar": float(best["test"]["uar"]),
                "best_epoch": r.best_epoch,
                "train_loss": float(r.train_loss),
                "trainable_params": int(r.trainable_params),
            }
        )
        clock[0] = now

    out = scratch / "runs" / f"{os.getpid()}"
    try:
        train(cfg, out, on_epoch=on_epoch)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return [{**_flat(point), "seed": seed, **row} for row in rows]


def _flat(point: dict[str, Any]) -> dict[str, Any]:
    """The grid's columns of a point (absent options are None)."""
    keys = ["method", "lr", *RANGES.keys() - {"lr"}, *CHOICES]
    return {k: point.get(k) for k in sorted(keys)}


def _worker(jobs: list[tuple[dict[str, Any], int]], paths: tuple[Path, Path, Path],
            part: Path) -> None:  # fmt: skip
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    manifest, backbone, scratch = paths
    for point, seed in jobs:
        started = time.perf_counter()
        rows = run_one(point, seed, manifest, backbone, scratch)
        with part.open("a") as fh:
            fh.write(json.dumps({"key": point_key(point, seed), "rows": rows}) + "\n")
        print(f"[{part.stem}] {point['method']:7s} {_flat(point)} seed {seed}: "
              f"{time.perf_counter() - started:.1f} s, best dev UAR "
              f"{rows[-1]['best_dev_uar']:.3f}", flush=True)  # fmt: skip


def _done(parts: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for part in sorted(parts.glob("*.jsonl")):
        for line in part.read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                out[item["key"]] = item["rows"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = args.out.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emotune-table-") as tmp:
        scratch = Path(tmp)
        manifest, backbone = prepare(scratch)
        # Warm the front-end feature cache once, so no run's first epoch pays for building it.
        warm = {**grid_points()[0], "epochs": 1}
        run_one(warm, 0, manifest, backbone, scratch)
        done = _done(parts)
        todo = [(pt, s) for s in seeds for pt in grid_points() if point_key(pt, s) not in done]
        print(f"{len(todo)} runs to go ({len(done)} done)", flush=True)
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(
                target=_worker,
                args=(todo[i :: args.jobs], (manifest, backbone, scratch), parts / f"w{i}.jsonl"),
            )
            for i in range(args.jobs)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        if any(proc.exitcode for proc in procs):
            print("a worker failed; rerun the same command to finish", file=sys.stderr)
            return 1
    build_seconds = time.perf_counter() - started
    return write_table(args.out, parts, seeds, build_seconds, args.jobs)


def write_table(out: Path, parts: Path, seeds: list[int], seconds: float, jobs: int) -> int:
    import pandas as pd

    from bench.common import machine

    rows = [row for runs in _done(parts).values() for row in runs]
    table = pd.DataFrame(rows).sort_values(["method", "seed", "epoch"], kind="stable")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    meta = {
        "command": "python -m bench.search_table " + " ".join(sys.argv[1:]),
        "build_seconds_this_call": round(seconds, 1),
        "train_seconds_total": round(float(table["epoch_seconds"].sum()), 1),
        "jobs": jobs,
        "seeds": seeds,
        "epochs": EPOCHS,
        "grid": GRID,
        "lrs": LRS,
        "head_width": HEAD_WIDTH,
        "corpus": f"trainables.data.synth.synthesize(per_class={PER_CLASS})",
        "backbone": "small WavLM, RANDOMLY INITIALISED (bench.search_table.backbone_config)",
        "runs": int(table.groupby(["seed", *_flat({}).keys()], dropna=False).ngroups),
        "machine": machine(),
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out} ({len(table)} rows, {meta['runs']} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
