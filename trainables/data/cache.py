"""On-disk cache of frozen front-end features, shared by epochs, trials and nodes.

A cache entry holds the front-end output (CNN features or log-mel frames) of every clip of one
split, computed once. Its key is a SHA-256 over everything the features depend on (see
:func:`cache_key`): the front end's weights and settings (:meth:`Backbone.frontend_digest`), the
waveform crop the front end sees, the audio decoder, the storage dtype and the content hash of
every audio file. Any change of weights, audio or preprocessing gives a new key, so an entry is
never stale; old entries are simply not read again.

Layout of ``<root>/<key>/``::

    index.json              count, dim, dtype, per-item frames / path / duration, skipped files
    shard-00000.safetensors features (total_frames, dim) and offsets (count + 1,) of its items
    ...

Shards are standard safetensors files; :class:`FeatureTable` memory-maps their data regions, so
an entry costs page cache, not process memory, and concurrent readers share it.

Writers build an entry in a private temporary folder and rename it into place (atomic on POSIX);
an exclusive ``flock`` on ``<root>/<key>.lock`` makes concurrent trials on a node wait for the
first builder instead of repeating its work. Where ``flock`` is unavailable (some network file
systems) two writers may both build; the loser of the rename discards its copy.

A cache may have a *mirror*: a URI (``s3://``, ``gs://``, ``file://``) holding a shared copy,
for clusters whose nodes share no file system. A node that misses an entry downloads it from the
mirror instead of building it, and uploads every entry it builds (shards first, ``index.json``
last, so a reader never takes a half-uploaded entry for a whole one). A mirror that cannot be
reached costs a warning and a local build, never the run.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from trainables.data.audio import AudioError, open_audio_file

log = logging.getLogger(__name__)

CACHE_FORMAT = 3  # bump on any change of the layout or of index.json
INDEX_FILE = "index.json"
DIGEST_MEMO = "file-digests.json"
ENV_CACHE_DIR = "EMOTUNE_FEATURE_CACHE"
SHARD_BYTES = 256 * 2**20
_NP_DTYPES = {"F16": np.float16, "F32": np.float32, "I64": np.int64}
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def default_cache_dir() -> Path:
    """``$EMOTUNE_FEATURE_CACHE`` if set, else ``~/.cache/emotune/features``."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emotune" / "features"


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``parts`` plus the cache format version."""
    text = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def file_digests(paths: Iterable[Path], root: Path) -> list[str]:
    """Content hashes (BLAKE2b-128) of audio files, memoised by ``(path, size, mtime_ns)`` under
    ``root``.

    A file whose size and modification time are unchanged is not read again, so later trials
    only ``stat`` the corpus. Only regular files with an audio header are read
    (:func:`open_audio_file`: a FIFO or ``/dev/zero`` would never end, ``/etc/passwd`` is not
    audio); anything else gets ``invalid:<path>``, and the decoder reports why it is skipped.
    """
    root.mkdir(parents=True, exist_ok=True)
    memo_path = root / DIGEST_MEMO
    try:
        memo: dict[str, list] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    out, changed = [], False
    for path in paths:
        name = _digest_name(path)
        try:
            st = os.stat(name)
        except (OSError, ValueError):
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            out.append(f"invalid:{name}")
            continue
        entry = memo.get(name)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            out.append(entry[2])
            continue
        try:
            with open_audio_file(name) as f:
                st = os.fstat(f.fileno())
                h = hashlib.blake2b(digest_size=16)
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except (AudioError, OSError):
            out.append(f"invalid:{name}")
            continue
        memo[name] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
        out.append(h.hexdigest())
        changed = True
    if changed:
        # Drop entries of files that are gone (e.g. temporary corpora) so the memo stays small.
        memo = {k: v for k, v in memo.items() if os.path.exists(k)}
        _atomic_write_text(memo_path, json.dumps(memo))
    return out


def _digest_name(path: Path | str) -> str:
    """The memo key of ``path``: absolute, symlinks resolved (a loop keeps the path as given)."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return str(Path(path).absolute())


