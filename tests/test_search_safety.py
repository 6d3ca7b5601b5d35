"""A search loses nothing, runs no code it was not given, and never reports failure as success.

Through the CLI as users run it: export after a real search (folder and bucket storage), a
search whose every trial fails exits 1 and says why, bad manifests and spaces are refused
before Ray starts, a running search locks its folder, the demo refuses a folder it did not
make, folders in the working directory named like emotune's packages never reach the trials,
and a local Ray listens on loopback only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

import search.tune
from search.cli import build_parser, main
from search.tune import SearchSettings, init_ray, run_dataset, run_search
from spaces import SpaceConfig, SpaceError
from trainables import provenance

SPACE = {"methods": ["frozen", "lora"], "epochs": 1, "lora": {"rank": {"low": 1, "high": 2}}}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def emotune_ray():
    """Ray as ``emotune search`` starts it (loopback only, empty working_dir), for the module."""
    if ray.is_initialized():  # another module's Ray would not be the one under test
        ray.shutdown()
    init_ray(SearchSettings(manifests=()))
    yield
    ray.shutdown()


@pytest.fixture
def space_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    SpaceConfig.from_dict(SPACE).to_yaml(path)
    return path


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records (and stops) any attempt of a search to start Ray."""
    calls: list[str] = []

    def refuse(settings: SearchSettings) -> None:
        calls.append(settings.name)
        raise RuntimeError("the search tried to start Ray")

    monkeypatch.setattr(search.tune, "init_ray", refuse)
    return calls


def _search_args(manifest: Path, space: Path, storage: str | Path, name: str) -> list[str]:
    return [
        "search", "--manifest", str(manifest), "--trials", "2", "--space", str(space),
        "--storage", str(storage), "--name", name, "--max-seconds", "1", "--max-failures", "0",
    ]  # fmt: skip


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    """Everything the CLI printed, whitespace collapsed (rich wraps at the console width)."""
    out, err = capsys.readouterr()
    return " ".join((out + err).split())


def _manifest_frame(manifest: Path) -> pd.DataFrame:
    """The manifest with absolute audio paths (so a copy elsewhere still finds its audio)."""
    frame = pd.read_parquet(manifest)
    frame["path"] = [str((manifest.parent / p).resolve()) for p in frame["path"]]
    return frame


