"""LoRA (and DoRA) through Hugging Face peft on the transformer's linear layers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from torch import nn

from trainables.backbones import Backbone
from trainables.methods.base import METHODS, Method, MethodConfig


@dataclasses.dataclass(frozen=True)
class LoraConfig(MethodConfig):
    """LoRA options.

    Attributes:
        rank: r, the inner dimension of each low-rank update ``B @ A``.
        alpha: scaling numerator; the update is multiplied by ``alpha / rank``.
        dropout: dropout on the LoRA branch input.
        targets: which linear layers of every transformer block get LoRA: the attention
            projections (q, k, v, out), the feed-forward pair, or both.
        use_dora: weight-decomposed LoRA (DoRA) instead of plain LoRA.
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: Literal["attention", "ffn", "both"] = "ffn"
    use_dora: bool = False

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"lora alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")
        if self.targets not in ("attention", "ffn", "both"):
            raise ValueError(f"lora targets must be attention, ffn or both, got {self.targets!r}")


@METHODS.register("lora")
class Lora(Method):
    """Low-rank updates ``W + (alpha / r) B A`` with ``B = 0`` at init (identity at init).

    Exported weights are also written as a peft folder (``adapter_config.json`` +
    ``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained`` loads on the base
    backbone's Hugging Face model.
    """

    name = "lora"
    config_cls = LoraConfig
    config: LoraConfig
    card_usage = """
The LoRA weights alone, as a peft folder, on the base backbone's Hugging Face model:

```python
from peft import PeftModel
model = PeftModel.from_pretrained(base_model, "DIR/peft")
```
"""

    def __init__(self, config: LoraConfig | None = None) -> None:
        super().__init__(config)
        self.peft_model: PeftModel | None = None

    def peft_config(self, backbone: Backbone) -> PeftLoraConfig:
        c = self.config
        return PeftLoraConfig(
            r=c.rank,
            lora_alpha=c.alpha,
            lora_dropout=c.dropout,
            target_modules=backbone.lora_targets(c.targets),
            use_dora=c.use_dora,
            bias="none",
        )

    def apply(self, backbone: Backbone) -> list[nn.Parameter]:
        # get_peft_model swaps the target Linear layers in place inside backbone.hf_model.
        self.peft_model = get_peft_model(backbone.hf_model, self.peft_config(backbone))
        return [p for n, p in backbone.hf_model.named_parameters() if "lora_" in n]

    def save_extra(self, backbone: Backbone, out_dir: Path) -> None:
        if self.peft_model is None:
            raise RuntimeError("lora.save_extra called before apply")
        self.peft_model.save_pretrained(str(out_dir / "peft"))