def _safetensors_arrays(path: Path) -> dict[str, np.ndarray]:
    """Memory-maps every tensor of a safetensors file (format: u64 header size, JSON, data)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    base = 8 + size
    arrays = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        begin, end = spec["data_offsets"]
        dtype = np.dtype(_NP_DTYPES[spec["dtype"]])
        shape = tuple(spec["shape"])
        if end == begin:
            arrays[name] = np.zeros(shape, dtype=dtype)
            continue
        arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=base + begin, shape=shape)
    return arrays


class FeatureTable:
    """Read-only, memory-mapped features of one cache entry.

    Item ``i`` is a ``(frames_i, dim)`` matrix; :meth:`features` returns any row range of it as
    float32 without reading the rest of the shard.

    Attributes:
        folder: the entry's folder.
        meta: the parsed ``index.json``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.meta: dict[str, Any] = json.loads((self.folder / INDEX_FILE).read_text())
        self._features: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        self._first: list[int] = []
        first = 0
        for shard in self.meta["shards"]:
            arrays = _safetensors_arrays(self.folder / shard["file"])
            self._features.append(arrays["features"])
            self._offsets.append(np.asarray(arrays["offsets"], dtype=np.int64))
            self._first.append(first)
            first += int(shard["count"])

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def frames(self) -> list[int]:
        """Frame count of every item."""
        return list(self.meta["frames"])

    def features(self, index: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of item ``index`` as a float32 ``(frames, dim)`` tensor."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} cached items")
        s = bisect.bisect_right(self._first, index) - 1
        j = index - self._first[s]
        lo, hi = int(self._offsets[s][j]), int(self._offsets[s][j + 1])
        stop = hi - lo if stop is None else min(stop, hi - lo)
        rows = self._features[s][lo + start : lo + stop]
        return torch.from_numpy(np.array(rows, dtype=np.float32))


