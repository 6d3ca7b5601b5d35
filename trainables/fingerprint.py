"""What a run trained on, so that a resumed or reused run is refused when any of it changed.

A run folder is resumed (``emotune train`` again, a Ray trial restarted, a cross-validation fold
reused) only when its fingerprint equals the one of the run asked for now. The fingerprint holds:

* ``config``: the run's :meth:`TrainConfig.result_dict` (every field that changes results);
* ``manifest_sha256``: the manifest file's content (same path, edited rows is a different run);
* ``labels``: the label map, position = class index of the head's outputs;
* ``backbone_sha256``: :meth:`Backbone.weights_digest` of the pre-trained weights;
* ``input_normalization``: the backbone's waveform normalisation and where it was decided
  (:class:`~trainables.backbones.InputNormalization`; null for Whisper). Only the value is
  compared. A fingerprint written before it was recorded counts as holding what the loader
  then chose (:attr:`~trainables.backbones.InputNormalization.legacy`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainables.backbones.normalization import PREPROCESSOR_FILE, InputNormalization
from trainables.config import TrainConfig

_FIELDS = ("config", "manifest_sha256", "labels", "backbone_sha256")  # in every fingerprint
_NORMALIZATION = "input_normalization"  # recorded since issue 12


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
    cfg: TrainConfig,
    labels: Sequence[str],
    backbone_sha256: str,
    normalization: InputNormalization | None = None,
) -> dict[str, Any]:
    """The fingerprint of a run of ``cfg`` (see the module docstring).

    ``normalization`` is :func:`~trainables.backbones.input_normalization` of the run's backbone
    (None for families without one).
    """
    return {
        "config": cfg.result_dict(),
        "manifest_sha256": file_sha256(cfg.manifest),
        "labels": list(labels),
        "backbone_sha256": backbone_sha256,
        _NORMALIZATION: None if normalization is None else dataclasses.asdict(normalization),
    }


def _normalised(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A stored fingerprint as today's code reads it: its config through today's
    :class:`TrainConfig` (fields added since it was written take their defaults; speed-only
    fields are dropped), and, when it recorded no input normalisation, the value the loader
    chose then for the backbone of ``new``."""
    out = dict(stored)
    try:
        out["config"] = TrainConfig.from_dict(stored["config"]).result_dict()
    except (TypeError, ValueError):
        pass
    now = _normalization(new)
    if _NORMALIZATION not in stored and now is not None:
        out[_NORMALIZATION] = {"normalize": now.legacy, "source": "older emotune's rule"}
    return out


def _normalization(fingerprint: dict[str, Any]) -> InputNormalization | None:
    """The input normalisation a fingerprint records (None: none, or unreadable)."""
    entry = fingerprint.get(_NORMALIZATION)
    if not isinstance(entry, dict) or not isinstance(entry.get("normalize"), bool):
        return None
    return InputNormalization(entry["normalize"], str(entry.get("source", "unknown")))


def differences(old: Any, new: dict[str, Any]) -> list[str]:
    """Human-readable reasons why a run with the stored fingerprint ``old`` is not run ``new``.

    Returns:
        One phrase per difference; empty when the runs are the same.
    """
    if not isinstance(old, dict) or any(k not in old for k in _FIELDS):
        return ["it was written by an older emotune that recorded no fingerprint"]
    if not isinstance(old["config"], dict):
        return ["its recorded configuration is unreadable"]
    old = _normalised(old, new)
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
    out.extend(_normalization_change(old, new))
    return out


def _normalization_change(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The input normalisation's difference, if any (``old`` as :func:`_normalised` gives it)."""
    before, now = _normalization(old), _normalization(new)
    if before is None and old.get(_NORMALIZATION) is not None:
        return [f"its recorded {_NORMALIZATION} is unreadable"]
    if (None if before is None else before.normalize) == (None if now is None else now.normalize):
        return []
    shown = [f"do_normalize {n.normalize} ({n.source})" if n else "none" for n in (before, now)]
    hint = ""
    if before is not None and now is not None and now.source == "family default":
        hint = (
            f"; a {PREPROCESSOR_FILE} with do_normalize {str(before.normalize).lower()} in the "
            "backbone's folder brings the old preprocessing back"
        )
    return [f"the backbone's input normalisation changed ({shown[0]} then, {shown[1]} now{hint})"]


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
