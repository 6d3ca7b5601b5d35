"""Resumable training state, written atomically as safetensors + JSON (never pickle)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.safetensors"
META_FILE = "state.json"


def save_checkpoint(
    folder: Path,
    tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
) -> None:
    """Writes ``folder`` atomically: a crash mid-write leaves the previous checkpoint intact.

    ``tensors`` are model tensors by name; the optimizer's per-parameter state is flattened to
    ``opt.<index>.<key>`` tensors and its param groups go to the JSON file.
    """
    opt = optimizer.state_dict()
    flat = {f"model.{k}": v.contiguous() for k, v in tensors.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                flat[f"opt.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    flat["rng.torch"] = torch.get_rng_state()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(flat, str(tmp / STATE_FILE))
    full_meta = {**meta, "optimizer_groups": opt["param_groups"], "optimizer_scalars": scalars}
    (tmp / META_FILE).write_text(json.dumps(full_meta))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    folder: Path, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restores the optimizer and torch RNG; returns ``(model tensors, meta)``."""
    flat = load_file(str(folder / STATE_FILE))
    meta = json.loads((folder / META_FILE).read_text())
    state: dict[int, dict[str, Any]] = {}
    for name, value in flat.items():
        if name.startswith("opt."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, scalars in meta.pop("optimizer_scalars").items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("optimizer_groups")})
    torch.set_rng_state(flat["rng.torch"])
    tensors = {k[len("model.") :]: v for k, v in flat.items() if k.startswith("model.")}
    return tensors, meta


def has_checkpoint(folder: Path) -> bool:
    return (folder / META_FILE).is_file() and (folder / STATE_FILE).is_file()
