"""Tiny backbone configs for CPU tests and the offline demo. Always randomly initialised."""

from __future__ import annotations

from collections.abc import Callable

from transformers import (
    HubertConfig,
    PretrainedConfig,
    Wav2Vec2Config,
    WavLMConfig,
    WhisperConfig,
)

# A short CNN with the usual total stride of 320 samples (20 ms at 16 kHz) but few channels.
_CNN = dict(
    conv_dim=(32, 32, 32, 32),
    conv_kernel=(10, 8, 4, 4),
    conv_stride=(5, 4, 4, 4),
)
_TRANSFORMER = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    layerdrop=0.0,
    mask_time_prob=0.0,
)


def _tiny_wavlm() -> PretrainedConfig:
    return WavLMConfig(**_CNN, **_TRANSFORMER, num_buckets=32, max_bucket_distance=64)


def _tiny_hubert() -> PretrainedConfig:
    return HubertConfig(**_CNN, **_TRANSFORMER)


def _tiny_wav2vec2() -> PretrainedConfig:
    # "layer" norm + stable layer norm: the large-model variant, so both code paths are tested.
    return Wav2Vec2Config(
        **_CNN, **_TRANSFORMER, feat_extract_norm="layer", do_stable_layer_norm=True
    )


def _tiny_whisper() -> PretrainedConfig:
    return WhisperConfig(
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=32,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        suppress_tokens=None,
        begin_suppress_tokens=None,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
    )


PRESETS: dict[str, Callable[[], PretrainedConfig]] = {
    "tiny-wavlm": _tiny_wavlm,
    "tiny-hubert": _tiny_hubert,
    "tiny-wav2vec2": _tiny_wav2vec2,
    "tiny-whisper": _tiny_whisper,
}
