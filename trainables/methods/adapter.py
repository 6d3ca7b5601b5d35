"""Bottleneck adapters after each transformer layer's feed-forward network."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from trainables.backbones import Backbone
from trainables.methods.base import METHODS, Method, MethodConfig
from trainables.methods.options import Domain, option


@dataclasses.dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """Adapter options.

    Attributes:
        width: bottleneck dimension m (the adapter maps hidden d -> m -> d).
        scale: multiplier s of the adapter branch.
    """

    width: int = option(64, Domain(int, ge=1), search={"low": 8, "high": 256, "log": True})
    scale: float = option(1.0, Domain(float, gt=0))


class BottleneckAdapter(nn.Module):
    """Wraps a feed-forward module: ``y = f(x); return y + s * up(relu(down(y)))``.

    ``up`` starts at zero, so the wrapped layer equals the pre-trained one at init.
    Parameters: ``d*m + m`` (down) + ``m*d + d`` (up) for hidden size d and width m.

    Shapes: ``x`` ``(batch, frames, d)`` -> ``(batch, frames, d)``.
    """

    def __init__(self, inner: nn.Module, hidden: int, width: int, scale: float) -> None:
        super().__init__()
        self.inner = inner
        self.down = nn.Linear(hidden, width)
        self.up = nn.Linear(width, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return y + self.scale * self.up(torch.relu(self.down(y)))


@METHODS.register("adapter")
class Adapter(Method):
    """Sequential (Houlsby-style) bottleneck adapter on every layer's FFN output."""

    name = "adapter"
    config_cls = AdapterConfig
    config: AdapterConfig

    def apply(self, backbone: Backbone) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        for layer in backbone.layers:
            parent, attr = backbone.ffn_slot(layer)
            wrapped = BottleneckAdapter(
                getattr(parent, attr), backbone.hidden_size, self.config.width, self.config.scale
            )
            setattr(parent, attr, wrapped)
            params += [*wrapped.down.parameters(), *wrapped.up.parameters()]
        return params
