"""The classifier: backbone (+ PEFT method) -> weighted layer sum -> pooling -> MLP head."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from trainables.backbones import Backbone


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Head options.

    Attributes:
        proj_dim: width of the pointwise projection and of the classifier's hidden layer.
        pooling: ``mean`` (masked mean over valid frames, as in PEFT-SER), ``meanstd`` (the
            default: masked mean and standard deviation, concatenated, which keeps how much a
            feature varies, e.g. pitch range) or ``attentive`` (masked softmax attention
            pooling with one learned query).
        dropout: dropout inside the head, in [0, 1).
        layers: which hidden states the weighted sum covers: ``all`` (the ``num_layers + 1``
            states: the transformer's input, i.e. the projected front-end features, and every
            layer's output) or ``transformer`` (the ``num_layers`` layer outputs only, as
            PEFT-SER's head). ``transformer`` has one layer weight fewer.
    """

    proj_dim: int = 128
    pooling: Literal["mean", "meanstd", "attentive"] = "meanstd"
    dropout: float = 0.1
    layers: Literal["all", "transformer"] = "all"

    def __post_init__(self) -> None:
        if self.proj_dim < 1:
            raise ValueError(f"head proj_dim must be >= 1, got {self.proj_dim}")
        if self.pooling not in ("mean", "meanstd", "attentive"):
            raise ValueError(
                f"head pooling must be mean, meanstd or attentive, got {self.pooling!r}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"head dropout must be in [0, 1), got {self.dropout}")
        if self.layers not in ("all", "transformer"):
            raise ValueError(f"head layers must be all or transformer, got {self.layers!r}")


class Head(nn.Module):
    """Softmax-weighted sum of hidden states, pointwise projection, pooling, MLP.

    ``h = sum_l softmax(w)_l * H_l`` over the states that ``config.layers`` selects: all
    ``num_states`` (``l = 0 .. L``, state 0 being the transformer's input) or the transformer
    layers' outputs only (``l = 1 .. L``; state 0 is ignored and ``w`` has one entry fewer).
    Then two pointwise layers, pooling over valid frames only, and a two-layer classifier.

    Shapes: states ``num_states x (batch, frames, hidden)``, mask ``(batch, frames)`` ->
    logits ``(batch, num_classes)``.

    Raises:
        ValueError: ``layers="transformer"`` with a single state (no transformer layer).
    """

    def __init__(self, num_states: int, hidden: int, num_classes: int, config: HeadConfig) -> None:
        super().__init__()
        p, drop = config.proj_dim, config.dropout
        self.pooling = config.pooling
        # states[first:] enter the weighted sum; 1 skips the transformer's input (PEFT-SER)
        self.first = 1 if config.layers == "transformer" else 0
        if num_states - self.first < 1:
            raise ValueError(f"head layers={config.layers!r} needs a transformer layer")
        self.layer_weights = nn.Parameter(torch.zeros(num_states - self.first))
        self.proj = nn.Sequential(
            nn.Linear(hidden, p), nn.ReLU(), nn.Dropout(drop), nn.Linear(p, p), nn.ReLU()
        )
        self.attention = nn.Linear(p, 1) if config.pooling == "attentive" else None
        pooled = 2 * p if config.pooling == "meanstd" else p
        self.classifier = nn.Sequential(
            nn.Linear(pooled, p), nn.ReLU(), nn.Dropout(drop), nn.Linear(p, num_classes)
        )

    def pooled(self, states: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """The utterance vector ``(batch, proj_dim)`` (``meanstd``: ``2 * proj_dim``) before the
        classifier."""
        weights = self.layer_weights.softmax(dim=0)
        # strict: a state list of another length than the head was built for is a bug
        x = sum(w * s for w, s in zip(weights, states[self.first :], strict=True))  # (b, t, h)
        x = self.proj(x)  # (batch, frames, proj)
        valid = mask.to(x.dtype).unsqueeze(-1)  # (batch, frames, 1)
        if self.attention is None:
            count = valid.sum(dim=1).clamp(min=1.0)
            mean = (x * valid).sum(dim=1) / count
            if self.pooling == "mean":
                return mean
            var = (((x - mean[:, None]) ** 2) * valid).sum(dim=1) / count
            return torch.cat([mean, torch.sqrt(var + 1e-6)], dim=-1)
        scores = self.attention(x).masked_fill(valid == 0, float("-inf"))
        return (scores.softmax(dim=1) * x).sum(dim=1)

    def forward(self, states: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(states, mask))


class SERModel(nn.Module):
    """Backbone (with its PEFT method already attached) and head.

    Args:
        backbone: the speech encoder.
        num_classes: number of emotion classes.
        head_config: head options.
    """

    def __init__(self, backbone: Backbone, num_classes: int, head_config: HeadConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = Head(backbone.num_layers + 1, backbone.hidden_size, num_classes, head_config)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` waveforms and ``(batch,)`` lengths -> ``(batch, classes)`` logits."""
        out = self.backbone(waves, lengths)
        return self.head(out.hidden_states, out.frame_mask)

    def trainable_params(self) -> tuple[int, int]:
        """``(backbone_side, head)`` counts of parameters with ``requires_grad``."""
        backbone = sum(p.numel() for p in self.backbone.parameters() if p.requires_grad)
        head = sum(p.numel() for p in self.head.parameters() if p.requires_grad)
        return backbone, head
