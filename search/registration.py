"""The MLflow registry side of ``emotune export``: an exported adapter as a pyfunc model version.

:func:`register_export` logs an export folder as an MLflow "models from code" pyfunc (the code
is :mod:`search.mlflow_model`; no pickle) in a run ``export-<dataset>`` under the search's
parent run, creates a new version of ``emotune-<dataset>`` from it and moves the alias
``champion`` there (MLflow 3: aliases, not stages).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

log = logging.getLogger(__name__)

ALIAS = "champion"
# The pyfunc model, logged as code (MLflow "models from code"): no pickle in the registry.
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
_RUNTIME_PACKAGES = ("torch", "transformers", "peft", "safetensors", "soundfile", "soxr", "numpy")


def model_name(dataset: str) -> str:
    """Registered model name of a dataset's champion adapter."""
    return f"emotune-{dataset}"


def _requirements() -> list[str]:
    reqs = [r for r in [emotune_requirement()] if r]
    for name in (*_RUNTIME_PACKAGES, "mlflow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            reqs.append(f"{name}=={metadata.version(name)}")
    return reqs


def emotune_requirement() -> str | None:
    """The pip requirement that reinstalls the emotune this process runs, or None.

    A bare ``emotune==0.1.0`` could resolve to someone else's package on an index: an emotune
    installed from a folder, archive URL or VCS checkout is pinned by a PEP 508 direct
    reference built from its PEP 610 ``direct_url.json`` (``emotune @ file:///...``).
    """
    # A source tree's stale ``emotune.egg-info`` may shadow the installed metadata on
    # sys.path; the installation that records how it was installed is the one to pin.
    dists = list(metadata.distributions(name="emotune"))
    for dist in dists:
        text = dist.read_text("direct_url.json")
        if text:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                return f"emotune @ {_direct_reference(json.loads(text))}"
    return f"emotune=={dists[0].version}" if dists else None


def _direct_reference(info: dict[str, Any]) -> str:
    """The URL of a PEP 508 direct reference from a PEP 610 ``direct_url.json`` object."""
    url = str(info["url"])
    if "vcs_info" in info:
        vcs = info["vcs_info"]
        url = f"{vcs['vcs']}+{url}@{vcs['commit_id']}"
    elif "archive_info" in info:
        hashes = info["archive_info"].get("hashes") or {}
        if "sha256" in hashes:
            url += f"#sha256={hashes['sha256']}"
    if info.get("subdirectory"):
        url += ("&" if "#" in url else "#") + f"subdirectory={info['subdirectory']}"
    return url


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Points the fluent MLflow API at ``uri`` for a block, then restores it."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _version_tags(dataset: str, trial: Mapping[str, Any]) -> dict[str, str]:
    return {"emotune.dataset": dataset, "emotune.trial_id": str(trial["trial_id"])}


def _run_tags(
    dataset: str, trial: Mapping[str, Any], tracking: Mapping[str, Any]
) -> dict[str, str]:
    """The export run's tags: the version's, its parent (the search) and the trial's run."""
    tags = _version_tags(dataset, trial)
    if tracking.get("parent_run_id"):
        tags["mlflow.parentRunId"] = tracking["parent_run_id"]
    if trial.get("mlflow_run_id"):
        tags["emotune.trial_run_id"] = trial["mlflow_run_id"]
    return tags


def _log_model(export_dir: Path, facts: Mapping[str, Any]) -> ModelInfo:
    """Logs the selection params, the trial's dev/test metrics and the pyfunc model in the
    active run."""
    trial = facts["trial"]
    mlflow.log_params({k: facts[k] for k in ("objective", "max_params", "source_adapter")})
    mlflow.log_metrics(
        {
            f"{split}_{k}": float(v)
            for split in ("dev", "test")
            for k, v in (trial.get(split) or {}).items()
            if isinstance(v, int | float)
        }
    )
    with warnings.catch_warnings():  # the signature is explicit; an example adds nothing
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"adapter": str(export_dir)},
            signature=ModelSignature(inputs=Schema([ColSpec("string", "path")])),
            pip_requirements=_requirements(),  # given, so MLflow does not probe imports
        )


def _new_version(
    client: MlflowClient, dataset: str, info: ModelInfo, run_id: str, facts: Mapping[str, Any]
) -> ModelVersion:
    """A new version of the dataset's registered model (created the first time) from ``info``."""
    name, trial = model_name(dataset), facts["trial"]
    try:
        client.create_registered_model(name, description=f"emotune champion for {dataset}")
    except MlflowException as err:  # it exists after the first export
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.create_model_version(
        name,
        source=info.model_uri,
        run_id=run_id,
        tags=_version_tags(dataset, trial),
        model_id=info.model_id,
        description=f"trial {trial['trial_id']}: best dev {facts['objective_metric']}",
    )


def register_export(
    export_dir: Path, dataset: str, facts: dict[str, Any], tracking: dict[str, Any]
) -> int:
    """Logs ``export_dir`` as a pyfunc model and makes it ``models:/emotune-<dataset>@champion``.

    The model is logged in a run ``export-<dataset>`` under the search's parent run, then a new
    version of the registered model is created from it and the alias moved to that version.

    Returns:
        The new model version.
    """
    uri, name = tracking["tracking_uri"], model_name(dataset)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with (
        _tracking_uri(uri),
        mlflow.start_run(
            experiment_id=tracking.get("experiment_id"),
            run_name=f"export-{dataset}",
            tags=_run_tags(dataset, facts["trial"], tracking),
        ) as run,
    ):
        info = _log_model(export_dir, facts)
        # The registry resolves the logged model through the fluent tracking URI.
        version = _new_version(client, dataset, info, run.info.run_id, facts)
    client.set_registered_model_alias(name, ALIAS, version.version)
    log.info("registered %s version %s as @%s", name, version.version, ALIAS)
    return int(version.version)
