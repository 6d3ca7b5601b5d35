"""Miniature corpus trees in each distributor's exact layout, for tests and CLI smoke runs.

Every builder writes real file names and label formats with short generated audio (0.2 s,
16-bit, at the corpus's native rate) under ``root`` and plants the known traps: IEMOCAP's male
utterance in a dialog named F, annotator subfolders and an AppleDouble ``._`` file; MSP-Podcast's
O/X classes, unknown gender, withheld Test3 labels and old/new file names; MSP-Improv's
``Evalution.txt`` spelling; CREMA-D's empty ``1076_MTI_SAD_XX.wav`` and tied votes;
RAVDESS's odd/even actor genders. Each tree also holds one malformed label entry and one label
naming missing audio. The builders are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

SECONDS = 0.2


def wav(path: Path, rate: int, seconds: float = SECONDS) -> Path:
    """Writes a short 16-bit tone-plus-noise WAV (0 samples when ``seconds`` is 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = int(round(rate * seconds))
    seed = sum(path.name.encode()) % 1000
    noise = np.random.default_rng(seed).normal(0.0, 0.05, count)
    signal = 0.3 * np.sin(2 * np.pi * (150 + seed) * np.arange(count) / rate) + noise
    sf.write(path, signal.astype(np.float32), rate, subtype="PCM_16")
    return path


def _write(path: Path, text: str) -> None:
    """Writes a text file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- IEMOCAP ------------------------------------------------------------------------------------

IEMOCAP_DIALOGS: dict[str, list[tuple[str, str]]] = {
    "impro01": [("F000", "neu"), ("F001", "exc"), ("M002", "ang"), ("M003", "sad"),
                ("F004", "hap"), ("M005", "xxx"), ("F006", "fru"), ("M007", "neu")],
    "script01_1": [("F000", "sad"), ("M001", "hap"), ("F002", "ang"), ("M003", "oth")],
}  # fmt: skip


def iemocap(root: Path) -> Path:
    """IEMOCAP: 5 sessions x 2 dialogs; Session1 adds a malformed line and a missing wav."""
    for session in range(1, 6):
        base = root / f"Session{session}"
        evaluation = base / "dialog" / "EmoEvaluation"
        for index, (dialog, turns) in enumerate(IEMOCAP_DIALOGS.items()):
            name = f"Ses0{session}{'FM'[index]}_{dialog}"
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for number, (turn, code) in enumerate(turns):
                utt = f"{name}_{turn}"
                lines += [
                    f"[{number * 3}.1200 - {number * 3 + 2}.5000]\t{utt}\t{code}\t[2.5000, 3.0000, 3.5000]",
                    f"C-E2:\t{code.title()};\t()",
                    "A-E3:\tval 3; act 2; dom  2;\t()",
                    "",
                ]
                wav(base / "sentences" / "wav" / name / f"{utt}.wav", 16000)
            if session == 1 and index == 0:
                lines += [
                    f"[30.0 - 31.0]\t{name}_F098\tneu\t[2.5000, 2.5000]",  # malformed: 2 values
                    "",
                    f"[32.0 - 33.0]\t{name}_F099\tang\t[2.0000, 4.0000, 4.0000]",  # no wav
                    "",
                ]
            _write(evaluation / f"{name}.txt", "\n".join(lines) + "\n")
            # Per-annotator files: data-like lines that must never be read as turn labels.
            _write(
                evaluation / "Categorical" / f"{name}_e1_cat.txt",
                f"[1.0 - 2.0]\t{name}_M077\tang\t[1.0, 1.0, 1.0]\n{name}_F000 :Neutral state; ()\n",
            )
            _write(evaluation / "Attribute" / f"{name}_atr.txt", f"{name}_F000 :act 2; val 3;\n")
        (evaluation / f"._Ses0{session}F_impro01.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    return root


# --- MSP-Podcast --------------------------------------------------------------------------------

PODCAST_HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"


def _podcast_records(dev_name: str) -> list[tuple[str, str, str, str, str]]:
    """(file, class, speaker, gender, split) of the fixture's label rows."""
    records = []
    plan = [("Train", "1", "Male"), ("Train", "2", "Female"), (dev_name, "3", "Female"),
            (dev_name, "4", "Male"), ("Test1", "5", "Female"), ("Test1", "6", "Male"),
            ("Test2", "7", "Female")]  # fmt: skip
    for podcast, (split, speaker, gender) in enumerate(plan, start=1):
        for segment, code in enumerate("NASH", start=1):
            name = f"MSP-PODCAST_{podcast:04d}_{segment:04d}.wav"
            records.append((name, code, speaker, gender, split))
    records += [
        ("MSP-PODCAST_0001_0005.wav", "U", "1", "Male", "Train"),
        ("MSP-PODCAST_0001_0006.wav", "O", "1", "Male", "Train"),
        ("MSP-PODCAST_0002_0005.wav", "X", "2", "Female", "Train"),
        ("MSP-PODCAST_0005_0005.wav", "H", "Unknown", "Unknown", "Test1"),
        ("MSP-PODCAST_0008_0001.wav", "", "Unknown", "Unknown", "Test3"),
    ]
    return records


def msp_podcast(root: Path, old_names: bool = False) -> Path:
    """MSP-Podcast: 7 speakers over Train/Development/Test1/Test2, plus O/X/U and traps.

    Args:
        root: Where to build the tree.
        old_names: Use the older ``labels_concensus.csv``, ``Audio/`` and ``Validation``.

    Returns:
        ``root``.
    """
    audio = root / ("Audio" if old_names else "Audios")
    labels = "labels_concensus.csv" if old_names else "labels_consensus.csv"
    lines = [PODCAST_HEADER]
    for name, code, speaker, gender, split in _podcast_records(
        "Validation" if old_names else "Development"
    ):
        lines.append(f"{name},{code},3.4,4.0,3.8,{speaker},{gender},{split}")
        wav(audio / name, 16000)
    lines.append("MSP-PODCAST_0009_0001.wav,N,high,4.0,3.8,9,Male,Train")  # malformed rating
    lines.append("MSP-PODCAST_0009_0002.wav,A,3.0,4.0,3.8,9,Male,Train")  # audio missing
    wav(audio / "MSP-PODCAST_0008_0002.wav", 16000)  # Test3 audio that no label row names
    _write(root / "Labels" / labels, "\n".join(lines) + "\n")
    return root


# --- MSP-Improv ---------------------------------------------------------------------------------


def msp_improv(root: Path, label_file: str = "Evalution.txt") -> Path:
    """MSP-Improv: 6 sessions x (F, M) x 4 emotions, one recording type each, plus traps."""
    blocks = []
    types = "RSTP"
    for session in range(1, 7):
        for gender in "FM":
            for index, code in enumerate("AHSN"):
                kind = types[(index + session) % 4]
                ident = f"S0{index + 1}{code}-{gender}0{session}-{kind}-FM0{index + 1}"
                blocks.append(f"UTD-IMPROV-{ident}.avi; {code}; A:3.0; V:3.5; D:3.0 ; N:5.0;")
                blocks += [f"rater{r}; Neutral; (); A:3.0; V:3.0; D:3.0; N:1.0;" for r in (1, 2)]
                blocks.append("")
                folder = root / f"session{session}" / f"S0{index + 1}{code}" / kind
                wav(folder / f"MSP-IMPROV-{ident}.wav", 16000)
    for code, session, ident in (("O", 1, "S05O-F01-P-FM05"), ("X", 2, "S06X-M02-P-FM06")):
        blocks += [f"UTD-IMPROV-{ident}.avi; {code}; A:NaN; V:NaN; D:NaN ;", ""]
        wav(root / f"session{session}" / ident[:4] / "P" / f"MSP-IMPROV-{ident}.wav", 16000)
    blocks += ["UTD-IMPROV-S01A-F01-R.avi; A; A:3.0; V:3.5 ;", ""]  # malformed header
    blocks += ["UTD-IMPROV-S07A-F03-R-FM07.avi; A; A:3.0; V:3.5; D:3.0 ;", ""]  # no wav
    _write(root / label_file, "\n".join(blocks) + "\n")
    return root


# --- CREMA-D ------------------------------------------------------------------------------------

# Rows of the real VideoDemographics.csv for the fixture's ten actors (5 F, 5 M).
CREMA_ACTORS: dict[str, tuple[int, str, str, str]] = {
    "1001": (51, "Male", "Caucasian", "Not Hispanic"),
    "1002": (21, "Female", "Caucasian", "Not Hispanic"),
    "1003": (21, "Female", "Caucasian", "Not Hispanic"),
    "1004": (42, "Female", "Caucasian", "Not Hispanic"),
    "1005": (29, "Male", "African American", "Not Hispanic"),
    "1006": (58, "Female", "Caucasian", "Not Hispanic"),
    "1011": (32, "Male", "Caucasian", "Not Hispanic"),
    "1014": (24, "Male", "Caucasian", "Not Hispanic"),
    "1015": (32, "Male", "African American", "Not Hispanic"),
    "1076": (25, "Female", "Caucasian", "Not Hispanic"),
}
CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
# Votes that differ from the intended emotion (clip -> vote); the rest agree. 1001_DFA_ANG_XX
# gets three labels (file name angry, voice disgusted, multimodal fearful); each vote has a tie
# that the other labels as usual. FaceVote always agrees with the file name, so reading it in
# place of another vote shows.
CREMA_VOTES: dict[str, str] = {"1001_DFA_ANG_XX": "D", "1002_IEO_HAP_HI": "A:D"}
CREMA_MULTIMODAL: dict[str, str] = {"1001_DFA_ANG_XX": "F", "1003_DFA_SAD_XX": "N:S"}


def crema_d(root: Path) -> Path:
    """CREMA-D: 10 actors x 6 emotions (+ one levelled clip), the empty 1076 clip and traps."""
    demographics = ['"ActorID","Age","Sex","Race","Ethnicity"']
    table = ['"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote",'
             '"MultiModalLevel"']  # fmt: skip
    for actor, (age, sex, race, ethnicity) in CREMA_ACTORS.items():
        demographics.append(f'{actor},{age},"{sex}","{race}","{ethnicity}"')
        clips = [f"{actor}_DFA_{e}_XX" for e in CREMA_EMOTIONS] + [f"{actor}_IEO_HAP_HI"]
        for clip in clips:
            wav(root / "AudioWAV" / f"{clip}.wav", 16000)
            face = clip.split("_")[2][0]
            vote, both = CREMA_VOTES.get(clip, face), CREMA_MULTIMODAL.get(clip, face)
            levels = ["30.5:30.5" if ":" in v else n for v, n in ((vote, "60.5"), (both, "65"))]
            table.append(f'"{len(table)}","{clip}","{vote}","{levels[0]}","{face}","70",'
                         f'"{both}","{levels[1]}"')
    wav(root / "AudioWAV" / "1076_MTI_SAD_XX.wav", 16000, seconds=0.0)  # empty in the release
    table.append(f'"{len(table)}","1076_MTI_SAD_XX","S","50","S","50","S","50"')
    wav(root / "AudioWAV" / "1001_DFA_ANG.wav", 16000)  # malformed name
    _write(root / "VideoDemographics.csv", "\n".join(demographics) + "\n")
    _write(root / "processedResults" / "summaryTable.csv", "\n".join(table) + "\n")
    return root


# --- RAVDESS ------------------------------------------------------------------------------------


def ravdess(root: Path, actors: int = 12) -> Path:
    """RAVDESS speech archive one level down: ``actors`` actors x 8 emotions, plus traps."""
    base = root / "Audio_Speech_Actors_01-24"
    for actor in range(1, actors + 1):
        folder = base / f"Actor_{actor:02d}"
        for emotion in range(1, 9):
            wav(folder / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", 48000)
        wav(folder / f"03-01-05-02-02-02-{actor:02d}.wav", 48000)  # strong angry
    wav(base / "Actor_01" / "03-02-03-01-01-01-01.wav", 48000)  # song: not used by default
    wav(base / "Actor_02" / "03-01-01-01-01-01-05.wav", 48000)  # actor differs from folder
    wav(base / "Actor_02" / "03-01-01-01.wav", 48000)  # malformed name
    return root


FIXTURES: dict[str, Callable[[Path], Path]] = {
    "iemocap": iemocap,
    "msp-podcast": msp_podcast,
    "msp-improv": msp_improv,
    "crema-d": crema_d,
    "ravdess": ravdess,
}


def build_fixture(name: str, root: Path) -> Path:
    """Builds the miniature tree of corpus ``name`` under ``root`` and returns ``root``."""
    if name not in FIXTURES:
        raise KeyError(f"no fixture for corpus {name!r}; known: {', '.join(FIXTURES)}")
    return FIXTURES[name](Path(root))
