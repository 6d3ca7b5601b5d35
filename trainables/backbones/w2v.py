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
from transformers.masking_utils import create_bidirectional_mask

from trainables.backbones.base import (
    Backbone,
    BackboneOutput,
    FFNBlock,
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

    def ffn_block(self, layer: nn.Module) -> FFNBlock:
        if self.model.config.do_stable_layer_norm:
            # Pre-LN (the large variants): out = x + FFN(final_layer_norm(x)).
            return FFNBlock(layer.final_layer_norm, layer, "output")
        # Post-LN (base models): x -> layer_norm -> h + FFN(h) -> final_layer_norm.
        return FFNBlock(layer.layer_norm, layer.final_layer_norm, "input")

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
        """Frame features -> the first layer's input and every layer's output (prompts stripped).

        We run the pieces of the Hugging Face encoder ourselves so that an injected prompt enters
        where PEFT-SER puts it, at the first layer's input: ``x0 = dropout(LN(x + pos_conv(x)))``
        (``LN`` only in the post-LN variants) is computed on the real frames alone, THEN the
        prompt is prepended. Prepending it before the positional convolution changed the first
        ~kernel/2 real frames, and (at rounding level) the last ones, since the convolution then
        ran over a longer input. Without a prompt the numbers equal HF's encoder (tested).
        """
        hidden = self._project(features)  # (batch, frames, hidden)
        mask = frame_mask(frame_lengths.to(hidden.device), hidden.shape[1])
        hidden = self._layer_input(hidden, mask)
        hidden, full_mask, n_injected = self._inject(hidden, mask)
        states = [hidden, *self._run_layers(hidden, full_mask)]
        if self.model.config.do_stable_layer_norm:  # pre-LN: the encoder norms the last output
            states[-1] = self.model.encoder.layer_norm(states[-1])
        return BackboneOutput([s[:, n_injected:] for s in states], mask)

    def _layer_input(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The first transformer layer's input, computed as HF's encoder does, ``(b, t, d)``.

        ``mask`` ``(b, t)`` is True on valid frames; padded frames are zeroed before the
        positional convolution so that they never reach a valid frame.
        """
        encoder = self.model.encoder
        hidden = hidden.masked_fill(~mask[..., None], 0.0)
        hidden = hidden + encoder.pos_conv_embed(hidden)
        if not self.model.config.do_stable_layer_norm:  # post-LN: the norm precedes layer 0
            hidden = encoder.layer_norm(hidden)
        return encoder.dropout(hidden)

    def _run_layers(self, hidden: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output; ``mask`` ``(b, t)`` is True on valid positions, prompts included.

        The layers are called with the hidden states as first positional argument (the deep
        prompt hooks read it there) and with the mask form HF's encoder gives them.
        """
        attention_mask = create_bidirectional_mask(
            config=self.model.encoder.config, inputs_embeds=hidden, attention_mask=mask
        )
        outputs = []
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=attention_mask)
            outputs.append(hidden)
        return outputs


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

    def _run_layers(self, hidden: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """WavLM's layers take the ``(b, t)`` mask itself and return ``(hidden, position_bias)``:
        layer 0 computes the relative position bias over all positions (prompts included) and
        every later layer reuses it. Only the post-LN layers take their ``index``."""
        stable = self.model.config.do_stable_layer_norm
        bias = None
        outputs = []
        for i, layer in enumerate(self.layers):
            extra = {} if stable else {"index": i}
            hidden, bias = layer(hidden, attention_mask=mask, position_bias=bias, **extra)
            outputs.append(hidden)
        return outputs


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
