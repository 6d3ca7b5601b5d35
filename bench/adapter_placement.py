"""Sequential vs parallel bottleneck adapter: dev / test UAR over seeds on tiny-wavlm.

The same run (tiny-wavlm, random init; synthetic corpus; adapter width 128, scale 0.1,
dropout 0.1, PEFT-SER's adapter settings) with ``placement`` sequential (the branch on each
feed-forward output) and parallel (a branch from the stream entering the feed-forward block,
added after its residual), for each seed. Both have the same parameter count. Every seed trains
both placements on the same data, crops and head initialisation, so per-seed rows pair up.

A random-init 2 x 64 backbone on synthetic audio says whether the placement trains and how
much seeds move the result, not which placement wins on real speech (PEFT-SER found sequential
slightly ahead on IEMOCAP: see ../shared/FIELD_NOTES.md).

Run: ``.venv/bin/python -m bench.adapter_placement [--seeds 3] [--epochs 10]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import header, setup_logging, write_section
from trainables.config import TrainConfig
from trainables.data.synth import synthesize
from trainables.train import train

log = logging.getLogger("bench")

PLACEMENTS = ("sequential", "parallel")
ADAPTER = {"width": 128, "scale": 0.1, "dropout": 0.1}


def run_all(args: argparse.Namespace, tmp: Path) -> dict[str, list[tuple[float, float]]]:
    """``placement -> [(dev UAR, test UAR)]``, one pair per seed."""
    manifest = synthesize(tmp / "corpus", speakers=8, per_class=args.per_class, seed=0)
    scores: dict[str, list[tuple[float, float]]] = {p: [] for p in PLACEMENTS}
    for seed in range(args.seeds):
        for placement in PLACEMENTS:
            cfg = TrainConfig(
                manifest=manifest, backbone="tiny-wavlm", method="adapter",
                method_options={**ADAPTER, "placement": placement}, epochs=args.epochs,
                batch_size=args.batch_size, lr=args.lr, max_seconds=args.max_seconds,
                seed=seed, feature_cache_dir=tmp / "cache",
            )  # fmt: skip
            t = time.perf_counter()
            result = train(cfg, tmp / f"{placement}-{seed}")
            scores[placement].append((result.dev["uar"], result.test["uar"]))
            log.info("seed %d %-10s dev UAR %.3f  test UAR %.3f  (%.0f s)", seed, placement,
                     *scores[placement][-1], time.perf_counter() - t)  # fmt: skip
    return scores


def table(scores: dict[str, list[tuple[float, float]]]) -> list[str]:
    seeds = len(next(iter(scores.values())))
    rows = [
        "| placement | dev UAR mean ± sd | test UAR mean ± sd | "
        + " | ".join(f"seed {s} dev / test" for s in range(seeds))
        + " |",
        "|---|---|---|" + "---|" * seeds,
    ]
    for placement, pairs in scores.items():
        dev, test = [d for d, _ in pairs], [t for _, t in pairs]
        sd = statistics.stdev if len(pairs) > 1 else (lambda _: 0.0)
        rows.append(
            f"| {placement} | {statistics.mean(dev):.3f} ± {sd(dev):.3f} | "
            f"{statistics.mean(test):.3f} ± {sd(test):.3f} | "
            + " | ".join(f"{d:.3f} / {t:.3f}" for d, t in pairs)
            + " |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=8, help="takes per speaker and emotion")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-seconds", type=float, default=2.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    setup_logging()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        scores = run_all(args, Path(tmp_name))
    rows = table(scores)
    log.info("\n".join(rows))
    command = (
        f"python -m bench.adapter_placement --seeds {args.seeds} --epochs {args.epochs} "
        f"--per-class {args.per_class} --batch-size {args.batch_size} --lr {args.lr:g} "
        f"--max-seconds {args.max_seconds:g}"
    )
    body = header("Adapter placement: sequential vs parallel (tiny-wavlm, synthetic corpus)",
                  command)  # fmt: skip
    body += (
        f"- data: synthetic corpus, 8 speakers x 4 emotions x {args.per_class} takes (4 speakers "
        f"train, 2 dev, 2 test), crops of {args.max_seconds:g} s, batch {args.batch_size}, "
        f"AdamW lr {args.lr:g}, cosine schedule, {args.epochs} epochs, model chosen on dev UAR\n"
        "- adapter: width 128, scale 0.1, dropout 0.1 (PEFT-SER's); same parameter count in "
        "both placements; each seed fixes data order, crops and initialisation for both\n"
        f"- whole run: {time.perf_counter() - start:.0f} s. A random-init 2 x 64 model on "
        "synthetic audio: this checks that both placements train and shows the seed spread; "
        "it does not rank them on real speech\n\n" + "\n".join(rows)
    )
    if not args.no_write:
        write_section("adapter-placement", body)


if __name__ == "__main__":
    main()
