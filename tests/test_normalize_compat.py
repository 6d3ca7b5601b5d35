"""Waveform normalisation made before the loader's family defaults keeps its preprocessing
(issue 12): an exported adapter and a run fingerprint record ``do_normalize``, and records
written before they did are read with the rule of that time (the backbone's
``preprocessor_config.json``, else True).

The backbone of these tests is a tiny WavLM (group-norm CNN) saved without a preprocessor file:
the loader's default for it is now False, where older emotune used True.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import trainables.run_setup
from trainables import backbones
from trainables.backbones import (
    InputNormalization,
    build_preset_model,
    input_normalization,
    load_backbone,
)
from trainables.config import TrainConfig
from trainables.data.synth import synthesize
from trainables.export import build_model, load_adapter, save_adapter
from trainables.fingerprint import differences, run_fingerprint
from trainables.folds import train_folds
from trainables.model import HeadConfig, SERModel
from trainables.result import RESULT_FILE
from trainables.train import train

HEAD = HeadConfig(proj_dim=8, dropout=0.0)
LABELS = ["ang", "hap", "neu", "sad"]
FAST = dict(method="frozen", epochs=1, batch_size=16, max_seconds=1.0)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A tiny WavLM folder (config + safetensors) without preprocessor_config.json."""
    path = tmp_path / "wavlm"
    build_preset_model("tiny-wavlm").save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    assert not (path / "preprocessor_config.json").exists()
    bb = load_backbone(path)
    assert bb.model.config.feat_extract_norm == "group"
    assert input_normalization(bb) == InputNormalization(False, "family default")
    return path


def _export(backbone: str | Path, out: Path, normalize: bool | None = None) -> SERModel:
    """Exports an untrained ``frozen`` adapter (its head seeded); ``normalize`` overrides the
    loader's choice, as older emotune's loader would have made it."""
    model, method = build_model(str(backbone), "frozen", {}, HEAD, len(LABELS), seed=1)
    if normalize is not None:
        model.backbone.normalize = normalize
    save_adapter(model, method, out, labels=LABELS, head=HEAD, max_seconds=1.0, eval_crop="center")
    return model.eval()


def _logits(model: SERModel) -> torch.Tensor:
    # Quiet on purpose: a bias-free first conv followed by a per-channel GroupNorm (base WavLM,
    # HuBERT, wav2vec 2.0) removes a waveform's offset and scale by itself, so normalising it
    # first only matters where the conv's output variance nears GroupNorm's eps (1e-5).
    waves = 2e-4 + 1e-3 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model(waves, torch.tensor([8000, 6000]))


def _edit(path: Path, **changes: object) -> None:
    """Rewrites the JSON object at ``path``; a value of ``...`` deletes the key."""
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))


# --- exported adapters ---------------------------------------------------------------------------


