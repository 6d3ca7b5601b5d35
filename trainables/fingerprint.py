"""What a run trained on, so that a resumed or reused run is refused when any of it changed.

A run folder is resumed (``emotune train`` again, a Ray trial restarted, a cross-validation fold
reused) only when its fingerprint equals the one of the run asked for now. The fingerprint holds:

* ``config``: the run's :meth:`TrainConfig.result_dict` (every field that changes results);
* ``manifest_sha256``: the manifest file's content (same path, edited rows is a different run);
* ``labels``: the label map, position = class index of the head's outputs;
* ``backbone_sha256``: :meth:`Backbone.weights_digest` of the pre-trained weights.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainables.config import TrainConfig

_FIELDS = ("config", "manifest_sha256", "labels", "backbone_sha256")


def file_sha256(path: Path) -> str:
    """SHA-256 of a regular file's content (read in blocks).

    Raises:
        ValueError: ``path`` is not a regular file.
    """
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path} is not a regular file")
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_fingerprint(
    cfg: TrainConfig, labels: Sequence[str], backbone_sha256: str
) -> dict[str, Any]:
    """The fingerprint of a run of ``cfg`` (see the module docstring)."""
    return {
        "config": cfg.result_dict(),
        "manifest_sha256": file_sha256(cfg.manifest),
        "labels": list(labels),
        "backbone_sha256": backbone_sha256,
    }


def _normalised(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored fingerprint with its config read by today's :class:`TrainConfig` (fields added
    since it was written take their defaults; speed-only fields are dropped)."""
    try:
        config = TrainConfig.from_dict(stored["config"]).result_dict()
    except (TypeError, ValueError):
        return stored
    return {**stored, "config": config}


def differences(old: Any, new: dict[str, Any]) -> list[str]:
    """Human-readable reasons why a run with the stored fingerprint ``old`` is not run ``new``.

    Returns:
        One phrase per difference; empty when the runs are the same.
    """
    if not isinstance(old, dict) or any(k not in old for k in _FIELDS):
        return ["it was written by an older emotune that recorded no fingerprint"]
    if not isinstance(old["config"], dict):
        return ["its recorded configuration is unreadable"]
    old = _normalised(old)
    out = []
    if old["config"] != new["config"]:
        changed = sorted(
            k
            for k in {*old["config"], *new["config"]}
            if old["config"].get(k) != new["config"].get(k)
        )
        shown = ", ".join(
            f"{k}: {old['config'].get(k)!r} then, {new['config'].get(k)!r} now" for k in changed[:4]
        )
        out.append(f"it was trained with a different configuration ({shown})")
    if old["manifest_sha256"] != new["manifest_sha256"]:
        out.append(
            "the manifest's content changed (sha256 "
            f"{old['manifest_sha256'][:12]} then, {new['manifest_sha256'][:12]} now)"
        )
    if old["labels"] != new["labels"]:
        out.append(f"the label map changed ({old['labels']} then, {new['labels']} now)")
    if old["backbone_sha256"] != new["backbone_sha256"]:
        out.append(
            "the backbone's weights changed (sha256 "
            f"{old['backbone_sha256'][:12]} then, {new['backbone_sha256'][:12]} now)"
        )
    return out


def check_same_run(folder: Path, old: Any, new: dict[str, Any]) -> None:
    """Refuses to resume or reuse ``folder`` when it holds a different run.

    Raises:
        ValueError: the fingerprints differ; the message lists every difference.
    """
    reasons = differences(old, new)
    if reasons:
        raise ValueError(
            f"{folder} holds a different run, so it is not resumed: {'; '.join(reasons)}. "
            "Use a new --out (or delete that folder to start over)"
        )
