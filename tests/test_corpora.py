"""Tests for trainables.corpora: every importer on a miniature tree in its distributor's layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from corpus_fixtures import FIXTURES, build_fixture, msp_improv, msp_podcast

from trainables.corpora import (
    CORPORA,
    ROOT_COLUMN,
    actor_folds,
    prepare_corpus,
    rebase_manifest,
    side_manifest,
)
from trainables.data.manifest import partition, read_manifest


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fixture tree per registered corpus, built once for the module."""
    base = tmp_path_factory.mktemp("corpora")
    return {name: build_fixture(name, base / name) for name in CORPORA.names()}


def _run(
    name: str, root: Path, out: Path, classes: str = "4", **options: object
) -> tuple[pd.DataFrame, str]:
    """Prepares a corpus; returns the validated manifest as a frame and the summary."""
    path, text = prepare_corpus(name, root, out, classes, **options)
    return read_manifest(path).to_pandas(), text


def _by_file(frame: pd.DataFrame) -> pd.DataFrame:
    """The manifest indexed by audio file stem."""
    return frame.set_index(frame[ROOT_COLUMN].map(lambda p: Path(p).stem))


def _line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of ``path`` containing ``needle``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_every_corpus_has_a_fixture() -> None:
    assert set(CORPORA.names()) == {"iemocap", "msp-podcast", "msp-improv", "crema-d", "ravdess"}
    assert set(FIXTURES) == set(CORPORA.names())


@pytest.mark.parametrize("classes", ["4", "all"])
@pytest.mark.parametrize("name", CORPORA.names())
def test_manifest_partitions_are_speaker_independent(
    name: str, classes: str, roots: dict[str, Path], tmp_path: Path
) -> None:
    path, text = prepare_corpus(name, roots[name], tmp_path / "m.parquet", classes)
    table = read_manifest(path).to_pandas()
    assert "skipped" in text and "total" in text
    assert set(table["gender"]) <= {"F", "M", "unknown"}
    if classes == "4":
        assert set(table["label"]) == {"neutral", "happy", "angry", "sad"}
    if "fold" in table.columns:
        parts = [partition(path, fold=int(k)) for k in sorted(set(table["fold"]))]
        assert all(p.dev_fold != p.test_fold for p in parts)
    else:
        parts = [partition(path)]
    for part in parts:
        speakers = {s: {u.speaker for u in getattr(part, s)} for s in ("train", "dev", "test")}
        assert not speakers["train"] & speakers["test"]
        assert not speakers["dev"] & speakers["test"]
        assert all(u.path.is_file() for u in part.train + part.dev + part.test)


def test_iemocap_speakers_labels_and_skips(roots: dict[str, Path], tmp_path: Path) -> None:
    root = roots["iemocap"]
    table, text = _run("iemocap", root, tmp_path / "i.parquet")
    rows = _by_file(table)
    male = rows.loc["Ses01F_impro01_M003"]  # male turn in a dialog named F
    assert (male["speaker"], male["gender"], male["label"]) == ("Ses01M", "M", "sad")
    female = rows.loc["Ses03M_script01_1_F000"]
    assert (female["speaker"], female["gender"], female["fold"]) == ("Ses03F", "F", 3)
    assert rows.loc["Ses01F_impro01_F001", "label"] == "happy"  # exc merged
    assert rows.loc["Ses02F_impro01_F004", "label"] == "happy"
    assert rows.loc["Ses01F_impro01_F000", "valence"] == pytest.approx(2.5)
    assert (rows["fold"] == rows["speaker"].str[4].astype(int)).all()
    assert len(table) == 45
    assert "M077" not in text and "M077" not in " ".join(table[ROOT_COLUMN])  # annotator files
    label_file = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    line = _line_of(label_file, "_F098")
    assert (
        f"malformed label line  (e.g. Session1/dialog/EmoEvaluation/Ses01F_impro01.txt:{line})"
        in text
    )
    assert (
        "audio file missing  (e.g. Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F099.wav)"
        in text
    )
    for code in ("xxx", "fru", "oth"):
        assert f"     5  class {code!r}" in text
    every, _ = _run("iemocap", root, tmp_path / "a.parquet", "all")
    labels = _by_file(every)["label"]
    assert labels["Ses01F_impro01_F001"] == "excited"
    assert labels["Ses01F_impro01_F006"] == "frustrated"


