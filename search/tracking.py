"""MLflow tracking of a search: one parent run per search, one nested child run per trial.

Only the search driver talks to MLflow. Everything goes through an explicit
:class:`mlflow.MlflowClient` (no fluent ``mlflow.start_run`` state), so several trackers on
different stores can live in one process. Runs are found again by tags, which makes every
call safe to repeat when a search is resumed.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException

from search.child_runs import (
    END_STATUS,
    MAX_ERROR_CHARS,
    MAX_PARAM_CHARS,
    MAX_TAG_CHARS,
    TAG_KEY,
    TAG_LOGGED,
    TAG_PARENT,
    TAG_STATE,
    TAG_TRIAL,
    as_text,
    child_tags,
    clip,
    quoted,
    rung_metrics,
)
from search.figures import front_figures, write_front
from search.nested import nested_cv
from search.pareto import TrialRecord, front_hypervolume, front_table
from search.run_metrics import front_metrics, nested_metrics, timing_metrics, trial_metrics

logger = logging.getLogger(__name__)


def default_tracking_uri(search_root: Path) -> str:
    """SQLite store inside a search folder: ``sqlite:///<abs path>/mlflow.db``."""
    return f"sqlite:///{(Path(search_root).resolve() / 'mlflow.db').as_posix()}"


def ui_hint(tracking_uri: str, experiment_id: str) -> str:
    """How to browse a search: the ``mlflow ui`` command and the URL of the runs table.

    The MLflow 3.17 UI opens an experiment on a GenAI overview page; the table of training
    runs (children nested under their parent) is the ``/runs`` view linked here.
    """
    return (
        f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)} --host 127.0.0.1 --port 5000\n"
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
    )