def _write(frame: pd.DataFrame, path: Path) -> Path:
    """Writes ``frame`` as Parquet without validating it (the point is a bad manifest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


# ------------------------------------------------------------------ export through the CLI


def test_export_cli_after_a_search_on_a_folder_and_on_a_bucket(
    emotune_ray, synth_corpus: Path, space_yaml: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """`emotune export` crashed for every user (`--storage` was a Path checked with `in`)."""
    dataset = synth_corpus.parent.name
    storage = tmp_path / "runs"
    assert main(_search_args(synth_corpus, space_yaml, storage, "s")) == 0
    out = tmp_path / "export"
    assert main(["export", "--search", "s", "--storage", str(storage), "--out", str(out)]) == 0
    assert json.loads((out / dataset / "emotune.json").read_text())

    # A bucket (file:// here): from the driver's mirror; then, in a new process (as on a
    # machine that did not run the search), from the bucket alone.
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMOTUNE_CACHE", str(cache))
    bucket = f"file://{tmp_path / 'bucket'}"
    assert main(_search_args(synth_corpus, space_yaml, bucket, "u")) == 0
    out = tmp_path / "export-mirror"
    assert main(["export", "--search", "u", "--storage", bucket, "--out", str(out)]) == 0
    assert json.loads((out / dataset / "emotune.json").read_text())
    shutil.rmtree(cache / "searches" / "u")
    # Without the mirror the bucket still says the search exists: a new search is refused.
    assert main(_search_args(synth_corpus, space_yaml, bucket, "u")) == 2
    assert f"search u exists in {bucket}" in _said(capsys)
    out = tmp_path / "export-fetched"
    emotune = Path(sys.executable).parent / "emotune"
    done = subprocess.run(
        [str(emotune), "export", "--search", "u", "--storage", bucket, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / dataset / "emotune.json").read_text())
    capsys.readouterr()


# ------------------------------------------------------------- failures are not successes


def test_search_whose_every_trial_fails_exits_1_and_says_why(
    emotune_ray, synth_corpus: Path, space_yaml: Path, tmp_path: Path, capsys
) -> None:
    """Valid manifest, undecodable audio: every trial fails; the CLI returns 1 with the error."""
    corpus = tmp_path / "garbage"
    shutil.copytree(synth_corpus.parent, corpus)
    for wav in corpus.rglob("*.wav"):
        wav.write_bytes(b"this is not audio")
    code = main(_search_args(corpus / synth_corpus.name, space_yaml, tmp_path / "runs", "g"))
    said = _said(capsys)
    assert code == 1
    assert "no trial completed" in said and "2 trial(s): 2 FAILED" in said
    assert "could be decoded" in said and "not an audio file" in said
    summary = json.loads((tmp_path / "runs" / "g" / "garbage" / "search.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["FAILED", "FAILED"]


def test_a_data_error_in_a_trial_reaches_search_json_with_its_message(
    emotune_ray, synth_corpus: Path, tmp_path: Path
) -> None:
    """A ManifestError raised inside a trial crosses Ray intact (not as an unpickling TypeError).

    ``run_dataset`` skips the driver's checks (``run_search`` would refuse this fold before
    Ray), so the error is raised in the trial, as when a manifest changes during a search.
    """
    settings = SearchSettings(
        manifests=(synth_corpus,), trials=1, concurrency=1, storage=tmp_path, name="m",
        space=SpaceConfig.from_dict({**SPACE, "methods": ["frozen"]}), max_failures=0,
        base={"max_seconds": 1.0, "fold": 7},
    )  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_dataset(settings, synth_corpus, uri)
    on_disk = json.loads((settings.root / summary["dataset"] / "search.json").read_text())
    (trial,) = on_disk["trials"]
    assert trial["state"] == "FAILED"
    assert "ManifestError" in trial["error"] and "fold 7 not present" in trial["error"]
    assert str(synth_corpus) in trial["error"] and "TypeError" not in trial["error"]


def test_failure_lines_count_states_and_group_errors() -> None:
    from search.records import failure_lines

    trials: list[dict[str, Any]] = [
        {"trial_id": "a", "state": "FAILED", "error": "ValueError: bad audio\nmore"},
        {"trial_id": "b", "state": "FAILED", "error": "ValueError: bad audio"},
        {"trial_id": "c", "state": "FAILED", "error": "OSError: disk full"},
        {"trial_id": "d", "state": "PRUNED", "error": None},
    ]
    assert failure_lines(trials) == [
        "4 trial(s): 3 FAILED, 1 PRUNED",
        "2x ValueError: bad audio (trial(s) a, b)",
        "1x OSError: disk full (trial(s) c)",
    ]
    assert failure_lines(trials, limit=1)[-1] == "... and 1 other distinct error(s)"


# ---------------------------------------------------------- refused before Ray starts


def _bad_split(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(split=frame["split"].replace({"train": "training"}))


def _no_dev(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(split=frame["split"].replace({"dev": "train"}))


BAD_MANIFESTS = {
    "bad split value": (_bad_split, [], "invalid split"),
    "missing column": (lambda f: f.drop(columns=["gender"]), [], "missing column(s)"),
    "empty dev set": (_no_dev, [], "the dev set is empty"),
    "unknown fold": (lambda f: f, ["--fold", "7"], "fold 7 not present"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_bad_manifest_is_refused_before_ray_starts(
    case: str, synth_corpus: Path, space_yaml: Path, tmp_path: Path, capsys, no_ray
) -> None:
    change, flags, problem = BAD_MANIFESTS[case]
    manifest = _write(change(_manifest_frame(synth_corpus)), tmp_path / "bad" / "manifest.parquet")
    storage = tmp_path / "runs"
    code = main(_search_args(manifest, space_yaml, storage, "b") + flags)
    said = _said(capsys)
    assert code == 2 and no_ray == []
    assert f"manifest {manifest}" in said and problem in said
    assert not storage.exists()  # a refused search writes nothing


def test_every_fold_is_checked_with_folds_all(
    space_yaml: Path, tmp_path: Path, capsys, no_ray
) -> None:
    """--folds all checks every fold the trials will run, not only the first.

    Three folds; one clip of the last fold gets a class of its own. Fold 0 trains on it and
    passes; fold 1 (dev = fold 2) has a dev class that its training set lacks.
    """
    from trainables.data.synth import synthesize

    corpus = synthesize(tmp_path / "six", speakers=6, per_class=3, seed=1)
    frame = _manifest_frame(corpus)
    assert sorted(set(frame["fold"])) == [0, 1, 2]
    frame.loc[frame.index[frame["fold"] == 2][0], "label"] = "surprised"
    manifest = _write(frame, tmp_path / "bad" / "manifest.parquet")
    code = main(_search_args(manifest, space_yaml, tmp_path / "runs", "f") + ["--folds", "all"])
    said = _said(capsys)
    assert code == 2 and no_ray == []
    assert "class(es) 'surprised' appear in dev but not in train" in said
    assert "(--folds all, test fold 1)" in said


def test_a_manifest_without_its_audio_is_refused(
    synth_corpus: Path, space_yaml: Path, tmp_path: Path, capsys, no_ray
) -> None:
    """A manifest copied without its (relative) audio files fails in a second, not per trial."""
    copy = tmp_path / "copy" / "manifest.parquet"
    copy.parent.mkdir()
    shutil.copy(synth_corpus, copy)
    assert main(_search_args(copy, space_yaml, tmp_path / "runs", "a")) == 2
    said = _said(capsys)
    assert no_ray == [] and "audio file(s) of the train set exists" in said and str(copy) in said


def test_bad_search_settings_and_spaces_are_refused_before_ray_starts(
    synth_corpus: Path, space_yaml: Path, tmp_path: Path, capsys, no_ray
) -> None:
    args = _search_args(synth_corpus, space_yaml, tmp_path / "runs", "x")
    assert main([*args, "--max-seconds", "-1"]) == 2
    said = _said(capsys)
    assert "search settings: train config: max_seconds must be" in said and "-1" in said
    # A base field that the space owns: every method's config is built before Ray starts.
    settings = SearchSettings(
        manifests=(synth_corpus,), storage=tmp_path / "runs", name="y",
        space=SpaceConfig.from_dict(SPACE), base={"method_options": {"rank": 2}},
    )  # fmt: skip
    with pytest.raises(SpaceError, match="method 'frozen'.*set by the search space"):
        run_search(settings)
    assert no_ray == [] and not (tmp_path / "runs").exists()


def test_space_configs_cover_both_ends_of_every_method() -> None:
    from search.preflight import space_configs

    space = SpaceConfig.from_dict({**SPACE, "methods": ["frozen", "lora", "adapter"]})
    configs = space_configs(space, {"manifest": "/x/m.parquet"})
    assert [c.method for c in configs] == ["frozen"] * 2 + ["lora"] * 2 + ["adapter"] * 2
    lora_low, lora_high = configs[2:4]
    assert (lora_low.method_options["rank"], lora_high.method_options["rank"]) == (1, 2)
    assert lora_low.lr == pytest.approx(1e-4) and lora_high.lr == pytest.approx(5e-3)


# ---------------------------------------------------------------- folders and locks


def test_a_running_search_locks_its_folder(
    synth_corpus: Path, space_yaml: Path, tmp_path: Path, capsys, no_ray
) -> None:
    """A second search on the same --storage/--name, resumed or not, is refused while the
    first runs (the first is played by a process that holds the search's lock)."""
    storage = tmp_path / "runs"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom trainables import rundir\n"
         f"with rundir.owned({str(storage / 'busy')!r}, 'search', 'search'):\n"
         "    print('locked', flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--resume"]):
            assert main(_search_args(synth_corpus, space_yaml, storage, "busy") + extra) == 2
            said = _said(capsys)
            assert f"search {storage / 'busy'} is in use by another emotune process" in said
            assert f"pid {holder.pid}" in said
    finally:
        holder.communicate(input="", timeout=60)
    assert no_ray == []


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(out), "--trials", "1", "--epochs", "1"]) == 2
    assert "was not made by emotune" in _said(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ---------------------------------------------------- the working directory stays out


def test_folders_named_like_our_packages_in_the_cwd_never_reach_the_trials(
    synth_corpus: Path, space_yaml: Path, tmp_path: Path
) -> None:
    """`emotune search` run from a folder holding `search/` (code that must never run) and
    `spaces/` (harmless, empty): Ray put the cwd first on the workers' sys.path, so the first
    ran inside trials and the second made every trial fail, while the search exited 0.

    Ray's "latest cluster" file also names a cluster that is gone: a local search starts its
    own Ray instead of joining (and waiting for) whatever that file names.
    """
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths stay short
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")  # nothing there
    cwd = tmp_path / "project"
    marker = tmp_path / "EXECUTED"
    (cwd / "search").mkdir(parents=True)
    (cwd / "search" / "__init__.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    )
    (cwd / "spaces").mkdir()
    (cwd / "spaces" / "__init__.py").write_text("")
    emotune = Path(sys.executable).parent / "emotune"
    args = _search_args(synth_corpus, space_yaml, tmp_path / "runs", "w")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    try:
        done = subprocess.run([str(emotune), *args], cwd=cwd, capture_output=True, text=True,
                              timeout=600, env=env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not marker.exists()
    summary = json.loads(
        (tmp_path / "runs" / "w" / synth_corpus.parent.name / "search.json").read_text()
    )
    assert [t["state"] for t in summary["trials"]].count("FAILED") == 0


def test_check_project_accepts_the_installed_project() -> None:
    assert provenance.check_project() == REPO


@pytest.mark.parametrize("kind", ["empty package", "namespace folder"])
def test_check_project_refuses_a_package_shadowed_on_sys_path(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "space.yaml").write_text("methods: [lora]\n")
    if kind == "empty package":
        (tmp_path / "spaces" / "__init__.py").write_text("")
    # As in a trial worker: the project folder is not on sys.path (the install's finder comes
    # after every sys.path entry, which is why a folder without __init__.py can shadow it).
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != REPO])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "spaces")  # a fresh worker: the path decides
    with pytest.raises(provenance.ProjectError, match=str(tmp_path / "spaces")):
        provenance.check_project()


