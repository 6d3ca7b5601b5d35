"""Backbones: the from_pretrained path, padding exactness, Whisper short clips, WavLM attention."""

from __future__ import annotations

import pytest
import torch

from trainables.backbones import (
    FAMILIES,
    PRESETS,
    backbone_skeleton,
    build_preset_model,
    load_backbone,
)

PRESET_NAMES = list(PRESETS)


def _waves(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    waves = torch.randn(3, 12000, generator=g) * 0.1
    lengths = torch.tensor([12000, 9000, 5000])
    for i, n in enumerate(lengths.tolist()):
        waves[i, n:] = 0
    return waves, lengths


def test_every_family_has_a_preset() -> None:
    families = {build_preset_model(name).config.model_type for name in PRESET_NAMES}
    assert families == set(FAMILIES.names())


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_is_flagged_random_and_deterministic(name: str) -> None:
    a, b = load_backbone(name), load_backbone(name)
    assert a.random_init
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), f"{name}: preset init not reproducible at {na}"


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_local_folder_loads_the_same_weights(name: str, tmp_path) -> None:
    """save_pretrained -> load_backbone(folder) is the path users take with a hub id."""
    build_preset_model(name).save_pretrained(tmp_path / name)
    # As a hub checkpoint ships one; without it the family default applies (test_backbones_normalize).
    (tmp_path / name / "preprocessor_config.json").write_text('{"do_normalize": true}')
    loaded = load_backbone(tmp_path / name)
    preset = load_backbone(name)
    assert not loaded.random_init and loaded.family == preset.family
    state = preset.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), f"{name}: {key} differs after from_pretrained"
    waves, lengths = _waves()
    assert torch.allclose(
        loaded(waves, lengths).hidden_states[-1], preset(waves, lengths).hidden_states[-1]
    )


def test_whisper_loads_encoder_only(tmp_path) -> None:
    build_preset_model("tiny-whisper").save_pretrained(tmp_path / "w")
    backbone = load_backbone(tmp_path / "w")
    names = [n for n, _ in backbone.named_parameters()]
    assert names and not any("decoder" in n for n in names)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_padding_never_changes_valid_frames(name: str) -> None:
    """Each clip alone gives the same hidden states as inside a zero-padded batch."""
    backbone = load_backbone(name)
    waves, lengths = _waves()
    with torch.no_grad():
        batch = backbone(waves, lengths)
        assert len(batch.hidden_states) == backbone.num_layers + 1
        for i, n in enumerate(lengths.tolist()):
            alone = backbone(waves[i : i + 1, :n], lengths[i : i + 1])
            frames = alone.hidden_states[0].shape[1]
            assert int(batch.frame_mask[i].sum()) == frames
            for a, b in zip(batch.hidden_states, alone.hidden_states):
                assert torch.allclose(a[i, :frames], b[0], atol=1e-5), f"{name}: clip {i} leaks"


def test_whisper_matches_transformers_on_30_seconds() -> None:
    """On a full 30 s clip our short-clip path equals WhisperEncoder.forward exactly."""
    backbone = load_backbone("tiny-whisper")
    wave = torch.randn(1, 30 * 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        ours = backbone(wave, torch.tensor([wave.shape[1]])).hidden_states
        feats = backbone.feature_extractor(
            wave[0].numpy(), sampling_rate=16000, return_tensors="pt"
        )["input_features"]
        ref = backbone.encoder(feats, output_hidden_states=True)
    assert torch.allclose(ours[-1], ref.last_hidden_state, atol=1e-5)
    assert torch.allclose(ours[1], ref.hidden_states[1], atol=1e-5)


def test_whisper_rejects_clips_over_30_seconds() -> None:
    backbone = load_backbone("tiny-whisper")
    with pytest.raises(ValueError, match="at most 30 s"):
        backbone.frontend(torch.zeros(1, 31 * 16000), torch.tensor([31 * 16000]))


def test_wavlm_attention_via_modules_equals_original() -> None:
    """Our module-calling WavLM attention (needed for LoRA) equals transformers' own."""
    backbone = load_backbone("tiny-wavlm").eval()
    waves, lengths = _waves(2)
    with torch.no_grad():
        ours = backbone(waves, lengths).hidden_states
        for layer in backbone.layers:  # drop our override: back to F.multi_head_attention_forward
            del layer.attention.torch_multi_head_self_attention
        original = backbone(waves, lengths).hidden_states
    for a, b in zip(ours, original):
        assert torch.allclose(a, b, atol=1e-5)


def test_layerdrop_is_forced_off(tmp_path) -> None:
    model = build_preset_model("tiny-hubert")
    model.config.layerdrop = 0.5
    model.save_pretrained(tmp_path / "h")
    backbone = load_backbone(tmp_path / "h").train()
    waves, lengths = _waves()
    counts = {len(backbone(waves, lengths).hidden_states) for _ in range(5)}
    assert counts == {backbone.num_layers + 1}


def test_unsupported_model_type_is_a_clear_error(tmp_path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="'bert' model; emotune supports"):
        load_backbone(tmp_path / "bert")


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_skeleton_has_the_real_shapes_and_no_memory(name: str, tmp_path) -> None:
    """load_adapter checks weights against the skeleton, so it must describe the real model."""
    build_preset_model(name).save_pretrained(tmp_path / name)
    for source in (name, tmp_path / name):
        skeleton, real = backbone_skeleton(source), load_backbone(source)
        assert {p.device.type for p in skeleton.parameters()} == {"meta"}
        assert {n: p.shape for n, p in skeleton.named_parameters()} == {
            n: p.shape for n, p in real.named_parameters()
        }
        assert skeleton.sample_rate == real.sample_rate and skeleton.family == real.family
