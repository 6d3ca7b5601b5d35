"""Backbone loading: hub ids, local folders and the random-init ``tiny-*`` presets.

Every path goes through ``from_pretrained`` so that a preset saved with ``save_pretrained`` and
loaded back behaves exactly like a downloaded checkpoint.

A model folder or hub repo is untrusted input: its ``config.json`` and
``preprocessor_config.json`` are read by emotune itself (regular files, at most 1 MiB, checked
values), custom code named by ``auto_map`` is never run, and weights load from safetensors only
unless the caller allows pickle weights (``pytorch_model.bin``, whose unpickling can run code).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig, WhisperFeatureExtractor

from trainables.backbones.base import (
    TARGET_GROUPS,
    Backbone,
    BackboneOutput,
    InputInjector,
    TargetGroup,
)
from trainables.backbones.normalization import (
    PREPROCESSOR_FILE,
    InputNormalization,
    input_normalization,
    set_input_normalization,
)
from trainables.backbones.presets import PRESETS
from trainables.backbones.w2v import HubertBackbone, W2VBackbone, Wav2Vec2Backbone, WavLMBackbone
from trainables.backbones.whisper import WhisperBackbone
from trainables.registry import Registry
from trainables.untrusted import read_json_object

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Backbone",
    "BackboneOutput",
    "InputInjector",
    "InputNormalization",
    "TARGET_GROUPS",
    "TargetGroup",
    "backbone_config",
    "backbone_skeleton",
    "build_preset_model",
    "input_normalization",
    "load_backbone",
    "set_input_normalization",
]

log = logging.getLogger(__name__)

FAMILIES: Registry[type[Backbone]] = Registry("backbone family")
for _cls in (WavLMBackbone, HubertBackbone, Wav2Vec2Backbone, WhisperBackbone):
    FAMILIES.register(_cls.family)(_cls)

# Seed used to initialise presets: the same "base" model every time, so an adapter trained on a
# preset can be re-applied to it later (export, predict).
PRESET_SEED = 0
CONFIG_FILE = "config.json"
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# Feature-extractor settings emotune reads, with the range it accepts: (type, low, high).
_PREPROCESSOR_FIELDS: dict[str, tuple[type, float, float]] = {
    "sampling_rate": (int, 1_000, 384_000),
    "feature_size": (int, 1, 1_024),
    "n_fft": (int, 16, 65_536),
    "hop_length": (int, 1, 65_536),
    "chunk_length": (int, 1, 3_600),
    "padding_value": (float, -1e6, 1e6),
    "dither": (float, 0.0, 1e6),
    "do_normalize": (bool, 0, 1),
    "return_attention_mask": (bool, 0, 1),
}


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


def load_backbone(name_or_path: str | Path, *, allow_pickle_weights: bool = False) -> Backbone:
    """Loads a backbone from a preset name, a local folder or a Hugging Face hub id.

    Args:
        name_or_path: ``tiny-wavlm`` / ``tiny-hubert`` / ``tiny-wav2vec2`` / ``tiny-whisper``
            (random init), a folder written by ``save_pretrained``, or a hub id such as
            ``microsoft/wavlm-base-plus`` (needs network or a filled HF cache).
        allow_pickle_weights: accept ``pytorch_model.bin`` weights when the model has no
            safetensors. Unpickling runs code from the file: only for files you trust.

    Returns:
        The backbone in eval mode, all parameters trainable (methods freeze what they must).

    Raises:
        FileNotFoundError: the folder has no ``config.json``.
        ValueError: an unsupported model type, a config file that is not a small regular JSON
            file, or pickle-only weights without ``allow_pickle_weights``.
    """
    name = str(name_or_path)
    if name in PRESETS:
        log.warning("backbone %s is RANDOMLY INITIALISED (a test preset, not pre-trained)", name)
        model = build_preset_model(name)
        return _wrap(model.config, model, name, random_init=True, source=None).eval()
    config = backbone_config(name)
    family = FAMILIES.get(config.model_type)
    _check_weight_files(name, config, allow_pickle_weights)
    try:
        model = family.model_cls.from_pretrained(
            name,
            config=config,  # read and checked above; transformers does not read it again
            trust_remote_code=False,
            # None: safetensors first, pickle as a fallback (only when allowed).
            use_safetensors=None if allow_pickle_weights else True,
        )
    except OSError as err:
        if allow_pickle_weights or "safetensors" not in str(err):
            raise
        raise ValueError(_pickle_refusal(name, "has no safetensors weights")) from err
    return _wrap(config, model, name, random_init=False, source=name).eval()


def backbone_config(name_or_path: str | Path) -> PretrainedConfig:
    """The model config of a preset, local folder or hub id, read without running its code.

    ``config.json`` is read as untrusted input (a regular file of at most 1 MiB holding a JSON
    object); its ``model_type`` must be a supported family, whose own config class parses it.
    An ``auto_map`` (custom code) is ignored.

    Raises:
        FileNotFoundError: no ``config.json``.
        ValueError: a bad file or an unsupported model type.
    """
    name = str(name_or_path)
    if name in PRESETS:
        return PRESETS[name]()
    path = _model_file(name, CONFIG_FILE)
    if path is None:
        raise FileNotFoundError(f"backbone {name!r}: no {CONFIG_FILE}")
    data = read_json_object(path, "model config")
    custom = data.pop("auto_map", None)
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise ValueError(
            f"backbone {name!r} is a {model_type!r} model; emotune supports "
            f"{', '.join(FAMILIES.names())}"
            + (" (its custom code in auto_map is never run)" if custom else "")
        )
    if custom:
        log.warning("backbone %s: ignoring auto_map (emotune never runs a model's own code)", name)
    try:
        config = FAMILIES.get(model_type).config_cls.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a valid {model_type} config: {err}") from err
    config.name_or_path = name  # as AutoConfig.from_pretrained records it
    return config


def backbone_skeleton(name_or_path: str | Path) -> Backbone:
    """The backbone's architecture on torch's meta device: no weights are read or allocated.

    Methods can be attached to it (inside ``torch.device("meta")``) to learn the names and
    shapes of the parameters a real model would have, before paying for the real model.
    """
    name = str(name_or_path)
    config = backbone_config(name)
    family = FAMILIES.get(config.model_type)
    with torch.device("meta"):
        model = family.model_cls(config)
    source = None if name in PRESETS else name
    return _wrap(config, model, name, random_init=source is None, source=source)


def _model_file(name: str, filename: str) -> Path | None:
    """Path of ``filename`` in a local folder or a hub repo (downloaded to the HF cache).

    Returns:
        The path, or None when the folder or repo has no such file.
    """
    if Path(name).is_dir():
        path = Path(name) / filename
        return path if path.exists() or path.is_symlink() else None
    from transformers.utils import cached_file

    found = cached_file(name, filename, _raise_exceptions_for_missing_entries=False)
    return None if found is None else Path(found)


def _check_weight_files(name: str, config: PretrainedConfig, allow_pickle: bool) -> None:
    """Refuses pickle-only weights (unless allowed), naming what the model has and what to do.

    A hub repo is checked by ``from_pretrained(use_safetensors=True)`` itself; a local folder
    here, so that the message can name its files.
    """
    explicit = getattr(config, "transformers_weights", None)  # config.json may name the file
    if explicit is not None and not allow_pickle:
        if not (isinstance(explicit, str) and explicit.endswith(_SAFE_WEIGHTS)):
            raise ValueError(_pickle_refusal(name, f"names weights {explicit!r} in {CONFIG_FILE}"))
    folder = Path(name)
    if not folder.is_dir() or explicit is not None:
        return
    if any((folder / f).is_file() for f in _SAFE_WEIGHTS):
        return
    pickles = [f for f in _PICKLE_WEIGHTS if (folder / f).is_file()]
    if not pickles:
        raise FileNotFoundError(f"backbone folder {folder}: no {' or '.join(_SAFE_WEIGHTS)}")
    if not allow_pickle:
        raise ValueError(_pickle_refusal(name, f"has only pickle weights ({pickles[0]})"))
    log.warning("backbone %s: loading pickle weights %s (allowed by the caller)", folder, pickles)


def _pickle_refusal(name: str, why: str) -> str:
    return (
        f"backbone {name!r} {why}; emotune loads safetensors only, because unpickling a "
        "pytorch_model.bin can run code. Convert it to safetensors (in a session you trust: "
        "from_pretrained(..., use_safetensors=False) then save_pretrained(folder)), or pass "
        "--allow-pickle-weights (allow_pickle_weights=True) only for files you trust."
    )


def _wrap(
    config: PretrainedConfig,
    model: torch.nn.Module,
    name: str,
    random_init: bool,
    source: str | None,
) -> Backbone:
    family = FAMILIES.get(config.model_type)
    found = _read_preprocessor(source)
    pre = {} if found is None else found
    if family is WhisperBackbone:
        # WhisperForAudioClassification loads only the encoder's weights from a full checkpoint.
        pre.pop("do_normalize", None)
        fe = WhisperFeatureExtractor(**{"feature_size": config.num_mel_bins, **pre})
        if fe.feature_size != config.num_mel_bins:  # the first conv would fail on every clip
            raise ValueError(
                f"backbone {name!r}: {PREPROCESSOR_FILE} has feature_size {fe.feature_size} "
                f"but {CONFIG_FILE} has num_mel_bins {config.num_mel_bins}"
            )
        return WhisperBackbone(model.encoder, name, random_init, fe)
    assert issubclass(family, W2VBackbone)
    sample_rate = int(pre.get("sampling_rate", 16000))
    choice = _do_normalize(config, found, source)
    backbone = family(model, name, random_init, sample_rate, choice.normalize)
    backbone.normalize_source = choice.source  # read back by input_normalization()
    return backbone


def _do_normalize(
    config: PretrainedConfig, preprocessor: dict[str, Any] | None, source: str | None
) -> InputNormalization:
    """Whether a wav2vec 2.0-style backbone normalises each waveform (``do_normalize``).

    Args:
        config: the model config.
        preprocessor: the checked settings of its ``preprocessor_config.json``; None without one.
        source: the folder or hub id; None for a preset.

    Returns:
        The value and its source. The file's ``do_normalize`` (True when the file omits it, as
        ``Wav2Vec2FeatureExtractor`` does). Without a file: the family's published default,
        ``feat_extract_norm == "layer"``: the layer-norm CNNs (large / lv60) were pre-trained on
        normalised waveforms, the group-norm base ones on raw waveforms. Presets (random
        weights) keep True.
    """
    if preprocessor is not None:
        return InputNormalization(bool(preprocessor.get("do_normalize", True)), "file")
    if source is None:
        return InputNormalization(True, "preset")
    norm = getattr(config, "feat_extract_norm", None)
    normalize = norm == "layer"
    log.warning(
        "backbone %s has no %s; using do_normalize=%s, the default of checkpoints whose CNN "
        "uses %r norm (add the file to choose otherwise)",
        source,
        PREPROCESSOR_FILE,
        normalize,
        norm,
    )
    return InputNormalization(normalize, "family default")


def _read_preprocessor(source: str | None) -> dict[str, Any] | None:
    """The checked feature-extractor settings of a folder or hub repo (None when it has none).

    Only the settings emotune uses are kept, each checked against a sane range: they size
    buffers (an ``n_fft`` of 10^9 would allocate a mel filter bank of that many rows).
    """
    path = None if source is None else _model_file(source, PREPROCESSOR_FILE)
    if path is None:
        return None
    data = read_json_object(path, "feature extractor config")
    checked: dict[str, Any] = {}
    for key, (kind, low, high) in _PREPROCESSOR_FIELDS.items():
        if key in data:
            checked[key] = _checked_setting(path, key, data[key], kind, low, high)
    if "padding_side" in data:
        if data["padding_side"] not in ("left", "right"):
            raise ValueError(
                f"{path}: padding_side = {data['padding_side']!r}; expected left/right"
            )
        checked["padding_side"] = data["padding_side"]
    return checked


def _checked_setting(path: Path, key: str, value: Any, kind: type, low: float, high: float) -> Any:
    if kind is bool:
        ok = isinstance(value, bool)
    else:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = number and (kind is float or isinstance(value, int)) and low <= value <= high
    if not ok:
        expected = "true or false" if kind is bool else f"{kind.__name__} in [{low}, {high}]"
        raise ValueError(f"{path}: {key} = {value!r}; expected {expected}")
    return value
