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


# The search's own MLflow store (``--tracking-uri`` not given) sits beside its datasets in the
# driver's folder; with a bucket it is mirrored to ``<storage>/<name>/_tracking``.
TRACKING_ITEMS = ("mlflow.db", "mlartifacts")
_TRACKING = "_tracking"


def upload_tracking(root: Path, storage: str, name: str) -> None:
    """Mirrors the search's own MLflow store (``mlflow.db``, ``mlartifacts/``) to ``storage``."""
    fs, path = pafs.FileSystem.from_uri(f"{storage.rstrip('/')}/{name}/{_TRACKING}")
    fs.create_dir(path, recursive=True)
    for item in TRACKING_ITEMS:
        if (root / item).exists():
            pafs.copy_files(
                str(root / item),
                f"{path}/{item}",
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=fs,
            )


def download_tracking(storage: str, name: str, root: Path) -> None:
    """Restores the search's MLflow store from ``storage`` where ``root`` has none (a local
    store is never older than the mirror, which is uploaded from it)."""
    fs, path = pafs.FileSystem.from_uri(f"{storage.rstrip('/')}/{name}/{_TRACKING}")
    root.mkdir(parents=True, exist_ok=True)
    for item in TRACKING_ITEMS:
        source = f"{path}/{item}"
        if (root / item).exists() or fs.get_file_info(source).type == pafs.FileType.NotFound:
            continue
        pafs.copy_files(
            source,
            str(root / item),
            source_filesystem=fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )


def remote_exists(storage: str, name: str) -> bool:
    """Whether ``storage`` holds a finished dataset of search ``name`` (its driver files), as
    ``<dataset>/search.json`` in the local folder says for a folder storage."""
    fs, path = pafs.FileSystem.from_uri(f"{storage.rstrip('/')}/{name}")
    found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return any(
        info.type == pafs.FileType.Directory
        and fs.get_file_info(f"{info.path}/driver").type != pafs.FileType.NotFound
        for info in found
    )


def search_exists(storage: str | Path, name: str, root: Path) -> bool:
    """Whether search ``name`` has a finished dataset in its local folder ``root`` or (URI
    storage) in the bucket."""
    if any(root.glob("*/search.json")):
        return True
    return is_uri(storage) and remote_exists(str(storage), name)


def download_search(storage: str, name: str, local: Path) -> list[str]:
    """Restores search ``name`` from ``storage``: each dataset's driver files and the MLflow
    store (for a search another machine ran, or whose local mirror was removed).

    ``local`` then holds each ``<dataset>/search.json`` and the fetched adapters at the paths
    search.json names when ``local`` is the same mirror folder as on the driver.

    Returns:
        The datasets restored.

    Raises:
        FileNotFoundError: the bucket holds no search ``name``.
    """
    base = f"{storage.rstrip('/')}/{name}"
    fs, path = pafs.FileSystem.from_uri(base)
    found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    datasets = sorted(
        info.base_name
        for info in found
        if info.type == pafs.FileType.Directory
        and info.base_name != _TRACKING
        and download(storage, name, info.base_name, local / info.base_name)
    )
    if not datasets:
        raise FileNotFoundError(f"no search {name!r} in {storage} (nothing under {base}/*/driver)")
    download_tracking(storage, name, local)
    return datasets


def pull_dataset(storage: str | Path, name: str, dataset: str, root: Path, tracking: bool) -> None:
    """Before a resumed dataset: restores its driver files into ``root/<dataset>`` and, with
    ``tracking`` (the search's own MLflow store), that store into ``root``. URI storage only: a
    folder storage is its own local root."""
    if not is_uri(storage):
        return
    download(str(storage), name, dataset, root / dataset)
    if tracking:
        download_tracking(str(storage), name, root)


def push_dataset(root: Path, storage: str | Path, name: str, dataset: str, tracking: bool) -> None:
    """After a dataset: mirrors ``root/<dataset>`` and, with ``tracking``, the search's own
    MLflow store to ``storage``. URI storage only."""
    if not is_uri(storage):
        return
    upload(root / dataset, str(storage), name, dataset)
    if tracking:
        upload_tracking(root, str(storage), name)
