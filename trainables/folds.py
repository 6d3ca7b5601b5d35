"""Cross-validation: one configuration trained once per fold, scored by the mean over folds.

This is the protocol of the PEFT-SER study (e.g. IEMOCAP leave-one-session-out): fold K is test,
the next fold is dev, the rest train; each fold selects its epoch on its own dev UAR, and the
configuration's score is the mean over folds of those dev (and, reported, test) metrics.

Folds run in the order given (a search passes the manifest's sorted fold values to every trial),
so any two trials that finished ``n`` folds finished the same ``n``. In a search the mean dev UAR
over folds is the objective: every fold's test data is then another fold's dev data, so the
winner's mean test is optimistic; :mod:`search.nested` gives the honest (nested) estimate.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from trainables import rundir
from trainables.backbones import InputNormalization, input_normalization, load_backbone
from trainables.config import TrainConfig
from trainables.data.manifest import fold_values, partition
from trainables.fingerprint import check_same_run, run_fingerprint
from trainables.result import RESULT_FILE, SUMMARY_KEYS, RunResult
from trainables.train import train


def aggregate(results: list[RunResult], folds: list[int]) -> RunResult:
    """Mean of the per-fold dev/test summaries (None values left out of a mean).

    ``history``, ``best_epoch`` and the adapter are those of the fold with the best dev UAR
    (``selected_fold``), and ``folds`` lists each fold's dev and test summary.
    """

    def mean(split: str, key: str) -> float | None:
        values = [getattr(r, split)[key] for r in results if getattr(r, split)[key] is not None]
        return sum(values) / len(values) if values else None

    best = max(range(len(results)), key=lambda i: results[i].dev["uar"])
    chosen = results[best]
    return RunResult(
        method=chosen.method,
        method_options=chosen.method_options,
        backbone=chosen.backbone,
        random_init=chosen.random_init,
        labels=chosen.labels,
        trainable_params=chosen.trainable_params,
        trainable_params_method=chosen.trainable_params_method,
        trainable_params_head=chosen.trainable_params_head,
        adapter_bytes=chosen.adapter_bytes,
        best_epoch=chosen.best_epoch,
        history=chosen.history,
        dev={k: mean("dev", k) for k in SUMMARY_KEYS},
        test={k: mean("test", k) for k in SUMMARY_KEYS},
        folds=[
            {"fold": f, "dev": r.dev, "test": r.test}
            for f, r in zip(folds, results, strict=False)
        ],
        selected_fold=folds[best],
        skipped_files=sum(r.skipped_files for r in results),
        seconds=sum(r.seconds for r in results),
    )


def train_folds(
    cfg: TrainConfig,
    out_dir: Path,
    folds: list[int] | None = None,
    on_fold: Callable[[RunResult, bool], None] | None = None,
) -> RunResult:
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
    on_fold: Callable[[RunResult, bool], None] | None,
) -> RunResult:
    results: list[RunResult] = []
    # (weights digest, input normalisation): computed once, only if a finished fold is reused
    base: list[tuple[str, InputNormalization | None]] = []
    for i, k in enumerate(folds):
        fold_cfg = dataclasses.replace(cfg, fold=k, dev_fold=None)
        fold_dir = out_dir / f"fold_{k}"
        if (fold_dir / RESULT_FILE).is_file():
            result = RunResult.read(fold_dir)
            if not base:
                bb = load_backbone(cfg.backbone, allow_pickle_weights=cfg.allow_pickle_weights)
                base.append((bb.weights_digest(), input_normalization(bb)))
            labels = partition(cfg.manifest, fold=k).labels
            expected = run_fingerprint(fold_cfg, labels, *base[0])
            check_same_run(fold_dir, result.fingerprint, expected)
            results.append(result)
        else:
            results.append(train(fold_cfg, fold_dir))
        summary = aggregate(results, folds[: i + 1])
        last = i == len(folds) - 1
        if last:
            adapter = out_dir / "adapter"
            shutil.rmtree(adapter, ignore_errors=True)
            shutil.copytree(out_dir / f"fold_{summary.selected_fold}" / "adapter", adapter)
            summary.write(out_dir)
        if on_fold is not None:
            on_fold(summary, last)
    return summary