def _sqlite_artifacts(tracking_uri: str) -> str | None:
    """Artifact root beside a SQLite file (MLflow would otherwise use ``./mlruns`` of the CWD)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or ":memory:" in tracking_uri:
        return None
    db = Path(tracking_uri[len(prefix) :]).resolve()
    db.parent.mkdir(parents=True, exist_ok=True)  # SQLite cannot create the folder itself
    return (db.parent / "mlartifacts").as_uri()


class SearchTracker:
    """Logs a search into one MLflow experiment.

    Args:
        tracking_uri: MLflow tracking URI, e.g. from :func:`default_tracking_uri`.
        experiment: Experiment name, created if absent (restored if deleted).
        artifact_location: Artifact root for a new experiment; by default a ``mlartifacts``
            folder beside a SQLite database, else the server's default.
    """

    def __init__(
        self, tracking_uri: str, experiment: str, artifact_location: str | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        location = artifact_location or _sqlite_artifacts(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = self._experiment(experiment, location)

    def _experiment(self, name: str, location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except MlflowException:  # created meanwhile by another tracker
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        return found.experiment_id

    def _search(self, filter_string: str) -> list[Run]:
        """All active runs of the experiment matching a filter, oldest first (paginated)."""
        runs: list[Run] = []
        token: str | None = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string,
                ViewType.ACTIVE_ONLY,
                1000,
                ["attributes.start_time ASC"],
                token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def children(self, parent_id: str, trial_id: str | None = None) -> list[Run]:
        """Child runs of a parent, optionally only those of one trial id."""
        query = f"tags.`{TAG_PARENT}` = {quoted(parent_id, 'parent_id')}"
        if trial_id is not None:
            query += f" and tags.`{TAG_TRIAL}` = {quoted(trial_id, 'trial_id')}"
        return self._search(query)

    def child_run_id(self, parent_id: str, trial_id: str) -> str | None:
        """Id of the fully logged child run of a trial, or None if it has none yet."""
        for run in self.children(parent_id, trial_id):
            if run.data.tags.get(TAG_LOGGED) == "true":
                return run.info.run_id
        return None

    def parent_run(
        self, search_key: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str:
        """Returns the parent run of a search, creating it (RUNNING) the first time.

        A resumed search passes the same ``search_key`` and gets the same run back, set to
        RUNNING again. Params are logged once (MLflow params are immutable); a resumed search
        whose params differ gets a warning. Values are logged as text (JSON for non-strings),
        clipped to the MLflow limit; the full params are in the artifact ``search_params.json``.

        Args:
            search_key: Identity of the search (stored as tag ``emotune.search_key``).
            params: e.g. backbone, dataset, manifest, objectives, space.
            tags: Extra tags; ``mlflow.runName`` names the run (default: the key).

        Returns:
            The parent run id.
        """
        found = self._search(f"tags.`{TAG_KEY}` = {quoted(search_key, 'search_key')}")
        text = {k: as_text(v) for k, v in params.items()}
        logged = {k: clip(v, MAX_PARAM_CHARS) for k, v in text.items()}
        if found:
            return self._reuse_parent(found, search_key, logged, tags)
        return self._create_parent(search_key, text, logged, tags)

    def _reuse_parent(
        self,
        found: list[Run],
        search_key: str,
        logged: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> str:
        """The oldest parent run of ``search_key``, with fresh tags and RUNNING again."""
        run = found[0]
        if len(found) > 1:
            logger.warning(
                "%d parent runs share search key %r; using the oldest, %s",
                len(found),
                search_key,
                run.info.run_id,
            )
        differ = sorted(k for k, v in logged.items() if run.data.params.get(k) != v)
        if differ:
            logger.warning(
                "search %r resumed with different params %s; keeping the first values",
                search_key,
                differ,
            )
        if tags:
            self.client.log_batch(
                run.info.run_id,
                tags=[RunTag(k, clip(str(v), MAX_TAG_CHARS)) for k, v in tags.items()],
            )
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        logger.info("reusing parent run %s for search %r", run.info.run_id, search_key)
        return run.info.run_id

    def _create_parent(
        self,
        search_key: str,
        text: Mapping[str, str],
        logged: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> str:
        """A new parent run: clipped params, the full ones as ``search_params.json``."""
        all_tags = {k: clip(str(v), MAX_TAG_CHARS) for k, v in tags.items()}
        all_tags[TAG_KEY] = search_key
        run = self.client.create_run(
            self.experiment_id, tags=all_tags, run_name=all_tags.get("mlflow.runName", search_key)
        )
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, v) for k, v in logged.items()])
        self.client.log_dict(run_id, dict(text), "search_params.json")
        logger.info("created parent run %s for search %r", run_id, search_key)
        return run_id

    def log_trial(self, parent_id: str, trial: TrialRecord) -> str:
        """Logs one trial as a child run of ``parent_id``, once.

        If a fully logged child for ``trial.trial_id`` exists, its id is returned and nothing
        is logged (it is only terminated if a crash left it RUNNING). A half-written child
        (no ``emotune.logged`` tag) is deleted and logged afresh.

        The child holds params (sampled params + ``method``), curves per epoch
        (``epoch/dev_<m>``, ``epoch/test_<m>``, ``train_loss``, ``lr`` with step = epoch),
        final metrics ``dev_<m>``, ``test_<m>``, ``trainable_params``, ``adapter_bytes``,
        ``best_epoch`` (None values skipped) and ends FINISHED, KILLED or FAILED for a
        COMPLETE, PRUNED or FAILED trial; the error text goes into tag ``emotune.error``, the
        run's data warnings into ``warnings.txt`` (their count in tag ``emotune.warnings``).
        A PRUNED trial also gets tag ``emotune.rung`` and metrics ``rung/<objective>`` (step =
        rung): where the scheduler stopped it (:func:`search.child_runs.rung_metrics`).

        Returns:
            The child run id.
        """
        done = self._logged_child(parent_id, trial)
        if done is not None:
            return done
        name = f"{trial.method}-{trial.number}" if trial.number is not None else trial.trial_id
        tags = child_tags(parent_id, trial)
        run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
        params = {**trial.params, "method": trial.method}
        self.client.log_batch(
            run_id,
            metrics=trial_metrics(trial) + rung_metrics(trial),
            params=[Param(k, clip(as_text(v), MAX_PARAM_CHARS)) for k, v in params.items()],
        )
        if trial.error and len(trial.error) > MAX_ERROR_CHARS:
            self.client.log_text(run_id, trial.error, "error.txt")
        if trial.warnings:
            self.client.log_text(run_id, "\n".join(trial.warnings) + "\n", "warnings.txt")
        self.client.set_tag(run_id, TAG_LOGGED, "true")
        self.client.set_terminated(run_id, END_STATUS[trial.state])
        return run_id

    def _logged_child(self, parent_id: str, trial: TrialRecord) -> str | None:
        """The fully logged child of a trial (ended if a crash left it RUNNING), or None.

        Half-written children of the trial are deleted on the way.
        """
        for run in self.children(parent_id, trial.trial_id):
            if run.data.tags.get(TAG_LOGGED) == "true":
                if run.info.status == "RUNNING":
                    self.client.set_terminated(run.info.run_id, END_STATUS[trial.state])
                return run.info.run_id
            logger.info(
                "replacing half-written child %s of trial %s", run.info.run_id, trial.trial_id
            )
            self.client.delete_run(run.info.run_id)
        return None

    def close_dangling(self, parent_id: str) -> list[str]:
        """Ends children left RUNNING (e.g. after a driver crash).

        A fully logged child gets the status of its recorded state; any other is marked
        FAILED with tag ``emotune.dangling=true`` (a later :meth:`log_trial` of that trial
        replaces it).

        Returns:
            Ids of the runs ended.
        """
        ended = []
        for run in self.children(parent_id):
            if run.info.status != "RUNNING":
                continue
            tags = run.data.tags
            if tags.get(TAG_LOGGED) == "true" and tags.get(TAG_STATE) in END_STATUS:
                status = END_STATUS[tags[TAG_STATE]]
            else:
                status = "FAILED"
                self.client.set_tag(run.info.run_id, "emotune.dangling", "true")
            self.client.set_terminated(run.info.run_id, status)
            ended.append(run.info.run_id)
        if ended:
            logger.warning("ended %d dangling child run(s) of %s", len(ended), parent_id)
        return ended

    def finish_parent(
        self,
        parent_id: str,
        trials: Sequence[TrialRecord],
        objectives: Sequence[str],
        out_dir: Path,
        folds: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Computes the front, tags children, logs the front artifacts and ends the parent.

        Trials not yet logged are logged first. Children of COMPLETE trials get tag
        ``pareto`` = ``true``/``false``. The parent gets artifacts ``pareto/pareto.{csv,
        parquet,png,html}`` (also written to ``out_dir``), metrics ``hypervolume`` (step = number
        of trials), ``n_trials``, ``n_complete``, ``n_pruned``, ``n_failed``, ``n_pareto`` and
        ends FINISHED. With ``folds`` (``--folds all``) only trials that finished every fold
        are on the front, and the nested estimate is logged (:meth:`_log_nested`).

        Returns:
            ``{"hypervolume": float, "front": [trial ids], "files": {ext: Path}}``, plus
            ``"nested_cv"`` (:func:`search.nested.nested_cv`) with ``folds``.
        """
        objectives = list(objectives)
        child = self._child_runs(parent_id, trials)
        df = front_table(trials, objectives, folds)
        for trial_id, on_front in zip(df["trial_id"], df["pareto"]):
            self.client.set_tag(child[trial_id], "pareto", "true" if on_front else "false")
        files = write_front(df, front_figures(df, objectives), Path(out_dir))
        for path in files.values():
            self.client.log_artifact(parent_id, str(path), "pareto")
        hv = front_hypervolume(df, objectives)
        front = [str(t) for t in df.loc[df["pareto"], "trial_id"]]
        tags = [
            RunTag("emotune.objectives", ",".join(objectives)),
            RunTag("emotune.front", clip(json.dumps(front), MAX_TAG_CHARS)),
        ]
        self.client.log_batch(parent_id, metrics=front_metrics(trials, hv, len(front)), tags=tags)
        nested = None if folds is None else self._log_nested(parent_id, nested_cv(trials, folds))
        self.client.set_terminated(parent_id, "FINISHED")
        logger.info(
            "search finished: %d trials, %d on the front, hypervolume %.4f",
            len(trials),
            len(front),
            hv,
        )
        out = {"hypervolume": hv, "front": front, "files": files}
        return out if nested is None else {**out, "nested_cv": nested}

    def _log_nested(self, parent_id: str, block: dict[str, Any]) -> dict[str, Any]:
        """Logs a ``nested_cv`` block on the parent: :func:`search.nested.nested_run_metrics`,
        tag ``emotune.nested_cv_trials`` (fold -> chosen trial) and ``nested_cv.json``."""
        chosen = {str(f["fold"]): f["trial_id"] for f in block["per_fold"]}
        tag = RunTag("emotune.nested_cv_trials", clip(json.dumps(chosen), MAX_TAG_CHARS))
        self.client.log_batch(parent_id, metrics=nested_metrics(block), tags=[tag])
        self.client.log_dict(parent_id, block, "nested_cv.json")
        return block

    def _child_runs(self, parent_id: str, trials: Sequence[TrialRecord]) -> dict[str, str]:
        """Trial id -> its child run id, logging the trials that have none yet."""
        logged = {
            r.data.tags.get(TAG_TRIAL): r
            for r in self.children(parent_id)
            if r.data.tags.get(TAG_LOGGED) == "true"
        }
        return {
            t.trial_id: logged[t.trial_id].info.run_id
            if t.trial_id in logged
            else self.log_trial(parent_id, t)
            for t in trials
        }

    def log_timing(self, parent_id: str, timing: dict[str, float]) -> None:
        """Logs a search's ``timing`` (see :func:`search.records.search_timing`) on its parent
        as ``timing_<key>`` metrics."""
        self.client.log_batch(parent_id, metrics=timing_metrics(timing))
