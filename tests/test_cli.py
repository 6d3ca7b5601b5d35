"""The emotune CLI: synth and train, method flags generated from the registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from search.cli import build_parser, main
from trainables.methods import METHODS


def test_packages_resolve_to_this_repo() -> None:
    """A PyPI package named `spaces` exists; ours must win."""
    import search
    import spaces
    import trainables

    root = Path(__file__).resolve().parents[1]
    for module in (spaces, search, trainables):
        assert Path(module.__file__).resolve().parent.parent == root, module


def test_every_method_option_has_a_flag() -> None:
    import dataclasses

    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name in METHODS:
        for f in dataclasses.fields(METHODS.get(name).config_cls):
            assert f"--{name}-{f.name.replace('_', '-')}" in help_text


def test_synth_then_train(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--out", str(tmp_path / "c"), "--speakers", "4", "--per-class", "3"]) == 0
    manifest = tmp_path / "c" / "manifest.parquet"
    assert manifest.is_file()
    code = main(
        [
            "train",
            "--manifest",
            str(manifest),
            "--method",
            "adapter",
            "--adapter-width",
            "4",
            "--epochs",
            "1",
            "--max-seconds",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--feature-cache-dir",
            str(tmp_path / "fc"),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["method_options"]["width"] == 4
    assert len(list((tmp_path / "fc").glob("*/index.json"))) == 3  # train, dev, test
    assert "RANDOMLY INITIALISED" in capsys.readouterr().err


def test_speed_flags_reach_the_train_config(synth_corpus: Path, tmp_path: Path) -> None:
    from search.cli.run import train_config_from_args

    parse = build_parser().parse_args
    common = ["train", "--manifest", str(synth_corpus), "--out", str(tmp_path)]
    default = train_config_from_args(parse(common))
    assert default.feature_cache and default.bucketing and default.feature_cache_dir is None
    cfg = train_config_from_args(parse([
        *common, "--no-feature-cache", "--feature-cache-dir", str(tmp_path / "c"),
        "--feature-cache-dtype", "float16", "--no-bucketing",
    ]))
    assert (cfg.feature_cache, cfg.feature_cache_dtype, cfg.bucketing) == (False, "float16", False)
    assert cfg.feature_cache_dir == (tmp_path / "c").resolve()


def test_option_of_another_method_is_an_error(synth_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--adapter-width is an option of method 'adapter'"):
        main(
            [
                "train",
                "--manifest",
                str(synth_corpus),
                "--method",
                "lora",
                "--adapter-width",
                "4",
                "--out",
                str(tmp_path),
            ]
        )


def test_bad_manifest_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = main(
        ["train", "--manifest", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "missing.parquet" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["tiny-wavlm", "tiny-hubert", "tiny-wav2vec2", "tiny-whisper"])
def test_train_from_a_local_folder(preset: str, synth_corpus: Path, tmp_path: Path) -> None:
    """`--backbone FOLDER` (save_pretrained output) works for every family."""
    from trainables.backbones import build_preset_model

    folder = tmp_path / "backbone"
    build_preset_model(preset).save_pretrained(folder)
    code = main(["train", "--manifest", str(synth_corpus), "--backbone", str(folder),
                 "--method", "lora", "--lora-rank", "2", "--epochs", "1", "--max-seconds", "1",
                 "--out", str(tmp_path / "run")])
    assert code == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["backbone"] == str(folder) and result["random_init"] is False


def test_prepare_then_train_on_a_fold(tmp_path: Path, capsys) -> None:
    """`emotune prepare iemocap` on a tree in IEMOCAP's layout, then `train --fold 1`."""
    from corpus_fixtures import build_fixture

    root = build_fixture("iemocap", tmp_path / "IEMOCAP_full_release")
    manifest = tmp_path / "iemocap.parquet"
    assert main(["prepare", "iemocap", "--root", str(root), "--out", str(manifest)]) == 0
    assert "fold=1" in capsys.readouterr().err  # the class x gender x fold summary
    code = main(["train", "--manifest", str(manifest), "--fold", "1", "--method", "frozen",
                 "--epochs", "1", "--max-seconds", "1", "--out", str(tmp_path / "run")])
    assert code == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["config"]["fold"] == 1


