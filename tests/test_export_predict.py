"""Export of the best trial (selection on dev, model card, MLflow alias) and file prediction."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file

from search.export import ExportedAdapter, export_best, resolve_search
from search.predict import Predictor
from search.registration import emotune_requirement
from search.selection import select_best
from trainables.config import TrainConfig
from trainables.data.audio import crop, load_audio
from trainables.data.manifest import partition
from trainables.data.synth import synthesize
from trainables.export import load_adapter
from trainables.result import RunResult
from trainables.train import train

FAST = dict(backbone="tiny-wavlm", epochs=1, max_seconds=1.0, batch_size=16)
BUDGET_BELOW_LORA = 59_000  # frozen (head only) fits, LoRA rank 2 + head does not


class NoTouch(dict):
    """A metrics dict that fails the test when read: selection must never look at test."""

    def __getitem__(self, key: Any) -> Any:
        raise AssertionError(f"test metric {key!r} was read")

    def get(self, key: Any, default: Any = None) -> Any:
        raise AssertionError(f"test metric {key!r} was read")


def _trial(tid: str, number: int, uar: float, params: int, **kw: Any) -> dict[str, Any]:
    return {
        "trial_id": tid,
        "number": number,
        "state": kw.get("state", "COMPLETE"),
        "method": "lora",
        "dev": {"uar": uar, "wa": uar, "macro_f1": uar, "uar_gap_gender": kw.get("gap", 0.1)},
        "test": NoTouch(uar=kw.get("test_uar", 0.5)),
        "trainable_params": params,
        "adapter_dir": kw.get("adapter_dir", f"/x/{tid}/adapter"),
    }


def test_select_best_uses_dev_only_and_breaks_ties_by_size() -> None:
    trials = [
        _trial("pruned", 0, 0.99, 10, state="PRUNED"),
        _trial("failed", 1, 0.98, 10, state="FAILED", adapter_dir=None),
        _trial("best_test", 2, 0.50, 100, test_uar=0.99),
        _trial("big", 3, 0.70, 5_000, gap=0.30),
        _trial("small", 4, 0.70, 1_000, gap=0.20),
        _trial("fair", 5, 0.60, 3_000, gap=0.01),
        _trial("no_adapter", 6, 0.90, 10, adapter_dir=None),
    ]
    assert select_best(trials)["trial_id"] == "small"  # tie on dev UAR -> fewer params
    assert select_best(trials, objective="fairness")["trial_id"] == "fair"
    assert select_best(trials, max_params=999)["trial_id"] == "best_test"
    assert select_best(trials, objective="wa", max_params=3_000)["trial_id"] == "small"
    with pytest.raises(ValueError, match=r"<= 50 trainable.*smallest is trial best_test with 100"):
        select_best(trials, max_params=50)
    with pytest.raises(ValueError, match="no COMPLETE trial"):
        select_best(trials[:2])
    with pytest.raises(ValueError, match="unknown objective"):
        select_best(trials, objective="test_uar")


@pytest.fixture(scope="module")
def search_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A search root with one dataset: 2 real trials + a PRUNED and a FAILED one, MLflow store."""
    root = tmp_path_factory.mktemp("search")
    manifest = synthesize(root / "corpus_audio", speakers=4, per_class=3, seed=0)
    lora = train(
        TrainConfig(manifest=manifest, method="lora", method_options={"rank": 2}, **FAST),
        root / "trials/lora",
    )
    frozen = train(TrainConfig(manifest=manifest, method="frozen", **FAST), root / "trials/frozen")
    assert frozen.trainable_params < BUDGET_BELOW_LORA < lora.trainable_params

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("emotune-test", artifact_location=(root / "art").as_uri())
    parent = client.create_run(exp, run_name="search").info.run_id

    def trial(
        tid: str, number: int, result: RunResult, name: str, state: str, dev_uar: float,
        test_uar: float,
    ) -> dict[str, Any]:
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
        keep = ("trainable_params", "adapter_bytes", "best_epoch", "history", "method")
        return {
            "trial_id": tid,
            "number": number,
            "state": state,
            "params": result.method_options,
            "dev": {**result.dev, "uar": dev_uar},
            "test": {**result.test, "uar": test_uar},
            **{k: getattr(result, k) for k in keep},
            "adapter_dir": str(root / "trials" / name / "adapter"),
            "node": "local",
            "error": None,
            "mlflow_run_id": run,
        }

    search = {
        "dataset": "corpus",
        "manifest": str(manifest),
        "backbone": "tiny-wavlm",
        "objectives": ["uar", "params"],
        "front": ["lora_a", "frozen_b"],
        "mlflow": {"tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent},
        "trials": [
            trial("lora_a", 0, lora, "lora", "COMPLETE", 0.60, 0.40),
            trial("frozen_b", 1, frozen, "frozen", "COMPLETE", 0.55, 0.95),  # better test only
            trial("pruned_c", 2, frozen, "frozen", "PRUNED", 0.99, 0.99),
        ],
    }
    (root / "corpus").mkdir()
    (root / "corpus/search.json").write_text(json.dumps(search))
    return root


@pytest.fixture(scope="module")
def exported(search_root: Path) -> ExportedAdapter:
    (item,) = export_best(search_root, search_root / "export")
    return item


@pytest.fixture(scope="module")
def wavs(search_root: Path) -> list[Path]:
    return [Path(u.path) for u in partition(search_root / "corpus_audio/manifest.parquet").test]


def test_resolve_search(search_root: Path, tmp_path: Path) -> None:
    assert resolve_search(str(search_root)) == search_root.resolve()
    assert resolve_search(search_root.name, storage=search_root.parent) == search_root.resolve()
    with pytest.raises(FileNotFoundError, match=r"tried .*nope.*nope"):
        resolve_search("nope", storage=tmp_path)


def test_export_writes_adapter_and_model_card(search_root: Path, exported: ExportedAdapter) -> None:
    out = search_root / "export/corpus"
    assert exported.path == out and exported.trial_id == "lora_a" and exported.method == "lora"
    assert (exported.dev_uar, exported.test_uar) == (0.60, 0.40)
    for name in ("emotune.json", "weights.safetensors", "peft/adapter_config.json", "README.md"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    for text in (
        "randomly initialised",
        "tiny-wavlm",
        "`lora`",
        "rank=2",
        "| uar | 0.6000 | 0.4000",
        "uar_gap_gender",
        "equal_opportunity_gender",
        "Best dev `uar`",
        "lora_a",
        "emotune predict --adapter DIR a.wav",
        "load_adapter(",
        'from_pretrained(base_model, "DIR/peft")',
        f"{exported.trainable_params:,}",
    ):
        assert text in card, text
    facts = json.loads((out / "export.json").read_text())
    assert facts["trial"]["trial_id"] == "lora_a" and facts["objective"] == "uar"
    assert facts["registered_version"] == exported.registered_version == 1


def test_lora_export_loads_with_peft(search_root: Path, exported: ExportedAdapter) -> None:
    from peft import PeftModel

    from trainables.backbones import load_backbone

    peft_model = PeftModel.from_pretrained(
        load_backbone("tiny-wavlm").hf_model, exported.path / "peft"
    )

    def by_layer(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n[n.index("encoder.") :]: t for n, t in named.items() if "lora_" in n}

    loaded = by_layer(dict(peft_model.named_parameters()))
    saved = by_layer(load_file(str(exported.path / "weights.safetensors")))
    assert loaded and loaded.keys() == saved.keys()
    for name, tensor in saved.items():
        assert torch.equal(loaded[name].detach(), tensor), name


def test_export_then_predict_matches_trained_model(
    search_root: Path, exported: ExportedAdapter, wavs: list[Path]
) -> None:
    predictor = Predictor(exported.path)
    reference = load_adapter(search_root / "trials/lora/adapter")
    for wav in wavs[:3]:
        got = predictor.predict_file(wav)
        wave = crop(load_audio(wav, 16000), 16000, "center")  # 1 s centre crop of a ~2 s clip
        assert predictor.prepare(wav).shape == wave.shape == (16000,)
        with torch.no_grad():
            logits = reference.model(torch.from_numpy(wave)[None], torch.tensor([wave.shape[0]]))
        want = logits.softmax(-1)[0].numpy()
        assert got["file"] == str(wav)
        assert got["label"] == reference.labels[int(want.argmax())]
        assert list(got["probabilities"]) == reference.labels
        np.testing.assert_allclose(list(got["probabilities"].values()), want, rtol=1e-5, atol=1e-6)


def test_predict_files_reports_bad_files_and_goes_on(
    exported: ExportedAdapter, wavs: list[Path], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really audio")
    missing = tmp_path / "missing.wav"
    results = list(Predictor(exported.path).predict_files([missing, corrupt, wavs[0]]))
    assert [r["file"] for r in results] == [str(missing), str(corrupt), str(wavs[0])]
    assert "no such file" in results[0]["error"] and "cannot decode" in results[1]["error"]
    assert "error" not in results[2] and sum(results[2]["probabilities"].values()) == pytest.approx(
        1
    )


def test_champion_alias_resolves_to_the_export(
    search_root: Path, exported: ExportedAdapter, wavs: list[Path]
) -> None:
    uri = f"sqlite:///{search_root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("emotune-corpus", "champion")
    assert int(version.version) == exported.registered_version
    assert version.tags["emotune.trial_id"] == "lora_a"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model("models:/emotune-corpus@champion")
        frame = model.predict(pd.DataFrame({"path": [str(wavs[0]), "/nope.wav"]}))
    finally:
        mlflow.set_tracking_uri(previous)
    assert frame.loc[0, "label"] == Predictor(exported.path).predict_file(wavs[0])["label"]
    assert frame.loc[1, "error"] == "no such file"


def test_registered_model_is_code_not_pickle(search_root: Path, exported: ExportedAdapter) -> None:
    """MLflow "models from code": loading the champion unpickles nothing."""
    uri = f"sqlite:///{search_root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        folder = Path(mlflow.artifacts.download_artifacts("models:/emotune-corpus@champion"))
    finally:
        mlflow.set_tracking_uri(previous)
    assert not list(folder.rglob("*.pkl")), list(folder.rglob("*.pkl"))
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert "python_model" not in flavor
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    code = folder / Path(flavor["model_code_path"]).name
    assert "mlflow.models.set_model(EmotunePyfunc())" in code.read_text()
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert requirements[0] == emotune_requirement()
    installed = [
        d for d in metadata.distributions(name="emotune") if d.read_text("direct_url.json")
    ]
    if installed:  # this checkout is installed from a folder: a direct reference, not a name
        assert requirements[0].startswith("emotune @ file:///")


class _Dist:
    def __init__(self, version: str, direct_url: dict[str, Any] | None) -> None:
        self.version = version
        self._direct_url = direct_url

    def read_text(self, name: str) -> str | None:
        return (
            json.dumps(self._direct_url) if self._direct_url and name == "direct_url.json" else None
        )


@pytest.mark.parametrize(
    ("direct_urls", "expected"),
    [
        ([None], "emotune==0.1.0"),  # from an index: the version is all there is
        (
            [{"url": "file:///src/emotune", "dir_info": {"editable": True}}],
            "emotune @ file:///src/emotune",
        ),
        # a stale egg-info in the working directory comes first on sys.path
        ([None, {"url": "file:///src/emotune", "dir_info": {}}], "emotune @ file:///src/emotune"),
        (
            [{"url": "https://h.example/e.git", "vcs_info": {"vcs": "git", "commit_id": "abc1"}}],
            "emotune @ git+https://h.example/e.git@abc1",
        ),
        (
            [
                {
                    "url": "https://h.example/e-0.1.0.tar.gz",
                    "archive_info": {"hashes": {"sha256": "f00"}},
                    "subdirectory": "pkg",
                }
            ],
            "emotune @ https://h.example/e-0.1.0.tar.gz#sha256=f00&subdirectory=pkg",
        ),
    ],
)
def test_emotune_requirement_pins_how_emotune_was_installed(
    monkeypatch: pytest.MonkeyPatch, direct_urls: list[dict[str, Any] | None], expected: str
) -> None:
    dists = [_Dist("0.1.0", d) for d in direct_urls]
    monkeypatch.setattr(metadata, "distributions", lambda name=None: iter(dists))
    assert emotune_requirement() == expected


def test_reexport_replaces_folder_and_moves_alias(search_root: Path, tmp_path: Path) -> None:
    search = json.loads((search_root / "corpus/search.json").read_text())

    def root_with(dataset: str) -> Path:
        (tmp_path / dataset / dataset).mkdir(parents=True)
        (tmp_path / dataset / dataset / "search.json").write_text(
            json.dumps({**search, "dataset": dataset})
        )
        return tmp_path / dataset

    root, out = root_with("other"), tmp_path / "out"
    first = export_best(root, out)[0]
    assert (out / "other/peft").is_dir()
    (second,) = export_best(root, out, max_params=BUDGET_BELOW_LORA)
    assert second.trial_id == "frozen_b" and not (out / "other/peft").exists()
    assert "PeftModel" not in (out / "other/README.md").read_text()
    assert second.registered_version == first.registered_version + 1
    uri = search["mlflow"]["tracking_uri"]
    alias = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
        "emotune-other", "champion"
    )
    assert int(alias.version) == second.registered_version

    (out / "stranger").mkdir()
    (out / "stranger/notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an emotune export"):
        export_best(root_with("stranger"), out, register=False)
    assert (out / "stranger/notes.txt").read_text() == "mine"
