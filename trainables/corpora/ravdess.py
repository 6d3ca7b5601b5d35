"""RAVDESS: 24 actors (12 F, 12 M) speaking two statements in 8 emotions, 48 kHz.

Layout read (``Audio_Speech_Actors_01-24.zip`` extracted; the song archive may sit beside it)::

    [<archive folder>/]Actor_NN/MM-VV-EE-II-SS-RR-NN.wav     e.g. 03-01-06-01-02-01-12.wav

Fields: modality (03 = audio-only), vocal channel (01 speech, 02 song), emotion (01 neutral,
02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity (01
normal, 02 strong), statement (01, 02), repetition (01, 02), actor (01-24). Odd actor numbers
are male, even are female. Protocol: speaker-independent, gender-balanced actor folds
(default 6 folds of 4 actors, 2 F + 2 M).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from trainables.corpora.base import (
    AudioFiles,
    ClassSet,
    CorpusOption,
    PreparedCorpus,
    Row,
    Skip,
    actor_folds,
    missing_layout,
    register_corpus,
    relative_item,
    select_classes,
)

logger = logging.getLogger(__name__)

LABELS: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgusted",
    "08": "surprised",
}
INTENSITY: dict[str, str] = {"01": "normal", "02": "strong"}
CHANNEL: dict[str, str] = {"01": "speech", "02": "song"}
_NAME = re.compile(
    r"^(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})"
    r"-(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})\.wav$"
)


def _actor_dirs(root: Path) -> list[Path]:
    """``Actor_NN`` folders directly under ``root`` or one level down, in order."""
    found = (*root.glob("Actor_[0-9][0-9]"), *root.glob("*/Actor_[0-9][0-9]"))
    return sorted((p for p in found if p.is_dir()), key=lambda p: (p.name, str(p)))


def _check(match: re.Match[str] | None, folder: Path, song: bool) -> str | None:
    """Why a file name cannot be used, or None."""
    if match is None:
        return "malformed file name"
    if match["modality"] != "03":
        return f"modality {match['modality']} is not audio-only (03)"
    if match["channel"] not in CHANNEL or match["intensity"] not in INTENSITY:
        return "malformed file name"
    if match["channel"] == "02" and not song:
        return "song (vocal channel 02) not used; pass song=True"
    if f"Actor_{match['actor']}" != folder.name:
        return f"actor {match['actor']} in file name but folder {folder.name}"
    return None


def _row(match: re.Match[str], wav: Path, label: str) -> Row:
    """The manifest row of one usable file (fold filled in later)."""
    actor = int(match["actor"])
    return {
        "path": wav,
        "label": label,
        "speaker": f"Actor_{actor:02d}",
        "gender": "M" if actor % 2 == 1 else "F",
        "intensity": INTENSITY[match["intensity"]],
        "statement": int(match["statement"]),
        "repetition": int(match["repetition"]),
        "vocal_channel": CHANNEL[match["channel"]],
    }


def _one(wav: Path, classes: ClassSet, song: bool, audio: AudioFiles, seen: set[str]) -> Row | str:
    """The row of one file, or the reason it is skipped."""
    match = _NAME.match(wav.name)
    problem = _check(match, wav.parent, song)
    if problem or match is None:
        return problem or "malformed file name"
    label = classes.label(match["emotion"])
    if label is None:
        return classes.reason(match["emotion"])
    if wav.name in seen:
        return "duplicate file (the same recording in two folders)"
    return audio.problem(wav) or _row(match, wav, label)


def _scan(root: Path, classes: ClassSet, song: bool, prepared: PreparedCorpus) -> None:
    """Appends a row or a skip for every ``.wav`` file in the actor folders."""
    audio = AudioFiles()
    seen: set[str] = set()
    for folder in _actor_dirs(root):
        for name in sorted(audio.names(folder)):
            if not name.lower().endswith(".wav"):
                continue
            result = _one(folder / name, classes, song, audio, seen)
            if isinstance(result, str):
                prepared.skipped.append(Skip(relative_item(folder / name, root), result))
            else:
                seen.add(name)
                prepared.rows.append(result)


@register_corpus(
    "ravdess",
    "RAVDESS",
    CorpusOption("folds", 6, "number of speaker-independent actor folds"),
    CorpusOption("song", False, "include the song recordings"),
)
def prepare(root: Path, classes: str = "4", folds: int = 6, song: bool = False) -> PreparedCorpus:
    """Imports RAVDESS with speaker-independent actor folds.

    Args:
        root: Folder holding ``Actor_01`` ... ``Actor_24`` (directly or one level down).
        classes: ``"4"`` (neutral, happy, angry, sad; calm is skipped) or ``"all"`` (8).
        folds: Number of gender-balanced actor folds.
        song: Also import the song recordings (vocal channel 02).

    Returns:
        Rows with ``fold``, intensity, statement, repetition and vocal channel.

    Raises:
        FileNotFoundError: If no ``Actor_NN`` folder is found.
    """
    root = Path(root)
    class_set = select_classes(classes, LABELS, LABELS)
    if not _actor_dirs(root):
        expected = "Actor_01 ... Actor_24 folders (directly or one level down)"
        raise missing_layout("ravdess", root, expected, "*/Actor_[0-9][0-9]")
    prepared = PreparedCorpus("ravdess", root, class_set.choice, rows=[])
    _scan(root, class_set, song, prepared)
    # Folds over every actor folder, used or not, so they do not depend on the class set.
    numbers = {int(p.name[-2:]) for p in _actor_dirs(root)}
    actors = {f"Actor_{n:02d}": "M" if n % 2 == 1 else "F" for n in numbers}
    assignment = actor_folds(actors, folds)
    for row in prepared.rows:
        row["fold"] = assignment[str(row["speaker"])]
    prepared.notes += [
        "gender from the actor number: odd = male, even = female",
        f"protocol: {folds} speaker-independent, gender-balanced actor folds; "
        "partition(fold=K) takes dev = fold K+1",
    ]
    return prepared
