"""The one module that builds Ray Tune objects: Tuner + OptunaSearch + ASHA, per dataset.

Flow for each manifest: an Optuna study (SQLite under the dataset's search folder) samples a
method and its size, Ray Tune runs the trials (fractional CPUs/GPUs allowed), ASHA stops weak
trials early, and a driver-side callback records every finished trial to MLflow as a nested run.
Trials that ASHA stopped reach Optuna as PRUNED, never as complete trials with partial scores.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune import Callback, CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from search import storage as store
from search.pareto import TrialRecord
from search.preflight import check_search, trial_base
from search.ray_start import start_ray
from search.records import fetch_final, record_of, search_timing
from search.settings import OBJECTIVE_KEYS, SearchInterrupted, SearchSettings
from search.tracking import SearchTracker, default_tracking_uri
from spaces import SpaceConfig, define_by_run, to_train_config
from trainables import rundir
from trainables.folds import fold_values

log = logging.getLogger(__name__)

class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for trials that never sent their final report.

    Ray's OptunaSearch marks a trial stopped by ASHA as COMPLETE with whatever it last reported,
    which would put partially trained configurations on the Pareto front.
    """

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:  # lets search.json name each trial's Optuna number
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if result is not None and not error and not result.get("final", False):
            result = None  # the parent then records PRUNED (val is None and no error)
        super().on_trial_complete(trial_id, result=result, error=error)


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``--sampler`` for a budget of ``trials`` (also used by bench/)."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, trials // 3))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3)))


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
    ) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.parent_id, self.trials_dir = parent_id, trials_dir
        self.on_record = on_record
        self.seconds = 0.0  # driver time spent fetching and logging trials
        self._tracker: SearchTracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tracker": None, "on_record": None}

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
        record = record_of(trial.trial_id, trial.config, trial.last_result, error, folder)
        self._tracker.log_trial(self.parent_id, record)
        if self.on_record is not None:
            self.on_record(record)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trial, str(getattr(trial, "error_msg", None) or "trial raised"))


def max_epochs(space: SpaceConfig) -> int:
    """The most epochs any trial of ``space`` can run (ASHA's ``max_t``)."""
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
        if not settings.resume and _exists(settings):
            raise ValueError(
                f"search {settings.name} exists in {settings.storage}; pass --resume to "
                "continue it or a new --name"
            )
        init_ray(settings)
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        store.check_storage_for_cluster(settings.storage, nodes, settings.shared_storage)
        uri = settings.tracking_uri or default_tracking_uri(root)
        return [run_dataset(settings, Path(m), uri, on_record) for m in settings.manifests]


