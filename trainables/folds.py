"""Cross-validation: one configuration trained once per fold, scored by the mean over folds.

This is the protocol of the PEFT-SER study (e.g. IEMOCAP leave-one-session-out): fold K is test,
the next fold is dev, the rest train; each fold selects its epoch on its own dev UAR, and the
configuration's score is the mean over folds of those dev (and, reported, test) metrics.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainables import rundir
from trainables.backbones import load_backbone
from trainables.config import TrainConfig
from trainables.data.manifest import ManifestError, partition, read_manifest
from trainables.fingerprint import check_same_run, run_fingerprint
from trainables.train import SUMMARY_KEYS, train


def fold_values(manifest: Path) -> list[int]:
    """The sorted fold numbers of a manifest (error if it has no ``fold`` column)."""
    table = read_manifest(manifest)
    if "fold" not in table.column_names:
        raise ManifestError(manifest, "has no fold column; --folds all needs a fold manifest")
    return sorted({int(v) for v in table.column("fold").to_pylist()})


def aggregate(results: list[dict[str, Any]], folds: list[int]) -> dict[str, Any]:
    """Mean of the per-fold dev/test summaries (None values left out of a mean).

    The returned dict has the shape of a single run's ``result.json``; ``history``,
    ``best_epoch`` and the adapter are those of the fold with the best dev UAR (``selected_fold``),
    and ``folds`` lists each fold's dev and test summary.
    """

    def mean(split: str, key: str) -> float | None:
        values = [r[split][key] for r in results if r[split][key] is not None]
        return sum(values) / len(values) if values else None

    best = max(range(len(results)), key=lambda i: results[i]["dev"]["uar"])
    chosen = results[best]
    return {
        **{
            k: chosen[k]
            for k in (
                "method",
                "method_options",
                "backbone",
                "random_init",
                "labels",
                "trainable_params",
                "trainable_params_method",
                "trainable_params_head",
                "adapter_bytes",
                "best_epoch",
                "history",
            )
        },
        "dev": {k: mean("dev", k) for k in SUMMARY_KEYS},
        "test": {k: mean("test", k) for k in SUMMARY_KEYS},
        "folds": [
            {"fold": f, "dev": r["dev"], "test": r["test"]}
            for f, r in zip(folds, results, strict=False)
        ],
        "selected_fold": folds[best],
        "skipped_files": sum(r["skipped_files"] for r in results),
        "seconds": sum(r["seconds"] for r in results),
    }


def train_folds(
    cfg: TrainConfig,
    out_dir: Path,
    folds: list[int] | None = None,
    on_fold: Callable[[dict[str, Any], bool], None] | None = None,
) -> dict[str, Any]:
    """Trains ``cfg`` on every fold (``out_dir/fold_<k>``); folds already finished are reused.

    Args:
        cfg: the configuration; its ``fold`` and ``dev_fold`` are replaced per fold.
        out_dir: folder of the cross-validation; gets ``result.json`` (the aggregate) and
            ``adapter/`` (the selected fold's).
        folds: the folds to run (default: all of the manifest's).
        on_fold: called after each fold with the aggregate so far and whether it was the last.
    """
    folds = folds or fold_values(cfg.manifest)
    with rundir.owned(out_dir, "folds", "cross-validation folder") as out_dir:
        return _run_folds(cfg, out_dir, folds, on_fold)


def _run_folds(
    cfg: TrainConfig,
    out_dir: Path,
    folds: list[int],
    on_fold: Callable[[dict[str, Any], bool], None] | None,
) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    backbone_sha: list[str] = []  # computed once, only if a finished fold is to be reused
    for i, k in enumerate(folds):
        fold_cfg = dataclasses.replace(cfg, fold=k, dev_fold=None)
        fold_dir = out_dir / f"fold_{k}"
        done = fold_dir / "result.json"
        if done.is_file():
            result = json.loads(done.read_text())
            if not backbone_sha:
                bb = load_backbone(cfg.backbone, allow_pickle_weights=cfg.allow_pickle_weights)
                backbone_sha.append(bb.weights_digest())
            labels = partition(cfg.manifest, fold=k).labels
            expected = run_fingerprint(fold_cfg, labels, backbone_sha[0])
            check_same_run(fold_dir, result.get("fingerprint"), expected)
            results.append(result)
        else:
            results.append(train(fold_cfg, fold_dir))
        summary = aggregate(results, folds[: i + 1])
        last = i == len(folds) - 1
        if last:
            adapter = out_dir / "adapter"
            shutil.rmtree(adapter, ignore_errors=True)
            shutil.copytree(out_dir / f"fold_{summary['selected_fold']}" / "adapter", adapter)
            (out_dir / "result.json").write_text(json.dumps(summary, indent=2))
        if on_fold is not None:
            on_fold(summary, last)
    return summary
