"""The backbone contract: a pre-trained speech encoder split into a front end and a transformer.

Every family (WavLM, HuBERT, wav2vec 2.0, Whisper encoder) exposes the same pieces so that PEFT
methods, the head and the trainer never branch on the family:

* ``frontend(waves, lengths)``: waveform -> frame features (the convolutional feature encoder, or
  the log-mel spectrogram for Whisper). Computed per utterance without padding, so padding never
  changes a valid frame (GroupNorm in the CNN would otherwise see the zeros).
* ``encode(features, frame_lengths)``: frame features -> all hidden states, each
  ``(batch, frames, hidden)``, with the attention mask applied in every layer.
* extension points used by methods: ``layers`` (the transformer blocks), ``ffn_slot`` (where a
  sequential bottleneck adapter goes), ``ffn_block`` (where a parallel one reads and adds),
  ``target_modules`` (the linear layers of a named target group, for methods that attach to
  weights, e.g. through peft), and ``input_injector`` (called on the transformer input; prompt
  tuning prepends tokens there and the backbone strips them again).
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

# Named groups of the linear layers inside every transformer block, for any method that attaches
# to weights: the attention projections (q, k, v, out), the feed-forward pair, or both.
TargetGroup = Literal["attention", "ffn", "both"]
TARGET_GROUPS: tuple[str, ...] = typing.get_args(TargetGroup)


@dataclass
class BackboneOutput:
    """All hidden states of the transformer and the mask of valid frames.

    Attributes:
        hidden_states: ``num_layers + 1`` tensors of shape ``(batch, frames, hidden)``: the
            transformer input followed by each layer's output. Injected prompt tokens are removed.
        frame_mask: ``(batch, frames)`` bool, True on valid (non-padded) frames.
    """

    hidden_states: list[torch.Tensor]
    frame_mask: torch.Tensor


# An injector takes the transformer input (batch, frames, hidden) and its frame mask and returns
# both extended; ``num_tokens`` leading positions are stripped from every hidden state afterwards.
class InputInjector(nn.Module):
    """Base class for modules that prepend tokens to the transformer input."""

    num_tokens: int = 0

    def forward(  # pragma: no cover - interface
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class FFNBlock(typing.NamedTuple):
    """Where a transformer block's feed-forward sub-block reads its input and where it ends.

    A parallel adapter hooks both points: it reads the stream at ``entry`` and adds its branch
    where the feed-forward residual sum is complete.

    Attributes:
        entry: the module whose first input is the residual stream entering the feed-forward
            block: the post-attention stream, before the feed-forward's LayerNorm.
        exit: the module at which the feed-forward residual sum ``h + FFN(h)`` appears.
        merge: ``"input"``: that sum is ``exit``'s first input (post-LN layers, where ``exit`` is
            ``final_layer_norm``); ``"output"``: it is ``exit``'s output, or the first element
            of a tuple output (pre-LN layers, where ``exit`` is the layer itself).
    """

    entry: nn.Module
    exit: nn.Module
    merge: Literal["input", "output"]


class Backbone(nn.Module):
    """A pre-trained speech encoder with a uniform interface (see module docstring).

    Attributes:
        name: the hub id, local folder or preset it was built from.
        family: registry name of the family (``wavlm``, ``hubert``, ``wav2vec2``, ``whisper``).
        random_init: True when the weights are random (presets), never pre-trained.
        sample_rate: the waveform rate the front end expects.
        hidden_size: width of every hidden state.
        num_layers: number of transformer layers (hidden states = num_layers + 1).
    """

    family: str = ""
    # Shortest input (samples) that makes one frame; the front end zero-pads shorter inputs.
    min_samples: int = 1
    attention_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
    ffn_modules: tuple[str, ...] = ()

    def __init__(self, name: str, random_init: bool, sample_rate: int) -> None:
        super().__init__()
        self.name = name
        self.random_init = random_init
        self.sample_rate = sample_rate
        self.input_injector: InputInjector | None = None
        # :meth:`weights_digest` taken before a method was attached (set by the model builder).
        self.weights_sha256 = ""

    # --- to be provided by families -----------------------------------------------------------
    @property
    def hf_model(self) -> nn.Module:
        """The Hugging Face module that holds every pre-trained weight (peft wraps this one)."""
        raise NotImplementedError

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer blocks, in order."""
        raise NotImplementedError

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def frontend_modules(self) -> list[nn.Module]:
        """Modules of the front end that hold weights (the CNN); empty for log-mel front ends."""
        raise NotImplementedError

    def frontend(
        self, waves: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms -> frame features.

        Args:
            waves: ``(batch, samples)`` zero-padded float waveforms at ``sample_rate``.
            lengths: ``(batch,)`` valid sample counts.

        Returns:
            ``(features, frame_lengths)``: ``(batch, frames, feature_dim)`` zero-padded features and
            ``(batch,)`` valid frame counts.
        """
        raise NotImplementedError

    def encode(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> BackboneOutput:
        """Frame features -> hidden states of every layer (prompt positions stripped)."""
        raise NotImplementedError

    def frontend_frames(self, samples: int) -> int:
        """Number of frames :meth:`frontend` returns for a clip of ``samples`` samples."""
        raise NotImplementedError

    def frontend_settings(self) -> dict[str, Any]:
        """JSON-able settings that, with the front-end weights, fix what :meth:`frontend` computes
        (architecture, sample rate, waveform normalisation, log-mel parameters)."""
        raise NotImplementedError

    def ffn_slot(self, layer: nn.Module) -> tuple[nn.Module, str]:
        """``(parent, attribute)`` of the module whose output is the layer's feed-forward output."""
        raise NotImplementedError

    def ffn_block(self, layer: nn.Module) -> FFNBlock:
        """Where ``layer``'s feed-forward block reads its input stream and where its residual
        sum is complete (see :class:`FFNBlock`); a parallel adapter hooks both."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------
    def target_names(self, group: TargetGroup) -> tuple[str, ...]:
        """The attribute names of the linear layers of target group ``group`` in a block."""
        groups = {
            "attention": self.attention_modules,
            "ffn": self.ffn_modules,
            "both": self.attention_modules + self.ffn_modules,
        }
        if group not in groups:
            raise ValueError(f"unknown target group {group!r}; known: {', '.join(TARGET_GROUPS)}")
        return groups[group]

    def target_modules(self, group: TargetGroup) -> str:
        """A peft ``target_modules`` regex naming the linear layers of ``group`` in every block."""
        return rf".*layers\.\d+\.(.*\.)?({'|'.join(self.target_names(group))})"

    @property
    def frontend_frozen(self) -> bool:
        """True when no front-end weight is trained (its output may then be cached)."""
        return not any(p.requires_grad for m in self.frontend_modules() for p in m.parameters())

    def frontend_digest(self) -> str:
        """SHA-256 over :meth:`frontend_settings` and every front-end weight (name, dtype, bytes).

        Two backbones with the same digest compute the same features, so the digest keys the
        feature cache; any change of weights or preprocessing gives a new key.
        """
        h = hashlib.sha256()
        settings = {"family": self.family, **self.frontend_settings()}
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for i, module in enumerate(self.frontend_modules()):
            _hash_tensors(h, f"{i}.", module.state_dict())
        return h.hexdigest()

    def weights_digest(self) -> str:
        """SHA-256 over every weight of the backbone (name, dtype, shape, bytes) and its family.

        Call it before a method is attached: it identifies the pre-trained model a run starts
        from, so a run resumed on other weights (a re-downloaded or edited checkpoint) is refused.
        """
        h = hashlib.sha256(f"{self.family}:{self.sample_rate}".encode())
        _hash_tensors(h, "", self.hf_model.state_dict())
        return h.hexdigest()

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> BackboneOutput:
        # A frozen front end needs no graph: without this, HF's feature encoder marks its input
        # as requiring grad in train mode and every step pays a backward through the CNN.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frontend_frozen):
            features, frame_lengths = self.frontend(waves, lengths)
        return self.encode(features, frame_lengths)

    def _inject(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Applies the injector to the first layer's input, after positions and input norm.

        Families call it on exactly what layer 0 receives, computed for the real frames alone,
        so injected tokens never change a real frame's layer-0 input (tests/test_prompt_position).

        Returns:
            ``(hidden, mask, n)``: both extended by the ``n`` injected leading positions.
        """
        if self.input_injector is None:
            return hidden, mask, 0
        hidden, mask = self.input_injector(hidden, mask)
        return hidden, mask, self.input_injector.num_tokens


def _hash_tensors(h: Any, prefix: str, state: dict[str, torch.Tensor]) -> None:
    """Feeds every tensor of ``state`` (sorted by name) into the hash ``h``."""
    for name, tensor in sorted(state.items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{prefix}{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())


def frame_mask(frame_lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(batch, frames)`` bool mask, True where ``t < frame_lengths[b]``."""
    steps = torch.arange(frames, device=frame_lengths.device)
    return steps[None, :] < frame_lengths[:, None]


def pad_frames(chunks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacks ``(frames_i, dim)`` tensors into ``(batch, max_frames, dim)`` with zero padding."""
    lengths = torch.tensor([c.shape[0] for c in chunks], dtype=torch.long)
    out = chunks[0].new_zeros((len(chunks), int(lengths.max()), chunks[0].shape[1]))
    for i, chunk in enumerate(chunks):
        out[i, : chunk.shape[0]] = chunk
    return out, lengths


def run_grouped_by_length(
    fn: Callable[[torch.Tensor], torch.Tensor], waves: torch.Tensor, lengths: torch.Tensor
) -> list[torch.Tensor]:
    """Applies ``fn`` to unpadded waveforms, batching those of equal length.

    ``fn`` maps ``(n, samples)`` to ``(n, frames, dim)``. Grouping keeps the result exactly equal
    to running each utterance alone (no padding enters normalisation layers) while still batching
    the common case of equal-length crops.
    """
    out: list[torch.Tensor | None] = [None] * len(lengths)
    for length in torch.unique(lengths).tolist():
        idx = (lengths == length).nonzero().flatten()
        feats = fn(waves[idx, :length])
        for j, i in enumerate(idx.tolist()):
            out[i] = feats[j]
    return [t for t in out if t is not None]
