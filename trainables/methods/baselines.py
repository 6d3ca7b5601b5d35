"""Baselines: a frozen backbone (head only) and full fine-tuning."""

from __future__ import annotations

from torch import nn

from trainables.backbones import Backbone
from trainables.methods.base import METHODS, Method


@METHODS.register("frozen")
class Frozen(Method):
    """The backbone stays as pre-trained; only the head (with its layer weights) learns."""

    name = "frozen"

    def apply(self, backbone: Backbone) -> list[nn.Parameter]:
        return []


@METHODS.register("full")
class Full(Method):
    """Full fine-tuning: every backbone weight, the CNN front end included, is trained."""

    name = "full"
    frozen_frontend = False

    def apply(self, backbone: Backbone) -> list[nn.Parameter]:
        # Whisper's sinusoidal positions are fixed by design; keep them frozen.
        return [
            p for n, p in backbone.named_parameters() if not n.endswith("embed_positions.weight")
        ]