@pytest.mark.parametrize("old_names", [False, True])
def test_msp_podcast_releases(old_names: bool, tmp_path: Path) -> None:
    root = msp_podcast(tmp_path / "corpus", old_names=old_names)
    out = tmp_path / "p.parquet"
    table, text = _run("msp-podcast", root, out)
    rows = _by_file(table)
    assert set(table["official_split"]) == {
        "Train",
        "Validation" if old_names else "Development",
        "Test1",
    }
    assert set(table["split"]) == {"train", "dev", "test"}
    assert rows.loc["MSP-PODCAST_0001_0001", "label"] == "neutral"
    assert rows.loc["MSP-PODCAST_0003_0002", "split"] == "dev"
    unknown = rows.loc["MSP-PODCAST_0005_0005"]
    assert (unknown["gender"], unknown["speaker"]) == ("unknown", "unknown_MSP-PODCAST_0005_0005")
    assert list(rows.loc["MSP-PODCAST_0004_0001", ["speaker", "gender"]]) == ["4", "M"]
    assert not {"MSP-PODCAST_0001_0006", "MSP-PODCAST_0002_0005"} & set(rows.index)  # O, X
    test2 = read_manifest(side_manifest(out, "test2")).to_pandas()
    assert len(test2) == 4 and set(test2["split"]) == {"test"}
    assert set(test2["official_split"]) == {"Test2"} and not (table["speaker"] == "7").any()
    assert "no consensus label (withheld; split Test3)" in text
    assert "audio without a label row (e.g. Test3)  (e.g. Audio" in text
    assert "audio file missing" in text and ".csv:35)" in text
    every, _ = _run("msp-podcast", root, tmp_path / "a.parquet", "all")
    assert _by_file(every).loc["MSP-PODCAST_0001_0005", "label"] == "surprised"
    assert not {"O", "X"} & set(every["emotion_code"])


@pytest.mark.parametrize("label_file", ["Evalution.txt", "Evaluation.txt"])
def test_msp_improv(label_file: str, tmp_path: Path) -> None:
    root = msp_improv(tmp_path / "corpus", label_file=label_file)
    table, text = _run("msp-improv", root, tmp_path / "m.parquet")
    rows = _by_file(table)
    first = rows.loc["MSP-IMPROV-S01A-F01-S-FM01"]
    assert (first["speaker"], first["gender"], first["fold"], first["label"]) == (
        "F01",
        "F",
        1,
        "angry",
    )
    assert first["recording_type"] == "S" and first["raters"] == 5.0
    male = rows.loc["MSP-IMPROV-S04N-M06-S-FM04"]
    assert (male["speaker"], male["gender"], male["fold"], male["label"]) == (
        "M06",
        "M",
        6,
        "neutral",
    )
    assert set(table["recording_type"]) == set("RSTP")
    assert (table["fold"] == table["speaker"].str[1:].astype(int)).all()
    line = _line_of(root / label_file, "S01A-F01-R.avi")
    assert f"malformed label line  (e.g. {label_file}:{line})" in text
    assert "class 'O' (other)" in text and "class 'X' (no agreement)" in text
    assert "audio file missing  (e.g. session3/S07A/R/MSP-IMPROV-S07A-F03-R-FM07.wav)" in text


def test_crema_d_labels_gender_and_empty_file(roots: dict[str, Path], tmp_path: Path) -> None:
    root = roots["crema-d"]
    table, text = _run("crema-d", root, tmp_path / "c.parquet", "all")
    rows = _by_file(table)
    assert list(rows.loc["1001_DFA_ANG_XX", ["label", "gender", "speaker"]]) == [
        "angry",
        "M",
        "1001",
    ]
    assert rows.loc["1076_DFA_SAD_XX", "gender"] == "F"
    assert rows.loc["1002_IEO_HAP_HI", "intensity"] == "high"
    assert "1076_MTI_SAD_XX" not in rows.index
    assert "empty audio file (0 samples)  (e.g. AudioWAV/1076_MTI_SAD_XX.wav)" in text
    assert "malformed file name  (e.g. AudioWAV/1001_DFA_ANG.wav)" in text
    folds = table.groupby("fold")["gender"].agg(set)
    assert len(folds) == 5 and all(g == {"F", "M"} for g in folds)
    assert table.groupby("speaker")["fold"].nunique().max() == 1
    voice, vtext = _run("crema-d", root, tmp_path / "v.parquet", "all", labels="voice")
    votes = _by_file(voice)
    assert votes.loc["1001_DFA_ANG_XX", "label"] == "disgusted"
    assert "1002_IEO_HAP_HI" not in votes.index and "voice vote tied" in vtext
    assert votes.loc["1001_DFA_ANG_XX", "intended_emotion"] == "angry"
    fold_of = table.groupby("speaker")["fold"].first()
    assert voice.groupby("speaker")["fold"].first().equals(fold_of)  # folds ignore labels


