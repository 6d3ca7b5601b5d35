"""Dataset manifests: one Parquet table per corpus, validated and split into train/dev/test.

A manifest has the columns ``path`` (absolute, or relative to the manifest's folder),
``label``, ``speaker``, ``gender`` (``F``, ``M`` or ``unknown``) and ``split``
(``train``/``dev``/``test``), ``fold`` (int) or both. Any other column is carried along in
:attr:`Utterance.extra`. Every error is a :class:`ManifestError` that names the file, so a
bad corpus import is reported where it happened rather than as a shape error mid-training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainables.data.labels import examples, label_problem

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label", "speaker", "gender")
GENDERS: frozenset[str] = frozenset({"F", "M", "unknown"})
SPLITS: tuple[str, ...] = ("train", "dev", "test")
_EXPECTED = "expected path, label, speaker, gender and split or fold"


class ManifestError(ValueError):
    """A manifest is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, manifest: Path | str, problem: str) -> None:
        self.manifest = Path(manifest)
        self.problem = problem
        super().__init__(f"manifest {manifest}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Ray sends a trial's exception to the driver pickled; the default reduce would call
        # ManifestError(message) and fail, hiding this message behind a TypeError.
        return type(self), (self.manifest, self.problem)


@dataclass(frozen=True)
class Utterance:
    """One row of a manifest.

    Attributes:
        path: Absolute audio path (relative paths are resolved against the manifest folder).
        label: Emotion label as written in the manifest.
        speaker: Speaker id.
        gender: ``F``, ``M`` or ``unknown``.
        extra: The row's other columns (including ``split`` and ``fold`` when present).
    """

    path: Path
    label: str
    speaker: str
    gender: str
    extra: dict[str, object] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Partition:
    """A train/dev/test partition of one manifest.

    Attributes:
        train: Training utterances.
        dev: Development (model selection) utterances.
        test: Held-out test utterances.
        labels: Sorted unique training labels; position = class index.
        manifest: The manifest the partition was read from.
        test_fold: The fold used as test set, or None for a split-based partition.
        dev_fold: The fold used as dev set, or None for a split-based partition.
    """

    train: tuple[Utterance, ...]
    dev: tuple[Utterance, ...]
    test: tuple[Utterance, ...]
    labels: tuple[str, ...]
    manifest: Path
    test_fold: int | None = None
    dev_fold: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes (length of :attr:`labels`)."""
        return len(self.labels)


def _check_strings(table: pa.Table, manifest: Path) -> pa.Table:
    """Rejects nulls in path/label/speaker and casts label/speaker ids to strings.

    Importers sometimes write numeric speaker ids (e.g. RAVDESS actor numbers); casting
    here means downstream code can rely on ``str``.
    """
    for name in ("path", "label", "speaker"):
        column = table.column(name)
        nulls = column.null_count
        if nulls:
            raise ManifestError(manifest, f"{nulls} row(s) have a null {name!r}")
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            if name == "path":
                raise ManifestError(manifest, f"column 'path' must hold strings, not {column.type}")
            table = table.set_column(
                table.schema.get_field_index(name), name, pc.cast(column, pa.string())
            )
    return table


def _check_values(table: pa.Table, name: str, allowed: Sequence[str], manifest: Path) -> None:
    """Raises if column ``name`` holds nulls or values outside ``allowed``."""
    values = table.column(name).to_pylist()
    bad = [v for v in values if v not in allowed]
    if bad:
        distinct = sorted({str(v) for v in bad})
        raise ManifestError(
            manifest,
            f"{len(bad)} row(s) have an invalid {name} ({examples(distinct, limit=8)}); "
            f"allowed: {', '.join(allowed)}",
        )


def _check_fold(table: pa.Table, manifest: Path) -> pa.Table:
    """Ensures ``fold`` is a null-free integer column (integral floats are accepted)."""
    column = table.column("fold")
    if column.null_count:
        raise ManifestError(manifest, f"{column.null_count} row(s) have a null fold")
    if pa.types.is_integer(column.type):
        return table
    # pandas turns int columns into float when any value was missing upstream.
    if pa.types.is_floating(column.type):
        values = column.to_pylist()
        if all(float(v).is_integer() for v in values):
            index = table.schema.get_field_index("fold")
            return table.set_column(index, "fold", pc.cast(column, pa.int64()))
    raise ManifestError(manifest, f"fold values must be integers, got column type {column.type}")


def validate_table(table: pa.Table, manifest: Path) -> pa.Table:
    """Validates a manifest table and returns it with label/speaker cast to strings.

    Args:
        table: The manifest rows.
        manifest: The file the table belongs to (named in errors).

    Returns:
        The validated table.

    Raises:
        ManifestError: On any schema or value problem.
    """
    names = set(table.column_names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing or not names & {"split", "fold"}:
        missing_text = ", ".join(repr(c) for c in missing) if missing else "'split' or 'fold'"
        raise ManifestError(manifest, f"missing column(s) {missing_text}; {_EXPECTED}")
    if table.num_rows == 0:
        raise ManifestError(manifest, "has no rows")
    table = _check_strings(table, manifest)
    _check_values(table, "gender", sorted(GENDERS), manifest)
    if "split" in names:
        _check_values(table, "split", SPLITS, manifest)
    if "fold" in names:
        table = _check_fold(table, manifest)
    return table


def read_manifest(path: Path) -> pa.Table:
    """Reads and validates a manifest.

    Args:
        path: The Parquet manifest.

    Returns:
        The validated table (label and speaker as strings, fold as int).

    Raises:
        ManifestError: If the file is missing, not Parquet, or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, "file does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(path, f"is not a readable Parquet file ({exc})") from exc
    return validate_table(table, path)


def write_manifest(rows: list[dict[str, object]] | pd.DataFrame, path: Path) -> Path:
    """Validates rows and writes them as a Parquet manifest.

    Paths are stored exactly as given (relative paths stay relative to the manifest folder).

    Args:
        rows: Row dicts or a DataFrame with the manifest columns.
        path: Destination file; parent folders are created.

    Returns:
        ``path``.

    Raises:
        ManifestError: If the rows do not form a valid manifest (nothing is written).
    """
    path = Path(path)
    if isinstance(rows, pd.DataFrame):
        frame = rows.copy()
    else:
        frame = pd.DataFrame(list(rows))
    if "path" in frame.columns:
        frame["path"] = frame["path"].map(lambda p: p if p is None else str(p))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = validate_table(table, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    logger.debug("wrote manifest %s (%d rows)", path, table.num_rows)
    return path


def _absolute(path: Path) -> Path:
    """``path`` with symlinks resolved, or only made absolute where they loop: the row is then
    skipped when its audio is read ("cannot stat"), instead of failing the whole manifest."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return path.absolute()


def _utterances(table: pa.Table, folder: Path, manifest: Path) -> list[Utterance]:
    """Converts validated rows into utterances with absolute paths.

    Paths may lead outside the manifest's folder (corpora live elsewhere): what they name is
    checked when it is read (regular audio files only, see :mod:`trainables.data.audio`).
    """
    result = []
    empty = 0
    for row in table.to_pylist():
        raw = str(row.pop("path"))
        empty += not raw.strip()
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = folder / path
        result.append(
            Utterance(
                path=_absolute(path),
                label=str(row.pop("label")),
                speaker=str(row.pop("speaker")),
                gender=str(row.pop("gender")),
                extra=row,
            )
        )
    if empty:
        # "" names the manifest's folder: such rows are skipped as "is a directory".
        logger.warning("manifest %s: %d row(s) have an empty path; skipping them", manifest, empty)
    return result


def _fold_sets(
    utts: list[Utterance], manifest: Path, fold: int, dev_fold: int | None
) -> tuple[list[Utterance], list[Utterance], list[Utterance], int]:
    """Splits utterances leave-one-fold-out; returns train, dev, test and the dev fold."""
    folds = sorted({cast(int, u.extra["fold"]) for u in utts})
    available = ", ".join(str(f) for f in folds)
    if fold not in folds:
        raise ManifestError(manifest, f"fold {fold} not present; available folds: {available}")
    if dev_fold is None:
        dev_fold = folds[(folds.index(fold) + 1) % len(folds)]
    if dev_fold not in folds:
        raise ManifestError(
            manifest, f"dev fold {dev_fold} not present; available folds: {available}"
        )
    if dev_fold == fold:
        raise ManifestError(
            manifest, f"dev fold equals test fold {fold}; need at least 3 folds (have {available})"
        )
    test = [u for u in utts if u.extra["fold"] == fold]
    dev = [u for u in utts if u.extra["fold"] == dev_fold]
    train = [u for u in utts if u.extra["fold"] not in (fold, dev_fold)]
    return train, dev, test, dev_fold


def _split_sets(
    table: pa.Table, utts: list[Utterance], manifest: Path, fold: int | None, dev_fold: int | None
) -> tuple[list[Utterance], list[Utterance], list[Utterance], int | None]:
    """Train, dev and test by the ``split`` column (``fold`` None) or leave-one-fold-out, and
    the dev fold used (None for a split-based partition)."""
    if fold is None:
        if dev_fold is not None:
            raise ManifestError(manifest, "dev_fold needs fold")
        if "split" not in table.column_names:
            folds = sorted(set(table.column("fold").to_pylist()))
            raise ManifestError(
                manifest, f"has folds ({examples(folds, limit=8)}) but no split column; pass fold=K"
            )
        sets = {s: [u for u in utts if u.extra["split"] == s] for s in SPLITS}
        return sets["train"], sets["dev"], sets["test"], None
    if "fold" not in table.column_names:
        raise ManifestError(manifest, f"has no fold column; cannot use fold={fold} (use its split)")
    return _fold_sets(utts, manifest, int(fold), dev_fold)


def _train_labels(
    manifest: Path, train: list[Utterance], dev: list[Utterance], test: list[Utterance]
) -> tuple[str, ...]:
    """The sorted training labels, once every set is non-empty, train has at least two classes
    and dev and test hold no class that train lacks."""
    for name, items in (("train", train), ("dev", dev), ("test", test)):
        if not items:
            raise ManifestError(manifest, f"the {name} set is empty")
    labels = tuple(sorted({u.label for u in train}))
    if len(labels) < 2:
        raise ManifestError(manifest, f"train set has {len(labels)} class(es); need at least 2")
    for name, items in (("dev", dev), ("test", test)):
        unseen = sorted({u.label for u in items} - set(labels))
        if unseen:
            raise ManifestError(
                manifest, f"class(es) {examples(unseen, limit=8)} appear in {name} but not in train"
            )
    return labels


def fold_values(manifest: Path) -> list[int]:
    """The sorted fold numbers of a manifest (error if it has no ``fold`` column)."""
    table = read_manifest(manifest)
    if "fold" not in table.column_names:
        raise ManifestError(manifest, "has no fold column; --folds all needs a fold manifest")
    return sorted({int(v) for v in table.column("fold").to_pylist()})


def partition(path: Path, fold: int | None = None, dev_fold: int | None = None) -> Partition:
    """Reads a manifest and splits it into train, dev and test.

    Without ``fold`` the ``split`` column decides. With ``fold`` the partition is
    leave-one-fold-out: test = rows of ``fold``, dev = rows of ``dev_fold`` (default: the
    next fold value after ``fold`` in sorted order, wrapping around), train = the rest.

    Args:
        path: The Parquet manifest.
        fold: Test fold, or None to use the ``split`` column.
        dev_fold: Dev fold (only with ``fold``).

    Returns:
        The partition; ``labels`` are the sorted training labels.

    Raises:
        ManifestError: On a missing split/fold column, an unknown fold, an empty set, a
            dev/test label absent from train, fewer than two classes, or labels that differ
            only by case, whitespace or invisible characters (``'sad'`` and ``'SAD '``).
    """
    path = Path(path)
    table = read_manifest(path)
    utts = _utterances(table, path.resolve().parent, path)
    problem = label_problem(u.label for u in utts)
    if problem is not None:
        raise ManifestError(path, problem)
    train, dev, test, dev_fold = _split_sets(table, utts, path, fold, dev_fold)
    return Partition(
        train=tuple(train),
        dev=tuple(dev),
        test=tuple(test),
        labels=_train_labels(path, train, dev, test),
        manifest=path.resolve(),
        test_fold=None if fold is None else int(fold),
        dev_fold=dev_fold,
    )