def test_an_adapter_written_before_normalize_was_recorded_keeps_normalising(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Older emotune trained this adapter with do_normalize=True (no preprocessor file) and
    wrote no ``normalize``: it predicts with True, not the loader's default False."""
    trained = _export(folder, tmp_path / "old", normalize=True)
    _edit(tmp_path / "old" / "emotune.json", normalize=...)
    with caplog.at_level(logging.INFO, logger="trainables.backbones"):
        loaded = load_adapter(tmp_path / "old")
    assert loaded.model.backbone.normalize is True
    assert torch.allclose(_logits(loaded.model), _logits(trained), atol=1e-6)
    notes = [r for r in caplog.records if "records no normalize" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.WARNING
    assert "emotune.json" in notes[0].getMessage()
    # The test would catch the bug: the loader's default gives other logits.
    loaded.model.backbone.normalize = False
    assert not torch.allclose(_logits(loaded.model), _logits(trained), atol=1e-3)


def test_an_old_adapter_on_a_folder_with_a_preprocessor_file_takes_the_files_value(
    folder: Path, tmp_path: Path
) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    _export(folder, tmp_path / "old")
    _edit(tmp_path / "old" / "emotune.json", normalize=...)
    assert load_adapter(tmp_path / "old").model.backbone.normalize is False


def test_a_new_adapter_records_its_normalisation_and_keeps_it(folder: Path, tmp_path: Path) -> None:
    trained = _export(folder, tmp_path / "new")
    assert json.loads((tmp_path / "new" / "emotune.json").read_text())["normalize"] is False
    loaded = load_adapter(tmp_path / "new")
    assert loaded.model.backbone.normalize is False
    assert torch.allclose(_logits(loaded.model), _logits(trained), atol=1e-6)
    # Whatever the loader would choose now, the adapter predicts as it was trained.
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    assert load_backbone(folder).normalize is True
    again = load_adapter(tmp_path / "new")
    assert input_normalization(again.model.backbone) == InputNormalization(False, "recorded")
    assert torch.allclose(_logits(again.model), _logits(trained), atol=1e-6)


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_a_normalize_that_is_not_a_bool_is_refused(
    folder: Path, tmp_path: Path, value: object
) -> None:
    _export(folder, tmp_path / "a")
    path = tmp_path / "a" / "emotune.json"
    _edit(path, normalize=value)
    with pytest.raises(ValueError, match=rf"{path}: normalize = .*; expected true or false"):
        load_adapter(tmp_path / "a")


def test_whisper_records_no_normalize_and_refuses_one(tmp_path: Path) -> None:
    _export("tiny-whisper", tmp_path / "w")
    path = tmp_path / "w" / "emotune.json"
    assert "normalize" not in json.loads(path.read_text())
    load_adapter(tmp_path / "w")
    _edit(path, normalize=True)
    with pytest.raises(ValueError, match=rf"{path}: normalize = True; a whisper backbone has no"):
        load_adapter(tmp_path / "w")


# --- run fingerprints ----------------------------------------------------------------------------


def _fingerprint(cfg: TrainConfig) -> dict:
    bb = load_backbone(cfg.backbone)
    return run_fingerprint(cfg, LABELS, "0" * 64, input_normalization(bb))


def _without_normalization(fingerprint: dict) -> dict:
    old = json.loads(json.dumps(fingerprint))
    del old["input_normalization"]
    return old


def test_the_fingerprint_records_the_normalisation(folder: Path, synth_corpus: Path) -> None:
    now = _fingerprint(TrainConfig(manifest=synth_corpus, backbone=str(folder)))
    assert now["input_normalization"] == {"normalize": False, "source": "family default"}
    flipped = json.loads(json.dumps(now))
    flipped["input_normalization"]["normalize"] = True
    reasons = differences(flipped, now)
    assert len(reasons) == 1 and "input normalisation changed" in reasons[0]
    # Only the value counts: the same value from a preprocessor file is the same run.
    same = json.loads(json.dumps(now))
    same["input_normalization"]["source"] = "file"
    assert differences(same, now) == []


@pytest.mark.parametrize(
    ("preprocessor", "same"),
    [
        (None, False),  # old rule True, family default False: would change mid-run
        ({"do_normalize": False}, True),  # the file decided, then as now
        ({"do_normalize": True}, True),
        ({"sampling_rate": 16000}, True),  # a file without the key: True, then as now
    ],
)
def test_a_fingerprint_from_before_matches_only_when_the_old_rule_agrees(
    folder: Path, synth_corpus: Path, preprocessor: dict | None, same: bool
) -> None:
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    now = _fingerprint(TrainConfig(manifest=synth_corpus, backbone=str(folder)))
    reasons = differences(_without_normalization(now), now)
    if same:
        assert reasons == []
    else:
        assert len(reasons) == 1, reasons
        assert "do_normalize True (older emotune's rule) then" in reasons[0]
        assert "do_normalize False (family default) now" in reasons[0]
        assert "preprocessor_config.json with do_normalize true" in reasons[0]


@pytest.mark.parametrize("preset", ["tiny-wavlm", "tiny-whisper"])
def test_a_fingerprint_from_before_on_a_preset_still_matches(
    synth_corpus: Path, preset: str
) -> None:
    now = _fingerprint(TrainConfig(manifest=synth_corpus, backbone=preset))
    assert now["input_normalization"] == (
        None if preset == "tiny-whisper" else {"normalize": True, "source": "preset"}
    )
    assert differences(_without_normalization(now), now) == []


def _old_emotune(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trains as emotune did before issue 12: the preprocessor file's do_normalize, else True,
    and a fingerprint without the normalisation."""
    new_rule = backbones._do_normalize
    monkeypatch.setattr(
        backbones,
        "_do_normalize",
        lambda *args: InputNormalization(new_rule(*args).legacy, "file"),
    )
    new_fingerprint = run_fingerprint

    def fingerprint(*args: object) -> dict:
        return _without_normalization(new_fingerprint(*args))

    monkeypatch.setattr(trainables.run_setup, "run_fingerprint", fingerprint)


@pytest.mark.parametrize("preprocessor", [None, {"do_normalize": False}])
def test_resuming_a_run_from_before_refuses_a_change_of_preprocessing(
    folder: Path,
    synth_corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    preprocessor: dict | None,
) -> None:
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    cfg = TrainConfig(manifest=synth_corpus, backbone=str(folder), **FAST)
    with monkeypatch.context() as old:
        _old_emotune(old)
        first = train(cfg, tmp_path / "run")
    assert "input_normalization" not in first.fingerprint
    if preprocessor is None:
        with pytest.raises(ValueError, match="holds a different run.*input normalisation changed"):
            train(cfg, tmp_path / "run")
    else:  # old and new rule agree: the same run, resumed (here: already finished)
        assert train(cfg, tmp_path / "run").dev == first.dev


def test_a_reused_fold_from_before_is_checked_with_the_old_rule(
    folder: Path, tmp_path: Path
) -> None:
    manifest = synthesize(tmp_path / "six", speakers=6, per_class=2, seed=1)  # 3 folds
    cfg = TrainConfig(manifest=manifest, backbone=str(folder), **FAST)
    cv = tmp_path / "cv"
    first = train_folds(cfg, cv, folds=[0])
    result = cv / "fold_0" / RESULT_FILE
    recorded = json.loads(result.read_text())["fingerprint"]["input_normalization"]
    assert recorded == {"normalize": False, "source": "family default"}
    assert train_folds(cfg, cv, folds=[0]).dev == first.dev  # same run: reused
    data = json.loads(result.read_text())
    data["fingerprint"] = _without_normalization(data["fingerprint"])
    result.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="fold_0 holds a different run.*input normalisation"):
        train_folds(cfg, cv, folds=[0])
