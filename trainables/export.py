"""The exported adapter folder: enough to rebuild the classifier on top of the base backbone.

Layout of ``DIR``::

    emotune.json          backbone id, method + options, head options, label map, audio policy
    weights.safetensors   every trained tensor (method parameters and head), nothing else
    peft/                 LoRA only: a peft folder for ``PeftModel.from_pretrained(base, DIR/peft)``
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainables.backbones import load_backbone
from trainables.methods import Method, attach, build_method
from trainables.model import HeadConfig, SERModel

FORMAT_VERSION = 1
CONFIG_FILE = "emotune.json"
WEIGHTS_FILE = "weights.safetensors"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the parameters that require grad, by name."""
    return {
        n: p.detach().to("cpu", copy=True).contiguous()
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def build_model(
    backbone: str,
    method_name: str,
    method_options: dict[str, Any],
    head: HeadConfig,
    num_classes: int,
    seed: int,
) -> tuple[SERModel, Method]:
    """Loads the backbone, attaches the method and adds a head; initialisation seeded."""
    torch.manual_seed(seed)
    bb = load_backbone(backbone)
    method = build_method(method_name, method_options)
    attach(bb, method)
    return SERModel(bb, num_classes, head), method


def save_adapter(
    model: SERModel,
    method: Method,
    out_dir: Path,
    *,
    labels: list[str],
    head: HeadConfig,
    max_seconds: float,
    eval_crop: str,
    extra: dict[str, Any] | None = None,
) -> int:
    """Writes the adapter folder; returns the size in bytes of ``weights.safetensors``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    save_file(trainable_state(model), str(weights))
    bb = model.backbone
    meta = {
        "format_version": FORMAT_VERSION,
        "backbone": bb.name,
        "backbone_family": bb.family,
        "random_init": bb.random_init,
        "sample_rate": bb.sample_rate,
        "method": method.name,
        "method_options": method.config.to_dict(),
        "head": dataclasses.asdict(head),
        "labels": list(labels),
        "max_seconds": max_seconds,
        "eval_crop": eval_crop,
        **(extra or {}),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    method.save_extra(bb, out_dir)
    return weights.stat().st_size


@dataclass
class LoadedAdapter:
    """A classifier rebuilt from an adapter folder."""

    model: SERModel
    labels: list[str]
    meta: dict[str, Any]


def load_adapter(
    adapter_dir: Path, backbone: str | None = None, device: str = "cpu"
) -> LoadedAdapter:
    """Rebuilds the classifier from ``adapter_dir`` on top of its base backbone.

    Args:
        adapter_dir: a folder written by :func:`save_adapter`.
        backbone: override of the base backbone (e.g. a local copy of the hub model).
        device: where to put the model.

    Raises:
        FileNotFoundError: a file of the folder is missing.
        ValueError: the weights do not match the rebuilt model.
    """
    adapter_dir = Path(adapter_dir)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (adapter_dir / name).is_file():
            raise FileNotFoundError(f"adapter folder {adapter_dir}: missing {name}")
    meta = json.loads((adapter_dir / CONFIG_FILE).read_text())
    head = HeadConfig(**meta["head"])
    model, _ = build_model(
        backbone or meta["backbone"],
        meta["method"],
        meta["method_options"],
        head,
        len(meta["labels"]),
        seed=0,
    )
    state = load_file(str(adapter_dir / WEIGHTS_FILE))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"adapter {adapter_dir}: weights do not match the {meta['method']} model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.load_state_dict(state, strict=False)
    return LoadedAdapter(model.to(device).eval(), list(meta["labels"]), meta)
