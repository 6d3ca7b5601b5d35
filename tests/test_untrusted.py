"""Model and adapter folders are untrusted input: no remote code, no pickle, bounded reads."""

from __future__ import annotations

import builtins
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import WavLMModel

import trainables.export as export
from trainables.backbones import build_preset_model, load_backbone
from trainables.backbones.w2v import WavLMBackbone
from trainables.export import build_model, load_adapter, save_adapter
from trainables.model import HeadConfig
from trainables.untrusted import read_bounded, read_json_object, safetensors_header

MIB = 1 << 20


@pytest.fixture
def no_prompt(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answers "y" to any terminal prompt (the worst case) and records that it was asked."""
    asked: list[str] = []

    def answer(prompt: str = "") -> str:
        asked.append(prompt)
        return "y"

    monkeypatch.setattr(builtins, "input", answer)
    return asked


def _saved(tmp_path: Path, name: str = "tiny-wavlm") -> Path:
    folder = tmp_path / name
    build_preset_model(name).save_pretrained(folder)
    return folder


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# --- backbone folders -------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["wavlm", "evil"])
def test_auto_map_code_is_never_run_nor_asked_about(
    model_type: str, tmp_path: Path, no_prompt: list[str]
) -> None:
    folder = _saved(tmp_path)
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('custom code ran')\n"
        "from transformers import WavLMConfig, WavLMModel\n"
        "class EvilConfig(WavLMConfig):\n    model_type = 'evil'\n"
        "class EvilModel(WavLMModel):\n    config_class = EvilConfig\n"
    )
    auto_map = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    _edit_json(folder / "config.json", auto_map=auto_map, model_type=model_type)
    if model_type == "wavlm":  # a supported type: its native class, never the folder's code
        backbone = load_backbone(folder)
        assert type(backbone) is WavLMBackbone and type(backbone.model) is WavLMModel
    else:
        with pytest.raises(ValueError, match="'evil' model; emotune supports.*never run"):
            load_backbone(folder)
    assert not no_prompt, f"asked: {no_prompt}"
    assert not marker.exists()


def _pickle_only(tmp_path: Path) -> Path:
    folder = _saved(tmp_path)
    state = WavLMModel.from_pretrained(folder).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")  # transformers 5 only writes safetensors
    return folder


def test_pickle_weights_are_refused_unless_allowed(tmp_path: Path) -> None:
    folder = _pickle_only(tmp_path)
    with pytest.raises(ValueError) as err:
        load_backbone(folder)
    message = str(err.value)
    for text in (str(folder), "pytorch_model.bin", "safetensors", "--allow-pickle-weights"):
        assert text in message, text
    loaded = load_backbone(folder, allow_pickle_weights=True)
    preset = load_backbone("tiny-wavlm").state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, preset[key]), key


def test_config_naming_pickle_weights_is_refused(tmp_path: Path) -> None:
    folder = _pickle_only(tmp_path)
    (folder / "pytorch_model.bin").rename(folder / "adapter_model.bin")
    _edit_json(folder / "config.json", transformers_weights="adapter_model.bin")
    with pytest.raises(ValueError, match=r"names weights 'adapter_model.bin'.*allow-pickle"):
        load_backbone(folder)


def test_build_model_passes_allow_pickle_weights(tmp_path: Path) -> None:
    folder = _pickle_only(tmp_path)
    with pytest.raises(ValueError, match="pickle"):
        build_model(str(folder), "frozen", {}, HeadConfig(), 4, seed=0)
    model, _ = build_model(
        str(folder), "frozen", {}, HeadConfig(), 4, seed=0, allow_pickle_weights=True
    )
    assert model.backbone.family == "wavlm"


def _oversized(path: Path) -> None:
    path.write_text(path.read_text() + " " * MIB)  # still valid JSON


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _not_json(path: Path) -> None:
    path.write_text("{'model_type': 'wavlm'")


def _json_list(path: Path) -> None:
    path.write_text("[1, 2]")


@pytest.mark.parametrize(
    ("file", "damage", "message"),
    [
        ("config.json", _oversized, "config.json: .* bytes, over the 1,048,576-byte limit"),
        ("config.json", _directory, "config.json: not a regular file"),
        ("config.json", _not_json, "config.json: not valid JSON"),
        ("config.json", _json_list, "config.json: must hold a JSON object"),
        ("preprocessor_config.json", _oversized, "preprocessor_config.json: .* bytes, over the"),
        ("preprocessor_config.json", _directory, "preprocessor_config.json: not a regular"),
    ],
)
def test_bad_model_config_files_are_refused_clearly(
    tmp_path: Path, file: str, damage: Any, message: str
) -> None:
    folder = _saved(tmp_path)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"sampling_rate": 16000, "do_normalize": True})
    )
    damage(folder / file)
    with pytest.raises(ValueError, match=message):
        load_backbone(folder)


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("tiny-whisper", {"n_fft": 10**12}),  # a mel filter bank of 5e11 rows
        ("tiny-whisper", {"feature_size": 80, "hop_length": 0}),
        ("tiny-wavlm", {"sampling_rate": 1e8}),
        ("tiny-wavlm", {"do_normalize": "yes"}),
        ("tiny-whisper", {"feature_size": 128}),  # the encoder takes 80 mel bins
    ],
)
def test_preprocessor_settings_are_bounded(
    tmp_path: Path, name: str, settings: dict[str, Any]
) -> None:
    folder = _saved(tmp_path, name)
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    key = next(k for k in reversed(settings))
    with pytest.raises(ValueError, match=f"preprocessor_config.json.* {key}"):
        load_backbone(folder)


def test_symlinks_to_regular_files_are_followed(tmp_path: Path) -> None:
    """Hugging Face cache snapshots link every file into ``blobs/``."""
    folder = _saved(tmp_path)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).rename(blobs / name)
        (folder / name).symlink_to(blobs / name)
    assert load_backbone(folder).family == "wavlm"
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(blobs)  # a link to a folder is not a file
    with pytest.raises(ValueError, match="not a regular file"):
        load_backbone(folder)


def _hub_cache(root: Path, files: dict[str, Path]) -> None:
    """A Hugging Face cache entry for ``acme/tiny`` in its on-disk layout (links to blobs)."""
    repo, commit = root / "models--acme--tiny", "0" * 40
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text(commit)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        blob = repo / "blobs" / name.replace(".", "_")
        shutil.copy(source, blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


def test_hub_id_from_the_cache_safetensors_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder = _saved(tmp_path)
    _hub_cache(tmp_path / "hub", {n: folder / n for n in ("config.json", "model.safetensors")})
    assert load_backbone("acme/tiny").family == "wavlm"
    torch.save(WavLMModel.from_pretrained(folder).state_dict(), tmp_path / "weights.bin")
    _hub_cache(
        tmp_path / "hub",
        {"config.json": folder / "config.json", "pytorch_model.bin": tmp_path / "weights.bin"},
    )
    with pytest.raises(ValueError, match="'acme/tiny' has no safetensors.*allow-pickle-weights"):
        load_backbone("acme/tiny")
    assert load_backbone("acme/tiny", allow_pickle_weights=True).family == "wavlm"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)  # opening it for a blocking read would wait for a writer forever
    with pytest.raises(ValueError, match="not a regular file"):
        read_json_object(fifo, "model config")


def test_bounded_readers(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"a": 1}')
    assert read_json_object(path, "x") == {"a": 1}
    assert read_bounded(path, "x", 8) == b'{"a": 1}'
    with pytest.raises(ValueError, match="8 bytes, over the 7-byte limit"):
        read_bounded(path, "x", 7)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json_object(path, "x")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_json_object(tmp_path / "none.json", "x")


# --- adapter folders --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA rank-2 adapter on tiny-wavlm with 4 labels (saved as training saves it)."""
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    model, method = build_model("tiny-wavlm", "lora", {"rank": 2}, HeadConfig(), 4, seed=0)
    save_adapter(
        model,
        method,
        out,
        labels=["ang", "hap", "neu", "sad"],
        head=HeadConfig(),
        max_seconds=1.0,
        eval_crop="center",
        extra={"eval_max_seconds": 60.0},
    )
    return out


@pytest.fixture
def copy(adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the adapter; building the real model fails the test (checks come first)."""

    def no_real_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the real model was built before the adapter was checked")

    monkeypatch.setattr(export, "build_model", no_real_model)
    return Path(shutil.copytree(adapter, tmp_path / "adapter"))


def test_a_valid_adapter_loads_with_its_eval_window(adapter: Path) -> None:
    loaded = load_adapter(adapter)
    assert loaded.labels == ["ang", "hap", "neu", "sad"]
    assert loaded.meta["eval_max_seconds"] == 60.0
    waves = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        assert loaded.model(waves, torch.tensor([8000])).shape == (1, 4)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format_version", 2, "format_version = 2; expected 1"),
        ("format_version", "1", "format_version = '1'"),
        ("format_version", None, "format_version is missing"),
        ("backbone", 5, "backbone = 5"),
        ("backbone", "", "backbone = ''"),
        ("method", "evil", "method = 'evil'; expected"),
        ("method_options", {"rank": 0}, "method_options: lora rank must be >= 1"),
        ("method_options", {"rank": "2"}, r"method_options.rank = '2'; expected int"),
        ("method_options", {"alpha": NAN}, "method_options.alpha = nan; expected a finite"),
        ("method_options", {"dropout": INF}, "method_options.dropout = inf"),
        ("method_options", {"bogus": 1}, r"method_options.bogus: no such option"),
        ("method_options", [1], "method_options = \\[1\\]; expected a JSON object"),
        ("head", {"proj_dim": 0}, "head: head proj_dim must be >= 1"),
        ("head", {"proj_dim": 1000}, "head = .* gives .* the shape \\(1000, 64\\)"),
        ("head", {"proj_dim": 10**12}, "head"),
        ("head", {"pooling": "max"}, "head: head pooling must be"),
        ("head", {"dropout": NAN}, "head.dropout = nan"),
        ("head", None, "head is missing"),
        ("labels", ["a"], "labels = \\['a'\\]; expected a list of 2..1000"),
        ("labels", ["a", "a", "b", "c"], "labels = "),
        ("labels", ["a", "", "b", "c"], "labels = "),
        ("labels", [1, 2, 3, 4], "labels = "),
        ("labels", [f"c{i}" for i in range(1001)], "labels = "),
        ("sample_rate", 1e8, "sample_rate = 100000000.0; expected int"),
        ("sample_rate", 100_000_000, "sample_rate = 100000000; expected int"),
        ("sample_rate", 8000, "sample_rate = 8000; the backbone 'tiny-wavlm' takes 16000 Hz"),
        ("sample_rate", True, "sample_rate = True"),
        ("max_seconds", 0, "max_seconds = 0; expected a number in \\(0, 3600\\]"),
        ("max_seconds", 3601, "max_seconds = 3601"),
        ("max_seconds", NAN, "max_seconds = nan"),
        ("max_seconds", "6", "max_seconds = '6'"),
        ("eval_crop", "random", "eval_crop = 'random'; expected center or full or first"),
        ("eval_max_seconds", 0, "eval_max_seconds = 0"),
        ("eval_max_seconds", 1e9, "eval_max_seconds = 1000000000.0"),
        ("eval_max_seconds", INF, "eval_max_seconds = inf"),
    ],
)
def test_every_adapter_field_is_bounded(copy: Path, field: str, value: Any, message: str) -> None:
    meta = json.loads((copy / "emotune.json").read_text())
    if value is None:
        del meta[field]
    elif field in ("method_options", "head") and isinstance(value, dict):
        meta[field] = {**meta[field], **value} if field == "head" else value
    else:
        meta[field] = value
    (copy / "emotune.json").write_text(json.dumps(meta))  # NaN / Infinity as Python writes them
    with pytest.raises(ValueError, match=f"emotune.json.*{message}") as err:
        load_adapter(copy)
    assert "emotune.json" in str(err.value)


def test_huge_lora_rank_is_refused_without_building_anything(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rank of 400,000 allocated 1.7 GB before the weights were even compared."""

    def no_backbone(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a real backbone was loaded")

    monkeypatch.setattr(export, "load_backbone", no_backbone)
    _edit_json(copy / "emotune.json", method_options={"rank": 400_000})
    with pytest.raises(ValueError) as err:
        load_adapter(copy)
    message = str(err.value)
    assert "weights.safetensors" in message and "emotune.json" in message
    assert "method_options" in message and "'rank': 400000" in message
    assert "(2, 64)" in message and "(400000, 64)" in message


def test_label_count_must_match_the_head(copy: Path) -> None:
    _edit_json(copy / "emotune.json", labels=["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match=r"emotune.json: labels lists 5 classes .* 4 outputs"):
        load_adapter(copy)


def _rewrite_weights(folder: Path, change: Any) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "weights.safetensors"))
    change(state)
    save_file(state, str(folder / "weights.safetensors"))


def test_weights_must_name_exactly_the_trainable_parameters(copy: Path) -> None:
    _rewrite_weights(copy, lambda s: s.update(extra=torch.zeros(3)))
    with pytest.raises(ValueError, match=r"weights.safetensors: its tensors do not match.*'extra'"):
        load_adapter(copy)
    _rewrite_weights(copy, lambda s: [s.pop("extra"), s.pop("head.layer_weights")])
    with pytest.raises(ValueError, match=r"weights.safetensors: .*missing \['head.layer_weights'"):
        load_adapter(copy)


def test_weights_header_must_match_the_file(copy: Path) -> None:
    path = copy / "weights.safetensors"
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    name = "head.layer_weights"
    header[name]["shape"] = [100_000, 100_000]  # claims 40 GB in a file of a few KB
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])
    with pytest.raises(ValueError, match=f"weights.safetensors: tensor '{name}': shape"):
        load_adapter(copy)
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="weights.safetensors: header length"):
        load_adapter(copy)


def test_safetensors_header_lists_names_and_shapes(adapter: Path) -> None:
    header = safetensors_header(adapter / "weights.safetensors")
    assert (
        header["head.layer_weights"].shape == (3,) and header["head.layer_weights"].dtype == "F32"
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_oversized, "emotune.json: .* bytes, over the 1,048,576-byte limit"),
        (_directory, "emotune.json: not a regular file"),
        (_not_json, "emotune.json: not valid JSON"),
        (_json_list, "emotune.json: must hold a JSON object"),
    ],
)
def test_emotune_json_is_a_small_regular_json_file(copy: Path, damage: Any, message: str) -> None:
    damage(copy / "emotune.json")
    with pytest.raises(ValueError, match=message):
        load_adapter(copy)
