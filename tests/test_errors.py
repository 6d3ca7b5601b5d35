"""Every exception emotune defines survives pickling with its message (Ray sends a trial's
exception to the driver pickled; a class that cannot be rebuilt hid its message behind a
secondary TypeError)."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _project_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in ("trainables", "spaces", "search"):
        module = importlib.import_module(package)
        names = [package] + [
            f"{package}.{m.name}"
            for m in pkgutil.walk_packages(module.__path__, prefix="")
            if not m.name.startswith("_")
        ]
        for name in names:
            mod = importlib.import_module(name)
            for obj in vars(mod).values():
                if (
                    inspect.isclass(obj)
                    and issubclass(obj, BaseException)
                    and obj.__module__.split(".")[0] in ("trainables", "spaces", "search")
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


EXCEPTIONS = _project_exceptions()


def test_the_known_exceptions_are_found() -> None:
    names = {cls.__name__ for cls in EXCEPTIONS}
    assert {"ManifestError", "AudioError", "FolderBusyError", "SpaceError"} <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: c.__name__)
def test_exception_pickles_with_its_message(cls: type[BaseException]) -> None:
    params = [
        p for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.default is p.empty
    ]  # fmt: skip
    args = [f"/data/{p.name}.wav" if p.name == "path" else f"the {p.name}" for p in params]
    err = cls(*args) if params else cls("the message")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == str(err)
    assert vars(back) == vars(err)  # fields such as .path and .reason survive too
