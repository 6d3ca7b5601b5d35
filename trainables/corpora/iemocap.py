"""IEMOCAP (USC SAIL): five sessions of dyadic improvised and scripted dialogs.

Layout read (release ``IEMOCAP_full_release``)::

    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt        turn labels (top level only)
    Session{1..5}/dialog/EmoEvaluation/{Categorical,...}/   per-annotator files: ignored
    Session{1..5}/sentences/wav/<dialog>/<utterance>.wav    16 kHz audio

Only lines starting with ``[`` are data lines: ``[start - end]<TAB>utt<TAB>code<TAB>[v, a, d]``;
the ``%`` header and the annotator lines (``C-E2:``, ``A-F1:`` ...) are ignored. The speaker
is the session plus the first letter of the utterance id's *last* field: ``Ses01F_impro01_M003``
is spoken by the male actor ``Ses01M`` although the dialog name says F. Protocol: leave one
session out, ``fold`` = session (1-5).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from trainables.corpora.base import (
    AudioFiles,
    ClassSet,
    PreparedCorpus,
    Row,
    Skip,
    missing_layout,
    register_corpus,
    relative_item,
    select_classes,
)

logger = logging.getLogger(__name__)

SESSIONS: tuple[int, ...] = (1, 2, 3, 4, 5)
KNOWN: dict[str, str] = {
    "neu": "neutral",
    "hap": "happiness",
    "exc": "excitement",
    "ang": "anger",
    "sad": "sadness",
    "fru": "frustration",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
    "oth": "other",
    "xxx": "no majority",
}
LABELS: dict[str, str] = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "ang": "angry",
    "sad": "sad",
    "fru": "frustrated",
    "sur": "surprised",
    "fea": "fearful",
    "dis": "disgusted",
}
_LINE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\s*\]\s+"
    r"(?P<utt>\S+)\s+(?P<code>[a-z]+)\s+\[(?P<vad>[^\]]*)\]\s*$"
)
_UTT = re.compile(r"^Ses0(?P<session>[1-5])[FM]_(?P<dialog_rest>\S+)_(?P<gender>[FM])\d+$")


def _parse_line(match: re.Match[str], session: int) -> Row | None:
    """Turns one matched data line into a partial row; None if the id or VAD is malformed."""
    utt = _UTT.match(match["utt"])
    parts = [p.strip() for p in match["vad"].split(",")]
    if utt is None or int(utt["session"]) != session or len(parts) != 3:
        return None
    try:
        valence, arousal, dominance = (float(p) for p in parts)
    except ValueError:
        return None
    dialog = match["utt"].rsplit("_", 1)[0]
    gender = utt["gender"]
    return {
        "speaker": f"Ses0{session}{gender}",
        "gender": gender,
        "fold": session,
        "session": session,
        "utterance": match["utt"],
        "dialog": dialog,
        "dialog_type": "impro" if "_impro" in dialog else "script",
        "emotion_code": match["code"],
        "valence": valence,
        "arousal": arousal,
        "dominance": dominance,
        "start": float(match["start"]),
        "end": float(match["end"]),
    }


def _read_file(
    path: Path, root: Path, session: int, classes: ClassSet, audio: AudioFiles
) -> tuple[list[Row], list[Skip]]:
    """Parses one top-level EmoEvaluation file into rows and skips."""
    rows: list[Row] = []
    skipped: list[Skip] = []
    wav_root = root / f"Session{session}" / "sentences" / "wav"
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("["):
            continue  # header, blank or annotator line
        where = f"{relative_item(path, root)}:{number}"
        match = _LINE.match(line)
        row = _parse_line(match, session) if match else None
        if match is None or row is None:
            skipped.append(Skip(where, "malformed label line"))
            continue
        label = classes.label(match["code"])
        if label is None:
            skipped.append(Skip(match["utt"], classes.reason(match["code"])))
            continue
        wav = wav_root / str(row["dialog"]) / f"{match['utt']}.wav"
        problem = audio.problem(wav)
        if problem:
            skipped.append(Skip(relative_item(wav, root), problem))
            continue
        rows.append({"path": wav, "label": label, **row})
    return rows, skipped


def _label_files(root: Path, session: int) -> list[Path]:
    """The top-level ``*.txt`` files of one session's EmoEvaluation folder."""
    folder = root / f"Session{session}" / "dialog" / "EmoEvaluation"
    if not folder.is_dir():
        raise FileNotFoundError(f"iemocap: label folder {folder} is missing")
    files = sorted(p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"iemocap: no <dialog>.txt label files in {folder}")
    return files


@register_corpus("iemocap", "IEMOCAP")
def prepare(root: Path, classes: str = "4") -> PreparedCorpus:
    """Imports IEMOCAP: 4 classes (hap + exc merged into happy) or all 9 labelled emotions.

    Args:
        root: The release folder holding ``Session1`` ... ``Session5``.
        classes: ``"4"`` or ``"all"`` (``oth`` and ``xxx`` are always skipped).

    Returns:
        Rows with ``fold`` = session, plus valence/arousal/dominance, times and ids.

    Raises:
        FileNotFoundError: If no ``Session<N>`` folder or a session's labels are missing.
    """
    root = Path(root)
    class_set = select_classes(classes, LABELS, KNOWN, four_extra={"exc": "happy"})
    present = [s for s in SESSIONS if (root / f"Session{s}").is_dir()]
    if not present:
        raise missing_layout(
            "iemocap", root, "Session1 ... Session5 folders with dialog/EmoEvaluation", "Session1"
        )
    prepared = PreparedCorpus("iemocap", root, class_set.choice, rows=[])
    audio = AudioFiles()
    for session in present:
        for path in _label_files(root, session):
            rows, skipped = _read_file(path, root, session, class_set, audio)
            prepared.rows += rows
            prepared.skipped += skipped
    missing = sorted(set(SESSIONS) - set(present))
    if missing:
        prepared.notes.append(f"session(s) {missing} not found: fewer folds than the usual 5")
    prepared.notes.append(
        "protocol: leave one session out; partition(fold=K) takes dev = session K+1, "
        "a training session, never the test session"
    )
    if class_set.choice == "4":
        prepared.notes.append("4-class: 'exc' (excited) merged into 'happy'")
    return prepared
