"""The honest (nested) test estimate of a ``--folds all`` search, beside the leaky one.

Under ``--folds all`` a trial trains one configuration once per fold: for test fold K the dev
fold is the next one (wrapping) and the rest train (:mod:`trainables.folds`). The search's
objective is the trial's mean dev UAR over all folds, so fold K's test data is also fold
K-1's dev data and shapes which configuration wins: the winner's mean test UAR over folds is
optimistic, the more so the more trials. It is kept, named for what it is
(``leaky_best_mean_test_uar``: the mean test UAR of the trial with the best mean dev UAR).

Nested estimate, per outer test fold K:

- candidates ``C_K``: the trials that finished fold K with a finite dev UAR there, whatever
  their state (a trial ASHA stopped after some folds competes on the folds it finished);
- ``c*_K = argmax_{c in C_K} dev_uar(c, K)``, ties to the lower trial number, then trial id;
  fold K's run of ``c`` never trained on fold K and its dev UAR is measured on fold K+1, so the
  choice uses only data outside fold K;
- ``score_K = test_uar(c*_K, K)``.

``nested_test_uar = mean_K score_K`` (with the sample standard deviation over folds); WA and
macro-F1 are those of the same choices (the search selects by dev UAR). It estimates how well
"search, then take the best dev configuration" does on unseen speakers/sessions.

What still depends on fold K: candidate generation, not selection. The driver's sampler
(Optuna) is told each finished trial's mean dev UAR over all folds (never a test score), and
ASHA stops trials on the mean dev UAR of their first folds; both see fold K's data as another
fold's dev data, so they weakly steer which configurations are tried and which finish fold K.

Comparisons across trials are made on the same folds only. Folds run in the same order in every
trial and ASHA's clock is the number of finished folds, so a rung compares means over the same
folds; the Pareto front, its hypervolume and the export's choice take only the trials that
finished every fold (:func:`search.pareto.front_table`, :func:`search.selection.select_best`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from search.pareto import TrialRecord
from trainables.result import finished_every_fold

NESTED_KEYS = ("uar", "wa", "macro_f1")  # test metrics of the chosen trials (chosen on dev UAR)
DEFINITION = (
    "nested_test_uar = mean over test folds K of the fold-K test UAR of the trial whose run on "
    "fold K has the best dev UAR (dev = fold K+1); fold K never trains or chooses that trial"
)
LEAKY_DEFINITION = (
    "leaky_best_mean_test_uar = mean test UAR over folds of the trial with the best mean dev "
    "UAR over all folds; optimistic: each fold's test data was another fold's dev data"
)


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fold(trial: TrialRecord, fold: int) -> dict[str, Any] | None:
    """The trial's ``{"fold", "dev", "test"}`` entry of ``fold``, or None if not finished."""
    return next((f for f in trial.folds or [] if int(f["fold"]) == fold), None)


def _tie_key(trial: TrialRecord) -> tuple[float, str]:
    return (math.inf if trial.number is None else float(trial.number), trial.trial_id)


