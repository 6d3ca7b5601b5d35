"""MSP-Podcast (UT Dallas MSP lab): podcast segments with consensus labels and official splits.

Layout read (names changed across releases, both spellings accepted)::

    Labels/labels_consensus.csv   (older: Labels/labels_concensus.csv)
    Audios/<FileName>             (older: Audio/<FileName>)

CSV columns used: ``FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set``.
``Split_Set`` is Train, Development (older: Validation), Test1, Test2 or Test3. The main manifest
holds Train/Development/Test1 as ``split`` train/dev/test and keeps the release's name in
``official_split``; Test2 goes to a side manifest ``<out stem>.test2.parquet`` (``split`` = test),
because the manifest ``split`` column only knows train/dev/test. Test3 labels are withheld:
its rows (and audio files no row names) are skipped and counted.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from trainables.corpora.base import (
    AudioFiles,
    ClassSet,
    PreparedCorpus,
    Row,
    Skip,
    first_existing,
    missing_layout,
    parse_gender,
    register_corpus,
    select_classes,
)

logger = logging.getLogger(__name__)

LABEL_FILES: tuple[str, ...] = ("Labels/labels_consensus.csv", "Labels/labels_concensus.csv")
AUDIO_FOLDERS: tuple[str, ...] = ("Audios", "Audio")
COLUMNS: tuple[str, ...] = (
    "FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set",
)  # fmt: skip
SPLITS: dict[str, str] = {
    "Train": "train",
    "Development": "dev",
    "Validation": "dev",
    "Test1": "test",
    "Test2": "test",
}
KNOWN: dict[str, str] = {
    "N": "neutral",
    "A": "angry",
    "S": "sad",
    "H": "happy",
    "U": "surprise",
    "F": "fear",
    "D": "disgust",
    "C": "contempt",
    "O": "other",
    "X": "no agreement",
}
LABELS: dict[str, str] = {
    "N": "neutral",
    "A": "angry",
    "S": "sad",
    "H": "happy",
    "U": "surprised",
    "F": "fearful",
    "D": "disgusted",
    "C": "contempt",
}


def _number(text: str | None) -> float:
    """Parses a dimensional rating; empty means NaN, anything else unparsable raises."""
    if text is None or not text.strip():
        return math.nan
    return float(text)


def _row(record: dict[str, str], wav: Path, label: str, split: str) -> Row:
    """Builds the manifest row of one CSV record (ratings must already parse)."""
    speaker = record["SpkrID"].strip()
    if not speaker or speaker.lower() == "unknown":
        # Unknown speakers are not one person: give each segment its own id so that
        # speaker-level statistics and leakage checks do not merge strangers.
        speaker = f"unknown_{wav.stem}"
    return {
        "path": wav,
        "label": label,
        "speaker": speaker,
        "gender": parse_gender(record["Gender"]),
        "split": SPLITS[split],
        "official_split": split,
        "emotion_code": record["EmoClass"].strip(),
        "arousal": _number(record["EmoAct"]),
        "valence": _number(record["EmoVal"]),
        "dominance": _number(record["EmoDom"]),
    }


def _convert(
    record: dict[str, str], where: str, audio_dir: Path, classes: ClassSet, audio: AudioFiles
) -> Row | Skip:
    """One CSV record -> a row, or the reason it is skipped."""
    if None in record or any(record.get(c) is None for c in COLUMNS):
        return Skip(where, "malformed label line (wrong number of fields)")
    name = record["FileName"].strip()
    if not name:
        return Skip(where, "malformed label line (empty FileName)")
    wav = audio_dir / (name if name.lower().endswith(".wav") else f"{name}.wav")
    code, split = record["EmoClass"].strip(), record["Split_Set"].strip()
    if not code:
        return Skip(name, f"no consensus label (withheld; split {split or '?'})")
    if split not in SPLITS:
        return Skip(name, f"split {split!r} not used")
    label = classes.label(code)
    if label is None:
        return Skip(name, classes.reason(code))
    try:
        row = _row(record, wav, label, split)
    except ValueError:
        return Skip(where, "malformed label line (rating is not a number)")
    problem = audio.problem(wav)
    return Skip(f"{audio_dir.name}/{wav.name}", problem) if problem else row


def _unlabelled(audio: AudioFiles, audio_dir: Path, named: set[str]) -> list[Skip]:
    """Skips for audio files that no label row names (Test3 in releases that withhold it)."""
    return [
        Skip(f"{audio_dir.name}/{name}", "audio without a label row (e.g. Test3)")
        for name in sorted(audio.names(audio_dir))
        if name.lower().endswith(".wav") and Path(name).stem not in named
    ]


@register_corpus("msp-podcast", "MSP-Podcast")
def prepare(root: Path, classes: str = "4") -> PreparedCorpus:
    """Imports MSP-Podcast: 4 classes (N/A/S/H) or all 8; O and X are always dropped.

    Args:
        root: The release folder holding ``Labels/`` and ``Audios/`` (or ``Audio/``).
        classes: ``"4"`` or ``"all"``.

    Returns:
        Rows with ``split`` and ``official_split``; Test2 rows in ``extra["test2"]``.

    Raises:
        FileNotFoundError: If the label file or the audio folder is missing.
        ValueError: If the label file lacks one of the expected columns.
    """
    root = Path(root)
    class_set = select_classes(classes, LABELS, KNOWN)
    label_file = first_existing(root, LABEL_FILES)
    if label_file is None:
        raise missing_layout("msp-podcast", root, " or ".join(LABEL_FILES), "Labels")
    audio_dir = first_existing(root, AUDIO_FOLDERS)
    if audio_dir is None:
        raise FileNotFoundError(
            f"msp-podcast: no audio folder in {root}; expected {' or '.join(AUDIO_FOLDERS)}/"
        )
    prepared = PreparedCorpus(
        "msp-podcast", root, class_set.choice, rows=[], group_by="official_split"
    )
    prepared.extra["test2"] = []
    audio = AudioFiles()
    named: set[str] = set()
    with label_file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        absent = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"msp-podcast: {label_file} lacks column(s) {', '.join(absent)}")
        for record in reader:
            where = f"{label_file.relative_to(root).as_posix()}:{reader.line_num}"
            result = _convert(record, where, audio_dir, class_set, audio)
            named.add(Path((record.get("FileName") or "").strip()).stem)
            if isinstance(result, Skip):
                prepared.skipped.append(result)
            elif result["official_split"] == "Test2":
                prepared.extra["test2"].append(result)
            else:
                prepared.rows.append(result)
    prepared.skipped += _unlabelled(audio, audio_dir, named)
    prepared.notes += [
        f"labels from {label_file.relative_to(root).as_posix()}, audio from {audio_dir.name}/",
        "split: Train -> train, Development/Validation -> dev, Test1 -> test; "
        "Test2 -> side manifest <out stem>.test2.parquet",
        "unknown SpkrID: each segment gets its own speaker id unknown_<file>",
    ]
    return prepared
