"""The exported adapter folder: enough to rebuild the classifier on top of the base backbone.

Layout of ``DIR``::

    emotune.json          backbone id, method + options, head options, label map, audio policy,
                          waveform normalisation (``normalize``, wav2vec 2.0-style families)
    weights.safetensors   every trained tensor (method parameters and head), nothing else
    peft/                 LoRA only: a peft folder for ``PeftModel.from_pretrained(base, DIR/peft)``

An adapter folder is untrusted input. :func:`load_adapter` reads ``emotune.json`` bounded and
checks every field, then compares the names and shapes in the header of
``weights.safetensors`` with a skeleton of the model built on torch's meta device, all before
the real model is built: a field that would make emotune allocate gigabytes (a LoRA rank of
400,000, a sample rate of 10^8) is refused with a message naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainables.backbones import (
    backbone_skeleton,
    input_normalization,
    load_backbone,
    set_input_normalization,
)
from trainables.config import EVAL_CROPS
from trainables.config import MAX_CROP_SECONDS as MAX_SECONDS  # the bound runs are held to
from trainables.methods import METHODS, Method, attach, build_method
from trainables.model import HeadConfig, SERModel
from trainables.untrusted import TensorInfo, is_finite_number, read_json_object, safetensors_header

FORMAT_VERSION = 1
CONFIG_FILE = "emotune.json"
WEIGHTS_FILE = "weights.safetensors"
MAX_LABELS = 1000


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
    *,
    allow_pickle_weights: bool = False,
    digest: bool = False,
) -> tuple[SERModel, Method]:
    """Loads the backbone, attaches the method and adds a head; initialisation seeded.

    ``allow_pickle_weights`` is passed to :func:`~trainables.backbones.load_backbone`. With
    ``digest``, the backbone's ``weights_sha256`` is taken before the method is attached (a
    run's fingerprint; it costs one pass over the weights).
    """
    torch.manual_seed(seed)
    bb = load_backbone(backbone, allow_pickle_weights=allow_pickle_weights)
    if digest:
        bb.weights_sha256 = bb.weights_digest()
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
    """Writes the adapter folder; returns the size in bytes of ``weights.safetensors``.

    ``extra`` adds fields to ``emotune.json`` (e.g. ``eval_max_seconds``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    save_file(trainable_state(model), str(weights))
    bb = model.backbone
    norm = input_normalization(bb)  # recorded: the loader's default may change, the adapter not
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
        **({} if norm is None else {"normalize": norm.normalize}),
        **(extra or {}),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    method.save_extra(bb, out_dir)
    return weights.stat().st_size


@dataclass
class LoadedAdapter:
    """A classifier rebuilt from an adapter folder.

    Attributes:
        model: the classifier, in eval mode.
        labels: class names, in the order of the model's outputs.
        meta: the adapter's ``emotune.json``, every field checked by :func:`read_adapter_spec`.
    """

    model: SERModel
    labels: list[str]
    meta: dict[str, Any]


@dataclass(frozen=True)
class AdapterSpec:
    """The checked content of an ``emotune.json`` (see :func:`read_adapter_spec`)."""

    backbone: str
    method: str
    method_options: dict[str, Any]
    head: HeadConfig
    labels: list[str]
    sample_rate: int
    max_seconds: float
    eval_crop: str
    eval_max_seconds: float | None
    normalize: bool | None = None  # None: a family without it, or a file from before it was kept


def load_adapter(
    adapter_dir: Path,
    backbone: str | None = None,
    device: str = "cpu",
    *,
    allow_pickle_weights: bool = False,
) -> LoadedAdapter:
    """Rebuilds the classifier from ``adapter_dir`` on top of its base backbone.

    Nothing is allocated before ``emotune.json`` and the header of ``weights.safetensors``
    have been checked against each other and against the backbone's architecture.

    Args:
        adapter_dir: a folder written by :func:`save_adapter`.
        backbone: override of the base backbone (e.g. a local copy of the hub model).
        device: where to put the model.
        allow_pickle_weights: passed to :func:`~trainables.backbones.load_backbone`.

    Raises:
        FileNotFoundError: a file of the folder is missing.
        ValueError: a field of ``emotune.json`` is out of bounds, or the weights do not match
            the model it describes (the message names the file and the field).

    The backbone normalises waveforms as ``normalize`` records, whatever the loader's default;
    a file without it (older emotune) gets the rule of that time (see
    :func:`~trainables.backbones.set_input_normalization`).
    """
    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / CONFIG_FILE, adapter_dir / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(f"adapter folder {adapter_dir}: missing {path.name}")
    meta = read_json_object(config_path, "adapter config")
    spec = read_adapter_spec(meta, config_path)
    if backbone is not None and (not isinstance(backbone, str) or not backbone):
        raise ValueError(f"backbone override must be a non-empty string, got {backbone!r}")
    base = backbone or spec.backbone
    header = safetensors_header(weights_path)
    expected = _skeleton(spec, base, config_path)
    _check_weights(spec, base, expected, header, (config_path, weights_path))
    model, _ = build_model(
        base,
        spec.method,
        spec.method_options,
        spec.head,
        len(spec.labels),
        seed=0,
        allow_pickle_weights=allow_pickle_weights,
    )
    built = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    if built != expected.shapes:  # the skeleton must describe the real model; a bug otherwise
        raise RuntimeError(f"{adapter_dir}: the model skeleton differs from the real model")
    set_input_normalization(model.backbone, spec.normalize, str(config_path))
    model.load_state_dict(load_file(str(weights_path)), strict=False)
    return LoadedAdapter(model.to(device).eval(), list(spec.labels), meta)


def read_adapter_spec(meta: dict[str, Any], path: Path) -> AdapterSpec:
    """Checks every field of an ``emotune.json`` object against sane bounds.

    Args:
        meta: the parsed file.
        path: the file, for messages.

    Raises:
        ValueError: the first bad field, as ``<path>: <field> = <value>; expected ...``.
    """

    def field(name: str, ok: Any, expected: str, *, required: bool = True) -> Any:
        if name not in meta:
            if required:
                raise ValueError(f"{path}: {name} is missing; expected {expected}")
            return None
        if not ok(meta[name]):
            raise ValueError(f"{path}: {name} = {_short(meta[name])}; expected {expected}")
        return meta[name]

    def seconds(value: Any) -> bool:
        return is_finite_number(value) and 0 < value <= MAX_SECONDS

    field("format_version", lambda v: _is_int(v) and v == FORMAT_VERSION, f"{FORMAT_VERSION}")
    backbone = field("backbone", lambda v: isinstance(v, str) and 0 < len(v) <= 4096, "a name")
    method = field("method", lambda v: isinstance(v, str) and v in METHODS, str(METHODS.names()))
    options = _method_options(method, meta.get("method_options", {}), path)
    field("head", lambda v: isinstance(v, dict), "a JSON object of head options")
    # Options missing from a file written before they existed (e.g. ``layers``) take their
    # defaults, which are the behaviour of that time; unknown values fail with the file's name.
    head = HeadConfig(**_dataclass_fields(HeadConfig, meta["head"], path, "head"))
    labels = field("labels", _valid_labels, f"a list of 2..{MAX_LABELS} unique non-empty strings")
    sample_rate = field("sample_rate", lambda v: _is_int(v) and 0 < v <= 1_000_000, "int in Hz")
    max_seconds = field("max_seconds", seconds, f"a number in (0, {MAX_SECONDS:g}] s")
    eval_crop = field("eval_crop", lambda v: v in EVAL_CROPS, " or ".join(EVAL_CROPS))
    eval_max = field(
        "eval_max_seconds", seconds, f"a number in (0, {MAX_SECONDS:g}] s", required=False
    )
    field("random_init", lambda v: isinstance(v, bool), "true or false", required=False)
    field("backbone_family", lambda v: isinstance(v, str), "a family name", required=False)
    normalize = field("normalize", lambda v: isinstance(v, bool), "true or false", required=False)
    return AdapterSpec(
        backbone=backbone,
        method=method,
        method_options=options,
        head=head,
        labels=list(labels),
        sample_rate=int(sample_rate),
        max_seconds=float(max_seconds),
        eval_crop=eval_crop,
        eval_max_seconds=None if eval_max is None else float(eval_max),
        normalize=normalize,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _valid_labels(value: Any) -> bool:
    return (
        isinstance(value, list)
        and 2 <= len(value) <= MAX_LABELS
        and all(isinstance(v, str) and v.strip() for v in value)
        and len(set(value)) == len(value)
    )


def _dataclass_fields(cls: type, data: Any, path: Path, name: str) -> dict[str, Any]:
    """Checks a JSON object meant as keyword arguments of dataclass ``cls``.

    Every key must be a field, and each value must have the type of the field's default
    (an int where an int is expected, a finite number where a float is); the dataclass then
    checks the values themselves when it is built.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {name} = {_short(data)}; expected a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in fields:
            raise ValueError(f"{path}: {name}.{key}: no such option; allowed: {sorted(fields)}")
        default = fields[key].default
        kind = type(default) if default is not dataclasses.MISSING else None
        ok = {
            bool: isinstance(value, bool),
            int: _is_int(value),
            float: is_finite_number(value),
            str: isinstance(value, str),
        }.get(kind, not isinstance(value, float) or is_finite_number(value))
        if not ok:
            expected = "a finite number" if kind is float else getattr(kind, "__name__", "a value")
            raise ValueError(f"{path}: {name}.{key} = {_short(value)}; expected {expected}")
    try:
        cls(**data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {name}: {err}") from None
    return dict(data)


def _method_options(method: str, options: Any, path: Path) -> dict[str, Any]:
    """Checks ``method_options`` through the method's own config class."""
    options = _dataclass_fields(METHODS.get(method).config_cls, options, path, "method_options")
    try:
        build_method(method, options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: method_options: {err}") from None
    return options


@dataclass(frozen=True)
class _Skeleton:
    """What the model described by ``emotune.json`` would hold, learnt on the meta device."""

    shapes: dict[str, tuple[int, ...]]  # trainable parameter -> shape
    sample_rate: int
    output: str  # name of the head's output bias: its length is the number of labels


def _skeleton(spec: AdapterSpec, backbone: str, path: Path) -> _Skeleton:
    """Builds the model of ``spec`` on the meta device (no memory) and lists its trainables."""
    bb = backbone_skeleton(backbone)  # a bad backbone name is reported by the loader itself
    try:
        with torch.device("meta"):
            attach(bb, build_method(spec.method, spec.method_options))
            model = SERModel(bb, len(spec.labels), spec.head)
    except (ArithmeticError, RuntimeError, TypeError, ValueError) as err:  # sizes overflowing
        raise ValueError(
            f"{path}: method {spec.method!r} with method_options {spec.method_options} and head "
            f"{dataclasses.asdict(spec.head)} cannot be built on {backbone!r}: {err}"
        ) from None
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    output = f"head.classifier.{len(model.head.classifier) - 1}.bias"
    return _Skeleton(shapes, bb.sample_rate, output)


def _check_weights(
    spec: AdapterSpec,
    backbone: str,
    expected: _Skeleton,
    header: dict[str, TensorInfo],
    paths: tuple[Path, Path],
) -> None:
    """Compares the weights file's header with the skeleton; raises on the first difference.

    Args:
        spec: the checked ``emotune.json``.
        backbone: the base backbone the model is built on.
        expected: the skeleton of the model ``spec`` describes.
        header: the weights file's tensors.
        paths: ``emotune.json`` and ``weights.safetensors``, for messages.
    """
    config_path, weights_path = paths
    if spec.sample_rate != expected.sample_rate:
        raise ValueError(
            f"{config_path}: sample_rate = {spec.sample_rate}; the backbone "
            f"{backbone!r} takes {expected.sample_rate} Hz"
        )
    out = header.get(expected.output)
    if out is not None and out.shape != (len(spec.labels),):
        raise ValueError(
            f"{config_path}: labels lists {len(spec.labels)} classes but {weights_path} holds "
            f"a head with {out.shape[0] if out.shape else 0} outputs ({expected.output})"
        )
    missing = sorted(set(expected.shapes) - set(header))
    unexpected = sorted(set(header) - set(expected.shapes))
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: its tensors do not match the {spec.method!r} model that "
            f"{config_path} describes (method, method_options, head): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, shape in expected.shapes.items():
        if header[name].shape != shape:
            what = "head" if name.startswith("head.") else "method_options"
            value = dataclasses.asdict(spec.head) if what == "head" else spec.method_options
            raise ValueError(
                f"{config_path}: {what} = {value} gives {name} the shape {shape}, but "
                f"{weights_path} holds {header[name].shape}"
            )
