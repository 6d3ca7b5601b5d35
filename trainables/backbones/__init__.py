"""Backbone loading: hub ids, local folders and the random-init ``tiny-*`` presets.

Every path goes through ``from_pretrained`` so that a preset saved with ``save_pretrained`` and
loaded back behaves exactly like a downloaded checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, PretrainedConfig, WhisperFeatureExtractor

from trainables.backbones.base import Backbone, BackboneOutput, InputInjector, LoraTargets
from trainables.backbones.presets import PRESETS
from trainables.backbones.w2v import HubertBackbone, W2VBackbone, Wav2Vec2Backbone, WavLMBackbone
from trainables.backbones.whisper import WhisperBackbone
from trainables.registry import Registry

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Backbone",
    "BackboneOutput",
    "InputInjector",
    "LoraTargets",
    "build_preset_model",
    "load_backbone",
]

log = logging.getLogger(__name__)

FAMILIES: Registry[type[Backbone]] = Registry("backbone family")
for _cls in (WavLMBackbone, HubertBackbone, Wav2Vec2Backbone, WhisperBackbone):
    FAMILIES.register(_cls.family)(_cls)

# Seed used to initialise presets: the same "base" model every time, so an adapter trained on a
# preset can be re-applied to it later (export, predict).
PRESET_SEED = 0


def build_preset_model(name: str) -> torch.nn.Module:
    """Builds the randomly initialised Hugging Face model of a ``tiny-*`` preset (seeded)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    config = PRESETS[name]()
    family = FAMILIES.get(config.model_type)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PRESET_SEED)
        if family is WhisperBackbone:
            from transformers import WhisperModel

            return WhisperModel(config)  # saved like a real checkpoint, decoder included
        return family.model_cls(config)


def load_backbone(name_or_path: str | Path) -> Backbone:
    """Loads a backbone from a preset name, a local folder or a Hugging Face hub id.

    Args:
        name_or_path: ``tiny-wavlm`` / ``tiny-hubert`` / ``tiny-wav2vec2`` / ``tiny-whisper``
            (random init), a folder written by ``save_pretrained``, or a hub id such as
            ``microsoft/wavlm-base-plus`` (needs network or a filled HF cache).

    Returns:
        The backbone in eval mode, all parameters trainable (methods freeze what they must).
    """
    name = str(name_or_path)
    if name in PRESETS:
        log.warning("backbone %s is RANDOMLY INITIALISED (a test preset, not pre-trained)", name)
        model = build_preset_model(name)
        backbone = _wrap(model.config, model, name, random_init=True, source=None)
    else:
        config = AutoConfig.from_pretrained(name)
        if config.model_type not in FAMILIES:
            raise ValueError(
                f"backbone {name!r} is a {config.model_type!r} model; emotune supports "
                f"{', '.join(FAMILIES.names())}"
            )
        family = FAMILIES.get(config.model_type)
        model = family.model_cls.from_pretrained(name)
        backbone = _wrap(config, model, name, random_init=False, source=name)
    return backbone.eval()


def _wrap(
    config: PretrainedConfig,
    model: torch.nn.Module,
    name: str,
    random_init: bool,
    source: str | None,
) -> Backbone:
    family = FAMILIES.get(config.model_type)
    if family is WhisperBackbone:
        # WhisperForAudioClassification loads only the encoder's weights from a full checkpoint.
        encoder = model.encoder
        fe = _whisper_feature_extractor(source, config)
        return WhisperBackbone(encoder, name, random_init, fe)
    assert issubclass(family, W2VBackbone)
    sample_rate, normalize = _w2v_preprocessing(source)
    return family(model, name, random_init, sample_rate, normalize)


def _read_preprocessor(source: str | None) -> dict:
    if source is None:
        return {}
    local = Path(source) / "preprocessor_config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if Path(source).exists():
        return {}
    try:  # a hub id: the feature extractor config is in the same repo
        from transformers import AutoFeatureExtractor

        return AutoFeatureExtractor.from_pretrained(source).to_dict()
    except OSError:
        return {}


def _w2v_preprocessing(source: str | None) -> tuple[int, bool]:
    pre = _read_preprocessor(source)
    return int(pre.get("sampling_rate", 16000)), bool(pre.get("do_normalize", True))


def _whisper_feature_extractor(
    source: str | None, config: PretrainedConfig
) -> WhisperFeatureExtractor:
    pre = _read_preprocessor(source)
    if pre:
        pre = {
            k: v for k, v in pre.items() if k not in ("feature_extractor_type", "processor_class")
        }
        return WhisperFeatureExtractor(**pre)
    return WhisperFeatureExtractor(feature_size=config.num_mel_bins)