def test_check_project_refuses_a_whole_copy_that_is_not_the_installed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another checkout (an old version, say) in the cwd: consistent, but not what runs here."""
    for name, modules in provenance.PACKAGES.items():
        (tmp_path / name).mkdir()
        for module in ("__init__.py", *modules):
            (tmp_path / name / module).write_text("")
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(provenance.ProjectError, match=f"installed from {REPO}"):
        provenance.check_project()


# ------------------------------------------------------------------- loopback only


def _listening(pids: list[int]) -> list[tuple[int, str, str]]:
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            sockets = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [(pid, proc.name(), s.laddr.ip) for s in sockets if s.status == psutil.CONN_LISTEN]
    return found


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def test_a_local_ray_listens_on_loopback_only(emotune_ray) -> None:
    """GCS, raylet (object manager included), runtime-env agent, driver and workers."""

    @ray.remote
    def pid() -> int:
        import os

        return os.getpid()

    workers = set(ray.get([pid.remote() for _ in range(4)]))
    ours = [psutil.Process().pid] + [p.pid for p in psutil.Process().children(recursive=True)]
    assert workers <= set(ours)
    sockets = _listening(ours)
    names = {name for _, name, _ in sockets}
    assert {"gcs_server", "raylet"} <= names and len(sockets) >= 4, sockets
    assert [s for s in sockets if not _is_loopback(s[2])] == []


# ------------------------------------------------------------------------- help texts


@pytest.mark.parametrize("command", ["prepare", "search", "export", "predict", "demo"])
def test_every_flag_says_what_it_does_and_its_default(command: str) -> None:
    parser = build_parser()._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    for action in parser._actions:  # noqa: SLF001
        if action.dest == "help":
            continue
        text = action.help or ""
        assert len(text) > 10, (command, action.option_strings or action.dest)
        if action.option_strings and not action.required:
            assert "(default" in text or "default:" in text, (command, action.option_strings)
