"""Bottleneck adapters on each transformer layer's feed-forward block, sequential or parallel."""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import torch
from torch import nn

from trainables.backbones import Backbone
from trainables.backbones.base import FFNBlock
from trainables.methods.base import METHODS, Method, MethodConfig
from trainables.methods.options import Domain, option

Placement = Literal["sequential", "parallel"]
PLACEMENTS: tuple[str, ...] = typing.get_args(Placement)
# The attribute a parallel adapter takes in its layer, so its parameters are the layer's
# (``...layers.3.parallel_adapter.down.weight``) and are saved, loaded and exported with it.
PARALLEL_ATTR = "parallel_adapter"


@dataclasses.dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """Adapter options.

    Attributes:
        width: bottleneck dimension m (the adapter maps hidden d -> m -> d).
        scale: multiplier s of the adapter branch.
        placement: sequential wraps each feed-forward output; parallel branches from the
            stream entering the feed-forward block and adds after its residual (PEFT-SER).
        dropout: dropout on the bottleneck, after the ReLU (training only).
    """

    width: int = option(64, Domain(int, ge=1), search={"low": 8, "high": 256, "log": True})
    scale: float = option(1.0, Domain(float, gt=0))
    placement: Placement = option("sequential", Domain(str, allowed=PLACEMENTS))
    dropout: float = option(0.0, Domain(float, ge=0, lt=1))


class _Bottleneck(nn.Module):
    """The adapter branch ``s * up(drop(relu(down(x))))``, shared by both placements.

    ``up`` starts at zero, so the branch is exactly zero at init. Parameters: ``d*m + m``
    (down) + ``m*d + d`` (up) for hidden size d and width m.

    Shapes: ``(batch, frames, d)`` -> ``(batch, frames, d)``.
    """

    def _add_branch(self, hidden: int, width: int, scale: float, dropout: float) -> None:
        self.down = nn.Linear(hidden, width)
        self.up = nn.Linear(width, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        # No module at all for p = 0: no random draw, so such runs stay what they were.
        self.drop: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scale = scale

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.drop(torch.relu(self.down(x))))


class BottleneckAdapter(_Bottleneck):
    """Wraps a feed-forward module: ``y = f(x); return y + s * up(drop(relu(down(y))))``.

    The wrapped layer equals the pre-trained one at init (``up`` is zero).
    """

    def __init__(
        self, inner: nn.Module, hidden: int, width: int, scale: float, dropout: float = 0.0
    ) -> None:
        super().__init__()
        # Registered before down/up, as always: parameter order (the optimiser's, a resumed
        # checkpoint's) and names (``feed_forward.down.weight``) of existing runs are unchanged.
        self.inner = inner
        self._add_branch(hidden, width, scale, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return y + self.branch(y)


class ParallelAdapter(_Bottleneck):
    """A branch beside the feed-forward block, placed as PEFT-SER's code places it.

    With ``x`` the residual stream entering the feed-forward block (after attention and its
    residual, before the feed-forward's LayerNorm):

    * post-LN layers (WavLM, HuBERT, wav2vec 2.0 base):
      ``out = final_layer_norm(h + FFN(h) + s * up(drop(relu(down(x)))))`` with ``h = LN(x)``;
    * pre-LN layers (stable-layer-norm variants, Whisper):
      ``out = x + FFN(LN(x)) + s * up(drop(relu(down(x))))``.

    Unlike PEFT-SER's, the branch adds no extra copy of ``x``: with ``up`` at zero the layer
    equals the pre-trained one at init (theirs starts as ``... + x``, not the pre-trained model).

    Forward hooks carry it (see :class:`~trainables.backbones.base.FFNBlock`): a pre-hook on the
    block's entry computes the branch, a hook at its exit adds it. The hooks are bound methods,
    so a deep copy of the model hooks the copied adapter.
    """

    def __init__(
        self, block: FFNBlock, hidden: int, width: int, scale: float, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self._add_branch(hidden, width, scale, dropout)
        self._pending: torch.Tensor | None = None
        block.entry.register_forward_pre_hook(self._read)
        if block.merge == "input":
            block.exit.register_forward_pre_hook(self._add_to_input)
        elif block.merge == "output":
            block.exit.register_forward_hook(self._add_to_output)
        else:
            raise ValueError(f"FFNBlock.merge must be 'input' or 'output', got {block.merge!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)

    def _read(self, _module: nn.Module, args: tuple) -> None:
        self._pending = self(args[0])

    def _take(self) -> torch.Tensor:
        branch, self._pending = self._pending, None  # held only between entry and exit
        if branch is None:
            raise RuntimeError(
                "parallel adapter: the feed-forward block ended before it began; "
                "the backbone's ffn_block() names the wrong modules for this layer"
            )
        return branch

    def _add_to_input(self, _module: nn.Module, args: tuple) -> tuple:
        return (args[0] + self._take(), *args[1:])

    def _add_to_output(self, _module: nn.Module, _args: tuple, output: object) -> object:
        if isinstance(output, tuple):
            return (output[0] + self._take(), *output[1:])
        return output + self._take()  # type: ignore[operator]


@METHODS.register("adapter")
class Adapter(Method):
    """Bottleneck adapters on every layer's feed-forward block: sequential (Houlsby-style, on
    the FFN output) or parallel (PEFT-SER's). Both have ``2*d*m + m + d`` parameters a layer."""

    name = "adapter"
    config_cls = AdapterConfig
    config: AdapterConfig

    def apply(self, backbone: Backbone) -> list[nn.Parameter]:
        c = self.config
        params: list[nn.Parameter] = []
        for i, layer in enumerate(backbone.layers):
            module: _Bottleneck
            if c.placement == "parallel":
                if hasattr(layer, PARALLEL_ATTR):
                    raise ValueError(f"layer {i} of {backbone.name!r} already has an adapter")
                block = backbone.ffn_block(layer)
                module = ParallelAdapter(block, backbone.hidden_size, c.width, c.scale, c.dropout)
                layer.add_module(PARALLEL_ATTR, module)
            else:
                parent, attr = backbone.ffn_slot(layer)
                module = BottleneckAdapter(
                    getattr(parent, attr), backbone.hidden_size, c.width, c.scale, c.dropout
                )
                setattr(parent, attr, module)
            params += [*module.down.parameters(), *module.up.parameters()]
        return params
