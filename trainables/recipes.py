"""Named training recipes: the settings of a published protocol, as values of our own options.

A recipe fixes :class:`~trainables.config.TrainConfig` fields, head options and each method's
options. ``emotune train --recipe NAME`` takes them as its defaults (every flag given on the
command line still wins), and ``spaces/<name>.yaml`` holds the same values as a search space
(a test keeps the two in step). This module imports no torch.

``peft-ser`` reproduces PEFT-SER (Feng & Narayanan, ACII 2023, arXiv 2306.05350) as far as its
public code (usc-sail/peft-ser) shows it; ``docs/fidelity.md`` lists what still differs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from trainables.registry import Registry


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One recipe.

    Attributes:
        name: what ``--recipe`` takes.
        title: one line for help texts and logs.
        train: ``TrainConfig`` field -> value (``head`` and ``method_options`` excluded).
        head: ``HeadConfig`` field -> value.
        methods: method name -> its options; a method not listed keeps its defaults.
    """

    name: str
    title: str
    train: Mapping[str, Any]
    head: Mapping[str, Any]
    methods: Mapping[str, Mapping[str, Any]]

    def method_options(self, method: str) -> dict[str, Any]:
        """The recipe's options of ``method`` (empty when it sets none)."""
        return dict(self.methods.get(method, {}))


RECIPES: Registry[Recipe] = Registry("recipe")


def _add(recipe: Recipe) -> Recipe:
    return RECIPES.register(recipe.name)(recipe)


PEFT_SER = _add(
    Recipe(
        name="peft-ser",
        title="PEFT-SER's protocol (Adam, plateau on dev loss, first 6 s, noise + time mask)",
        train={
            "optimizer": "adam",  # torch Adam; weight_decay is a coupled L2 term
            "adam_beta1": 0.9,
            "adam_beta2": 0.98,
            "lr": 5e-4,
            "weight_decay": 1e-4,
            "schedule": "plateau",
            "plateau_metric": "loss",
            "plateau_patience": 5,
            "plateau_factor": 0.5,
            "min_lr": 5e-5,
            "warmup_ratio": 0.0,
            "grad_clip": 0.0,  # the study does not clip
            "batch_size": 32,
            "epochs": 30,
            "patience": 0,  # no early stopping: best dev UAR over all 30 epochs
            "max_seconds": 6.0,
            "crop": "first",
            "eval_crop": "first",
            "augment": "noise,timemask",
            "augment_p": 1.0,
            "noise_snr_min": 10.0,
            "noise_snr_max": 30.0,
            "timemask_min": 0.1,
            "timemask_max": 0.15,
        },
        head={"layers": "transformer", "proj_dim": 256, "pooling": "mean", "dropout": 0.1},
        methods={
            # loralib's default alpha is 1: the update is scaled by alpha / rank = 1/16.
            "lora": {"rank": 16, "alpha": 1.0, "targets": "ffn", "dropout": 0.0},
            "adapter": {"width": 128, "scale": 0.1, "dropout": 0.1, "placement": "parallel"},
            "prompt": {"length": 5, "deep": True},
        },
    )
)