def _exists(settings: SearchSettings) -> bool:
    """A finished dataset in the local folder or (bucket storage) in the bucket."""
    if any(settings.root.glob("*/search.json")):
        return True
    return store.is_uri(settings.storage) and store.remote_exists(
        str(settings.storage), settings.name
    )


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
    remote = store.is_uri(settings.storage)
    own_store = tracking_uri == default_tracking_uri(settings.root)  # mirrored with a bucket
    if remote and settings.resume:
        store.download(str(settings.storage), settings.name, dataset, folder)
        if own_store:
            store.download_tracking(str(settings.storage), settings.name, settings.root)
    trials_dir = folder / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    base = trial_base(settings, manifest)
    tracker = SearchTracker(tracking_uri, settings.name)
    parent = tracker.parent_run(
        f"{settings.name}/{dataset}",
        params={
            "backbone": settings.backbone,
            "dataset": dataset,
            "manifest": str(manifest),
            "objectives": ",".join(settings.objectives),
            "sampler": settings.sampler,
            "trials": settings.trials,
            "space": json.dumps(settings.space.describe()),
        },
        tags={"emotune.dataset": dataset, "emotune.backbone": settings.backbone},
    )
    tracker.close_dangling(parent)  # children a crashed driver left RUNNING
    # Snapshot the experiment every few seconds (Tune's default waits >= 10 s), so a killed
    # driver loses little and never points at a checkpoint that was already rotated away.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    tuner = _tuner(settings, dataset, folder, trials_dir, base, tracking_uri, parent, on_record)
    fit_started = time.perf_counter()
    grid = tuner.fit()
    fit_seconds = time.perf_counter() - fit_started
    finalise_started = time.perf_counter()
    statuses = [t.status for t in grid._experiment_analysis.trials]  # noqa: SLF001
    if len(statuses) < settings.trials or any(s not in ("TERMINATED", "ERROR") for s in statuses):
        raise SearchInterrupted(
            f"search {settings.root} ({dataset}) was interrupted; its state is saved: "
            "run the same command with --resume to finish it"
        )

    study = optuna.load_study(study_name=_study_name(settings, dataset), storage=_study_url(folder))
    numbers = {t.user_attrs.get("ray_trial_id"): t.number for t in study.trials}
    records: list[TrialRecord] = []
    clocks: list[dict[str, Any]] = []
    for result in grid:
        metrics = result.metrics or {}
        clocks.append(metrics)
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
        )
        tracker.log_trial(parent, record)  # idempotent: fills in anything the callback missed
        records.append(record)
    summary = tracker.finish_parent(parent, records, list(settings.objectives), folder)
    out = {
        "dataset": dataset,
        "manifest": str(manifest.resolve()),
        "backbone": settings.backbone,
        "objectives": list(settings.objectives),
        "hypervolume": summary["hypervolume"],
        "front": summary["front"],
        "mlflow": {
            "tracking_uri": tracking_uri,
            "experiment_id": tracker.experiment_id,
            "parent_run_id": parent,
        },
        "trials": [
            {**r.to_dict(), "mlflow_run_id": tracker.child_run_id(parent, r.trial_id)}
            for r in records
        ],
    }
    logged = sum(cb.seconds for cb in _callbacks(tuner) if isinstance(cb, TrackingCallback))
    out["timing"] = search_timing(
        clocks,
        slots=min(settings.concurrency, settings.trials),
        wall_seconds=time.perf_counter() - started,
        fit_seconds=fit_seconds,
        logging_seconds=logged,
        finalise_seconds=time.perf_counter() - finalise_started,
    )
    tracker.log_timing(parent, out["timing"])
    (folder / "search.json").write_text(json.dumps(out, indent=2))
    if remote:
        store.upload(folder, str(settings.storage), settings.name, dataset)
        if own_store:
            store.upload_tracking(settings.root, str(settings.storage), settings.name)
    return out


def _callbacks(tuner: Tuner) -> list[Callback]:
    return list(tuner._local_tuner._run_config.callbacks or [])  # noqa: SLF001


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
    folds = fold_values(Path(base["manifest"])) if settings.all_folds else None
    # ASHA's clock: epochs, or finished folds when each trial is cross-validated.
    max_t = len(folds) if folds else max_epochs(settings.space)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=base, folds=folds),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    ray_path = store.ray_storage(settings.storage, settings.name, dataset)
    experiment = f"{ray_path}/tune"
    if settings.resume and Tuner.can_restore(experiment):
        log.info("resuming %s from %s", dataset, experiment)
        tuner = Tuner.restore(experiment, trainable=trainable, resume_errored=True)
        for cb in _callbacks(tuner):
            if isinstance(cb, TrackingCallback):
                cb.on_record = on_record  # not pickled with the experiment
        return tuner
    keys = [OBJECTIVE_KEYS[o] for o in settings.objectives]
    searcher = PruneAwareOptunaSearch(
        space=define_by_run(settings.space),
        metric=[k for k, _ in keys],
        mode=[m for _, m in keys],
        sampler=make_sampler(settings.sampler, settings.seed, settings.trials),
        storage=optuna.storages.RDBStorage(_study_url(folder)),
        study_name=_study_name(settings, dataset),
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        metric="dev_uar",
        mode="max",
        max_t=max_t,
        grace_period=min(settings.grace_period, max_t),
        reduction_factor=2,
    )
    return Tuner(
        trainable,
        tune_config=TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=settings.trials,
            max_concurrent_trials=settings.concurrency,
            reuse_actors=settings.reuse_actors,
        ),
        run_config=RunConfig(
            name="tune",
            storage_path=ray_path,
            verbose=0,
            failure_config=FailureConfig(max_failures=settings.max_failures),
            # Keep a few: a driver killed between Tune's state snapshots must still find the
            # checkpoint that its last snapshot names.
            checkpoint_config=CheckpointConfig(num_to_keep=4),
            callbacks=[
                TrackingCallback(tracking_uri, settings.name, parent, str(trials_dir), on_record)
            ],
        ),
    )
