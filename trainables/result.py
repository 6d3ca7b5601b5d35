"""What a run produced, typed: the one definition of ``result.json`` (no torch import).

The trainer writes a :class:`RunResult`, the cross-validation aggregates several into one, and
the driver (records, export, the model card) reads them back with :meth:`RunResult.from_json`.
A new quantity to log is one field here plus the line of the trainer that sets it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainables.untrusted import read_json_object

RESULT_FILE = "result.json"
MAX_RESULT_BYTES = 256 * 1024 * 1024  # a long history of many classes stays far below

# The headline metrics of a split, in the order tables show them (EvalMetrics field names).
SUMMARY_KEYS = (
    "uar",
    "wa",
    "macro_f1",
    "uar_gap_gender",
    "statistical_parity_gender",
    "equal_opportunity_gender",
)

Summary = dict[str, float | None]

# A cross-validated trial's reports carry every finished fold's summaries under these keys
# (``fold_<K>_<split>_<key>``), so the driver has the folds of a trial stopped early.
FOLD_KEY = "fold"  # also the report key of the fold that just finished
_SPLITS = ("dev", "test")


def fold_report_key(fold: int, split: str, key: str) -> str:
    """The report key of fold ``fold``'s ``split`` value ``key``: ``fold_<K>_<split>_<key>``."""
    return f"{FOLD_KEY}_{int(fold)}_{split}_{key}"


def folds_from_report(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each fold's ``{"fold", "dev", "test"}`` summaries found in a report, by fold value.

    The inverse of :func:`fold_report_key` over :data:`SUMMARY_KEYS`: a fold is listed when its
    dev or test UAR key is present; NaN (what Ray got for None) becomes None again.
    """
    found = set()
    for name in metrics:
        parts = str(name).split("_", 2)
        if len(parts) == 3 and parts[0] == FOLD_KEY and parts[2] in ("dev_uar", "test_uar"):
            try:
                found.add(int(parts[1]))
            except ValueError:
                continue

    def value(fold: int, split: str, key: str) -> float | None:
        raw = metrics.get(fold_report_key(fold, split, key))
        return None if raw is None or raw != raw else float(raw)  # NaN != NaN

    return [
        {FOLD_KEY: k, **{s: {key: value(k, s, key) for key in SUMMARY_KEYS} for s in _SPLITS}}
        for k in sorted(found)
    ]


def finished_every_fold(
    fold_entries: Sequence[Mapping[str, Any]] | None, folds: Sequence[int]
) -> bool:
    """Whether a trial's ``{"fold", "dev", "test"}`` entries cover every fold of ``folds``.

    ``--folds all`` compares trials' means only over the same folds: the Pareto front, the
    export's choice and the leaky figure all take just the trials for which this holds.
    """
    return set(folds) <= {int(f[FOLD_KEY]) for f in fold_entries or []}


def summary(metrics: Mapping[str, Any]) -> Summary:
    """The :data:`SUMMARY_KEYS` of a split's metrics (an ``EvalMetrics.to_dict()``)."""
    return {k: metrics[k] for k in SUMMARY_KEYS}


@dataclasses.dataclass
class RunResult:
    """The outcome of one fine-tune run, or of one configuration cross-validated over folds.

    Attributes:
        method: registered method name.
        method_options: the method's config fields, defaults filled in.
        backbone: backbone id as given (preset, folder or hub id).
        random_init: True when the backbone was randomly initialised (a test preset).
        labels: class names, in the order of the head's outputs.
        dev: :data:`SUMMARY_KEYS` at the best dev epoch (cross-validation: mean over folds).
        test: the same keys on test, at the epoch chosen on dev (never chosen on test).
        trainable_params: method + head parameters that were trained.
        trainable_params_method: the method's share (backbone parameters it trains).
        trainable_params_head: the head's share.
        adapter_bytes: size of the exported ``weights.safetensors``.
        best_epoch: epoch (1-based) with the best dev UAR; cross-validation: the selected fold's.
        skipped_files: audio files that could not be decoded and were left out.
        seconds: wall time of the run (cross-validation: summed over folds).
        history: one entry per epoch: ``epoch``, ``train_loss``, ``lr``, ``dev``, ``test``
            (every metric) and ``speed``; cross-validation: the selected fold's.
        dev_details: single run: every dev metric at the best epoch (per class, by gender).
        test_details: single run: every test metric at that epoch.
        epochs_run: single run: epochs trained (fewer than asked when early stopping hit).
        skipped: single run: ``{"path", "error"}`` of each skipped file.
        config: single run: the TrainConfig as a dict.
        warnings: single run: data problems that leave the run meaningful but weaker.
        eval_windows: single run: the evaluation window length and the clips scored in windows.
        fingerprint: single run: what identifies the run (config, manifest and backbone digests,
            labels), checked before a resume.
        folds: cross-validation: each fold's ``{"fold", "dev", "test"}`` summaries.
        selected_fold: cross-validation: the fold with the best dev UAR (history and adapter).
    """

    method: str
    method_options: dict[str, Any]
    backbone: str
    random_init: bool
    labels: list[str]
    dev: Summary
    test: Summary
    trainable_params: int
    trainable_params_method: int
    trainable_params_head: int
    adapter_bytes: int
    best_epoch: int
    skipped_files: int
    seconds: float
    history: list[dict[str, Any]]
    dev_details: dict[str, Any] | None = None
    test_details: dict[str, Any] | None = None
    epochs_run: int | None = None
    skipped: list[dict[str, str]] | None = None
    config: dict[str, Any] | None = None
    warnings: list[str] | None = None
    eval_windows: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None
    folds: list[dict[str, Any]] | None = None
    selected_fold: int | None = None

    @property
    def cross_validated(self) -> bool:
        """True for the aggregate of a cross-validation."""
        return self.folds is not None

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` form: every field, except the optional ones left unset."""
        required = {f.name for f in _REQUIRED}
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name in required or getattr(self, f.name) is not None
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = RESULT_FILE) -> RunResult:
        """Reads the ``result.json`` form.

        Raises:
            ValueError: naming ``where``: a missing required key or a key this version does
                not know (a file from another tool or a newer emotune).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [f.name for f in _REQUIRED if f.name not in data]
        if unknown or missing:
            problems = [f"unknown key(s) {unknown}"] * bool(unknown)
            problems += [f"missing key(s) {missing}"] * bool(missing)
            raise ValueError(f"{where}: not an emotune result ({'; '.join(problems)})")
        return cls(**{k: data[k] for k in names if k in data})

    def write(self, folder: Path) -> Path:
        """Writes ``folder/result.json`` and returns its path."""
        path = folder / RESULT_FILE
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    @classmethod
    def read(cls, folder: Path) -> RunResult:
        """Reads ``folder/result.json`` (bounded; see :func:`from_json` for the checks)."""
        path = folder / RESULT_FILE
        return cls.from_json(read_json_object(path, "a run's result", MAX_RESULT_BYTES), str(path))


_REQUIRED = [f for f in dataclasses.fields(RunResult) if f.default is dataclasses.MISSING]
