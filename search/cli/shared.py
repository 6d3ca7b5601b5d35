"""What several command groups of the CLI share: the console, error lines and common flags."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console(stderr=True)

Handler = Callable[[argparse.Namespace], int]


def one_line(err: BaseException) -> str:
    """``err`` as one line: its message with whitespace collapsed; errors that are not about
    the user's input (a bug, most likely) also name their type and point at ``-v``."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    text = " ".join(str(message).split()) or type(err).__name__
    if isinstance(err, ValueError | OSError | KeyError):
        return text
    return f"{type(err).__name__}: {text} (run with -v for the traceback)"


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description from the ``Attributes:`` section of a class's docstring."""
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").splitlines()
    if not any(line.strip() == "Attributes:" for line in lines):
        return docs
    start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:") + 1
    current = None
    for line in lines[start:]:
        match = re.match(r"\s*(\w+): (.*)", line)
        if match and match.group(1) in {f.name for f in dataclasses.fields(cls)}:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return docs


def method_flags(method: str, config_cls: type) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(flag, add_argument keywords)`` of each option of one method: ``--<method>-<option>``.

    Read from the method's own option declarations: each field's domain (``bool``: a switch;
    allowed values: choices; else the type) and the docstring's ``Attributes:`` (the help). The
    flag's default is None, so :func:`method_options` passes only the options given.
    """
    from trainables.methods.options import domain_of, option_fields

    docs = field_docs(config_cls)
    for f in option_fields(config_cls):
        domain = domain_of(f)
        doc = docs.get(f.name, f.name.replace("_", " ")).replace("``", "").rstrip(".")
        spec: dict[str, Any] = dict(
            dest=f"opt__{method}__{f.name}", default=None, help=f"{doc} (default: {f.default})"
        )
        if domain.kind is bool:
            spec["action"] = argparse.BooleanOptionalAction
        elif domain.allowed is not None:
            spec["choices"] = domain.allowed
        else:
            spec.update(type=domain.kind, metavar=f.name.upper())
        yield f"--{method}-{f.name.replace('_', '-')}", spec


def add_method_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of every registered method, one argument group per method."""
    from trainables.methods import METHODS

    for name in METHODS:
        group = parser.add_argument_group(f"{name} options")
        for flag, spec in method_flags(name, METHODS.get(name).config_cls):
            group.add_argument(flag, **spec)


def method_options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """Collects the ``--<method>-*`` flags given; flags of another method are an error."""
    options: dict[str, Any] = {}
    for key, value in vars(args).items():
        if not key.startswith("opt__") or value is None:
            continue
        _, owner, field = key.split("__", 2)
        if owner != method:
            flag = f"--{owner}-{field.replace('_', '-')}"
            raise SystemExit(f"error: {flag} is an option of method {owner!r}, not {method!r}")
        options[field] = value
    return options


def add_speed_args(p: argparse.ArgumentParser) -> None:
    """Options that make runs faster (``train`` and ``search``); see ``TrainConfig``."""
    g = p.add_argument_group("speed options")
    g.add_argument(
        "--feature-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute the frozen front end once and memory-map it (all methods but full; "
        "same results either way; default: on)",
    )
    g.add_argument(
        "--feature-cache-dir",
        type=Path,
        default=None,
        help="cache folder (default: train: $EMOTUNE_FEATURE_CACHE or "
        "~/.cache/emotune/features; search: <storage>/feature-cache)",
    )
    g.add_argument(
        "--feature-cache-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="float16 halves the cache (logits move by ~1e-3; BENCHMARKS.md) "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--bucketing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="length-bucketed training batches (less padding; default: on)",
    )


def speed_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` fields of :func:`add_speed_args` (a dir only when given)."""
    out: dict[str, Any] = {
        "feature_cache": args.feature_cache,
        "feature_cache_dtype": args.feature_cache_dtype,
        "bucketing": args.bucketing,
    }
    if args.feature_cache_dir is not None:
        out["feature_cache_dir"] = str(args.feature_cache_dir.expanduser().resolve())
    return out


def add_allow_pickle_arg(p: argparse.ArgumentParser) -> None:
    """``--allow-pickle-weights`` (train, search, predict): see ``TrainConfig``."""
    p.add_argument(
        "--allow-pickle-weights",
        action="store_true",
        help="let a backbone without safetensors weights load pytorch_model.bin; unpickling "
        "runs code from the file, so only for weights you trust (default: refused)",
    )


def add_eval_window_arg(p: argparse.ArgumentParser) -> None:
    """``--eval-max-seconds`` (train, search): see ``TrainConfig.eval_max_seconds``."""
    p.add_argument("--eval-max-seconds", type=float, default=60.0,
                   help="longest audio the model sees at once in dev/test; longer clips are "
                   "scored as overlapping windows of this length, their logits averaged "
                   "(default: %(default)s)")
