"""Methods that Hugging Face peft implements on the backbone's transformer (LoRA, IA3, ...).

A subclass says which peft config it builds (on the backbone's named target groups) and which
parameter names peft gives the weights it adds; this class applies it, names the trained
parameters, exports a ``peft/`` folder that ``PeftModel.from_pretrained`` loads, and writes the
model card's note about that folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn

from trainables.backbones import Backbone
from trainables.methods.base import Method

_CARD_USAGE = """
The {title} weights alone, as a peft folder, on the base backbone's Hugging Face model:

```python
from peft import PeftModel
model = PeftModel.from_pretrained(base_model, "DIR/peft")
```
"""


class PeftMethod(Method):
    """A method applied by ``peft.get_peft_model`` to ``backbone.hf_model``.

    Attributes:
        title: how the model card names the method (``LoRA``).
        param_marker: a substring of the names of exactly the parameters peft adds
            (``lora_``), which are the ones the method trains.
    """

    title: ClassVar[str]
    param_marker: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "title" in cls.__dict__:
            cls.card_usage = _CARD_USAGE.format(title=cls.title)

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.peft_model: PeftModel | None = None

    def peft_config(self, backbone: Backbone) -> PeftConfig:
        """The peft config of this method on ``backbone``."""
        raise NotImplementedError

    def apply(self, backbone: Backbone) -> list[nn.Parameter]:
        # get_peft_model swaps the target Linear layers in place inside backbone.hf_model.
        self.peft_model = get_peft_model(backbone.hf_model, self.peft_config(backbone))
        return [p for n, p in backbone.hf_model.named_parameters() if self.param_marker in n]

    def save_extra(self, backbone: Backbone, out_dir: Path) -> None:
        if self.peft_model is None:
            raise RuntimeError(f"{self.name}.save_extra called before apply")
        self.peft_model.save_pretrained(str(out_dir / "peft"))
