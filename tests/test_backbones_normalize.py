"""Waveform normalisation of a backbone folder: its preprocessor file, else the family default."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from trainables.backbones import build_preset_model, load_backbone

# (preset, the config's feat_extract_norm, the default chosen without a preprocessor file)
CASES = [
    ("tiny-wavlm", "group", False),
    ("tiny-hubert", "group", False),
    ("tiny-wav2vec2", "layer", True),
]


def _folder(preset: str, tmp_path: Path) -> Path:
    folder = tmp_path / preset
    build_preset_model(preset).save_pretrained(folder)  # config + safetensors, no preprocessor
    assert (folder / "model.safetensors").is_file()
    assert not (folder / "preprocessor_config.json").exists()
    return folder


@pytest.mark.parametrize("preset,norm,expected", CASES)
def test_a_folder_without_preprocessor_takes_the_family_default(
    preset: str, norm: str, expected: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(preset, tmp_path)
    with caplog.at_level(logging.WARNING, logger="trainables.backbones"):
        bb = load_backbone(folder)
    assert bb.model.config.feat_extract_norm == norm
    assert bb.normalize is expected
    assert bb.frontend_settings()["normalize"] is expected  # so the feature cache key follows
    warned = [
        r.getMessage() for r in caplog.records if "preprocessor_config.json" in r.getMessage()
    ]
    assert len(warned) == 1, warned
    assert str(folder) in warned[0] and f"do_normalize={expected}" in warned[0]


@pytest.mark.parametrize("preset,norm,expected", CASES)
@pytest.mark.parametrize("written", [False, True])
def test_the_preprocessor_file_wins(
    preset: str,
    norm: str,
    expected: bool,
    written: bool,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = _folder(preset, tmp_path)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"sampling_rate": 16000, "do_normalize": written})
    )
    with caplog.at_level(logging.WARNING, logger="trainables.backbones"):
        bb = load_backbone(folder)
    assert bb.normalize is written
    assert not [r for r in caplog.records if "do_normalize" in r.getMessage()]


def test_a_preprocessor_file_without_the_key_normalises_like_transformers(tmp_path: Path) -> None:
    """Wav2Vec2FeatureExtractor defaults to do_normalize=True when the file omits it."""
    folder = _folder("tiny-wavlm", tmp_path)
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000}))
    assert load_backbone(folder).normalize is True


@pytest.mark.parametrize("preset", ["tiny-wavlm", "tiny-hubert", "tiny-wav2vec2"])
def test_presets_keep_normalising(preset: str, caplog: pytest.LogCaptureFixture) -> None:
    """Presets never read a preprocessor file: unchanged (True), and no default is announced."""
    with caplog.at_level(logging.WARNING, logger="trainables.backbones"):
        assert load_backbone(preset).normalize is True
    assert not [r for r in caplog.records if "do_normalize" in r.getMessage()]


def test_whisper_folder_is_not_affected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "w"
    build_preset_model("tiny-whisper").save_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="trainables.backbones"):
        bb = load_backbone(folder)
    assert bb.family == "whisper" and not hasattr(bb, "normalize")
    assert not [r for r in caplog.records if "do_normalize" in r.getMessage()]
