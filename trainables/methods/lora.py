"""LoRA (and DoRA) through Hugging Face peft on the transformer's linear layers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from peft import LoraConfig as PeftLoraConfig

from trainables.backbones import TARGET_GROUPS, Backbone, TargetGroup
from trainables.methods.base import METHODS, MethodConfig
from trainables.methods.hf_peft import PeftMethod
from trainables.methods.options import Domain, option


@dataclasses.dataclass(frozen=True)
class LoraConfig(MethodConfig):
    """LoRA options.

    Attributes:
        rank: r, the inner dimension of each low-rank update ``B @ A``.
        alpha: scaling numerator; the update is multiplied by ``alpha / rank``. A search samples
            ``alpha_ratio`` and sets ``alpha = alpha_ratio * rank`` (scale ``alpha_ratio``), or,
            when the space's section gives ``alpha`` instead, ``alpha`` itself (``alpha: 1.0``
            is loralib's default, PEFT-SER's: scale ``1 / rank``).
        targets: which linear layers of every transformer block get LoRA: the attention
            projections (q, k, v, out), the feed-forward pair, or both.
        dropout: dropout on the LoRA branch input.
        use_dora: weight-decomposed LoRA (DoRA) instead of plain LoRA.
    """

    rank: int = option(16, Domain(int, ge=1), search={"low": 1, "high": 64, "log": True})
    alpha: float = option(
        32.0,
        Domain(float, gt=0),
        search={"choices": [0.5, 1.0, 2.0, 4.0]},
        search_as="alpha_ratio",
        alternative="alpha",
    )
    targets: TargetGroup = option(
        "ffn", Domain(str, allowed=TARGET_GROUPS), search={"choices": list(TARGET_GROUPS)}
    )
    dropout: float = option(0.05, Domain(float, ge=0, lt=1))
    use_dora: bool = option(False, Domain(bool))

    @classmethod
    def from_search(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Turns ``alpha_ratio`` into LoRA's ``alpha`` (the update scale is ``alpha / rank``);
        a sampled ``alpha`` is kept as it is."""
        out = dict(values)
        if "alpha_ratio" in out:
            out["alpha"] = float(out.pop("alpha_ratio")) * int(out["rank"])
        return out


@METHODS.register("lora")
class Lora(PeftMethod):
    """Low-rank updates ``W + (alpha / r) B A`` with ``B = 0`` at init (identity at init).

    Exported weights are also written as a peft folder (``adapter_config.json`` +
    ``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained`` loads on the base
    backbone's Hugging Face model.
    """

    name = "lora"
    title = "LoRA"
    param_marker = "lora_"
    config_cls = LoraConfig
    config: LoraConfig

    def peft_config(self, backbone: Backbone) -> PeftLoraConfig:
        c = self.config
        return PeftLoraConfig(
            r=c.rank,
            lora_alpha=c.alpha,
            lora_dropout=c.dropout,
            target_modules=backbone.target_modules(c.targets),
            use_dora=c.use_dora,
            bias="none",
        )
