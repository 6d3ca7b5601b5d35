"""Finished Ray trials as :class:`TrialRecord`, the ``search.json`` summary, and where a search
spent its time (driver side)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.pareto import TrialRecord
from search.rungs import TIME_ATTR
from trainables.objectives import OBJECTIVES
from trainables.result import RESULT_FILE, SUMMARY_KEYS, RunResult, folds_from_report

if TYPE_CHECKING:  # the CLI reads failure_lines without importing Ray or MLflow
    from ray.tune import Result

    from search.settings import SearchSettings
    from search.tracking import SearchTracker


def fetch_final(checkpoint: Any, dest: Path) -> bool:
    """Copies a trial's final checkpoint (with ``result.json`` and ``adapter/``) to ``dest``.

    The checkpoint lives in the search's storage (a local folder, NFS, or a bucket), so this
    works whatever node ran the trial. Returns False when the checkpoint holds no result.
    """
    if (dest / RESULT_FILE).is_file():
        return True
    if checkpoint is None:
        return False
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.to_directory(str(tmp))
    if not (tmp / RESULT_FILE).is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return True


def record_of(
    trial_id: str,
    config: dict[str, Any],
    last: dict[str, Any] | None,
    error: str | None,
    folder: Path,
    number: int | None = None,
    objectives: Sequence[str] | None = None,
) -> TrialRecord:
    """The record of a finished trial whose final checkpoint (if any) was fetched to ``folder``.

    A trial is COMPLETE only when its last report was final and its result reached the driver;
    a trial stopped early by the scheduler is PRUNED; one that raised is FAILED. A
    cross-validated trial's ``folds`` come from its ``result.json`` when COMPLETE, else from
    the per-fold keys of its last report (the folds it finished before it stopped). A PRUNED
    trial's ``rung`` and ``rung_objectives`` come from its last report (:func:`rung_of`).

    Args:
        objectives: the search's objectives, for ``rung_objectives``; None: every objective
            the last report carries.
    """
    last = last or {}
    params = {k: v for k, v in config.items() if not k.startswith("_")}
    method = str(params.get("method", "?"))
    common = {"trial_id": trial_id, "number": number, "method": method, "params": params}
    if error is None and last.get("final") and (folder / RESULT_FILE).is_file():
        return _complete(common, RunResult.read(folder), folder, _node(last))
    return TrialRecord(
        **common,
        state="FAILED" if error else "PRUNED",
        dev={k: _finite(last.get(f"dev_{k}")) for k in SUMMARY_KEYS},
        test={k: _finite(last.get(f"test_{k}")) for k in SUMMARY_KEYS},
        trainable_params=last.get("trainable_params"),
        adapter_bytes=None,
        best_epoch=last.get("best_epoch"),
        history=[],
        adapter_dir=None,
        node=_node(last),
        error=error,
        folds=folds_from_report(last) or None,
        **({} if error else rung_of(last, objectives)),
    )


def rung_of(last: Mapping[str, Any], objectives: Sequence[str] | None = None) -> dict[str, Any]:
    """Where a stopped trial stopped, from its last report: ``rung`` (reports received,
    Ray's ``training_iteration``: epochs, or folds with ``--folds all``) and
    ``rung_objectives`` (objective name -> value reported, None when not finite).

    Args:
        last: the trial's last report.
        objectives: names in :data:`~trainables.objectives.OBJECTIVES`; None: every objective
            whose ``obj_<name>`` the report carries.
    """
    names = list(OBJECTIVES) if objectives is None else list(objectives)
    values = {
        n: _finite(last.get(OBJECTIVES[n].report_key), nan_only=False)
        for n in names
        if objectives is not None or OBJECTIVES[n].report_key in last
    }
    rung = last.get(TIME_ATTR)
    return {"rung": None if rung is None else int(rung), "rung_objectives": values}


def _node(last: dict[str, Any]) -> str | None:
    """The host that ran a trial, with the start of its Ray node id, from its last report."""
    node = last.get("node")
    if last.get("node_id"):
        node = f"{node} ({str(last['node_id'])[:12]})"
    return node


def _complete(
    common: dict[str, Any], result: RunResult, folder: Path, node: str | None
) -> TrialRecord:
    """The COMPLETE record of a trial from its ``result.json`` (single or cross-validated run)."""
    return TrialRecord(
        **common,
        state="COMPLETE",
        dev=result.dev,
        test=result.test,
        trainable_params=result.trainable_params,
        adapter_bytes=result.adapter_bytes,
        best_epoch=result.best_epoch,
        history=result.history,
        adapter_dir=str(folder / "adapter"),
        node=node,
        error=None,
        warnings=[str(w) for w in result.warnings or []],
        folds=result.folds,
    )


def collect_records(
    results: Iterable[Result],
    trials_dir: Path,
    numbers: Mapping[Any, int],
    log: Callable[[TrialRecord], object],
    objectives: Sequence[str] | None = None,
) -> tuple[list[TrialRecord], list[dict[str, Any]]]:
    """Each trial's record, its final checkpoint fetched to ``trials_dir/<trial id>``, and its
    last report (the clocks of :func:`search_timing`).

    Args:
        results: Tune's results (a ``ResultGrid``).
        trials_dir: where each trial's final checkpoint is fetched.
        numbers: Ray trial id -> Optuna trial number.
        log: called with each record as soon as it is made (MLflow logging).
        objectives: the search's objectives (a stopped trial's ``rung_objectives``); None:
            every objective its last report carries.
    """
    records: list[TrialRecord] = []
    reports: list[dict[str, Any]] = []
    for result in results:
        metrics = result.metrics or {}
        reports.append(metrics)
        trial_id = metrics.get("trial_id") or Path(result.path).name.split("_")[-1]
        error = None if result.error is None else str(result.error).splitlines()[-1][:500]
        if error is None:
            fetch_final(result.checkpoint, trials_dir / trial_id)
        record = record_of(
            trial_id,
            result.config or {},
            metrics,
            error,
            trials_dir / trial_id,
            numbers.get(trial_id),
            objectives,
        )
        log(record)
        records.append(record)
    return records, reports


def search_summary(
    settings: SearchSettings,
    dataset: str,
    manifest: Path,
    front: Mapping[str, Any],
    records: Sequence[TrialRecord],
    tracker: SearchTracker,
    parent: str,
) -> dict[str, Any]:
    """A dataset's ``search.json`` (but its ``timing``): the search, its front (``front`` from
    :meth:`~search.tracking.SearchTracker.finish_parent`), with ``--folds all`` its
    ``nested_cv`` block (:func:`search.nested.nested_cv`), its MLflow runs and every trial."""
    nested = {"nested_cv": front["nested_cv"]} if front.get("nested_cv") is not None else {}
    return {
        "dataset": dataset,
        "manifest": str(manifest.resolve()),
        "backbone": settings.backbone,
        "objectives": list(settings.objectives),
        "hypervolume": front["hypervolume"],
        "front": front["front"],
        **nested,
        "mlflow": {
            "tracking_uri": tracker.tracking_uri,
            "experiment_id": tracker.experiment_id,
            "parent_run_id": parent,
        },
        "trials": [
            {**r.to_dict(), "mlflow_run_id": tracker.child_run_id(parent, r.trial_id)}
            for r in records
        ],
    }


def _finite(x: Any, nan_only: bool = True) -> float | None:
    """``x`` as a float; None for None and NaN (``nan_only=False``: and for infinities)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or not (nan_only or math.isfinite(x)) else x


