"""Whisper encoder (never the decoder) on clips shorter than 30 s.

transformers' ``WhisperEncoder.forward`` insists on exactly 3000 mel frames and ignores any
attention mask. We run its own modules on the real length instead: the positional embeddings are
cut to the clip's frames and padded frames are masked in every attention layer.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForAudioClassification,
)

from trainables.backbones.base import (
    Backbone,
    BackboneOutput,
    FFNBlock,
    frame_mask,
    pad_frames,
)


class WhisperBackbone(Backbone):
    """The Whisper encoder: log-mel front end, two convs, sinusoidal positions, transformer.

    Args:
        encoder: a ``WhisperEncoder`` module.
        feature_extractor: computes log-mel features of one unpadded clip.
    """

    family = "whisper"
    model_cls: type[PreTrainedModel] = WhisperForAudioClassification
    config_cls: type[PretrainedConfig] = WhisperConfig
    ffn_modules = ("fc1", "fc2")

    def __init__(
        self,
        encoder: PreTrainedModel,
        name: str,
        random_init: bool,
        feature_extractor: WhisperFeatureExtractor,
    ) -> None:
        super().__init__(name, random_init, int(feature_extractor.sampling_rate))
        encoder.config.encoder_layerdrop = 0.0
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        hop = int(feature_extractor.hop_length)
        stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]
        self.max_samples = encoder.config.max_source_positions * stride * hop
        self.min_samples = stride * hop

    @property
    def hf_model(self) -> nn.Module:
        return self.encoder

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layers

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.d_model)

    def frontend_modules(self) -> list[nn.Module]:
        return []  # log-mel has no weights; the convs belong to ``encode``

    def ffn_slot(self, layer: nn.Module) -> tuple[nn.Module, str]:
        return layer, "fc2"

    def ffn_block(self, layer: nn.Module) -> FFNBlock:
        # Pre-LN: out = x + dropout(fc2(act(fc1(final_layer_norm(x))))).
        return FFNBlock(layer.final_layer_norm, layer, "output")

    def frontend_frames(self, samples: int) -> int:
        # A centred STFT gives 1 + samples // hop frames; the extractor drops the last one.
        return max(samples, self.min_samples) // int(self.feature_extractor.hop_length)

    def frontend_settings(self) -> dict[str, Any]:
        fe = self.feature_extractor
        return {
            "class": type(fe).__name__,
            "sample_rate": self.sample_rate,
            "min_samples": self.min_samples,
            **{
                k: getattr(fe, k, None)
                for k in ("feature_size", "n_fft", "hop_length", "dither", "padding_value")
            },
            "mel_filters": hashlib.sha256(
                np.ascontiguousarray(fe.mel_filters).tobytes()
            ).hexdigest(),
        }

    def frontend(
        self, waves: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if int(lengths.max()) > self.max_samples:
            raise ValueError(
                f"Whisper encodes at most {self.max_samples / self.sample_rate:.0f} s; "
                f"got a clip of {int(lengths.max()) / self.sample_rate:.1f} s (lower max_seconds)"
            )
        mels = []
        for wave, n in zip(waves, lengths.tolist()):
            clip = wave[: max(n, self.min_samples)].detach().cpu().float().numpy()
            if clip.shape[0] < self.min_samples:
                clip = np.pad(clip, (0, self.min_samples - clip.shape[0]))
            feats = self.feature_extractor(
                clip, sampling_rate=self.sample_rate, padding="longest", return_tensors="pt"
            )["input_features"][0]  # (mels, frames)
            mels.append(feats.T.to(waves.device))
        return pad_frames(mels)  # (batch, frames, mels)

    def encode(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> BackboneOutput:
        enc = self.encoder
        frame_lengths = frame_lengths.to(features.device)
        x = features.transpose(1, 2)  # (batch, mels, frames)
        x = F.gelu(enc.conv1(x))
        # Zero padded frames so conv2 sees what it would see on the clip alone (its zero padding).
        x = x * frame_mask(frame_lengths, x.shape[2])[:, None, :]
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # (batch, frames / 2, hidden)
        lengths = (frame_lengths - 1) // enc.conv2.stride[0] + 1
        hidden = x + enc.embed_positions.weight[: x.shape[1]]
        hidden = F.dropout(hidden, p=enc.dropout, training=self.training)
        mask = frame_mask(lengths, hidden.shape[1])
        hidden, full_mask, n_injected = self._inject(hidden, mask)

        # Additive mask (batch, 1, 1, keys): 0 on valid keys, a large negative value on padding.
        additive = (~full_mask)[:, None, None, :].to(hidden.dtype) * torch.finfo(hidden.dtype).min
        states = [hidden]
        for layer in self.layers:
            hidden = layer(hidden, additive)
            states.append(hidden)
        states[-1] = enc.layer_norm(hidden)
        return BackboneOutput([s[:, n_injected:] for s in states], mask)
