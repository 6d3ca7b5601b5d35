"""The training settings a space may set, declared once: YAML key, domain and TrainConfig field.

Each row of :data:`TRAIN_FIELDS` becomes a top-level key of a space file (and a field of
:class:`~spaces.space.SpaceConfig`) and the trial parameter of the same name. ``lr``,
``weight_decay`` and ``epochs`` are always in a space (the default space's values unless the
file gives them). The other rows are searched only when a space file names them: a field the
file does not name keeps the value of the search's base config (the ``emotune search`` flags)
or TrainConfig's default. A named field overrides the base value.

The head rows (``head_layers``, ``head_width``, ``pooling``, ``head_dropout``) land in
``TrainConfig.head`` (a :class:`~trainables.model.HeadConfig`), on top of the base config's
head.

A method's section may give its own ``lr`` / ``weight_decay`` (:data:`PER_METHOD`); the trial
parameter is then ``<method>.lr``, a distinct Optuna parameter, so a sampler never mixes the
method's distribution with the shared one.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

from trainables.config import CROPS, EVAL_CROPS, MAX_CROP_SECONDS
from trainables.data.augment import AUGMENTATIONS
from trainables.methods.options import Domain, Scalar

_HEAD = "head."


@dataclasses.dataclass(frozen=True)
class TrainField:
    """One training setting a space may set.

    Attributes:
        name: the YAML key of a space file and the trial parameter name.
        domain: the values any space may give it (TrainConfig checks the rest, e.g. min <= max).
        default: the default space's param in YAML form; None: not in the default space (the
            base config's value is kept unless a space file names the field).
        target: the TrainConfig field it sets, ``head.<field>`` for a HeadConfig field;
            empty: the TrainConfig field called ``name``.
    """

    name: str
    domain: Domain
    default: object = None
    target: str = ""

    @property
    def field(self) -> str:
        """The TrainConfig (or, for head fields, HeadConfig) field name."""
        return (self.target or self.name).removeprefix(_HEAD)

    @property
    def in_head(self) -> bool:
        """True for a HeadConfig field."""
        return self.target.startswith(_HEAD)


_FRACTION = Domain(float, ge=0, lt=1)
_SECONDS = Domain(float, gt=0, le=MAX_CROP_SECONDS)
# TrainConfig stores an augment list sorted and comma-joined ("" = off); a space gives that
# form, so two spellings of one list can never be two choices.
_AUGMENT_LISTS = tuple(
    ",".join(names)
    for n in range(len(AUGMENTATIONS) + 1)
    for names in itertools.combinations(sorted(AUGMENTATIONS), n)
)

# Domains repeat TrainConfig's and HeadConfig's checks where one value alone can fail them (a
# test keeps the Literal choices equal), so a bad space is refused when it is read; checks
# between fields (noise_snr_min <= noise_snr_max) are TrainConfig's, run by the search's
# preflight at both ends of every range.
TRAIN_FIELDS: tuple[TrainField, ...] = (
    TrainField("lr", Domain(float, gt=0), {"low": 1.0e-4, "high": 5.0e-3, "log": True}),
    TrainField("weight_decay", Domain(float, ge=0), {"low": 1.0e-4, "high": 1.0e-1, "log": True}),
    TrainField("epochs", Domain(int, ge=1), 10),
    TrainField("batch_size", Domain(int, ge=1)),
    TrainField("optimizer", Domain(str, allowed=("adamw", "adam"))),
    TrainField("adam_beta1", Domain(float, ge=0, lt=1)),
    TrainField("adam_beta2", Domain(float, ge=0, lt=1)),
    TrainField("schedule", Domain(str, allowed=("cosine", "plateau"))),
    TrainField("plateau_metric", Domain(str, allowed=("uar", "loss"))),
    TrainField("plateau_patience", Domain(int, ge=0)),
    TrainField("plateau_factor", Domain(float, gt=0, lt=1)),
    TrainField("min_lr", Domain(float, ge=0)),
    TrainField("warmup_ratio", _FRACTION),
    TrainField("grad_clip", Domain(float, ge=0)),  # 0: no clipping
    TrainField("patience", Domain(int, ge=0)),  # early stopping; 0: never
    TrainField("max_seconds", _SECONDS),
    TrainField("crop", Domain(str, allowed=CROPS)),
    TrainField("eval_crop", Domain(str, allowed=EVAL_CROPS)),
    TrainField("augment", Domain(str, allowed=_AUGMENT_LISTS)),
    TrainField("augment_p", Domain(float, ge=0, le=1)),
    TrainField("noise_snr_min", Domain(float)),  # dB; may be negative (more noise than signal)
    TrainField("noise_snr_max", Domain(float)),
    TrainField("timemask_min", _FRACTION),  # of the clip's length
    TrainField("timemask_max", _FRACTION),
    TrainField("head_layers", Domain(str, allowed=("all", "transformer")), target="head.layers"),
    TrainField("head_width", Domain(int, ge=1), target="head.proj_dim"),
    TrainField(
        "pooling", Domain(str, allowed=("mean", "meanstd", "attentive")), target="head.pooling"
    ),
    TrainField("head_dropout", _FRACTION, target="head.dropout"),
)
FIELDS: dict[str, TrainField] = {f.name: f for f in TRAIN_FIELDS}

# Fields every space searches (they have a default range): a search's base config may not set
# them, since the space would silently replace the value.
SPACE_OWNED: tuple[str, ...] = tuple(f.name for f in TRAIN_FIELDS if f.default is not None)

# Shared fields a method's section may give its own range for, and the default space's ranges
# per method. Full fine-tuning moves every weight of the backbone, so it needs a learning rate
# one to two orders below the PEFT methods' (the usual full fine-tuning range).
PER_METHOD: tuple[str, ...] = ("lr", "weight_decay")
METHOD_DEFAULTS: dict[str, dict[str, object]] = {
    "full": {"lr": {"low": 1.0e-5, "high": 1.0e-4, "log": True}},
}


def own_name(method: str, name: str) -> str:
    """The trial parameter of ``method``'s own value of shared field ``name`` (``full.lr``)."""
    return f"{method}.{name}"


def train_values(values: Mapping[str, Scalar], base: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig keyword arguments from checked values keyed by :data:`TRAIN_FIELDS` names.

    Head fields are merged into the base config's ``head`` (a HeadConfig, a dict or absent),
    so a space that sets ``pooling`` keeps the base's head width and dropout.

    Args:
        values: sampled values, e.g. ``{"lr": 5e-4, "pooling": "mean"}``.
        base: the search's base config (only its ``head`` is read).

    Returns:
        e.g. ``{"lr": 5e-4, "head": {"proj_dim": 128, "pooling": "mean", ...}}``.
    """
    out: dict[str, Any] = {}
    head: dict[str, Any] = {}
    for name, value in values.items():
        spec = FIELDS[name]
        (head if spec.in_head else out)[spec.field] = value
    if head:
        out["head"] = {**_plain_head(base.get("head")), **head}
    return out


def _plain_head(head: object) -> dict[str, Any]:
    if head is None:
        return {}
    if dataclasses.is_dataclass(head) and not isinstance(head, type):
        return dataclasses.asdict(head)
    if isinstance(head, Mapping):
        return dict(head)
    raise TypeError(f"base: head must be a HeadConfig or a mapping, got {head!r}")
