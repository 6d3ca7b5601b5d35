"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.data.synth import synthesize


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory: pytest.TempPathFactory):
    """Feature caches and search mirrors go to a temporary folder, not the user's home.

    Set before any test starts Ray, so trial workers inherit it too.
    """
    root = tmp_path_factory.mktemp("caches")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOTUNE_FEATURE_CACHE", str(root / "features"))
        mp.setenv("EMOTUNE_CACHE", str(root / "emotune"))
        yield root


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest path of a small synthetic corpus (4 speakers x 4 emotions x 6 takes = 96 files)."""
    return synthesize(tmp_path_factory.mktemp("synth_corpus"), speakers=4, per_class=6, seed=0)