def test_crema_d_label_sources_filename_voice_and_multimodal_differ(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    """The three label sources read three columns; each vote keeps its own level column."""
    root = roots["crema-d"]
    frames, texts = {}, {}
    for source in ("filename", "voice", "multimodal"):
        frame, texts[source] = _run("crema-d", root, tmp_path / f"{source}.parquet", "all",
                                    labels=source)
        frames[source] = _by_file(frame)
    labels = {s: f.loc["1001_DFA_ANG_XX", "label"] for s, f in frames.items()}
    assert labels == {"filename": "angry", "voice": "disgusted", "multimodal": "fearful"}
    both = frames["multimodal"]
    assert both.loc["1001_DFA_ANG_XX", "multimodal_level"] == "65"  # MultiModalLevel
    assert both.loc["1001_DFA_ANG_XX", "intended_emotion"] == "angry"
    assert "voice_level" not in both.columns and "multimodal_level" not in frames["voice"]
    assert frames["voice"].loc["1001_DFA_ANG_XX", "voice_level"] == "60.5"
    assert not {"voice_level", "multimodal_level"} & set(frames["filename"].columns)
    # Each vote's tie is skipped with its reason; the other vote labels that clip.
    assert "multimodal vote tied  (e.g. 1003_DFA_SAD_XX)" in texts["multimodal"]
    assert "1003_DFA_SAD_XX" not in both.index
    assert frames["voice"].loc["1003_DFA_SAD_XX", "label"] == "sad"
    assert both.loc["1002_IEO_HAP_HI", "label"] == "happy"
    assert "1002_IEO_HAP_HI" not in frames["voice"].index
    assert "audio-visual majority vote (MultiModalVote" in texts["multimodal"]
    folds = {s: f.groupby("speaker")["fold"].first() for s, f in frames.items()}
    assert all(f.equals(folds["filename"]) for f in folds.values())  # folds ignore labels
    four, text = _run("crema-d", root, tmp_path / "four.parquet", labels="multimodal")
    assert set(four["label"]) == {"neutral", "happy", "angry", "sad"}
    assert "11  class 'F' (fearful) not in --classes 4  (e.g. 1001_DFA_ANG_XX," in text


def test_crema_d_vote_table_errors_name_file_and_column(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    crema = shutil.copytree(roots["crema-d"], tmp_path / "crema")
    table = crema / "processedResults" / "summaryTable.csv"
    pd.read_csv(table, dtype=str).drop(columns="MultiModalVote").to_csv(table, index=False)
    out = tmp_path / "c.parquet"
    with pytest.raises(ValueError, match=r"summaryTable.csv lacks the column\(s\) MultiModalVote;"):
        prepare_corpus("crema-d", crema, out, labels="multimodal")
    assert not out.exists()
    voice, _ = _run("crema-d", crema, out, "all", labels="voice")  # its columns are all there
    assert _by_file(voice).loc["1001_DFA_ANG_XX", "label"] == "disgusted"
    table.unlink()
    with pytest.raises(FileNotFoundError, match="labels='multimodal' needs processedResults/"):
        prepare_corpus("crema-d", crema, tmp_path / "m.parquet", labels="multimodal")
    with pytest.raises(ValueError, match="labels must be one of filename, voice, multimodal"):
        prepare_corpus("crema-d", crema, tmp_path / "m.parquet", labels="face")


def test_ravdess_gender_parity_folds_and_song(roots: dict[str, Path], tmp_path: Path) -> None:
    root = roots["ravdess"]
    table, text = _run("ravdess", root, tmp_path / "r.parquet")
    numbers = table["speaker"].str[-2:].astype(int)
    assert ((numbers % 2 == 1) == (table["gender"] == "M")).all()
    assert list(_by_file(table).loc["03-01-05-02-02-02-01", ["label", "intensity"]]) == [
        "angry",
        "strong",
    ]
    per_fold = table.groupby("fold").apply(lambda f: sorted(set(zip(f.speaker, f.gender))))
    assert len(per_fold) == 6 and all(sorted(g for _, g in s) == ["F", "M"] for s in per_fold)
    assert "class '02' (calm) not in --classes 4" in text
    assert "song (vocal channel 02) not used" in text
    assert "actor 05 in file name but folder Actor_02" in text and "malformed file name" in text
    sung, _ = _run("ravdess", root, tmp_path / "s.parquet", "all", song=True, folds=4)
    assert set(sung["vocal_channel"]) == {"speech", "song"} and set(sung["fold"]) == {1, 2, 3, 4}


def test_paths_portable_inside_root_and_rebased_outside(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    root = shutil.copytree(roots["iemocap"], tmp_path / "IEMOCAP_full_release")
    inside, _ = prepare_corpus("iemocap", root, root / "manifests" / "iemocap.parquet")
    outside, _ = prepare_corpus("iemocap", root, tmp_path / "elsewhere" / "iemocap.parquet")
    rel = read_manifest(inside).to_pandas()
    assert rel["path"].str.startswith("../Session").all()
    assert (rel[ROOT_COLUMN] == rel["path"].str[3:]).all()
    assert read_manifest(outside).to_pandas()["path"].str.startswith(str(root)).all()
    moved = Path(shutil.move(str(root), tmp_path / "other_machine" / "IEMOCAP"))
    part = partition(moved / "manifests" / "iemocap.parquet", fold=1)
    assert all(u.path.is_file() and u.path.is_relative_to(moved) for u in part.test)
    rebased = rebase_manifest(outside, moved, tmp_path / "rebased.parquet")
    part = partition(rebased, fold=2)
    assert all(u.path.is_file() and u.path.is_relative_to(moved) for u in part.train)


def test_errors_name_what_is_wrong(roots: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    with pytest.raises(KeyError, match="known: crema-d, iemocap"):
        prepare_corpus("emodb", tmp_path, out)
    (tmp_path / "empty").mkdir()
    for name, expected in [
        ("iemocap", "Session1"), ("msp-podcast", "labels_consensus.csv"),
        ("msp-improv", "Evalution.txt"), ("crema-d", "AudioWAV"), ("ravdess", "Actor_01"),
    ]:  # fmt: skip
        with pytest.raises(FileNotFoundError, match=expected):
            prepare_corpus(name, tmp_path / "empty", out)
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        prepare_corpus("iemocap", tmp_path / "nope", out)
    with pytest.raises(FileNotFoundError, match=f"did you mean --root {roots['iemocap']}"):
        prepare_corpus("iemocap", roots["iemocap"].parent, out)
    with pytest.raises(ValueError, match="classes must be one of 4, all"):
        prepare_corpus("ravdess", roots["ravdess"], out, classes="6")
    with pytest.raises(ValueError, match="takes: labels, folds"):
        prepare_corpus("crema-d", roots["crema-d"], out, song=True)
    assert not out.exists()


def test_missing_label_files_and_empty_corpus(roots: dict[str, Path], tmp_path: Path) -> None:
    crema = shutil.copytree(roots["crema-d"], tmp_path / "crema")
    shutil.rmtree(crema / "processedResults")
    with pytest.raises(FileNotFoundError, match="summaryTable.csv"):
        prepare_corpus("crema-d", crema, tmp_path / "c.parquet", labels="voice")
    (crema / "VideoDemographics.csv").unlink()
    with pytest.raises(FileNotFoundError, match="VideoDemographics.csv"):
        prepare_corpus("crema-d", crema, tmp_path / "c.parquet")
    iemocap = shutil.copytree(roots["iemocap"], tmp_path / "iemocap")
    shutil.rmtree(iemocap / "Session2" / "dialog" / "EmoEvaluation")
    with pytest.raises(FileNotFoundError, match="Session2/dialog/EmoEvaluation"):
        prepare_corpus("iemocap", iemocap, tmp_path / "i.parquet")
    improv = tmp_path / "improv"
    (improv / "session1").mkdir(parents=True)
    (improv / "Evaluation.txt").write_text(
        "UTD-IMPROV-S01A-F01-R-FM01.avi; A; A:3.0; V:3.5; D:3.0 ;\n"
    )
    with pytest.raises(ValueError, match="no usable utterances.*1 x audio file missing"):
        prepare_corpus("msp-improv", improv, tmp_path / "m.parquet")


def test_actor_folds_are_deterministic_and_balanced() -> None:
    genders = {f"{n}": "M" if n % 2 else "F" for n in range(1001, 1092)}
    folds = actor_folds(genders, 5)
    assert folds == actor_folds(dict(reversed(genders.items())), 5)
    sizes = pd.Series(folds).value_counts()
    assert sizes.max() - sizes.min() <= 1 and set(sizes.index) == {1, 2, 3, 4, 5}
    for gender in "FM":
        counts = pd.Series([f for a, f in folds.items() if genders[a] == gender]).value_counts()
        assert counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="between 3"):
        actor_folds(genders, 2)


def test_declared_options_must_match_the_importer() -> None:
    """A corpus's CLI options are its importer's arguments, defaults included (checked when
    it is registered), so ``emotune prepare`` cannot offer a flag the importer lacks."""
    from trainables.corpora import Corpus, CorpusOption

    def prepare(root: Path, classes: str = "4", folds: int = 5) -> None:
        raise NotImplementedError

    folds = CorpusOption("folds", 5, "number of folds")
    assert Corpus("toy", "TOY", prepare, (folds,)).options == (folds,)
    for options in [(), (CorpusOption("folds", 4, "number of folds"),),
                    (folds, CorpusOption("song", False, "songs too"))]:
        with pytest.raises(ValueError, match="toy: declared options"):
            Corpus("toy", "TOY", prepare, options)
    for name in CORPORA:
        corpus = CORPORA.get(name)
        assert corpus.name == name and corpus.title
