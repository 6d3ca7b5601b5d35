"""Export the best adapter of a finished search: selection on dev, model card, MLflow registry.

``export_best(root, out)`` picks, for each dataset folder of a search root, the COMPLETE trial
with the best *dev* value of the objective (:mod:`search.selection`; test metrics are reported,
never used to choose), copies its adapter folder to ``out/<dataset>/``, writes a model card
(``README.md``) and the selection facts (``export.json``), and registers the folder in the
search's MLflow registry as ``emotune-<dataset>`` with the alias ``champion`` (see
:mod:`search.registration`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from search.card import model_card
from search.registration import ALIAS, model_name, register_export
from search.selection import export_objective, select_best
from trainables.export import CONFIG_FILE, WEIGHTS_FILE, read_adapter_spec
from trainables.untrusted import read_json_object

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
EXPORT_FILE = "export.json"
CARD_FILE = "README.md"


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
    obj = export_objective(objective)
    dataset = str(search.get("dataset") or folder.name)
    nested = search.get("nested_cv")
    return {
        "dataset": dataset,
        "model_name": model_name(dataset),
        "objective": objective,
        "objective_metric": obj.key,
        "larger_is_better": obj.larger_is_better,
        "max_params": max_params,
        "trials": len(search["trials"]),
        "candidates": sum(1 for t in search["trials"] if t.get("state") == "COMPLETE"),
        "search_root": str(root),
        "search_file": str(folder / SEARCH_FILE),
        "source_adapter": str(adapter),
        "adapter_meta": _adapter_meta(adapter / CONFIG_FILE),
        "trial": {k: v for k, v in trial.items() if k != "history"},
        # --folds all: the honest estimate of the search (the model card says which is which)
        "nested_cv": {k: v for k, v in nested.items() if k != "trials"} if nested else None,
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
        objective: one of :func:`search.selection.export_objectives` (see
            :func:`search.selection.select_best`).
        max_params: optional budget on trainable parameters.
        register: also register each export in the search's MLflow registry (when
            ``search.json`` has an ``mlflow`` section with a ``tracking_uri``).

    Raises:
        FileNotFoundError: no ``search.json`` under ``search_root`` or a trial's adapter missing.
        ValueError: a dataset has no trial to export (see :func:`search.selection.select_best`).
    """
    root, out = Path(search_root).resolve(), Path(out).resolve()
    plans = _plan(root, objective, max_params)
    return [_export(search, facts, out / facts["dataset"], register) for search, facts in plans]


def _plan(
    root: Path, objective: str, max_params: int | None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each dataset's ``search.json`` and the facts of its selected trial (nothing written)."""
    folders = _dataset_dirs(root)
    if not folders:
        raise FileNotFoundError(f"{root}: no {SEARCH_FILE} in it or in its sub-folders")
    plans = []
    for folder in folders:
        search = json.loads((folder / SEARCH_FILE).read_text())
        try:
            folds = (search.get("nested_cv") or {}).get("cv_folds")  # only full-CV trials
            trial = select_best(search.get("trials", []), objective, max_params, folds)
        except ValueError as err:
            raise ValueError(f"{folder / SEARCH_FILE}: {err}") from err
        plans.append((search, _facts(root, folder, search, trial, objective, max_params)))
    return plans


def _export(
    search: dict[str, Any], facts: dict[str, Any], dest: Path, register: bool
) -> ExportedAdapter:
    """Copies one dataset's selected adapter to ``dest`` with its card and facts, registered
    in the search's MLflow registry when asked and possible."""
    _replace_dir(Path(facts["source_adapter"]), dest)
    tracking = search.get("mlflow") or {}
    if register and not tracking.get("tracking_uri"):
        log.warning("%s: search.json has no mlflow tracking_uri; not registering", dest)
    elif register:
        facts["registered_model"] = facts["model_name"]
    (dest / CARD_FILE).write_text(model_card(facts, ALIAS))
    (dest / EXPORT_FILE).write_text(json.dumps(facts, indent=2, default=str))
    if facts["registered_model"]:
        facts["registered_version"] = register_export(dest, facts["dataset"], facts, tracking)
        (dest / EXPORT_FILE).write_text(json.dumps(facts, indent=2, default=str))
    trial = facts["trial"]
    log.info("exported trial %s to %s", trial["trial_id"], dest)
    return ExportedAdapter(
        dataset=facts["dataset"],
        path=dest,
        trial_id=str(trial["trial_id"]),
        method=str(trial["method"]),
        dev_uar=float(trial["dev"]["uar"]),
        test_uar=float((trial.get("test") or {}).get("uar", math.nan)),
        trainable_params=int(trial["trainable_params"]),
        registered_version=facts["registered_version"],
    )
