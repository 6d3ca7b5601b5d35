"""Export the best adapter of a finished search: selection on dev, model card, MLflow registry.

``export_best(root, out)`` picks, for each dataset folder of a search root, the COMPLETE trial
with the best *dev* value of the objective (test metrics are reported, never used to choose),
copies its adapter folder to ``out/<dataset>/``, writes a model card (``README.md``) and the
selection facts (``export.json``), and registers the folder in the search's MLflow registry as
``emotune-<dataset>`` with the alias ``champion`` (MLflow 3: aliases, not stages).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from search.card import model_card
from trainables.export import CONFIG_FILE, WEIGHTS_FILE, read_adapter_spec
from trainables.untrusted import read_json_object

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
EXPORT_FILE = "export.json"
CARD_FILE = "README.md"
ALIAS = "champion"
# objective name -> (dev metric key, True when larger is better)
OBJECTIVES: dict[str, tuple[str, bool]] = {
    "uar": ("uar", True),
    "wa": ("wa", True),
    "macro_f1": ("macro_f1", True),
    "fairness": ("uar_gap_gender", False),
}
# The pyfunc model, logged as code (MLflow "models from code"): no pickle in the registry.
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
_RUNTIME_PACKAGES = ("torch", "transformers", "peft", "safetensors", "soundfile", "soxr", "numpy")


@dataclass(frozen=True)
class ExportedAdapter:
    """One exported adapter.

    Attributes:
        dataset: name of the dataset folder in the search root.
        path: the export folder ``out/<dataset>``.
        trial_id: the selected trial.
        method: its PEFT method.
        dev_uar: its dev UAR (at its best epoch).
        test_uar: its test UAR (same epoch; reported, not used for selection).
        trainable_params: trainable parameter count (method + head).
        registered_version: MLflow model version of ``emotune-<dataset>``, or None.
    """

    dataset: str
    path: Path
    trial_id: str
    method: str
    dev_uar: float
    test_uar: float
    trainable_params: int
    registered_version: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for the CLI's output)."""
        return {**asdict(self), "path": str(self.path)}


def model_name(dataset: str) -> str:
    """Registered model name of a dataset's champion adapter."""
    return f"emotune-{dataset}"


def _dataset_dirs(root: Path) -> list[Path]:
    if (root / SEARCH_FILE).is_file():
        return [root]  # a single dataset folder was given
    return sorted(p.parent for p in root.glob(f"*/{SEARCH_FILE}"))


def resolve_search(name_or_path: str, storage: Path = Path("runs/search")) -> Path:
    """Finds a search root by path or by name under ``storage``.

    Args:
        name_or_path: a search root folder (holding ``<dataset>/search.json``) or a search name.
        storage: where named searches live (``<storage>/<name>``).

    Returns:
        The resolved absolute search root.

    Raises:
        FileNotFoundError: neither candidate holds a search; the message lists what was tried.
    """
    tried = [Path(name_or_path).expanduser(), Path(storage).expanduser() / name_or_path]
    for candidate in tried:
        if candidate.is_dir() and _dataset_dirs(candidate):
            return candidate.resolve()
    known = (
        sorted(p.name for p in Path(storage).iterdir() if p.is_dir() and _dataset_dirs(p))
        if Path(storage).is_dir()
        else []
    )
    raise FileNotFoundError(
        f"no search {name_or_path!r}: tried "
        + ", ".join(f"{p} (no */{SEARCH_FILE})" for p in tried)
        + (f"; searches in {storage}: {', '.join(known)}" if known else f"; none in {storage}")
    )


