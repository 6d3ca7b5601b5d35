"""Where a run stands between epochs, and how it goes to and comes back from its checkpoint.

The checkpoint holds the trainable weights as they are, the best epoch's weights under
``best.<name>``, the optimizer, the scheduler and :meth:`Progress.state` (plain JSON), so a run
resumes after its last finished epoch exactly as if it had never stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainables.checkpoint import has_checkpoint, load_checkpoint, read_meta, save_checkpoint
from trainables.export import trainable_state
from trainables.fingerprint import check_same_run
from trainables.run_setup import RunSetup

log = logging.getLogger(__name__)

BEST_PREFIX = "best."  # checkpoint tensors of the best epoch's weights


@dataclass
class Progress:
    """The loop's state after its last finished epoch.

    Attributes:
        epoch: the last finished epoch (0: none yet).
        best_epoch: the epoch (1-based) with the best dev UAR so far.
        best_dev_uar: that epoch's dev UAR (-1 before the first epoch).
        since_best: epochs finished since the best one (early stopping counts these).
        history: one entry per finished epoch (see :class:`trainables.result.RunResult`).
        best_weights: the trainable weights of the best epoch (CPU copies).
    """

    epoch: int = 0
    best_epoch: int = 0
    best_dev_uar: float = -1.0
    since_best: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def state(self) -> dict[str, Any]:
        """The JSON part, as the checkpoint's ``state`` stores it."""
        return {
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_dev_uar": self.best_dev_uar,
            "since_best": self.since_best,
            "history": self.history,
        }

    def track_best(self, epoch: int, dev_uar: float, model: torch.nn.Module) -> bool:
        """Marks ``epoch`` finished; keeps the model's weights when its dev UAR is the best yet.

        Returns:
            Whether ``epoch`` is the new best (strictly better: a tie keeps the earlier epoch).
        """
        is_best = dev_uar > self.best_dev_uar
        if is_best:
            self.best_weights = trainable_state(model)
            self.best_epoch, self.best_dev_uar, self.since_best = epoch, dev_uar, 0
        else:
            self.since_best += 1
        self.epoch = epoch
        return is_best


def restore_progress(run: RunSetup, out_dir: Path, ckpt: Path) -> Progress:
    """The progress of the checkpoint ``ckpt`` (model, optimizer, scheduler and torch RNG
    restored), or a fresh start with the model's initial weights as the best when none.

    Raises:
        ValueError: the checkpoint is of another run (config, manifest, labels or backbone).
    """
    if not has_checkpoint(ckpt):
        return Progress(best_weights=trainable_state(run.model))
    # Checked before any tensor is loaded: a different run's optimizer state or head
    # would not fit, and its label map would silently rename this run's classes.
    check_same_run(out_dir, read_meta(ckpt).get("fingerprint"), run.fingerprint)
    tensors, meta = load_checkpoint(ckpt, run.opt)
    current = {k: v for k, v in tensors.items() if not k.startswith(BEST_PREFIX)}
    run.model.load_state_dict(current, strict=False)
    best = {k[len(BEST_PREFIX) :]: v for k, v in tensors.items() if k.startswith(BEST_PREFIX)}
    run.sched.load_state_dict(meta["scheduler"])
    progress = Progress(**meta["state"], best_weights=best)
    log.info("resuming %s after epoch %d", out_dir, progress.epoch)
    return progress


def save_progress(run: RunSetup, ckpt: Path, progress: Progress) -> None:
    """Checkpoints the run after its last finished epoch (atomically, see
    :func:`trainables.checkpoint.save_checkpoint`)."""
    best = {f"{BEST_PREFIX}{k}": v for k, v in progress.best_weights.items()}
    meta = {
        "config": run.cfg.to_dict(),
        "fingerprint": run.fingerprint,
        "state": progress.state(),
        "scheduler": run.sched.state_dict(),
    }
    save_checkpoint(ckpt, {**trainable_state(run.model), **best}, run.opt, meta)