def _write_shards(
    folder: Path, items: Iterator[torch.Tensor], dtype: torch.dtype
) -> tuple[list[dict[str, Any]], list[int], int]:
    """Writes items into shards of about :data:`SHARD_BYTES`; returns (shards, frames, dim)."""
    shards: list[dict[str, Any]] = []
    frames: list[int] = []
    pending: list[torch.Tensor] = []
    pending_bytes, dim = 0, -1

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        lengths = torch.tensor([0] + [t.shape[0] for t in pending], dtype=torch.int64)
        name = f"shard-{len(shards):05d}.safetensors"
        tensors = {"features": torch.cat(pending).contiguous(), "offsets": lengths.cumsum(0)}
        save_file(tensors, str(folder / name))
        shards.append({"file": name, "count": len(pending)})
        pending, pending_bytes = [], 0

    for feats in items:  # (frames, dim)
        if dim < 0:
            dim = int(feats.shape[1])
        if feats.ndim != 2 or feats.shape[1] != dim:
            raise ValueError(f"cache items must be (frames, {dim}), got {tuple(feats.shape)}")
        t = feats.detach().to("cpu", dtype)
        pending.append(t)
        frames.append(int(t.shape[0]))
        pending_bytes += t.numel() * t.element_size()
        if pending_bytes >= SHARD_BYTES:
            flush()
    flush()
    return shards, frames, dim


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``lock_path`` (a no-op where locks are unsupported)."""
    with open(lock_path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. a network file system without lock support
            log.warning("no file lock on %s (%s); relying on atomic rename", lock_path, exc)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_UN)


class FeatureCache:
    """A folder of content-addressed feature tables (see the module docstring).

    Args:
        root: the cache folder; created on first use.
        mirror: optional URI of a shared copy (see the module docstring).
    """

    def __init__(self, root: Path, mirror: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.mirror = mirror.rstrip("/") if mirror else None

    def path(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> FeatureTable | None:
        """The complete entry of ``key``, or None."""
        folder = self.path(key)
        return FeatureTable(folder) if (folder / INDEX_FILE).is_file() else None

    def get_or_build(
        self,
        key: str,
        items: Iterable[torch.Tensor],
        meta: dict[str, Any] | Callable[[], dict[str, Any]],
        dtype: str = "float32",
    ) -> FeatureTable:
        """Returns the entry of ``key``, building it from ``items`` if nobody has yet.

        Args:
            key: from :func:`cache_key`.
            items: the ``(frames, dim)`` features of each item, in order; consumed only when
                this call builds the entry, under the lock (pass a generator, so that neither
                decoding nor the front end runs on a hit or while another trial builds).
            meta: JSON-able fields stored in ``index.json`` (durations, skipped files...), or a
                function returning them, called after ``items`` is exhausted.
            dtype: storage dtype, ``float32`` or ``float16``.
        """
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"cache dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
        table = self.lookup(key)
        if table is not None:
            self._push(key)  # built here before the mirror was set: share it now
            return table
        self.root.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.root / f"{key}.lock"):
            table = self.lookup(key) or self._fetch(key)  # another trial or node built it
            if table is not None:
                return table
            table = self._build(key, iter(items), meta, dtype)
            self._push(key)
            return table

    def _fetch(self, key: str) -> FeatureTable | None:
        """Downloads entry ``key`` from the mirror; None if it has none (or is unreachable)."""
        if self.mirror is None:
            return None
        import pyarrow.fs as pafs

        tmp = self.root / f".{key}.fetch-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            fs, base = pafs.FileSystem.from_uri(f"{self.mirror}/{key}")
            if fs.get_file_info(f"{base}/{INDEX_FILE}").type != pafs.FileType.File:
                return None
            tmp.mkdir(parents=True)
            pafs.copy_files(
                base, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
            )
            os.rename(tmp, self.path(key))
        except OSError as exc:
            log.warning("feature cache: could not fetch %s from %s (%s)", key, self.mirror, exc)
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("feature cache: fetched %s from %s", key, self.mirror)
        return self.lookup(key)

    def _push(self, key: str) -> None:
        """Uploads entry ``key`` to the mirror, ``index.json`` last (no-op if it has it)."""
        if self.mirror is None:
            return
        import pyarrow.fs as pafs

        local = pafs.LocalFileSystem()
        folder = self.path(key)
        try:
            fs, base = pafs.FileSystem.from_uri(f"{self.mirror}/{key}")
            if fs.get_file_info(f"{base}/{INDEX_FILE}").type == pafs.FileType.File:
                return  # another node uploaded it first
            fs.create_dir(base, recursive=True)
            files = sorted(folder.iterdir(), key=lambda f: f.name == INDEX_FILE)
            for f in files:
                pafs.copy_files(
                    str(f), f"{base}/{f.name}", source_filesystem=local, destination_filesystem=fs
                )
        except OSError as exc:
            log.warning("feature cache: could not upload %s to %s (%s)", key, self.mirror, exc)
            return
        log.info("feature cache: uploaded %s to %s", key, self.mirror)

    def _build(
        self,
        key: str,
        items: Iterator[torch.Tensor],
        meta: dict[str, Any] | Callable[[], dict[str, Any]],
        dtype: str,
    ) -> FeatureTable:
        final = self.path(key)
        tmp = self.root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            shards, frames, dim = _write_shards(tmp, items, STORAGE_DTYPES[dtype])
            extra = meta() if callable(meta) else meta
            index = {
                "format": CACHE_FORMAT,
                "key": key,
                "dtype": dtype,
                "dim": dim,
                "count": len(frames),
                "frames": frames,
                "shards": shards,
                **extra,
            }
            (tmp / INDEX_FILE).write_text(json.dumps(index))
            try:
                os.rename(tmp, final)
                log.info("feature cache: wrote %d item(s) to %s", len(frames), final)
            except OSError:
                if not (final / INDEX_FILE).is_file():
                    raise
                log.info("feature cache: %s was built concurrently; using that copy", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return FeatureTable(final)