def choose_on_fold(trials: Sequence[TrialRecord], fold: int) -> dict[str, Any]:
    """The choice of outer test fold ``fold``: best dev UAR of the trials that finished it.

    Returns:
        ``{"fold", "candidates", "trial_id", "number", "selection_dev_uar", "test_uar",
        "test_wa", "test_macro_f1"}``; the trial's fields are None when no trial qualifies.
    """
    scored = []
    for t in trials:
        entry = _fold(t, fold)
        dev = None if entry is None else _finite((entry.get("dev") or {}).get("uar"))
        if dev is not None:
            scored.append((t, entry, dev))
    out: dict[str, Any] = {"fold": fold, "candidates": len(scored), "trial_id": None}
    out.update(number=None, selection_dev_uar=None, **{f"test_{k}": None for k in NESTED_KEYS})
    if not scored:
        return out
    best, entry, dev = min(scored, key=lambda s: (-s[2], *_tie_key(s[0])))
    test = entry.get("test") or {}
    out.update(trial_id=best.trial_id, number=best.number, selection_dev_uar=dev)
    out.update({f"test_{k}": _finite(test.get(k)) for k in NESTED_KEYS})
    return out


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation; None unless every value is known (std: n >= 2)."""
    if not values or any(v is None for v in values):
        return None, None
    known = [float(v) for v in values if v is not None]
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else None


def _fold_means(trial: TrialRecord, split: str) -> float | None:
    """The mean UAR of ``split`` over the folds the trial finished (unknown values left out)."""
    values = [_finite((f.get(split) or {}).get("uar")) for f in trial.folds or []]
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def trial_means(trials: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """Each trial's plain numbers: its finished folds and mean dev/test UAR over them.

    The mean dev UAR over folds is the search's objective (it sees every fold); the mean test
    UAR over folds of the trial it ranks first is the leaky figure, not an honest estimate.
    """
    return [
        {
            "trial_id": t.trial_id,
            "number": t.number,
            "state": t.state,
            "folds_finished": t.finished_folds(),
            "mean_dev_uar_over_folds": _fold_means(t, "dev"),
            "mean_test_uar_over_folds": _fold_means(t, "test"),
        }
        for t in trials
    ]


def leaky_best(trials: Sequence[TrialRecord], folds: Sequence[int]) -> dict[str, Any]:
    """The naive figure: among trials that finished every fold, the one with the best mean dev
    UAR over folds (ties as :func:`choose_on_fold`) and its mean test UAR over folds."""
    full = [t for t in trials if finished_every_fold(t.folds, folds)]
    scored = [(t, m) for t in full if (m := _fold_means(t, "dev")) is not None]
    if not scored:
        return {"leaky_trial_id": None, "leaky_best_mean_dev_uar": None,
                "leaky_best_mean_test_uar": None}  # fmt: skip
    best, dev = min(scored, key=lambda s: (-s[1], *_tie_key(s[0])))
    return {
        "leaky_trial_id": best.trial_id,
        "leaky_best_mean_dev_uar": dev,
        "leaky_best_mean_test_uar": _fold_means(best, "test"),
    }


def nested_cv(trials: Sequence[TrialRecord], folds: Sequence[int]) -> dict[str, Any]:
    """The ``nested_cv`` block of a ``--folds all`` search's ``search.json``.

    Args:
        trials: every trial of the search, with its per-fold summaries (``TrialRecord.folds``).
        folds: the search's folds (the manifest's sorted fold values).

    Returns:
        ``definition``, ``cv_folds``, ``n_folds``, ``nested_test_<m>`` and
        ``nested_test_<m>_std`` for m in uar, wa, macro_f1 (None unless every fold has a
        choice with a known value), ``per_fold`` (each fold's :func:`choose_on_fold`),
        ``leaky_definition`` and :func:`leaky_best`'s keys, and ``trials``
        (:func:`trial_means`).
    """
    folds = [int(k) for k in folds]
    per_fold = [choose_on_fold(trials, k) for k in folds]
    block: dict[str, Any] = {"definition": DEFINITION, "cv_folds": folds, "n_folds": len(folds)}
    for key in NESTED_KEYS:
        mean, std = _mean_std([f[f"test_{key}"] for f in per_fold])
        block[f"nested_test_{key}"], block[f"nested_test_{key}_std"] = mean, std
    block["per_fold"] = per_fold
    block["leaky_definition"] = LEAKY_DEFINITION
    block.update(leaky_best(trials, folds))
    block["trials"] = trial_means(trials)
    return block


def nested_run_metrics(block: dict[str, Any]) -> dict[str, float]:
    """The parent run's metrics of a ``nested_cv`` block (unknown values left out).

    ``nested_cv_test_<m>`` (and ``_std``), ``nested_cv_n_folds``, per fold K
    ``nested_cv_test_uar_fold_<K>``, ``nested_cv_selection_dev_uar_fold_<K>`` and
    ``nested_cv_candidates_fold_<K>``, and ``leaky_best_mean_test_uar`` /
    ``leaky_best_mean_dev_uar``.
    """
    named: dict[str, Any] = {"nested_cv_n_folds": block["n_folds"]}
    for key in NESTED_KEYS:
        named[f"nested_cv_test_{key}"] = block[f"nested_test_{key}"]
        named[f"nested_cv_test_{key}_std"] = block[f"nested_test_{key}_std"]
    for f in block["per_fold"]:
        named[f"nested_cv_test_uar_fold_{f['fold']}"] = f["test_uar"]
        named[f"nested_cv_selection_dev_uar_fold_{f['fold']}"] = f["selection_dev_uar"]
        named[f"nested_cv_candidates_fold_{f['fold']}"] = f["candidates"]
    for key in ("leaky_best_mean_test_uar", "leaky_best_mean_dev_uar"):
        named[key] = block[key]
    return {k: v for k, raw in named.items() if (v := _finite(raw)) is not None}
