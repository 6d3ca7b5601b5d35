"""WavLM, HuBERT and wav2vec 2.0: CNN feature encoder + transformer encoder from transformers."""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from trainables.backbones.base import (
    Backbone,
    BackboneOutput,
    frame_mask,
    pad_frames,
    run_grouped_by_length,
)
from trainables.backbones.speed import fast_dropout


class W2VBackbone(Backbone):
    """Shared code of the wav2vec 2.0-style families (CNN front end, conv positions, transformer).

    Args:
        model: the loaded Hugging Face base model (``WavLMModel``, ``HubertModel``, ...).
        name: hub id, folder or preset name.
        random_init: whether ``model`` holds random weights.
        sample_rate: expected waveform rate.
        normalize: zero-mean / unit-variance normalisation of each waveform (the feature
            extractor's ``do_normalize``), applied to the unpadded signal.
    """

    model_cls: type[PreTrainedModel] = Wav2Vec2Model
    config_cls: type[PretrainedConfig] = Wav2Vec2Config
    ffn_modules = ("intermediate_dense", "output_dense")

    def __init__(
        self,
        model: PreTrainedModel,
        name: str,
        random_init: bool,
        sample_rate: int,
        normalize: bool,
    ) -> None:
        super().__init__(name, random_init, sample_rate)
        # LayerDrop would change how many hidden states a step returns; SpecAugment-style masking
        # is not applied by emotune (we call the submodules directly).
        model.config.layerdrop = 0.0
        self.model = model
        self.normalize = normalize
        kernels = model.config.conv_kernel
        strides = model.config.conv_stride
        # Fewest samples that still give one frame: the CNN's receptive field.
        field = 1
        for k, s in zip(reversed(kernels), reversed(strides)):
            field = (field - 1) * s + k
        self.min_samples = field
        # cuDNN runs this grouped, 128-tap convolution ~20x slower in bf16/fp16 than in fp32
        # (12.4 vs 0.6 ms on an H200, 8 x 6 s): on CUDA it always runs in float32.
        pos_conv = model.encoder.pos_conv_embed.conv
        pos_conv.forward = types.MethodType(_conv_float32_on_cuda, pos_conv)

    @property
    def hf_model(self) -> nn.Module:
        return self.model

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layers

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def frontend_modules(self) -> list[nn.Module]:
        return [self.model.feature_extractor]

    def ffn_slot(self, layer: nn.Module) -> tuple[nn.Module, str]:
        return layer, "feed_forward"

    def frontend_frames(self, samples: int) -> int:
        frames = max(samples, self.min_samples)
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            frames = (frames - kernel) // stride + 1
        return frames

    def frontend_settings(self) -> dict[str, Any]:
        c = self.model.config
        return {
            "class": type(self.model.feature_extractor).__name__,
            "sample_rate": self.sample_rate,
            "normalize": self.normalize,
            "min_samples": self.min_samples,
            **{
                k: getattr(c, k, None)
                for k in (
                    "conv_dim",
                    "conv_kernel",
                    "conv_stride",
                    "conv_bias",
                    "feat_extract_norm",
                    "feat_extract_activation",
                )
            },
        }

    def frontend(
        self, waves: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if int(lengths.max()) < self.min_samples:
            waves = F.pad(waves, (0, self.min_samples - waves.shape[1]))
        lengths = lengths.clamp(min=self.min_samples)

        def cnn(x: torch.Tensor) -> torch.Tensor:  # (n, samples) -> (n, frames, conv_dim)
            if self.normalize:
                x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(
                    x.var(dim=1, keepdim=True, unbiased=False) + 1e-7
                )
            return self.model.feature_extractor(x).transpose(1, 2)

        return pad_frames(run_grouped_by_length(cnn, waves, lengths))

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        out = self.model.feature_projection(features)
        return out[0] if isinstance(out, tuple) else out  # WavLM/wav2vec2 also return the norm

    def encode(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> BackboneOutput:
        hidden = self._project(features)  # (batch, frames, hidden)
        mask = frame_mask(frame_lengths.to(hidden.device), hidden.shape[1])
        hidden, full_mask, n_injected = self._inject(hidden, mask)

        states: list[torch.Tensor] = []

        def grab_input(_module: nn.Module, args: tuple) -> None:
            states.append(args[0])

        def grab_output(_module: nn.Module, _args: tuple, output: object) -> None:
            states.append(output[0] if isinstance(output, tuple) else output)  # type: ignore[index]

        handles = [self.layers[0].register_forward_pre_hook(grab_input)]
        handles += [layer.register_forward_hook(grab_output) for layer in self.layers]
        try:
            last = self.model.encoder(hidden, attention_mask=full_mask).last_hidden_state
        finally:
            for handle in handles:
                handle.remove()
        states[-1] = last  # the stable-layer-norm variants normalise after the last layer
        return BackboneOutput([s[:, n_injected:] for s in states], mask)


class Wav2Vec2Backbone(W2VBackbone):
    family = "wav2vec2"


class HubertBackbone(W2VBackbone):
    family = "hubert"
    model_cls = HubertModel
    config_cls = HubertConfig


class WavLMBackbone(W2VBackbone):
    """WavLM. Its attention reads ``q_proj.weight`` etc. directly (``F.multi_head_attention_forward``),
    so LoRA layers put on those projections would be silently bypassed. We route each attention
    through its projection modules instead; the result equals the original (tested)."""

    family = "wavlm"
    model_cls = WavLMModel
    config_cls = WavLMConfig

    def __init__(self, model: PreTrainedModel, *args: object, **kwargs: object) -> None:
        super().__init__(model, *args, **kwargs)  # type: ignore[arg-type]
        for layer in self.layers:
            attn = layer.attention
            attn.torch_multi_head_self_attention = types.MethodType(_attention_via_modules, attn)


def _conv_float32_on_cuda(self: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``Conv1d.forward``, but in float32 (autocast off) on CUDA; returns ``x``'s dtype."""
    if not x.is_cuda:
        return nn.Conv1d.forward(self, x)
    with torch.autocast("cuda", enabled=False):
        bias = None if self.bias is None else self.bias.float()
        return self._conv_forward(x.float(), self.weight.float(), bias).to(x.dtype)


def _attention_via_modules(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    gated_position_bias: torch.Tensor,
) -> tuple[torch.Tensor, None]:
    """WavLM self-attention computed by calling ``q_proj``/``k_proj``/``v_proj``/``out_proj``.

    Shapes: hidden ``(b, t, d)``; ``gated_position_bias`` ``(b * heads, t, t)`` added to the
    scores; ``attention_mask`` ``(b, t)``, 1/True on valid keys.
    """
    b, t, _ = hidden_states.shape
    h, d = self.num_heads, self.head_dim

    def heads(x: torch.Tensor) -> torch.Tensor:  # (b, t, h*d) -> (b, h, t, d)
        return x.view(b, t, h, d).transpose(1, 2)

    q = heads(self.q_proj(hidden_states) * self.scaling)
    k = heads(self.k_proj(hidden_states))
    v = heads(self.v_proj(hidden_states))
    scores = q @ k.transpose(-1, -2) + gated_position_bias.view(b, h, t, t)  # (b, h, t, t)
    if attention_mask is not None:
        padded = attention_mask.ne(1)[:, None, None, :]
        scores = scores.masked_fill(padded, float("-inf"))
    probs = fast_dropout(scores.softmax(dim=-1), self.dropout, self.training)
    out = (probs @ v).transpose(1, 2).reshape(b, t, h * d)
    return self.out_proj(out), None
