"""The one module that runs Ray Tune: a Tuner per dataset, with the searcher and scheduler of
:mod:`search.searcher` and :mod:`search.schedulers`.

Flow for each manifest: an Optuna study (SQLite under the dataset's search folder) samples a
method and its size, Ray Tune runs the trials (fractional CPUs/GPUs allowed), the scheduler
(MO-ASHA for several objectives, ASHA for one) stops weak trials early, and a driver-side
callback records every finished trial to MLflow as a nested run. Trials stopped early reach
Optuna as PRUNED, never as complete trials with partial scores.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune import (
    Callback,
    CheckpointConfig,
    FailureConfig,
    ResultGrid,
    RunConfig,
    TuneConfig,
    Tuner,
)

from search import storage as store
from search.errors import SearchInterrupted
from search.live_front import HypervolumeCurve
from search.pareto import TrialRecord
from search.preflight import check_search, trial_base
from search.ray_start import start_ray
from search.records import (
    collect_records,
    fetch_final,
    record_of,
    search_summary,
    search_timing,
)
from search.schedulers import make_scheduler
from search.searcher import make_searcher, sampler_settings
from search.settings import SearchSettings
from search.tracking import SearchTracker, default_tracking_uri
from spaces import SpaceConfig, to_train_config
from trainables import rundir
from trainables.data.manifest import fold_values

log = logging.getLogger(__name__)


def _trial(config: dict[str, Any], base: dict[str, Any], folds: list[int] | None) -> None:
    """Body of one Ray trial (runs on a worker, any node)."""
    started = time.perf_counter()
    # Mostly imported already: a fresh worker imports torch & co. while unpickling this function.
    from trainables.ray_entry import run_trial, run_trial_folds

    imports = time.perf_counter() - started
    cfg = to_train_config(config, base)
    if folds:
        run_trial_folds(cfg, folds, started=started, import_seconds=imports)
    else:
        run_trial(cfg, started=started, import_seconds=imports)


class TrackingCallback(Callback):
    """Driver-side: logs each finished trial as a nested MLflow run (only the driver talks to
    MLflow). Picklable (Tune saves it with the experiment): the client is created lazily."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        parent_id: str,
        trials_dir: str,
        on_record: Callable[[TrialRecord], None] | None = None,
        objectives: Sequence[str] = ("uar", "params"),
        folds: Sequence[int] | None = None,
    ) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.parent_id, self.trials_dir = parent_id, trials_dir
        self.on_record = on_record
        self.objectives = tuple(objectives)
        self.curve = HypervolumeCurve(objectives, folds)  # pickled with the experiment
        self.seconds = 0.0  # driver time spent fetching and logging trials
        self._tracker: SearchTracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tracker": None, "on_record": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A search saved before the hypervolume curve existed resumes with all objectives.
        self.objectives: tuple[str, ...] | None = None
        self.curve = HypervolumeCurve(("uar", "params"))
        self.__dict__.update(state)

    def _log(self, trial: Any, error: str | None) -> None:
        started = time.perf_counter()
        try:
            self._log_now(trial, error)
        finally:
            self.seconds += time.perf_counter() - started

    def _log_now(self, trial: Any, error: str | None) -> None:
        if self._tracker is None:
            self._tracker = SearchTracker(self.tracking_uri, self.experiment)
        folder = Path(self.trials_dir) / trial.trial_id
        if error is None:
            fetch_final(trial.checkpoint, folder)
        record = record_of(
            trial.trial_id,
            trial.config,
            trial.last_result,
            error,
            folder,
            objectives=self.objectives,
        )
        self._tracker.log_trial(self.parent_id, record)
        point = self.curve.add(record)
        if point is not None:
            step, hv = point
            self._tracker.client.log_metric(self.parent_id, "hypervolume", hv, step=step)
        if self.on_record is not None:
            self.on_record(record)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trial, str(getattr(trial, "error_msg", None) or "trial raised"))


def max_epochs(space: SpaceConfig) -> int:
    """The most epochs any trial of ``space`` can run (the scheduler's ``max_t``)."""
    from spaces.params import Choice, Fixed, Range

    e = space.epochs
    if isinstance(e, Fixed):
        return int(e.value)
    if isinstance(e, Range):
        return int(e.high)
    assert isinstance(e, Choice)
    return int(max(e.choices))


