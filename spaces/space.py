"""The typed search-space config: which methods to search and the ranges of their options.

A method with options to search has one :class:`~spaces.section.MethodSpace` subclass and one
field on :class:`SpaceConfig` named after the method; registered methods without one
(``frozen``, ``full``) sample nothing extra. ``lr``, ``weight_decay`` and ``epochs`` are shared by
every method and sit at the top level, named like the TrainConfig fields they set.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import optuna
import yaml

from spaces import section
from spaces.params import Choice, Domain, Fixed, Param, Range, Scalar, SpaceError
from spaces.section import MethodSpace, param
from trainables.methods import METHODS
from trainables.methods.lora import LoraConfig

DEFAULT_SPACE_PATH = Path(__file__).with_name("default.yaml")


def _literal_values(cls: type, name: str) -> tuple[Scalar, ...]:
    return typing.get_args(typing.get_type_hints(cls)[name])


@dataclasses.dataclass(frozen=True)
class LoraSpace(MethodSpace):
    """LoRA: rank, ``alpha = alpha_ratio * rank``, targets, dropout, DoRA."""

    key: ClassVar[str] = "lora"
    prefix: ClassVar[str] = "lora_"

    rank: Param = param(Range(1, 64, log=True), Domain(int, ge=1))
    alpha_ratio: Param = param(Choice((0.5, 1.0, 2.0, 4.0)), Domain(float, gt=0))
    targets: Param = param(
        Choice(("attention", "ffn", "both")),
        Domain(str, allowed=_literal_values(LoraConfig, "targets")),
    )
    dropout: Param = param(Fixed(0.05), Domain(float, ge=0, lt=1))
    use_dora: Param = param(Fixed(False), Domain(bool))

    @classmethod
    def options(cls, values: Mapping[str, Scalar]) -> dict[str, Any]:
        """Turns ``alpha_ratio`` into LoRA's ``alpha`` (the update scale is ``alpha / rank``)."""
        out = dict(values)
        out["alpha"] = float(out.pop("alpha_ratio")) * int(out["rank"])
        return out


@dataclasses.dataclass(frozen=True)
class AdapterSpace(MethodSpace):
    """Bottleneck adapter: width and branch scale."""

    key: ClassVar[str] = "adapter"
    prefix: ClassVar[str] = "adapter_"

    width: Param = param(Range(8, 256, log=True), Domain(int, ge=1))
    scale: Param = param(Fixed(1.0), Domain(float, gt=0))


@dataclasses.dataclass(frozen=True)
class PromptSpace(MethodSpace):
    """Embedding prompts: number of vectors, shallow or deep."""

    key: ClassVar[str] = "prompt"
    prefix: ClassVar[str] = "prompt_"

    length: Param = param(Range(1, 32), Domain(int, ge=1))
    deep: Param = param(Choice((False, True)), Domain(bool))


@dataclasses.dataclass(frozen=True)
class SpaceConfig:
    """A conditional search space: first a method, then only that method's options.

    Attributes:
        methods: registered method names to search over.
        lr, weight_decay, epochs: shared by every method.
        lora, adapter, prompt: option ranges of each method (used only if it is in ``methods``).
    """

    methods: tuple[str, ...] = ("frozen", "lora", "adapter", "prompt")
    lr: Param = param(Range(1e-4, 5e-3, log=True), Domain(float, gt=0))
    weight_decay: Param = param(Range(1e-4, 1e-1, log=True), Domain(float, ge=0))
    epochs: Param = param(Fixed(10), Domain(int, ge=1))
    lora: LoraSpace = dataclasses.field(default_factory=LoraSpace)
    adapter: AdapterSpace = dataclasses.field(default_factory=AdapterSpace)
    prompt: PromptSpace = dataclasses.field(default_factory=PromptSpace)

    def __post_init__(self) -> None:
        methods = self.methods
        if isinstance(methods, str) or not isinstance(methods, list | tuple):
            raise SpaceError(f"space.methods: expected a list of method names, got {methods!r}")
        if not methods:
            raise SpaceError("space.methods: must not be empty")
        registered = ", ".join(METHODS.names())
        for name in methods:
            if not isinstance(name, str) or name not in METHODS:
                raise SpaceError(
                    f"space.methods: unknown method {name!r}; registered: {registered}"
                )
            if methods.count(name) > 1:
                raise SpaceError(f"space.methods: {name!r} is listed more than once")
        object.__setattr__(self, "methods", tuple(methods))
        section.normalise(self, "space")
        for name, cls in METHOD_SPACES.items():
            if not isinstance(getattr(self, name), cls):
                raise SpaceError(f"space.{name}: expected a {cls.__name__}")

    def method_space(self, method: str) -> MethodSpace | None:
        """The options of ``method``, or None when it has none to search."""
        return getattr(self, method) if method in METHOD_SPACES else None

    def suggest_shared(self, trial: optuna.Trial) -> dict[str, Scalar]:
        """Suggests ``lr``, ``weight_decay`` and ``epochs`` on ``trial``."""
        return section.suggest(self, trial)

    @classmethod
    def shared_domains(cls) -> dict[str, Domain]:
        """Shared parameter name -> domain."""
        return section.domains(cls)

    def describe(self) -> dict[str, str]:
        """A flat, JSON-serialisable summary for run parameters (e.g. an MLflow parent run).

        Only the options of searched methods appear. Example: ``{"space.methods": "frozen,
        lora", "space.lr": "[0.0001, 0.005] log", "space.epochs": "10", "space.lora.rank":
        "[1, 64] log", "space.lora.targets": "{attention, ffn, both}", ...}``.
        """
        out = {"space.methods": ", ".join(self.methods), **section.describe(self, "space")}
        for method in self.methods:
            options = self.method_space(method)
            if options is not None:
                out.update(options.describe())
        return out

    @classmethod
    def from_dict(cls, data: object) -> SpaceConfig:
        """Builds a space from its YAML form; missing keys keep defaults, unknown keys fail."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise SpaceError(f"space: expected a mapping, got {data!r}")
        section.reject_unknown(data, [f.name for f in dataclasses.fields(cls)], "space")
        kwargs: dict[str, Any] = section.parse(cls, data, "space")
        if "methods" in data:
            kwargs["methods"] = data["methods"]
        for name, space_cls in METHOD_SPACES.items():
            if name in data:
                kwargs[name] = space_cls.from_dict(data[name])
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SpaceConfig:
        """Reads a space from a YAML file (see ``spaces/default.yaml``)."""
        with Path(path).open(encoding="utf-8") as fh:
            return cls.from_dict(yaml.safe_load(fh))

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (``from_dict(to_dict())`` gives an equal space)."""
        out: dict[str, Any] = {"methods": list(self.methods), **section.plain(self)}
        for name in METHOD_SPACES:
            out[name] = getattr(self, name).to_dict()
        return out

    def to_yaml(self, path: str | Path) -> None:
        """Writes the YAML form to ``path``."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")


# Method name -> its options class, read off SpaceConfig's fields (one field per method).
METHOD_SPACES: dict[str, type[MethodSpace]] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(SpaceConfig)
    if isinstance(f.default_factory, type) and issubclass(f.default_factory, MethodSpace)
}