def test_prepare_crema_d_with_multimodal_labels(tmp_path: Path, capsys) -> None:
    """`emotune prepare crema-d --labels multimodal` labels clips by MultiModalVote."""
    from corpus_fixtures import build_fixture

    from trainables.data.manifest import read_manifest

    root = build_fixture("crema-d", tmp_path / "CREMA-D")
    manifest = tmp_path / "crema.parquet"
    assert main(["prepare", "crema-d", "--root", str(root), "--out", str(manifest),
                 "--classes", "all", "--labels", "multimodal"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the console may wrap long lines
    assert "multimodal vote tied" in err and "MultiModalVote" in err
    rows = read_manifest(manifest).to_pandas().set_index("root_relative_path")
    clip = rows.loc["AudioWAV/1001_DFA_ANG_XX.wav"]
    assert (clip["label"], clip["intended_emotion"], clip["multimodal_level"]) == (
        "fearful", "angry", "65")  # fmt: skip
    assert "AudioWAV/1003_DFA_SAD_XX.wav" not in rows.index  # its MultiModalVote is N:S


def test_prepare_wrong_root_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["prepare", "ravdess", "--root", str(tmp_path), "--out",
                 str(tmp_path / "m.parquet")])
    assert code == 2
    assert "ravdess" in capsys.readouterr().err.lower()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "inf"], "lr=inf: must be a finite number"),
        (["--lr", "nan"], "lr=nan: must be a finite number"),
        (["--method", "lora", "--lora-alpha", "nan"], "alpha=nan must be a finite number"),
        (["--method", "adapter", "--adapter-scale", "inf"], "scale=inf must be a finite number"),
        (["--max-seconds", "1e9"], "max_seconds must be in (0, 3600.0]"),
    ],
)
def test_non_finite_or_huge_values_are_one_line_errors(
    flags: list[str], message: str, synth_corpus: Path, tmp_path: Path, capsys
) -> None:
    code = main(["train", "--manifest", str(synth_corpus), *flags, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_unexpected_errors_are_one_line_and_verbose_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import search.cli.run as cli

    def boom(args) -> int:
        raise TypeError("an internal bug\nspread over lines")

    monkeypatch.setattr(cli, "cmd_synth", boom)
    assert main(["synth", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "error: TypeError: an internal bug spread over lines (run with -v" in err
    assert "Traceback" not in err
    assert main(["-v", "synth", "--out", "x"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_every_flag_has_a_help_text_with_its_default() -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    for name, sub in subcommands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"emotune {name} {action.option_strings or action.dest}: no help"
            if action.option_strings and not action.required:
                assert "default" in action.help, f"emotune {name} {action.option_strings}"


def test_importing_the_cli_loads_no_heavy_library() -> None:
    """`emotune --help` stays fast: torch, Ray and MLflow are imported inside the handlers."""
    import subprocess
    import sys

    code = "import sys, search.cli; print(sorted({'torch', 'ray', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_interrupted_search_exits_130(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import search.cli.run as run
    from search.errors import SearchInterrupted

    def stop(args) -> int:
        raise SearchInterrupted("search stopped; continue it with --resume")

    monkeypatch.setattr(run, "cmd_synth", stop)
    assert main(["synth", "--out", "x"]) == 130
    err = capsys.readouterr().err
    assert "continue it with --resume" in err and "error:" not in err


def test_objective_flags_come_from_the_objectives_table() -> None:
    from trainables.objectives import OBJECTIVES, PARAMS

    commands = build_parser()._subparsers._group_actions[0].choices
    search = {a.dest: a for a in commands["search"]._actions}
    export = {a.dest: a for a in commands["export"]._actions}
    assert set(export["objective"].choices) == {"uar", "wa", "macro_f1", "fairness"}
    assert set(export["objective"].choices) == {
        n for n, o in OBJECTIVES.items() if o.key != PARAMS
    }
    for name, objective in OBJECTIVES.items():
        assert f"{name} ({objective.label}, {objective.sense})" in search["objectives"].help
        if name in export["objective"].choices:
            assert f"{name} ({objective.label}" in export["objective"].help


def _prepare_flags() -> dict[str, argparse.Action]:
    prepare = build_parser()._subparsers._group_actions[0].choices["prepare"]
    return {a.option_strings[0]: a for a in prepare._actions if a.option_strings}


def test_every_corpus_option_has_a_prepare_flag() -> None:
    from trainables.corpora import CORPORA

    flags = _prepare_flags()
    for name in CORPORA:
        corpus = CORPORA.get(name)
        for option in corpus.options:
            flag = flags[f"--{option.name.replace('_', '-')}"]
            assert corpus.title in flag.help and option.help in flag.help
    assert flags["--folds"].help == (
        "CREMA-D / RAVDESS: number of speaker-independent actor folds "
        "(default: CREMA-D 5, RAVDESS 6)"
    )
    assert flags["--labels"].choices == ("filename", "voice", "multimodal")
    assert "multimodal (MultiModalVote" in flags["--labels"].help
    assert flags["--song"].help == "RAVDESS: include the song recordings (default: off)"


def test_prepare_passes_only_the_options_given() -> None:
    from search.cli.data import corpus_options
    from trainables.corpora import CORPORA

    parse = build_parser().parse_args
    common = ["--root", "r", "--out", "m.parquet"]
    args = parse(["prepare", "crema-d", *common, "--labels", "voice"])
    assert corpus_options(args, CORPORA.get("crema-d")) == {"labels": "voice"}
    args = parse(["prepare", "ravdess", *common, "--song", "--folds", "4"])
    assert corpus_options(args, CORPORA.get("ravdess")) == {"song": True, "folds": 4}
    assert corpus_options(parse(["prepare", "iemocap", *common]), CORPORA.get("iemocap")) == {}


@pytest.mark.parametrize(
    "corpus, flags, message",
    [
        ("crema-d", ["--song"], "--song is not an option of crema-d; its options: --labels, "
         "--folds"),
        ("iemocap", ["--folds", "4"], "--folds is not an option of iemocap; its options: none"),
        ("ravdess", ["--labels", "voice"], "--labels is not an option of ravdess"),
    ],
)
def test_an_option_of_another_corpus_is_an_error(
    corpus: str, flags: list[str], message: str, tmp_path: Path, capsys
) -> None:
    code = main(["prepare", corpus, "--root", str(tmp_path), "--out", str(tmp_path / "m.parquet"),
                 *flags])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m.parquet").exists()


def test_a_new_corpus_brings_its_own_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """A corpus registered with its options gets its flags without a change to the CLI."""
    from search.cli.data import corpus_options
    from trainables.corpora import CORPORA, Corpus, CorpusOption

    def prepare(root: Path, classes: str = "4", min_rating: int = 3, pitch: bool = False):
        raise NotImplementedError

    toy = Corpus("toy", "TOY", prepare, (CorpusOption("min_rating", 3, "lowest rating kept"),
                                         CorpusOption("pitch", False, "keep pitched clips")))
    monkeypatch.setitem(CORPORA._items, "toy", toy)
    flags = _prepare_flags()
    assert flags["--min-rating"].help == "TOY: lowest rating kept (default: 3)"
    assert flags["--pitch"].help == "TOY: keep pitched clips (default: off)"
    args = build_parser().parse_args(["prepare", "toy", "--root", "r", "--out", "m.parquet",
                                      "--min-rating", "4"])
    assert corpus_options(args, toy) == {"min_rating": 4}
