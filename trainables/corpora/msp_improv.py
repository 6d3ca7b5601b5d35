"""MSP-Improv (UT Dallas MSP lab): six sessions of dyadic improvisations, one F and one M actor each.

Layout read::

    Evaluation.txt   (some releases: Evalution.txt)
    session<k>/<S01A>/<type>/MSP-IMPROV-<S01A>-<F01>-<type>-<FM01>.wav

An utterance block in the label file starts with a line such as
``UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.0; V:3.5; D:3.0 ;`` (some releases append
``N:<raters>;``), followed by one line per annotator (ignored). In the id, ``S01A`` is the
target sentence (01) and its target emotion (A), ``F01`` the speaker (gender letter + session
number) and the single letter after it the recording type (kept as ``recording_type``).
Consensus codes: A, H, S, N; O (other) and X (no agreement) are dropped. Protocol: leave one
session out, ``fold`` = session (1-6).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from trainables.corpora.base import (
    AudioFiles,
    ClassSet,
    PreparedCorpus,
    Row,
    Skip,
    first_existing,
    missing_layout,
    register_corpus,
    relative_item,
    select_classes,
)

logger = logging.getLogger(__name__)

LABEL_FILES: tuple[str, ...] = ("Evaluation.txt", "Evalution.txt")
KNOWN: dict[str, str] = {
    "A": "angry",
    "H": "happy",
    "S": "sad",
    "N": "neutral",
    "O": "other",
    "X": "no agreement",
}
LABELS: dict[str, str] = {"A": "angry", "H": "happy", "S": "sad", "N": "neutral"}
_NUM = r"(\d+(?:\.\d+)?|NaN)"
_HEADER = re.compile(
    rf"^UTD-IMPROV-(?P<id>[A-Za-z0-9-]+)\.avi\s*;\s*(?P<code>[A-Z])\s*;"
    rf"\s*A:\s*(?P<a>{_NUM})\s*;\s*V:\s*(?P<v>{_NUM})\s*;\s*D:\s*(?P<d>{_NUM})\s*;"
    rf"(?:\s*N:\s*(?P<n>{_NUM})\s*;)?\s*$"
)
_ID = re.compile(
    r"^(?P<sentence>S\d{2}(?P<target>[A-Z]))-(?P<gender>[FM])(?P<session>\d{2})"
    r"-(?P<type>[A-Z])-(?P<turn>[A-Za-z0-9]+)$"
)


def _row(header: re.Match[str], ident: re.Match[str], wav: Path, label: str) -> Row:
    """The manifest row of one parsed utterance header."""
    session = int(ident["session"])
    return {
        "path": wav,
        "label": label,
        "speaker": f"{ident['gender']}{session:02d}",
        "gender": ident["gender"],
        "fold": session,
        "session": session,
        "recording_type": ident["type"],
        "sentence": ident["sentence"],
        "target_emotion": ident["target"],
        "emotion_code": header["code"],
        "arousal": float(header["a"]),
        "valence": float(header["v"]),
        "dominance": float(header["d"]),
        "raters": float(header["n"]) if header["n"] else math.nan,
    }


def _convert(line: str, where: str, root: Path, classes: ClassSet, audio: AudioFiles) -> Row | Skip:
    """One utterance header line -> a row, or the reason it is skipped."""
    header = _HEADER.match(line)
    ident = _ID.match(header["id"]) if header else None
    if header is None or ident is None or not 1 <= int(ident["session"]) <= 6:
        return Skip(where, "malformed label line")
    label = classes.label(header["code"])
    if label is None:
        return Skip(f"MSP-IMPROV-{header['id']}", classes.reason(header["code"]))
    folder = root / f"session{int(ident['session'])}" / ident["sentence"] / ident["type"]
    wav = folder / f"MSP-IMPROV-{header['id']}.wav"
    problem = audio.problem(wav)
    if problem:
        return Skip(relative_item(wav, root), problem)
    return _row(header, ident, wav, label)


@register_corpus("msp-improv", "MSP-Improv")
def prepare(root: Path, classes: str = "4") -> PreparedCorpus:
    """Imports MSP-Improv: angry, happy, sad, neutral (``"4"`` and ``"all"`` are the same set).

    Args:
        root: The release folder holding ``Evaluation.txt``/``Evalution.txt`` and ``session1..6``.
        classes: ``"4"`` or ``"all"``.

    Returns:
        Rows with ``fold`` = session, recording type, target sentence and A/V/D ratings.

    Raises:
        FileNotFoundError: If the label file or the session folders are missing.
    """
    root = Path(root)
    class_set = select_classes(classes, LABELS, KNOWN)
    label_file = first_existing(root, LABEL_FILES)
    if label_file is None:
        raise missing_layout("msp-improv", root, " or ".join(LABEL_FILES), "Evalution.txt")
    if not any(root.glob("session[1-6]")):
        raise missing_layout("msp-improv", root, "session1 ... session6 audio folders", "session1")
    prepared = PreparedCorpus("msp-improv", root, class_set.choice, rows=[])
    audio = AudioFiles()
    seen: set[str] = set()
    for number, raw in enumerate(label_file.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("UTD-IMPROV"):
            continue  # blank or annotator line
        result = _convert(line, f"{label_file.name}:{number}", root, class_set, audio)
        if isinstance(result, Skip):
            prepared.skipped.append(result)
        elif str(result["path"]) in seen:
            prepared.skipped.append(Skip(f"{label_file.name}:{number}", "duplicate utterance"))
        else:
            seen.add(str(result["path"]))
            prepared.rows.append(result)
    prepared.notes += [
        f"labels from {label_file.name}",
        "protocol: leave one session out (fold = session 1-6); partition(fold=K) takes "
        "dev = the next session",
    ]
    return prepared
