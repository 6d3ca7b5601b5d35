"""CREMA-D: 7,442 clips of 91 actors (48 M, 43 F) speaking 12 sentences in 6 emotions.

Layout read (the CheyneyComputerScience/CREMA-D repository)::

    AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav     e.g. 1001_DFA_ANG_XX.wav (16 kHz)
    VideoDemographics.csv                                  ActorID, Age, Sex, Race, Ethnicity
    processedResults/summaryTable.csv                      only with labels="voice"/"multimodal"

Emotion codes ANG, DIS, FEA, HAP, NEU, SAD; levels LO, MD, HI, XX (unspecified). Three label
sources (the ``labels`` option):

* ``"filename"`` (default): the emotion the actor was asked to portray, from the file name.
* ``"voice"``: the crowd's majority vote on the audio-only presentation (``VoiceVote``).
* ``"multimodal"``: the crowd's majority vote on the audio-visual presentation
  (``MultiModalVote``), the label source of the PEFT-SER study.

Votes are A/D/F/H/N/S; ties such as ``A:D`` are skipped. A vote source also records the
vote's mean intensity rating (``VoiceLevel`` / ``MultiModalLevel``) in the manifest column
named for it (``voice_level`` / ``multimodal_level``), so a manifest says which vote it holds.
``1076_MTI_SAD_XX.wav`` holds no audio and is skipped as empty. Protocol: speaker-independent,
gender-balanced actor folds (default 5), the same for every label source.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from trainables.corpora.base import (
    AudioFiles,
    ClassSet,
    CorpusOption,
    PreparedCorpus,
    Skip,
    actor_folds,
    first_existing,
    missing_layout,
    parse_gender,
    register_corpus,
    select_classes,
)

logger = logging.getLogger(__name__)

SUMMARY_TABLES: tuple[str, ...] = (
    "processedResults/summaryTable.csv",
    "data/InfoAndStats/processedResults/summaryTable.csv",
)
LEVELS: dict[str, str] = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
NAME_LABELS: dict[str, str] = {
    "ANG": "angry",
    "DIS": "disgusted",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
VOTE_LABELS: dict[str, str] = {
    "A": "angry",
    "D": "disgusted",
    "F": "fearful",
    "H": "happy",
    "N": "neutral",
    "S": "sad",
}


@dataclass(frozen=True)
class VoteSource:
    """One crowd vote of ``summaryTable.csv`` usable as the label.

    Attributes:
        vote: The column holding the majority vote (``VoiceVote``).
        level: The column holding the vote's mean intensity rating (``VoiceLevel``).
        manifest_column: Where the manifest keeps that rating (``voice_level``).
        words: How the summary's notes name the source.
    """

    vote: str
    level: str
    manifest_column: str
    words: str


VOTE_SOURCES: dict[str, VoteSource] = {
    "voice": VoteSource(
        "VoiceVote", "VoiceLevel", "voice_level", "audio-only majority vote (VoiceVote)"
    ),
    "multimodal": VoteSource(
        "MultiModalVote", "MultiModalLevel", "multimodal_level",
        "audio-visual majority vote (MultiModalVote, as in PEFT-SER)",
    ),
}
LABEL_SOURCES: tuple[str, ...] = ("filename", *VOTE_SOURCES)  # the values of ``labels``
_NAME = re.compile(
    r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})\.wav$"
)


def _demographics(root: Path) -> dict[str, str]:
    """ActorID -> gender from ``VideoDemographics.csv`` (``Sex`` column)."""
    path = root / "VideoDemographics.csv"
    if not path.is_file():
        raise missing_layout("crema-d", root, "VideoDemographics.csv and AudioWAV/", "AudioWAV")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"ActorID", "Sex"} <= set(reader.fieldnames or []):
            raise ValueError(f"crema-d: {path} lacks the ActorID and Sex columns")
        return {r["ActorID"].strip(): parse_gender(r["Sex"]) for r in reader if r["ActorID"]}


def _votes(root: Path, labels: str) -> dict[str, tuple[str, str]]:
    """Clip name -> (vote, level) of label source ``labels`` from ``summaryTable.csv``.

    Raises:
        FileNotFoundError: If no summary table is under ``root``.
        ValueError: If the table lacks ``FileName`` or the source's vote or level column.
    """
    source = VOTE_SOURCES[labels]
    path = first_existing(root, SUMMARY_TABLES)
    if path is None:
        raise FileNotFoundError(
            f"crema-d: labels={labels!r} needs {' or '.join(SUMMARY_TABLES)} under {root}"
        )
    wanted = ("FileName", source.vote, source.level)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in wanted if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"crema-d: {path} lacks the column(s) {', '.join(missing)}; "
                f"labels={labels!r} reads {', '.join(wanted)}"
            )
        return {
            r["FileName"].strip(): (r[source.vote].strip(), r[source.level].strip())
            for r in reader
            if r["FileName"]
        }


def _label(
    stem: str,
    emotion: str,
    classes: ClassSet,
    labels: str,
    votes: dict[str, tuple[str, str]] | None,
) -> tuple[str, str] | Skip:
    """(label, vote level) of one clip (level "" for file-name labels), or why it has none."""
    if votes is None:
        label = classes.label(emotion)
        return (label, "") if label else Skip(stem, classes.reason(emotion))
    if stem not in votes:
        return Skip(stem, f"no {labels} rating in summaryTable.csv")
    vote, level = votes[stem]
    if ":" in vote:  # the table writes a tie between the top classes as e.g. "A:D"
        return Skip(stem, f"{labels} vote tied")
    label = classes.label(vote)
    return (label, level) if label else Skip(stem, classes.reason(vote))


def _rows(
    root: Path,
    genders: dict[str, str],
    classes: ClassSet,
    labels: str,
    votes: dict[str, tuple[str, str]] | None,
    prepared: PreparedCorpus,
) -> dict[str, str]:
    """Appends one row per usable clip in ``AudioWAV/`` (fold filled in later).

    A vote source adds its level column (:attr:`VoteSource.manifest_column`); file-name labels
    add none, the file name's level being ``intensity`` already.

    Returns:
        Actor -> gender for every actor with a well-formed file name, used or not, so that
        the folds do not depend on the class set or label source.
    """
    audio = AudioFiles()
    folder = root / "AudioWAV"
    actors: dict[str, str] = {}
    for name in sorted(audio.names(folder)):
        match = _NAME.match(name)
        if match is None:
            if name.lower().endswith(".wav"):
                prepared.skipped.append(Skip(f"AudioWAV/{name}", "malformed file name"))
            continue
        actors[match["actor"]] = genders.get(match["actor"], "unknown")
        labelled = _label(name[:-4], match["emotion"], classes, labels, votes)
        if isinstance(labelled, Skip):
            prepared.skipped.append(labelled)
            continue
        problem = audio.problem(folder / name)
        if problem:
            prepared.skipped.append(Skip(f"AudioWAV/{name}", problem))
            continue
        row = {
            "path": folder / name,
            "label": labelled[0],
            "speaker": match["actor"],
            "gender": actors[match["actor"]],
            "sentence": match["sentence"],
            "intended_emotion": NAME_LABELS.get(match["emotion"], match["emotion"]),
            "intensity": LEVELS.get(match["level"], match["level"]),
        }
        if labels in VOTE_SOURCES:
            row[VOTE_SOURCES[labels].manifest_column] = labelled[1]
        prepared.rows.append(row)
    return actors


@register_corpus(
    "crema-d",
    "CREMA-D",
    CorpusOption(
        "labels", "filename",
        "label source: filename (intended emotion), voice (VoiceVote, crowd vote on the audio "
        "alone) or multimodal (MultiModalVote, crowd vote on audio+video; PEFT-SER's labels)",
        choices=LABEL_SOURCES,
    ),
    CorpusOption("folds", 5, "number of speaker-independent actor folds"),
)
def prepare(
    root: Path, classes: str = "4", labels: str = "filename", folds: int = 5
) -> PreparedCorpus:
    """Imports CREMA-D with speaker-independent actor folds.

    Args:
        root: The repository folder holding ``AudioWAV/`` and ``VideoDemographics.csv``.
        classes: ``"4"`` (neutral, happy, angry, sad) or ``"all"`` (the 6 emotions).
        labels: ``"filename"`` (intended emotion), ``"voice"`` (``VoiceVote``, audio-only
            majority vote) or ``"multimodal"`` (``MultiModalVote``, audio-visual majority
            vote; the PEFT-SER study's labels).
        folds: Number of gender-balanced actor folds.

    Returns:
        Rows with ``fold``, sentence, intended emotion and intensity (and ``voice_level`` or
        ``multimodal_level`` with a vote source).

    Raises:
        FileNotFoundError: If ``AudioWAV/``, the demographics or the vote table is missing.
        ValueError: For an unknown ``labels`` value or a table lacking the source's columns.
    """
    root = Path(root)
    if labels not in LABEL_SOURCES:
        raise ValueError(
            f"crema-d: labels must be one of {', '.join(LABEL_SOURCES)}, not {labels!r}"
        )
    source = VOTE_LABELS if labels in VOTE_SOURCES else NAME_LABELS
    class_set = select_classes(classes, source, source)
    if not (root / "AudioWAV").is_dir():
        raise missing_layout("crema-d", root, "AudioWAV/ and VideoDemographics.csv", "AudioWAV")
    genders = _demographics(root)
    votes = _votes(root, labels) if labels in VOTE_SOURCES else None
    prepared = PreparedCorpus("crema-d", root, class_set.choice, rows=[])
    actors = _rows(root, genders, class_set, labels, votes, prepared)
    assignment = actor_folds(actors, folds) if actors else {}
    for row in prepared.rows:
        row["fold"] = assignment[str(row["speaker"])]
    unknown = sorted(a for a, g in actors.items() if g == "unknown")
    if unknown:
        prepared.notes.append(f"not in VideoDemographics.csv (gender unknown): actors {unknown}")
    source_text = (
        VOTE_SOURCES[labels].words if labels in VOTE_SOURCES else "intended emotion (file name)"
    )
    prepared.notes += [
        f"labels: {source_text}",
        f"protocol: {folds} speaker-independent, gender-balanced actor folds; "
        "partition(fold=K) takes dev = fold K+1",
    ]
    return prepared