def dataset_name(manifest: Path) -> str:
    """``corpus/manifest.parquet`` -> ``corpus``; ``iemocap.parquet`` -> ``iemocap``."""
    manifest = Path(manifest).resolve()
    return manifest.parent.name if manifest.stem == "manifest" else manifest.stem


def init_ray(settings: SearchSettings) -> None:
    """Connects to ``--address`` (or RAY_ADDRESS) or starts a local Ray on loopback only, whose
    trial workers import the installed emotune (see :mod:`search.ray_start`)."""
    start_ray(settings.address)


def run_search(
    settings: SearchSettings, on_record: Callable[[TrialRecord], None] | None = None
) -> list[dict[str, Any]]:
    """Runs one search per manifest; returns each dataset's summary (also in search.json).

    The manifests, the space and emotune's own packages are checked before anything is
    written or Ray starts; the search's folder is then locked for the whole search (a second
    search on it, resumed or not, is refused while this one runs).

    Raises:
        FolderBusyError: another process is running this search.
        ValueError: the search exists (without ``resume``), or a check of
            :func:`search.preflight.check_search` failed.
    """
    check_search(settings)  # before anything is written, so a refused search leaves nothing
    with rundir.owned(settings.root, "search", "search") as root:
        if not settings.resume and store.search_exists(
            settings.storage, settings.name, settings.root
        ):
            raise ValueError(
                f"search {settings.name} exists in {settings.storage}; pass --resume to "
                "continue it or a new --name"
            )
        init_ray(settings)
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        store.check_storage_for_cluster(settings.storage, nodes, settings.shared_storage)
        uri = settings.tracking_uri or default_tracking_uri(root)
        return [run_dataset(settings, Path(m), uri, on_record) for m in settings.manifests]


def run_dataset(
    settings: SearchSettings,
    manifest: Path,
    tracking_uri: str,
    on_record: Callable[[TrialRecord], None] | None = None,
) -> dict[str, Any]:
    """One dataset's search: study, Tuner, MLflow parent, Pareto front, search.json."""
    started = time.perf_counter()
    dataset = dataset_name(manifest)
    folder = settings.root / dataset
    own_store = tracking_uri == default_tracking_uri(settings.root)  # mirrored with a bucket
    if settings.resume:
        store.pull_dataset(settings.storage, settings.name, dataset, settings.root, own_store)
    trials_dir = folder / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    base = trial_base(settings, manifest)
    tracker = SearchTracker(tracking_uri, settings.name)
    parent = _open_parent(tracker, settings, dataset, manifest)
    # Snapshot the experiment every few seconds (Tune's default waits >= 10 s), so a killed
    # driver loses little and never points at a checkpoint that was already rotated away.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    tuner = _tuner(settings, dataset, folder, trials_dir, base, tracking_uri, parent, on_record)
    fit_started = time.perf_counter()
    grid = tuner.fit()
    fit_seconds = time.perf_counter() - fit_started
    finalise_started = time.perf_counter()
    _check_finished(grid, settings, dataset)
    numbers = _trial_numbers(settings, dataset, folder)
    # Logging is idempotent: it fills in anything the callback missed.
    records, reports = collect_records(
        grid, trials_dir, numbers, partial(tracker.log_trial, parent), objectives=settings.objectives
    )
    folds = fold_values(manifest) if settings.all_folds else None  # as the trials ran them
    summary = tracker.finish_parent(parent, records, list(settings.objectives), folder, folds)
    out = search_summary(settings, dataset, manifest, summary, records, tracker, parent)
    out["timing"] = search_timing(
        reports,
        slots=min(settings.concurrency, settings.trials),
        wall_seconds=time.perf_counter() - started,
        fit_seconds=fit_seconds,
        logging_seconds=_logging_seconds(tuner),
        finalise_seconds=time.perf_counter() - finalise_started,
    )
    tracker.log_timing(parent, out["timing"])
    (folder / "search.json").write_text(json.dumps(out, indent=2))
    store.push_dataset(settings.root, settings.storage, settings.name, dataset, own_store)
    return out