def search_timing(
    reports: list[dict[str, Any]],
    slots: int,
    wall_seconds: float,
    fit_seconds: float,
    logging_seconds: float,
    finalise_seconds: float,
) -> dict[str, float]:
    """Where a dataset's search spent its time (``timing`` in search.json).

    Args:
        reports: each trial's last report; ``trial_seconds`` runs from entering the trial
            function to that report (imports, data, model, epochs, evaluation, checkpoints) and
            ``import_seconds`` is its imports' share. A fresh Ray worker does most of its
            importing while it unpickles the trial function, before that clock starts: that
            start-up is part of the overhead below, not of the trial's seconds.
        slots: trials that could run at once (``min(concurrency, trials)``).
        wall_seconds: the whole dataset search, study set-up to search.json (after
            ``--resume``, the resumed run only, so its overhead share reads low).
        fit_seconds: Tune's ``fit`` alone.
        logging_seconds: driver time in the MLflow callback while trials ran.
        finalise_seconds: records, Pareto front, figures and MLflow artifacts after ``fit``.

    Returns:
        The inputs, plus ``trial_work_seconds`` (the sum of ``trial_seconds - import_seconds``:
        what the trials would cost in an already warm process) and ``overhead_share``,
        ``1 - trial_work_seconds / (slots * wall_seconds)``: the share of the search's slot-time
        not spent on trial work: Ray (scheduling, worker start-up, imports, checkpoint and
        result handling), MLflow logging, the Pareto step, and slots left idle (for example
        while the last trials finish).
    """
    trial = sum(float(r.get("trial_seconds") or 0.0) for r in reports)
    imports = sum(float(r.get("import_seconds") or 0.0) for r in reports)
    work = trial - imports
    return {
        "wall_seconds": wall_seconds,
        "fit_seconds": fit_seconds,
        "slots": float(slots),
        "trial_seconds": trial,
        "import_seconds": imports,
        "trial_work_seconds": work,
        "logging_seconds": logging_seconds,
        "finalise_seconds": finalise_seconds,
        "overhead_share": max(0.0, 1.0 - work / (slots * wall_seconds)) if wall_seconds else 0.0,
    }


def failure_lines(trials: list[dict[str, Any]], limit: int = 10) -> list[str]:
    """A dataset's trials by state, then each distinct error (first line) and its trials.

    Args:
        trials: ``search.json``'s ``trials`` (dicts with ``trial_id``, ``state``, ``error``).
        limit: most distinct errors shown (the most frequent first); the rest are counted.

    Returns:
        Lines for the user, e.g. ``["3 trial(s): 3 FAILED", "3x ValueError: ... (trial(s) a,
        b, c)"]``; only the first line when no trial has an error.
    """
    states: dict[str, int] = {}
    errors: dict[str, list[str]] = {}
    for t in trials:
        states[t["state"]] = states.get(t["state"], 0) + 1
        if t.get("error"):
            first = str(t["error"]).strip().splitlines()[0] if str(t["error"]).strip() else "?"
            errors.setdefault(first, []).append(str(t["trial_id"]))
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    lines = [f"{len(trials)} trial(s): {counts}"]
    ranked = sorted(errors.items(), key=lambda kv: -len(kv[1]))
    for message, ids in ranked[:limit]:
        lines.append(f"{len(ids)}x {message} (trial(s) {', '.join(ids)})")
    if len(ranked) > limit:
        lines.append(f"... and {len(ranked) - limit} other distinct error(s)")
    return lines
