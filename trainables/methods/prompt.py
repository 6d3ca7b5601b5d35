"""Embedding prompt tuning: learnable vectors prepended to the transformer input.

As in PEFT-SER, the prompts enter at the first transformer layer's input, after the positional
embedding (and the input norm): the backbone computes that input for the real frames alone and
then calls the injector, so a prompt never changes what a real frame's layer-0 input is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from trainables.backbones import Backbone, InputInjector
from trainables.methods.base import METHODS, Method, MethodConfig
from trainables.methods.options import Domain, option


@dataclasses.dataclass(frozen=True)
class PromptConfig(MethodConfig):
    """Prompt options.

    Attributes:
        length: N, the number of prompt vectors.
        deep: False: N vectors at the transformer input only (shallow). True: every layer gets its
            own N vectors, replacing the previous layer's outputs at those positions.
    """

    length: int = option(8, Domain(int, ge=1), search={"low": 1, "high": 32})
    deep: bool = option(False, Domain(bool), search={"choices": [False, True]})


class PromptInjector(InputInjector):
    """Holds the prompts ``(layers_with_prompts, N, d)`` and prepends them.

    The frame mask is extended with N valid positions so every frame may attend to the prompts;
    the backbone strips the N leading positions from every hidden state, so prompts never reach
    pooling. Parameters: ``N * d`` (shallow) or ``num_layers * N * d`` (deep).
    """

    def __init__(self, num_tokens: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.prompts = nn.Parameter(torch.randn(depth, num_tokens, hidden) * 0.02)

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = hidden.shape[0]
        prompt = self.prompts[0].to(hidden.dtype).expand(batch, -1, -1)  # (batch, N, d)
        ones = mask.new_ones((batch, self.num_tokens))
        return torch.cat([prompt, hidden], dim=1), torch.cat([ones, mask], dim=1)

    def replace(self, depth_index: int, hidden: torch.Tensor) -> torch.Tensor:
        """Puts layer ``depth_index``'s prompts in the leading N positions of ``hidden``."""
        prompt = self.prompts[depth_index].to(hidden.dtype).expand(hidden.shape[0], -1, -1)
        return torch.cat([prompt, hidden[:, self.num_tokens :]], dim=1)


@METHODS.register("prompt")
class Prompt(Method):
    """Shallow or deep embedding prompts (see :class:`PromptInjector`)."""

    name = "prompt"
    config_cls = PromptConfig
    config: PromptConfig

    def apply(self, backbone: Backbone) -> list[nn.Parameter]:
        depth = backbone.num_layers if self.config.deep else 1
        injector = PromptInjector(self.config.length, backbone.hidden_size, depth)
        backbone.input_injector = injector
        if self.config.deep:
            for i, layer in enumerate(backbone.layers):
                if i > 0:
                    layer.register_forward_pre_hook(_deep_hook(injector, i), with_kwargs=True)
        return list(injector.parameters())


def _deep_hook(injector: PromptInjector, index: int):  # noqa: ANN202 - a torch hook
    def hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        if args:
            return (injector.replace(index, args[0]), *args[1:]), kwargs
        kwargs["hidden_states"] = injector.replace(index, kwargs["hidden_states"])
        return args, kwargs

    return hook