def _open_parent(
    tracker: SearchTracker, settings: SearchSettings, dataset: str, manifest: Path
) -> str:
    """The dataset's MLflow parent run (the same one on resume), its dangling children ended."""
    parent = tracker.parent_run(
        f"{settings.name}/{dataset}",
        params={
            "backbone": settings.backbone,
            "dataset": dataset,
            "manifest": str(manifest),
            "objectives": ",".join(settings.objectives),
            "sampler": settings.sampler,
            "scheduler": settings.scheduler_name,
            "grace_period": settings.grace_period,
            "reduction_factor": settings.reduction_factor,
            "trials": settings.trials,
            "space": json.dumps(settings.space.describe()),
            **{f"sampler.{k}": v for k, v in sampler_settings(settings).items()},
        },
        tags={"emotune.dataset": dataset, "emotune.backbone": settings.backbone},
    )
    tracker.close_dangling(parent)  # children a crashed driver left RUNNING
    return parent


def _check_finished(grid: ResultGrid, settings: SearchSettings, dataset: str) -> None:
    """Raises :class:`SearchInterrupted` unless every trial of the budget ended."""
    statuses = [t.status for t in grid._experiment_analysis.trials]  # noqa: SLF001
    if len(statuses) < settings.trials or any(s not in ("TERMINATED", "ERROR") for s in statuses):
        raise SearchInterrupted(
            f"search {settings.root} ({dataset}) was interrupted; its state is saved: "
            "run the same command with --resume to finish it"
        )


def _trial_numbers(settings: SearchSettings, dataset: str, folder: Path) -> dict[Any, int]:
    """Ray trial id -> the Optuna trial number (from the study's user attributes)."""
    study = optuna.load_study(study_name=_study_name(settings, dataset), storage=_study_url(folder))
    return {t.user_attrs.get("ray_trial_id"): t.number for t in study.trials}


def _callbacks(tuner: Tuner) -> list[Callback]:
    return list(tuner._local_tuner._run_config.callbacks or [])  # noqa: SLF001


def _logging_seconds(tuner: Tuner) -> float:
    """Driver time the tracking callback spent while the trials ran."""
    return sum(cb.seconds for cb in _callbacks(tuner) if isinstance(cb, TrackingCallback))


def _study_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'study.db'}"


def _study_name(settings: SearchSettings, dataset: str) -> str:
    return f"{settings.name}-{dataset}"


def _tuner(
    settings: SearchSettings,
    dataset: str,
    folder: Path,
    trials_dir: Path,
    base: dict[str, Any],
    tracking_uri: str,
    parent: str,
    on_record: Callable[[TrialRecord], None] | None,
) -> Tuner:
    """A new Tuner for the dataset, or (``--resume``) the saved one restored."""
    folds = fold_values(Path(base["manifest"])) if settings.all_folds else None
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=base, folds=folds),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    ray_path = store.ray_storage(settings.storage, settings.name, dataset)
    experiment = f"{ray_path}/tune"
    if settings.resume and Tuner.can_restore(experiment):
        return _restored(experiment, trainable, dataset, on_record)
    # The scheduler's clock: epochs, or finished folds when each trial is cross-validated.
    max_t = len(folds) if folds else max_epochs(settings.space)
    callback = TrackingCallback(
        tracking_uri, settings.name, parent, str(trials_dir), on_record, settings.objectives, folds
    )
    return Tuner(
        trainable,
        tune_config=TuneConfig(
            search_alg=make_searcher(
                settings, _study_name(settings, dataset), _study_url(folder)
            ),
            scheduler=make_scheduler(settings, max_t),
            num_samples=settings.trials,
            max_concurrent_trials=settings.concurrency,
            reuse_actors=settings.reuse_actors,
        ),
        run_config=_run_config(ray_path, settings.max_failures, callback),
    )


def _restored(
    experiment: str,
    trainable: Any,
    dataset: str,
    on_record: Callable[[TrialRecord], None] | None,
) -> Tuner:
    """The saved Tuner of an interrupted search, its tracking callback given ``on_record``."""
    log.info("resuming %s from %s", dataset, experiment)
    tuner = Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    for cb in _callbacks(tuner):
        if isinstance(cb, TrackingCallback):
            cb.on_record = on_record  # not pickled with the experiment
    return tuner


def _run_config(ray_path: str, max_failures: int, callback: TrackingCallback) -> RunConfig:
    return RunConfig(
        name="tune",
        storage_path=ray_path,
        verbose=0,
        failure_config=FailureConfig(max_failures=max_failures),
        # Keep a few: a driver killed between Tune's state snapshots must still find the
        # checkpoint that its last snapshot names.
        checkpoint_config=CheckpointConfig(num_to_keep=4),
        callbacks=[callback],
    )
