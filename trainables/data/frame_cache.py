"""A split's entry in the feature cache (:mod:`trainables.data.cache`) for the frame-space data
of :mod:`trainables.data.frames`.

:func:`key_parts` lists everything the features depend on (hashed into the entry's key),
:func:`entry_meta` the ``index.json`` fields written beside the features, and
:func:`entry_rows` reads those fields back onto the manifest rows of the split.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from trainables.data.cache import FeatureTable, file_digests
from trainables.data.dataset import ClipSet, SkippedFile
from trainables.data.feature_sources import FrontendExtractor
from trainables.data.manifest import Utterance


def _decoder_versions() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return {
        "soundfile": version("soundfile"),
        "libsndfile": str(getattr(sf, "__libsndfile_version__", "")),
        "soxr": version("soxr"),
        "quantise": "int16",
    }


def key_parts(
    utts: Sequence[Utterance],
    extract: FrontendExtractor,
    source: str,
    seconds: tuple[float, float | None],
    cache_dtype: str,
    cache_root: Path,
) -> dict[str, object]:
    """Everything a split's features depend on, for :func:`trainables.data.cache.cache_key`.

    Args:
        utts: the split's rows; their files' contents are hashed (memoised under
            ``cache_root``).
        extract: the front end and the device it runs on.
        source: the waveform crop the front end sees (``center``, ``first`` or ``full``).
        seconds: that crop's length and the evaluation-window length (None: no windows).
        cache_dtype: storage dtype of the features.
        cache_root: the cache's folder.
    """
    source_seconds, eval_seconds = seconds
    sr = extract.backbone.sample_rate
    return {
        "frontend": extract.backbone.frontend_digest(),
        "device": extract.device.type,
        "dtype": cache_dtype,
        "crop": {"source": source, "samples": round(source_seconds * sr)},
        "eval_windows": None if eval_seconds is None else max(1, round(eval_seconds * sr)),
        "decoder": _decoder_versions(),
        "audio": file_digests([Path(u.path) for u in utts], cache_root),
    }


def entry_meta(
    utts: Sequence[Utterance], clips: ClipSet, inputs: dict[str, object]
) -> dict[str, object]:
    """``index.json`` fields of a split's entry beyond the features.

    Rows are recorded by position: the key covers the files' contents in order, so the entry
    serves any copy of the corpus, wherever its files live.
    """
    reasons = {s.path: s.reason for s in clips.skipped}
    clipped = set(clips.clipped)
    return {
        "kept": [i for i, u in enumerate(utts) if str(u.path) not in reasons],
        "owners": clips.owners,  # item -> position in "kept"
        "durations": clips.durations,
        "skipped": [
            {"index": i, "reason": reasons[str(u.path)]}
            for i, u in enumerate(utts)
            if str(u.path) in reasons
        ],
        "clipped": [i for i, u in enumerate(utts) if str(u.path) in clipped],
        "inputs": inputs,
    }


@dataclass(frozen=True)
class EntryRows:
    """The manifest rows of a cache entry (see :func:`entry_meta`).

    Attributes:
        kept: utterances whose audio was decoded, in entry order.
        skipped: files that could not be decoded.
        owners: position in ``kept`` of each item.
        durations: seconds of each kept utterance's audio before any crop.
        clipped: paths of files with samples beyond +-1.
    """

    kept: list[Utterance]
    skipped: list[SkippedFile]
    owners: list[int]
    durations: list[float]
    clipped: list[str]


def entry_rows(table: FeatureTable, utts: Sequence[Utterance]) -> EntryRows:
    """Maps the rows recorded in a cache entry back onto ``utts``.

    Raises:
        RuntimeError: the entry does not match ``utts`` (item or row counts differ).
    """
    meta = table.meta
    kept = [utts[i] for i in meta["kept"]]
    skipped = [
        SkippedFile(str(utts[s["index"]].path), s["reason"], utts[s["index"]].label)
        for s in meta["skipped"]
    ]
    owners = list(meta["owners"])
    if len(owners) != len(table) or len(kept) + len(skipped) != len(utts):
        raise RuntimeError(f"feature cache {table.folder} does not match the manifest rows")
    clipped = [str(utts[i].path) for i in meta["clipped"]]
    return EntryRows(kept, skipped, owners, list(meta["durations"]), clipped)