def _dev_value(trial: dict[str, Any], key: str) -> float | None:
    value = (trial.get("dev") or {}).get(key)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def select_best(
    trials: list[dict[str, Any]], objective: str = "uar", max_params: int | None = None
) -> dict[str, Any]:
    """Chooses the trial to export from dev metrics only.

    Candidates are COMPLETE trials with an ``adapter_dir`` and a finite dev value of the
    objective, with ``trainable_params <= max_params`` when a budget is given. The best has the
    highest dev UAR / WA / macro-F1 (``uar``, ``wa``, ``macro_f1``) or the lowest dev
    per-gender UAR gap (``fairness``); ties go to fewer trainable parameters, then to the
    earlier trial. Test metrics are never read.

    Raises:
        ValueError: unknown objective, or no trial qualifies (the message says why).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")
    key, larger_is_better = OBJECTIVES[objective]
    complete = [t for t in trials if t.get("state") == "COMPLETE" and t.get("adapter_dir")]
    if not complete:
        states: dict[str, int] = {}
        for t in trials:
            states[str(t.get("state"))] = states.get(str(t.get("state")), 0) + 1
        raise ValueError(
            f"no COMPLETE trial with an adapter among {len(trials)} trial(s) (states: {states})"
        )
    scored = [t for t in complete if _dev_value(t, key) is not None]
    if not scored:
        raise ValueError(f"no COMPLETE trial has a finite dev {key} (objective {objective!r})")
    if max_params is not None:
        within = [t for t in scored if int(t["trainable_params"]) <= max_params]
        if not within:
            smallest = min(scored, key=lambda t: int(t["trainable_params"]))
            raise ValueError(
                f"no COMPLETE trial has <= {max_params:,} trainable params; the smallest is "
                f"trial {smallest['trial_id']} with {int(smallest['trainable_params']):,}"
            )
        scored = within
    sign = -1.0 if larger_is_better else 1.0

    def rank(t: dict[str, Any]) -> tuple[float, int, int]:
        return (sign * _dev_value(t, key), int(t["trainable_params"]), int(t.get("number") or 0))

    return min(scored, key=rank)


def _replace_dir(src: Path, dst: Path) -> None:
    """Copies ``src`` to ``dst``; an older export at ``dst`` is replaced, anything else kept."""
    if dst.exists():
        ours = (dst / EXPORT_FILE).is_file() or (dst / CONFIG_FILE).is_file()
        if not ours and any(dst.iterdir()):
            raise FileExistsError(f"{dst} exists and is not an emotune export; not replacing it")
    staging = dst.with_name(f".{dst.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    shutil.rmtree(dst, ignore_errors=True)
    staging.rename(dst)


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


def register_export(
    export_dir: Path, dataset: str, facts: dict[str, Any], tracking: dict[str, Any]
) -> int:
    """Logs ``export_dir`` as a pyfunc model and makes it ``models:/emotune-<dataset>@champion``.

    The model is logged in a run ``export-<dataset>`` under the search's parent run, then a new
    version of the registered model is created from it and the alias moved to that version.

    Returns:
        The new model version.
    """
    uri, name, trial = tracking["tracking_uri"], model_name(dataset), facts["trial"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version_tags = {"emotune.dataset": dataset, "emotune.trial_id": str(trial["trial_id"])}
    tags = dict(version_tags)
    if tracking.get("parent_run_id"):
        tags["mlflow.parentRunId"] = tracking["parent_run_id"]
    if trial.get("mlflow_run_id"):
        tags["emotune.trial_run_id"] = trial["mlflow_run_id"]
    with (
        _tracking_uri(uri),
        mlflow.start_run(
            experiment_id=tracking.get("experiment_id"), run_name=f"export-{dataset}", tags=tags
        ) as run,
    ):
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
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={"adapter": str(export_dir)},
                signature=ModelSignature(inputs=Schema([ColSpec("string", "path")])),
                pip_requirements=_requirements(),  # given, so MLflow does not probe imports
            )
        # The registry resolves the logged model through the fluent tracking URI.
        try:
            client.create_registered_model(name, description=f"emotune champion for {dataset}")
        except MlflowException as err:  # it exists after the first export
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(
            name,
            source=info.model_uri,
            run_id=run.info.run_id,
            tags=version_tags,
            model_id=info.model_id,
            description=f"trial {trial['trial_id']}: best dev {facts['objective_metric']}",
        )
    client.set_registered_model_alias(name, ALIAS, version.version)
    log.info("registered %s version %s as @%s", name, version.version, ALIAS)
    return int(version.version)


def _adapter_meta(path: Path) -> dict[str, Any]:
    """A trial's ``emotune.json``, read and checked like ``load_adapter`` does."""
    meta = read_json_object(path, "adapter config")
    read_adapter_spec(meta, path)
    return meta


