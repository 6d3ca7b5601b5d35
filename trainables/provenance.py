"""Start-up check of a trial process: emotune's three packages come from one installed project.

Ray puts the driver's working directory on its workers' ``sys.path`` (ahead of site-packages),
so a user folder named ``search/``, ``spaces/`` or ``trainables/`` (a natural name for a folder
of space YAMLs) would be imported by trial workers instead of emotune's own package: its code
would run inside the trial, or a half-shadowed install would mix two versions of emotune. The
search starts Ray so that this does not happen (see ``search.ray_start``); this check is the
trial's own guard, whoever started Ray. It runs before any training and refuses with a message
that names the folders, instead of training with code nobody chose.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

DISTRIBUTION = "emotune"
# Each package and a few of the modules it must hold: a folder that merely shares the name
# (an empty ``spaces/`` of YAMLs, an old copy of one package) fails on these.
PACKAGES: dict[str, tuple[str, ...]] = {
    "search": ("settings.py", "tune.py", "records.py", "storage.py"),
    "spaces": ("space.py", "sampling.py", "params.py", "section.py"),
    "trainables": ("ray_entry.py", "train.py", "config.py", "provenance.py"),
}


class ProjectError(ValueError):
    """emotune's packages do not resolve to one installed project; the message says where."""


def package_folder(name: str) -> Path:
    """The folder ``import name`` gives in this process (imported already or not).

    Raises:
        ProjectError: ``name`` cannot be found, or is a namespace package (a folder without
            ``__init__.py`` that shadows the real package).
    """
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None) if module is not None else None
    if spec is None:
        spec = importlib.util.find_spec(name)
    if spec is None:
        raise ProjectError(f"package {name!r} cannot be found; is emotune installed?")
    locations = list(spec.submodule_search_locations or [])
    if spec.origin is None or not spec.origin.endswith("__init__.py") or len(locations) != 1:
        shown = ", ".join(locations) or "?"
        raise ProjectError(
            f"package {name!r} resolves to a folder without __init__.py ({shown}); a folder of "
            f"that name on sys.path (often the working directory) hides emotune's {name!r}"
        )
    return Path(spec.origin).resolve().parent


def installed_root() -> Path | None:
    """The folder holding the installed project's packages, or None when it is not installed.

    An editable install (``pip install -e``) points at its source folder; a regular install
    puts the packages in site-packages.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    direct = dist.read_text("direct_url.json")
    if direct:
        info = json.loads(direct)
        url = urlparse(str(info.get("url", "")))
        if info.get("dir_info", {}).get("editable") and url.scheme == "file":
            return Path(unquote(url.path)).resolve()
    marker = Path(str(dist.locate_file("trainables/__init__.py")))
    return marker.resolve().parent.parent if marker.is_file() else None


def check_project() -> Path:
    """Checks that ``search``, ``spaces`` and ``trainables`` come from one installed project.

    Each must be a regular package holding its expected modules, all three in the same parent
    folder, and that folder must be the installed project's (when emotune is installed).

    Returns:
        The project folder (the parent of the three packages).

    Raises:
        ProjectError: naming each package's folder and what to do.
    """
    folders = {name: package_folder(name) for name in PACKAGES}
    parents = {folder.parent for folder in folders.values()}
    where = "; ".join(f"{name} from {folder}" for name, folder in folders.items())
    hint = (
        "a folder named like one of emotune's packages is on sys.path ahead of the installed "
        "project (Ray adds the driver's working directory): rename that folder or start the "
        "search from another directory"
    )
    if len(parents) != 1:
        raise ProjectError(f"emotune's packages come from different folders ({where}); {hint}")
    for name, folder in folders.items():
        missing = [m for m in PACKAGES[name] if not (folder / m).is_file()]
        if missing:
            raise ProjectError(
                f"{folder} is not emotune's {name!r} package (no {', '.join(missing)}); {hint}"
            )
    root = parents.pop()
    installed = installed_root()
    if installed is not None and installed != root:
        raise ProjectError(
            f"emotune is installed from {installed} but this process imports it from {root} "
            f"({where}); {hint}, or install the copy you mean to run (pip install -e {root})"
        )
    return root
