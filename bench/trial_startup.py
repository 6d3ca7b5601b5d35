"""What a trial pays before its first step: imports, model build, data (cache miss vs hit).

Each phase runs in a fresh Python process (as a new Ray worker would), on a WavLM-Base+-size
random-init backbone saved with ``save_pretrained`` and a synthetic corpus:

* imports: ``import trainables.train`` (torch, transformers, peft, sklearn, ...);
* model build: ``build_model`` (load weights, attach LoRA, head);
* data, cache miss: decode the audio and run the CNN once per clip, writing the cache;
* data, cache hit: file digests (``stat`` only) + memory-mapping the entry, no decoding;

next to one training epoch of the same trial with the cache (for scale).

Run: ``.venv/bin/python -m bench.trial_startup [--per-class 6]``
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, base_config, header, save_backbone, setup_logging, write_section

log = logging.getLogger("bench")

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from trainables.config import TrainConfig
from trainables.data.splits import load_frame_splits
from trainables.export import build_model
from trainables.train import train
t1 = time.perf_counter()
cfg = TrainConfig(**json.loads(sys.argv[1]))
model, _ = build_model(cfg.backbone, cfg.method, cfg.method_options, cfg.head, 4, cfg.seed)
t2 = time.perf_counter()
load_frame_splits(cfg, model.backbone)
t3 = time.perf_counter()
out = {"imports": t1 - t0, "build": t2 - t1, "data": t3 - t2}
if sys.argv[2] == "train":
    out["epoch"] = train(cfg, sys.argv[3])["history"][0]["speed"]["train_seconds"]
print("RESULT" + json.dumps(out))
"""


def child(cfg: dict, mode: str, out_dir: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cfg), mode, str(out_dir)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=6)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    setup_logging()
    from trainables.data.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        manifest = synthesize(tmp / "corpus", speakers=4, per_class=args.per_class, seed=0)
        folder = save_backbone(base_config(), tmp / "backbone")
        cfg = dict(
            manifest=str(manifest), backbone=str(folder), method="lora", epochs=1, batch_size=8,
            max_seconds=3.0, feature_cache_dir=str(tmp / "cache"),
        )  # fmt: skip
        miss = child(cfg, "load", tmp / "miss")
        hit = child(cfg, "train", tmp / "hit")
    clips = 16 * args.per_class
    rows = [
        "| phase | seconds |",
        "|---|---|",
        f"| imports (`import trainables.train`) | {hit['imports']:.2f} |",
        f"| model build (WavLM Base+ size from disk, LoRA, head) | {hit['build']:.2f} |",
        f"| data, cache miss (decode {clips} clips + CNN once each) | {miss['data']:.2f} |",
        f"| data, cache hit (digests + memory map) | {hit['data']:.2f} |",
        f"| one training epoch ({clips // 2} clips, cache on) | {hit['epoch']:.2f} |",
    ]
    for row in rows[2:]:
        log.info(row)
    body = header(
        "Trial start-up inside the trial process (fresh interpreter per phase)",
        f"python -m bench.trial_startup --per-class {args.per_class}",
    )
    body += "\n" + "\n".join(rows)
    if not args.no_write:
        write_section("trial-startup", body)


if __name__ == "__main__":
    main()