def _facts(
    root: Path,
    folder: Path,
    search: dict[str, Any],
    trial: dict[str, Any],
    objective: str,
    max_params: int | None,
) -> dict[str, Any]:
    adapter = Path(trial["adapter_dir"])
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (adapter / name).is_file():
            raise FileNotFoundError(f"trial {trial['trial_id']}: {adapter / name} is missing")
    key, larger = OBJECTIVES[objective]
    dataset = str(search.get("dataset") or folder.name)
    return {
        "dataset": dataset,
        "model_name": model_name(dataset),
        "objective": objective,
        "objective_metric": key,
        "larger_is_better": larger,
        "max_params": max_params,
        "trials": len(search["trials"]),
        "candidates": sum(1 for t in search["trials"] if t.get("state") == "COMPLETE"),
        "search_root": str(root),
        "search_file": str(folder / SEARCH_FILE),
        "source_adapter": str(adapter),
        "adapter_meta": _adapter_meta(adapter / CONFIG_FILE),
        "trial": {k: v for k, v in trial.items() if k != "history"},
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "registered_model": None,
        "registered_version": None,
    }


def export_best(
    search_root: Path,
    out: Path,
    objective: str = "uar",
    max_params: int | None = None,
    register: bool = True,
) -> list[ExportedAdapter]:
    """Exports the best trial of every dataset of a search.

    Writes ``out/<dataset>/`` = the trial's adapter folder + ``README.md`` (model card) +
    ``export.json`` (selection facts), replacing an older export there. Every dataset is
    selected before anything is written, so a dataset without a candidate fails the call early.

    Args:
        search_root: a search root (``<dataset>/search.json`` folders) or one dataset folder.
        out: export root.
        objective: ``uar``, ``wa``, ``macro_f1`` or ``fairness`` (see :func:`select_best`).
        max_params: optional budget on trainable parameters.
        register: also register each export in the search's MLflow registry (when
            ``search.json`` has an ``mlflow`` section with a ``tracking_uri``).

    Raises:
        FileNotFoundError: no ``search.json`` under ``search_root`` or a trial's adapter missing.
        ValueError: a dataset has no trial to export (see :func:`select_best`).
    """
    root, out = Path(search_root).resolve(), Path(out).resolve()
    folders = _dataset_dirs(root)
    if not folders:
        raise FileNotFoundError(f"{root}: no {SEARCH_FILE} in it or in its sub-folders")
    plans = []
    for folder in folders:
        search = json.loads((folder / SEARCH_FILE).read_text())
        try:
            trial = select_best(search.get("trials", []), objective, max_params)
        except ValueError as err:
            raise ValueError(f"{folder / SEARCH_FILE}: {err}") from err
        plans.append((search, _facts(root, folder, search, trial, objective, max_params)))

    exported = []
    for search, facts in plans:
        trial, dest = facts["trial"], out / facts["dataset"]
        _replace_dir(Path(facts["source_adapter"]), dest)
        tracking = search.get("mlflow") or {}
        version = None
        if register and not tracking.get("tracking_uri"):
            log.warning("%s: search.json has no mlflow tracking_uri; not registering", dest)
        elif register:
            facts["registered_model"] = facts["model_name"]
        (dest / CARD_FILE).write_text(model_card(facts, ALIAS))
        (dest / EXPORT_FILE).write_text(json.dumps(facts, indent=2, default=str))
        if facts["registered_model"]:
            version = register_export(dest, facts["dataset"], facts, tracking)
            facts["registered_version"] = version
            (dest / EXPORT_FILE).write_text(json.dumps(facts, indent=2, default=str))
        log.info("exported trial %s to %s", trial["trial_id"], dest)
        exported.append(
            ExportedAdapter(
                dataset=facts["dataset"],
                path=dest,
                trial_id=str(trial["trial_id"]),
                method=str(trial["method"]),
                dev_uar=float(trial["dev"]["uar"]),
                test_uar=float((trial.get("test") or {}).get("uar", math.nan)),
                trainable_params=int(trial["trainable_params"]),
                registered_version=version,
            )
        )
    return exported
