"""(IA)3 through Hugging Face peft: learned vectors that rescale the transformer's activations."""

from __future__ import annotations

import dataclasses

from peft import IA3Config as PeftIA3Config

from trainables.backbones import TARGET_GROUPS, Backbone, TargetGroup
from trainables.methods.base import METHODS, MethodConfig
from trainables.methods.hf_peft import PeftMethod
from trainables.methods.options import Domain, option


@dataclasses.dataclass(frozen=True)
class IA3Config(MethodConfig):
    """(IA)3 options.

    Attributes:
        targets: which linear layers of every transformer block are rescaled: the attention
            projections (q, k, v, out; their outputs), the feed-forward pair (their inputs), or
            both.
    """

    targets: TargetGroup = option(
        "both", Domain(str, allowed=TARGET_GROUPS), search={"choices": list(TARGET_GROUPS)}
    )


@METHODS.register("ia3")
class IA3(PeftMethod):
    """(IA)3 (Liu et al. 2022): ``y = l * (W x)`` on attention projections and
    ``y = W (l * x)`` on feed-forward layers, each ``l`` a vector starting at ones (identity at
    init). Parameters per layer: the output width of each attention target plus the input width
    of each feed-forward target; no size to choose, so a search only picks the targets.

    Exported weights are also written as a peft folder that ``peft.PeftModel.from_pretrained``
    loads on the base backbone's Hugging Face model.
    """

    name = "ia3"
    title = "(IA)3"
    param_marker = "ia3_"
    config_cls = IA3Config
    config: IA3Config

    def peft_config(self, backbone: Backbone) -> PeftIA3Config:
        return PeftIA3Config(
            target_modules=backbone.target_modules(self.config.targets),
            feedforward_modules=backbone.target_modules("ffn"),
        )
