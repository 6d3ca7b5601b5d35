"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.data.synth import synthesize


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest path of a small synthetic corpus (4 speakers x 4 emotions x 6 takes = 96 files)."""
    return synthesize(tmp_path_factory.mktemp("synth_corpus"), speakers=4, per_class=6, seed=0)
