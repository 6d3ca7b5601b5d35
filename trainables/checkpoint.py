"""Resumable training state, written atomically as safetensors + JSON (never pickle)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainables.rundir import FolderError

CHECKPOINT_DIR = "checkpoint"  # a run folder's checkpoint, beside result.json and adapter/
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
    old = folder.with_name(folder.name + ".old")
    for path in (folder, tmp, old):
        _check_ours(path)  # before anything is written or removed
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(flat, str(tmp / STATE_FILE))
    full_meta = {**meta, "optimizer_groups": opt["param_groups"], "optimizer_scalars": scalars}
    (tmp / META_FILE).write_text(json.dumps(full_meta))
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _check_ours(path: Path) -> None:
    """Refuses to replace ``path`` unless it is missing or a folder of checkpoint files only.

    Raises:
        FolderError: ``path`` holds anything emotune does not write there (a user's file).
    """
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise FolderError(f"{path} is not a checkpoint folder written by emotune; not replacing it")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in (STATE_FILE, META_FILE))
    if foreign:
        raise FolderError(
            f"{path} holds files emotune did not write ({', '.join(foreign[:5])}); "
            "not replacing it: move them away or use another --out"
        )


def copy_checkpoint(source: Path, folder: Path) -> None:
    """Replaces the checkpoint ``folder`` by the checkpoint files of ``source`` (e.g. Ray's
    restored copy, which may also hold a final report's adapter and result: those stay out)."""
    _check_ours(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in (STATE_FILE, META_FILE):
        shutil.copy2(source / name, folder / name)


def read_meta(folder: Path) -> dict[str, Any]:
    """The checkpoint's JSON metadata alone (cheap: no tensor is read)."""
    return json.loads((folder / META_FILE).read_text())


def load_checkpoint(
    folder: Path, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restores the optimizer and torch RNG; returns ``(model tensors, meta)``."""
    flat = load_file(str(folder / STATE_FILE))
    meta = read_meta(folder)
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
