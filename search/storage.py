"""Where a search keeps its state: a local folder, a shared (NFS) folder, or a bucket URI.

Ray Tune writes checkpoints and results straight to ``--storage`` (``pyarrow.fs`` handles
``s3://`` and ``gs://``). The driver's own files (Optuna's SQLite study, the default MLflow
SQLite store, search.json, the Pareto files, fetched adapters) live in a local folder: the
storage folder itself when it is a path, or a local mirror that is uploaded after each dataset
and downloaded again by ``--resume`` when it is a URI.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow.fs as pafs

log = logging.getLogger(__name__)

# Filesystems that every node of a cluster can see (by their /proc/mounts type).
SHARED_FS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "lustre",
    "gpfs",
    "ceph",
    "beegfs",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.s3fs",
    "fuse.gcsfuse",
    "fuse.juicefs",
    "fuse.sshfs",
    "9p",
    "virtiofs",
}


def is_uri(storage: str | Path) -> bool:
    return "://" in str(storage)


def mount_type(path: Path, mounts: str | None = None) -> str:
    """Filesystem type of the mount holding ``path`` (longest matching mount point)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    path = path.resolve()
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = path == Path(point) or Path(point) in path.parents
        if inside and len(point) > len(best):
            best, kind = point, parts[2]
    return kind


def check_storage_for_cluster(storage: str | Path, nodes: int, shared: bool) -> None:
    """Refuses a node-local storage folder on a multi-node cluster, before any trial starts.

    Raises:
        ValueError: more than one node, ``storage`` a plain local folder that is not on a shared
            filesystem, and the user did not declare it shared.
    """
    if nodes <= 1 or is_uri(storage) or shared:
        return
    kind = mount_type(Path(storage))
    if kind in SHARED_FS:
        return
    raise ValueError(
        f"--storage {storage} is a local folder ({kind} filesystem) but the Ray cluster has "
        f"{nodes} nodes: trials on other nodes could not write checkpoints there. Use a bucket "
        "(s3://..., gs://...) or a folder on NFS mounted on every node (pass --shared-storage "
        "if it is shared but not detected)."
    )


def local_root(storage: str | Path, name: str, cache: Path | None = None) -> Path:
    """The driver's local folder of search ``name``."""
    if not is_uri(storage):
        return (Path(storage) / name).resolve()
    base = cache or Path(os.environ.get("EMOTUNE_CACHE", "~/.cache/emotune")).expanduser()
    return (base / "searches" / name).resolve()


def ray_storage(storage: str | Path, name: str, dataset: str) -> str:
    """Where Ray Tune keeps this dataset's experiment (checkpoints, results)."""
    if is_uri(storage):
        return f"{str(storage).rstrip('/')}/{name}/{dataset}/ray"
    return str((Path(storage) / name / dataset / "ray").resolve())


def feature_cache_location(storage: str | Path) -> dict[str, str]:
    """``TrainConfig`` fields that put trials' feature cache beside the search's storage.

    A folder gets ``<storage>/feature-cache``, shared by every search on it (and by every node
    when the folder is on NFS). A URI gets it as the cache's mirror: each node keeps a local
    copy (``$EMOTUNE_FEATURE_CACHE``) and fetches what another node built.
    """
    if is_uri(storage):
        return {"feature_cache_mirror": f"{str(storage).rstrip('/')}/feature-cache"}
    return {"feature_cache_dir": str((Path(storage) / "feature-cache").resolve())}


def upload(local: Path, storage: str, name: str, dataset: str) -> None:
    """Mirrors the driver's files of one dataset to ``storage`` (URI storage only)."""
    target = f"{storage.rstrip('/')}/{name}/{dataset}/driver"
    fs, path = pafs.FileSystem.from_uri(target)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(
        str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )
    log.info("uploaded %s to %s", local, target)


def download(storage: str, name: str, dataset: str, local: Path) -> bool:
    """Restores the driver's files of one dataset from ``storage``; False if there are none."""
    source = f"{storage.rstrip('/')}/{name}/{dataset}/driver"
    fs, path = pafs.FileSystem.from_uri(source)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return False
    local.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
    )
    return True
