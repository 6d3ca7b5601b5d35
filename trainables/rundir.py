"""Folders emotune writes into: an ownership marker, and an exclusive lock while a process writes.

emotune deletes and replaces files inside its output folders (checkpoint rotation, adapter and
export copies). It must never do that to a folder a user filled with something else, and two
processes must never write one folder at once (the second would silently overwrite the first).

* :func:`claim` makes ``folder`` emotune's: an empty or new folder gets a marker file
  (``.emotune``, JSON naming the kind of folder); a folder with our marker of the same kind is
  accepted; anything else (a non-empty folder without the marker, or a marker of another kind)
  is refused with :class:`FolderError`.
* :func:`exclusive` holds an exclusive, non-blocking ``flock`` on ``folder/.emotune.lock`` for
  a block; a second process gets :class:`FolderBusyError` naming the holder's pid. The lock is
  re-entrant within one process (a trial claims its folder, then ``train`` locks it again) and
  the kernel releases it when the holder dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from trainables.untrusted import read_json_object

log = logging.getLogger(__name__)

MARKER = ".emotune"
LOCK = ".emotune.lock"
_MARKER_MAX_BYTES = 4096
# Files emotune keeps in a folder that do not count as content when deciding "empty".
_BOOKKEEPING = frozenset({MARKER, LOCK})


class FolderError(ValueError):
    """A folder cannot be used as an emotune output folder; the message says why."""


class FolderBusyError(FolderError):
    """Another process holds the folder's lock."""


def read_marker(folder: Path) -> dict[str, str] | None:
    """The folder's marker (``{"owner": "emotune", "kind": ...}``), or None if it has none.

    Raises:
        FolderError: the marker is not a small regular file holding emotune's JSON.
    """
    path = Path(folder) / MARKER
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise FolderError(f"{path} is not a regular file; this folder was not made by emotune")
    try:
        marker = read_json_object(path, "emotune marker", _MARKER_MAX_BYTES)
    except (OSError, ValueError):
        marker = None
    if marker is None or marker.get("owner") != "emotune":
        raise FolderError(f"{path} is not an emotune marker; this folder was not made by emotune")
    return {k: str(v) for k, v in marker.items()}


def claim(folder: Path, kind: str) -> Path:
    """Makes ``folder`` an emotune folder of ``kind``, or checks that it already is one.

    Args:
        folder: the output folder (created with its parents when missing).
        kind: what the folder holds (``run``, ``folds``, ``search``, ``demo``...).

    Returns:
        The absolute folder.

    Raises:
        FolderError: ``folder`` is a file, holds files without emotune's marker, or is an
            emotune folder of another kind.
    """
    folder = Path(folder).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"{folder} exists and is not a folder")
    marker = read_marker(folder) if folder.is_dir() else None
    if marker is not None:
        if marker.get("kind") != kind:
            raise FolderError(
                f"{folder} is an emotune {marker.get('kind')!r} folder, not a {kind!r} folder; "
                "choose another folder"
            )
        return folder
    if folder.is_dir():
        content = sorted(p.name for p in folder.iterdir() if p.name not in _BOOKKEEPING)
        if content:
            shown = ", ".join(content[:5]) + (" ..." if len(content) > 5 else "")
            raise FolderError(
                f"{folder} is not empty ({shown}) and was not made by emotune (no {MARKER} "
                "file); emotune writes only into new or empty folders or its own, so nothing "
                "of yours is overwritten: choose another folder"
            )
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    text = json.dumps({"owner": "emotune", "kind": kind, "created": stamp})
    tmp = folder / f"{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / MARKER)
    return folder


_held: dict[str, tuple[IO[str], int]] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def exclusive(folder: Path, what: str = "folder") -> Iterator[None]:
    """Holds ``folder``'s lock for the block (re-entrant within this process).

    Args:
        folder: an existing folder.
        what: how to name the folder in the error (``--out``, ``search``...).

    Raises:
        FolderBusyError: another process holds the lock.
    """
    key = str(Path(folder).resolve())
    with _held_guard:
        if key in _held:
            handle, count = _held[key]
            _held[key] = (handle, count + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            _release(key)
        return
    handle = open(Path(key) / LOCK, "a+")  # noqa: SIM115 - held until the block ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read(64).strip() or "unknown"
        handle.close()
        raise FolderBusyError(
            f"{what} {key} is in use by another emotune process (pid {holder}); wait for it to "
            "finish or choose another folder"
        ) from None
    except OSError as exc:  # a file system without flock: warn, do not block the run
        log.warning("cannot lock %s (%s); make sure no other process writes it", key, exc)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    with _held_guard:
        _held[key] = (handle, 1)
    try:
        yield
    finally:
        _release(key)


def _release(key: str) -> None:
    with _held_guard:
        handle, count = _held[key]
        if count > 1:
            _held[key] = (handle, count - 1)
            return
        del _held[key]
    with contextlib.suppress(OSError):
        fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


@contextlib.contextmanager
def owned(folder: Path, kind: str, what: str = "folder") -> Iterator[Path]:
    """:func:`claim` ``folder`` as ``kind`` and hold its lock for the block; yields the folder.

    The lock is taken before the ownership check, so two processes racing on a new folder see
    each other (the second is refused as busy, not as "not empty").
    """
    folder = Path(folder).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"{what} {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder, what):
        yield claim(folder, kind)
