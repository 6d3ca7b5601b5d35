"""Bounded reads of files a user hands over (model folders, adapter folders).

A model or adapter folder may come from anywhere, so its small files are read as untrusted input:
only regular files (a symlink to one is fine: Hugging Face cache snapshots are symlinks into
``blobs/``), at most a fixed number of bytes, and only the JSON shape expected. A FIFO or a
device is refused before it is read (reading one would block or never end).
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAX_JSON_BYTES = 1 << 20  # 1 MiB: real config files are a few KiB
MAX_HEADER_BYTES = 16 << 20  # a safetensors header lists names and shapes only
# safetensors dtype -> bytes per element (the formats a trained tensor may have)
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def _open_regular(path: Path, what: str) -> tuple[BinaryIO, int]:
    """Opens ``path`` for reading if it is (or links to) a regular file; returns it and its size.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not a regular file, or it cannot be opened.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file ({what})") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot be opened ({what}): {err.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ValueError(f"{path}: not a regular file ({what}); refusing to read it")
    return os.fdopen(fd, "rb"), info.st_size


def read_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    """The content of a regular file of at most ``max_bytes`` bytes.

    Args:
        path: the file (a symlink to a regular file is followed).
        what: what the file is, for error messages.
        max_bytes: size limit.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not a regular file, or larger than ``max_bytes``.
    """
    f, size = _open_regular(Path(path), what)
    with f:
        raw = f.read(max_bytes + 1)
    if size > max_bytes or len(raw) > max_bytes:
        raise ValueError(
            f"{path}: {max(size, len(raw)):,} bytes, over the {max_bytes:,}-byte limit ({what})"
        )
    return raw


def read_json_object(path: Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON object read from a small regular file (see :func:`read_bounded`).

    ``NaN`` and ``Infinity`` are parsed (JSON writers emit them) so that the caller can name the
    field that holds one; check floats with :func:`is_finite_number`.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not a regular file, too large, not JSON, or not a JSON object.
    """
    raw = read_bounded(path, what, max_bytes)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:  # RecursionError: deeply nested arrays
        raise ValueError(f"{path}: not valid JSON ({what}): {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must hold a JSON object ({what}), got {type(data).__name__}")
    return data


def is_finite_number(value: Any) -> bool:
    """True for an int or a finite float (bool excluded: JSON ``true`` is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


@dataclass(frozen=True)
class TensorInfo:
    """One entry of a safetensors header."""

    dtype: str
    shape: tuple[int, ...]


def safetensors_header(
    path: Path, max_header_bytes: int = MAX_HEADER_BYTES
) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of a safetensors file, read from its header only.

    The header is checked for consistency with the file: every tensor's byte range must match
    its dtype and shape and lie inside the file, so the shapes it declares are the ones a
    loader would really allocate.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not a regular file, or not a consistent safetensors file (the message says
            which tensor and why).
    """
    f, size = _open_regular(Path(path), "safetensors weights")
    with f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: {size} bytes, too short for a safetensors file")
        length = int.from_bytes(prefix, "little")
        if length > max_header_bytes or 8 + length > size:
            raise ValueError(
                f"{path}: header length {length:,} is past the file's end or over the "
                f"{max_header_bytes:,}-byte limit; not a safetensors file"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path}: header is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header must be a JSON object")
    header.pop("__metadata__", None)
    data_bytes = size - 8 - length
    return {name: _tensor_info(path, name, entry, data_bytes) for name, entry in header.items()}


def _tensor_info(path: Path, name: str, entry: Any, data_bytes: int) -> TensorInfo:
    """Validates one header entry against the data section's size."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: header entry must be an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"{where}: dtype {dtype!r}; expected one of {sorted(_DTYPE_BYTES)}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ValueError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise ValueError(f"{where}: data_offsets must be [begin, end], got {offsets!r}")
    begin, end = offsets
    numel = math.prod(shape)
    if not 0 <= begin <= end <= data_bytes or end - begin != numel * _DTYPE_BYTES[dtype]:
        raise ValueError(
            f"{where}: shape {tuple(shape)} ({dtype}) needs {numel * _DTYPE_BYTES[dtype]:,} "
            f"bytes but data_offsets are {offsets} in a {data_bytes:,}-byte data section"
        )
    return TensorInfo(dtype, tuple(shape))
