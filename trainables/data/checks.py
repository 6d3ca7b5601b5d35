"""Checks for data problems that make a run quietly mean less than it says.

Errors where the run cannot mean anything:

* labels that differ only by case, whitespace or invisible characters (``'sad'`` and
  ``'SAD '``) would split one class in two (:func:`trainables.data.labels.label_problem`,
  checked by ``partition``);
* a class whose every training file was skipped cannot be learnt (:func:`require_train_classes`).

Warnings (one line each, with counts and at most three examples) where it still means
something, but less:

* the same speaker in train and test, or in dev and test; a class with no file in dev or in
  test; the same audio content in two splits (:func:`partition_warnings`);
* float audio beyond +-1, clipped when decoded; a dev / test class whose files were all skipped
  (:func:`decode_warnings`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from trainables.data.cache import file_digests
from trainables.data.dataset import SkippedFile
from trainables.data.labels import EXAMPLES, examples
from trainables.data.manifest import SPLITS, Partition

UNKNOWN_SPEAKERS = frozenset({"", "unknown"})  # ids that name no one (compared casefolded)


class DecodedSplit(Protocol):
    """What the decode-level checks read of a ``ClipSet`` or ``FrameSet``."""

    targets: list[int]
    skipped: list[SkippedFile]
    clipped: list[str]


def partition_warnings(part: Partition, digest_root: Path) -> list[str]:
    """Problems of a partition that leave its scores meaningful but weaker.

    Args:
        part: The partition.
        digest_root: Folder of the file-content memo (:func:`file_digests`); a feature cache
            root shares it with the cache keys, so the corpus is hashed once.

    Returns:
        One line per problem: speakers shared by train and test or by dev and test (ids
        ``unknown`` and empty are ignored), classes with no file in dev or in test, identical
        audio files in different splits.
    """
    sets = {"train": part.train, "dev": part.dev, "test": part.test}
    speakers = {
        name: {u.speaker for u in utts if u.speaker.strip().casefold() not in UNKNOWN_SPEAKERS}
        for name, utts in sets.items()
    }
    out = []
    for first, second in (("train", "test"), ("dev", "test")):
        shared = sorted(speakers[first] & speakers[second])
        if shared:
            files = sum(u.speaker in shared for u in sets[second])
            out.append(
                f"{len(shared)} speaker(s) appear in both {first} and {second} "
                f"({examples(shared)}; {files} {second} file(s)): {second} scores are not "
                f"speaker-independent"
            )
    for name in ("dev", "test"):
        present = {u.label for u in sets[name]}
        missing = [label for label in part.labels if label not in present]
        if missing:
            out.append(
                f"class(es) {examples(missing)} have no file in {name}: {name} UAR averages "
                f"over the other {len(part.labels) - len(missing)} class(es)"
            )
    out += _shared_audio(sets, digest_root)
    return out


def _shared_audio(sets: dict[str, Sequence], digest_root: Path) -> list[str]:
    """Files with the same content (BLAKE2b) in more than one split."""
    rows = [(name, str(u.path)) for name in SPLITS for u in sets[name]]
    digests = file_digests([Path(path) for _, path in rows], digest_root)
    where: dict[str, dict[str, str]] = defaultdict(dict)  # digest -> split -> first path
    for (name, path), digest in zip(rows, digests):
        if not digest.startswith("invalid:"):  # the decoder reports those
            where[digest].setdefault(name, path)
    shared = [splits for splits in where.values() if len(splits) > 1]
    if not shared:
        return []
    pairs = [" = ".join(f"{name} {path}" for name, path in s.items()) for s in shared]
    shown = "; ".join(pairs[:EXAMPLES]) + (
        f"; and {len(pairs) - EXAMPLES} more" if len(pairs) > EXAMPLES else ""
    )
    return [
        f"{len(shared)} audio content(s) appear in more than one split ({shown}): the same "
        f"audio is trained or selected on and scored"
    ]


def require_train_classes(train: DecodedSplit, labels: Sequence[str]) -> None:
    """Raises if a class has no decodable training file left.

    Raises:
        ValueError: Naming the class, the split and why its files were skipped.
    """
    present = set(train.targets)
    for i, label in enumerate(labels):
        if i not in present:
            lost = [s for s in train.skipped if s.label == label]
            why = f" (e.g. {lost[0].path}: {lost[0].reason})" if lost else ""
            raise ValueError(
                f"class {label!r} has no decodable file in the train split: all "
                f"{len(lost)} of its file(s) were skipped{why}; the model cannot learn it"
            )


def decode_warnings(sets: dict[str, DecodedSplit], labels: Sequence[str]) -> list[str]:
    """Decode-level problems of loaded splits.

    Args:
        sets: ``{"train": ..., "dev": ..., "test": ...}`` (any subset).
        labels: Class names, by class index.

    Returns:
        One line per split with clipped files, and per dev / test split where a class lost
        every file to skips.
    """
    out = []
    for name, data in sets.items():
        if data.clipped:
            out.append(
                f"{name}: {len(data.clipped)} file(s) hold samples beyond +-1, clipped to +-1 "
                f"when decoded ({examples(data.clipped)})"
            )
        if name == "train":
            continue
        present = set(data.targets)
        emptied = [
            label
            for i, label in enumerate(labels)
            if i not in present and any(s.label == label for s in data.skipped)
        ]
        if emptied:
            out.append(
                f"{name}: class(es) {examples(emptied)} have no decodable file left (all of "
                f"their files were skipped): {name} UAR averages over the other classes"
            )
    return out
