"""Writing prepared corpora as manifests, the plain-text summary, and the ``prepare`` entry point.

Path rule (see docs/CORPORA.md):

* ``root_relative_path`` always holds the audio path relative to ``--root`` (POSIX ``/``).
* ``path`` is relative to the manifest's folder when the manifest is written inside the
  corpus root (move or copy the root with its manifest and it still resolves), otherwise it is
  absolute. :func:`rebase_manifest` rewrites ``path`` for a corpus found under another root.

Both forms are what :func:`trainables.data.manifest.partition` resolves.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from trainables.corpora.base import CORPORA, PreparedCorpus, Row, Skip
from trainables.data.manifest import ManifestError, read_manifest, write_manifest

logger = logging.getLogger(__name__)

ROOT_COLUMN = "root_relative_path"
_EXAMPLES = 3
# Column order of split-like summary tables (folds sort numerically).
_GROUP_ORDER: dict[str, int] = {
    "train": 0, "Train": 0, "dev": 1, "Development": 1, "Validation": 1,
    "test": 2, "Test1": 2, "Test2": 3,
}  # fmt: skip


def _inside(folder: Path, root: Path) -> bool:
    """Whether ``folder`` is ``root`` or lies below it (lexically, after making both absolute)."""
    return Path(os.path.abspath(folder)).is_relative_to(os.path.abspath(root))


def _manifest_path(audio_from_root: str, root: Path, manifest: Path) -> str:
    """The ``path`` value for one file under the path rule of this module."""
    absolute = Path(os.path.abspath(root)) / audio_from_root
    folder = Path(os.path.abspath(manifest)).parent
    if _inside(folder, root):
        return Path(os.path.relpath(absolute, folder)).as_posix()
    return absolute.as_posix()


def _portable(rows: list[Row], root: Path, manifest: Path) -> list[Row]:
    """Copies ``rows`` with ``path`` rewritten by the path rule and ``root_relative_path`` added."""
    result = []
    for row in rows:
        audio = Path(str(row["path"]))
        from_root = Path(os.path.abspath(audio)).relative_to(os.path.abspath(root)).as_posix()
        new = dict(row)
        new["path"] = _manifest_path(from_root, root, manifest)
        new[ROOT_COLUMN] = from_root
        result.append(new)
    return result


def side_manifest(out: Path, suffix: str) -> Path:
    """Where a side manifest (e.g. MSP-Podcast's Test2) goes: ``<out stem>.<suffix>.parquet``."""
    return out.with_name(f"{out.stem}.{suffix}{out.suffix or '.parquet'}")


def _skip_digest(skipped: list[Skip], limit: int = 4) -> str:
    """The most common skip reasons with counts, for error messages."""
    counts = Counter(s.reason for s in skipped).most_common(limit)
    return "; ".join(f"{n} x {reason}" for reason, n in counts) or "nothing was found"


def write(prepared: PreparedCorpus, out: Path) -> Path:
    """Writes the main manifest (and any side manifests) of a prepared corpus.

    Args:
        prepared: The importer's result.
        out: The main manifest file; side manifests go next to it (:func:`side_manifest`).

    Returns:
        ``out``.

    Raises:
        ValueError: If the corpus yielded no usable utterance (the message lists why).
        ManifestError: If the rows fail manifest validation.
    """
    out = Path(out)
    if not prepared.rows:
        raise ValueError(
            f"{prepared.name}: no usable utterances under {prepared.root} "
            f"({len(prepared.skipped)} skipped: {_skip_digest(prepared.skipped)})"
        )
    write_manifest(_portable(prepared.rows, prepared.root, out), out)
    for suffix, rows in prepared.extra.items():
        if rows:
            target = side_manifest(out, suffix)
            write_manifest(_portable(rows, prepared.root, target), target)
    logger.info("%s: wrote %d rows to %s", prepared.name, len(prepared.rows), out)
    return out


def _table(rows: list[Row], group_by: str) -> str:
    """Utterance counts per class x gender (rows) and ``group_by`` value (columns)."""
    frame = pd.DataFrame(rows)
    values = sorted(set(frame[group_by]), key=lambda v: (_GROUP_ORDER.get(str(v), 9), str(v)))
    names = {v: f"fold={v}" if group_by == "fold" else str(v) for v in values}
    table = pd.crosstab([frame["label"], frame["gender"]], frame[group_by].map(names))
    table = table[[names[v] for v in values]]
    table["total"] = table.sum(axis=1)
    table.loc[("total", ""), :] = table.sum(axis=0)
    table.index.names = ["class", "gender"]
    table.columns.name = None
    return table.astype(int).to_string()


def _skip_lines(skipped: list[Skip]) -> list[str]:
    """Skip reasons with counts and a few example items each, most frequent first."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for skip in skipped:
        by_reason[skip.reason].append(skip.item)
    lines = [f"skipped {len(skipped)} entries:"] if skipped else ["skipped 0 entries"]
    for reason, items in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = ", ".join(items[:_EXAMPLES]) + (", ..." if len(items) > _EXAMPLES else "")
        lines.append(f"  {len(items):6d}  {reason}  (e.g. {shown})")
    return lines


def summary(prepared: PreparedCorpus, out: Path | None = None) -> str:
    """Plain-text summary: counts per class x gender x fold/split, skips with reasons, notes.

    Args:
        prepared: The importer's result.
        out: The main manifest path, named in the text when given.

    Returns:
        The summary (several lines, no trailing newline).
    """
    everything = prepared.rows + [r for rows in prepared.extra.values() for r in rows]
    head = f"{prepared.name}: {len(prepared.rows)} utterances (classes: {prepared.classes})"
    lines = [head + (f" -> {out}" if out is not None else "")]
    for suffix, rows in prepared.extra.items():
        if rows and out is not None:
            lines.append(
                f"  + {len(rows)} {suffix} utterances -> {side_manifest(Path(out), suffix)}"
            )
    lines.append(f"root: {prepared.root}")
    if everything:
        lines += ["", _table(everything, prepared.group_by)]
    lines += [""] + _skip_lines(prepared.skipped)
    if prepared.notes:
        lines += ["", "notes:"] + [f"  - {note}" for note in prepared.notes]
    return "\n".join(lines)


def prepare_corpus(
    name: str, root: Path, out: Path, classes: str = "4", **options: object
) -> tuple[Path, str]:
    """Imports one corpus and writes its manifest: the function behind ``emotune prepare``.

    Args:
        name: Registered corpus name (see ``CORPORA.names()``).
        root: The corpus root as distributed.
        out: Manifest file to write (Parquet).
        classes: ``"4"`` (neutral, happy, angry, sad) or ``"all"``.
        **options: Corpus-specific options (e.g. ``labels="voice"`` for CREMA-D, ``folds=6``).

    Returns:
        The manifest path and the summary text.

    Raises:
        KeyError: For an unknown corpus name (the message lists the known ones).
        FileNotFoundError: If ``root`` lacks the corpus layout or its label files.
        ValueError: For a bad option or class set, malformed label tables, or no usable rows.
    """
    corpus = CORPORA.get(name)
    corpus.check_options(options)
    root = Path(os.path.abspath(Path(root).expanduser()))
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: root {root} is not an existing folder")
    prepared = corpus.prepare(root, classes, **options)
    path = write(prepared, Path(out).expanduser())
    text = summary(prepared, out=path)
    logger.debug("%s", text)
    return path, text


def rebase_manifest(manifest: Path, root: Path, out: Path | None = None) -> Path:
    """Points a manifest at a corpus copy under another root (e.g. on another machine).

    ``path`` is recomputed from ``root_relative_path`` with the same rule as :func:`write`.

    Args:
        manifest: A manifest written by :func:`write`.
        root: The corpus root on this machine.
        out: Where to write the result (default: overwrite ``manifest``).

    Returns:
        The written manifest.

    Raises:
        ManifestError: If the manifest is invalid or has no ``root_relative_path`` column.
    """
    manifest = Path(manifest)
    frame = read_manifest(manifest).to_pandas()
    if ROOT_COLUMN not in frame.columns:
        raise ManifestError(manifest, f"has no {ROOT_COLUMN!r} column; re-run prepare instead")
    target = Path(out) if out is not None else manifest
    frame["path"] = [_manifest_path(p, Path(root), target) for p in frame[ROOT_COLUMN]]
    return write_manifest(frame, target)
