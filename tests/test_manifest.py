"""Tests for trainables.data.manifest: validation, path resolution and partitions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainables.data.manifest import (
    ManifestError,
    Partition,
    Utterance,
    partition,
    read_manifest,
    write_manifest,
)

LABELS = ("ang", "hap", "neu", "sad")


def _rows(folds: int = 3, per_fold: int = 8) -> list[dict[str, object]]:
    """Rows with ``folds`` folds (fold k -> speakers 2k/2k+1) and every label in every fold."""
    rows: list[dict[str, object]] = []
    for fold in range(folds):
        split = "test" if fold == folds - 1 else ("dev" if fold == folds - 2 else "train")
        for i in range(per_fold):
            speaker = 2 * fold + i % 2
            rows.append(
                {
                    "path": f"wav/f{fold}_{i}.wav",
                    "label": LABELS[i % len(LABELS)],
                    "speaker": f"s{speaker}",
                    "gender": "F" if speaker % 2 == 0 else "M",
                    "split": split,
                    "fold": fold,
                    "snr": float(i),
                }
            )
    return rows


def _raw(tmp_path: Path, rows: list[dict[str, object]], name: str = "m.parquet") -> Path:
    """Writes rows without validation, to build deliberately broken manifests."""
    path = tmp_path / name
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _error(path: Path, **kwargs: object) -> str:
    """Runs partition and returns the ManifestError message (asserting it names the file)."""
    with pytest.raises(ManifestError) as info:
        partition(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert str(path) in message, f"error does not name the manifest: {message}"
    return message


def test_round_trip_split_partition(tmp_path: Path) -> None:
    path = write_manifest(_rows(), tmp_path / "m.parquet")
    part = partition(path)
    assert isinstance(part, Partition)
    assert (len(part.train), len(part.dev), len(part.test)) == (8, 8, 8)
    assert part.labels == tuple(sorted(LABELS))
    assert part.test_fold is None and part.dev_fold is None
    assert part.manifest == path.resolve()
    first = part.train[0]
    assert isinstance(first, Utterance)
    assert (first.label, first.speaker, first.gender) == ("ang", "s0", "F")
    # extra keeps split, fold and unknown columns, but not the typed fields
    assert first.extra == {"split": "train", "fold": 0, "snr": 0.0}


def test_relative_paths_resolve_against_manifest_folder(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["path"] = str(tmp_path / "elsewhere" / "abs.wav")
    path = write_manifest(rows, tmp_path / "sub" / "m.parquet")
    stored = read_manifest(path).column("path").to_pylist()
    assert stored[1] == "wav/f0_1.wav", "write_manifest must store paths as given"
    train = partition(path).train
    assert train[0].path == (tmp_path / "elsewhere" / "abs.wav").resolve()
    assert train[1].path == (tmp_path / "sub" / "wav" / "f0_1.wav").resolve()
    assert all(u.path.is_absolute() for u in train)


def test_dataframe_input_and_integral_float_folds(tmp_path: Path) -> None:
    frame = pd.DataFrame(_rows())
    frame["fold"] = frame["fold"].astype(float)  # what pandas does after a missing value
    path = write_manifest(frame, tmp_path / "m.parquet")
    assert pa.types.is_integer(read_manifest(path).column("fold").type)
    assert partition(path, fold=0).test_fold == 0


@pytest.mark.parametrize("column", ["path", "label", "speaker", "gender"])
def test_missing_required_column(tmp_path: Path, column: str) -> None:
    rows = [{k: v for k, v in r.items() if k != column} for r in _rows()]
    message = _error(_raw(tmp_path, rows))
    assert f"missing column(s) '{column}'" in message


def test_missing_split_and_fold(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k not in ("split", "fold")} for r in _rows()]
    assert "'split' or 'fold'" in _error(_raw(tmp_path, rows))


def test_bad_gender_lists_values_and_count(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["gender"] = "female"
    rows[3]["gender"] = "female"
    rows[5]["gender"] = "x"
    message = _error(_raw(tmp_path, rows))
    assert "3 row(s)" in message and "'female'" in message and "'x'" in message


def test_bad_split_value(tmp_path: Path) -> None:
    rows = _rows()
    rows[2]["split"] = "valid"
    assert "'valid'" in _error(_raw(tmp_path, rows))


def test_non_integer_fold(tmp_path: Path) -> None:
    rows = _rows()
    for row in rows:
        row["fold"] = f"S{row['fold']}"
    assert "fold values must be integers" in _error(_raw(tmp_path, rows))


def test_null_speaker(tmp_path: Path) -> None:
    rows = _rows()
    rows[1]["speaker"] = None
    assert "null 'speaker'" in _error(_raw(tmp_path, rows))


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "absent.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"path,label\nx,y\n")
    assert "not a readable Parquet file" in _error(junk)


def test_write_manifest_rejects_invalid_rows_without_writing(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["gender"] = "?"
    target = tmp_path / "m.parquet"
    with pytest.raises(ManifestError, match="invalid gender"):
        write_manifest(rows, target)
    assert not target.exists()


def test_fold_partition_default_dev_is_next_fold_cyclic(tmp_path: Path) -> None:
    path = write_manifest(_rows(folds=4), tmp_path / "m.parquet")
    part = partition(path, fold=1)
    assert (part.test_fold, part.dev_fold) == (1, 2)
    assert {u.extra["fold"] for u in part.test} == {1}
    assert {u.extra["fold"] for u in part.dev} == {2}
    assert {u.extra["fold"] for u in part.train} == {0, 3}
    assert partition(path, fold=3).dev_fold == 0, "dev fold must wrap around"
    explicit = partition(path, fold=3, dev_fold=1)
    assert {u.extra["fold"] for u in explicit.train} == {0, 2}


def test_fold_errors(tmp_path: Path) -> None:
    path = write_manifest(_rows(folds=3), tmp_path / "m.parquet")
    assert "available folds: 0, 1, 2" in _error(path, fold=7)
    assert "dev fold equals test fold" in _error(path, fold=1, dev_fold=1)
    assert "dev fold 9 not present" in _error(path, fold=1, dev_fold=9)
    assert "dev_fold needs fold" in _error(path, dev_fold=1)


def test_fold_only_manifest_needs_fold(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "split"} for r in _rows()]
    path = write_manifest(rows, tmp_path / "m.parquet")
    assert "pass fold=K" in _error(path)
    assert len(partition(path, fold=0).test) == 8


def test_split_only_manifest_rejects_fold(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "fold"} for r in _rows()]
    path = write_manifest(rows, tmp_path / "m.parquet")
    assert "has no fold column" in _error(path, fold=0)


def test_empty_split(tmp_path: Path) -> None:
    rows = [r for r in _rows() if r["split"] != "dev"]
    assert "the dev set is empty" in _error(write_manifest(rows, tmp_path / "m.parquet"))


def test_class_absent_from_train(tmp_path: Path) -> None:
    rows = [r for r in _rows() if not (r["split"] == "train" and r["label"] == "sad")]
    message = _error(write_manifest(rows, tmp_path / "m.parquet"))
    assert "'sad'" in message and "not in train" in message


def test_fewer_than_two_classes(tmp_path: Path) -> None:
    rows = _rows()
    for row in rows:
        row["label"] = "neu"
    assert "need at least 2" in _error(write_manifest(rows, tmp_path / "m.parquet"))


@pytest.mark.parametrize(
    "twin",
    ["SAD ", " sad", "Sad", "s ad", "sad\u200b", "\ufeffsad", "ｓａｄ"],
    ids=["case+space", "leading", "case", "inner", "zero-width", "bom", "fullwidth"],
)
def test_labels_that_only_look_different_are_fatal(tmp_path: Path, twin: str) -> None:
    rows = _rows()
    rows[-1]["label"] = twin  # a test row: 'sad' and its twin would be two classes
    message = _error(write_manifest(rows, tmp_path / "m.parquet"))
    assert "differ only by case, whitespace or invisible characters" in message
    assert repr("sad") in message and repr(twin) in message


def test_invisible_label_is_fatal(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["label"] = "\u200b "
    assert "empty or invisible" in _error(write_manifest(rows, tmp_path / "m.parquet"))


def test_unusable_paths_do_not_fail_the_partition(tmp_path: Path, caplog) -> None:
    """An empty path and a symlink loop are rows the decoder skips, not manifest errors."""
    rows = _rows()
    rows[0]["path"] = ""
    rows[1]["path"] = "loop.wav"
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    with caplog.at_level("WARNING"):
        part = partition(write_manifest(rows, tmp_path / "m.parquet"))
    assert part.train[0].path == tmp_path.resolve()  # "" names the manifest's folder
    assert part.train[1].path == tmp_path.resolve() / "loop.wav"
    assert "1 row(s) have an empty path" in caplog.text
