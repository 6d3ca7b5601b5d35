"""Length-bucketed batches: coverage, seeding, less padding, and the padding figure of a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainables.config import TrainConfig
from trainables.data.bucketing import BucketBatchSampler, padding_fraction
from trainables.train import train


def test_padding_fraction_hand_computed() -> None:
    # batches occupy 2*4 + 2*8 = 24 positions, 2+4+4+8 = 18 of them valid: 6/24 padding
    assert padding_fraction([2, 4, 4, 8], [[0, 1], [2, 3]]) == pytest.approx(0.25)
    assert padding_fraction([5, 5], [[0, 1]]) == 0.0
    assert padding_fraction([], []) == 0.0


def test_every_item_once_per_epoch_seeded_and_reshuffled() -> None:
    lengths = np.random.default_rng(0).integers(10, 500, size=103).tolist()
    sampler = BucketBatchSampler(lengths, batch_size=8, shuffle=True, seed=3, pool_batches=4)
    epochs = []
    for epoch in (1, 2, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(103))
        assert all(1 <= len(b) <= 8 for b in batches)
        epochs.append(batches)
    assert epochs[0] == epochs[2] and epochs[0] != epochs[1]


def test_bucketing_pads_less_than_random_batches() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(16_000, 96_000, size=400).tolist()
    bucketed = BucketBatchSampler(lengths, batch_size=16, shuffle=True, seed=0)
    order = rng.permutation(400).tolist()
    plain = [order[i : i + 16] for i in range(0, 400, 16)]
    assert bucketed.padding_fraction() < 0.05 < padding_fraction(lengths, plain)


def test_evaluation_batches_are_length_sorted() -> None:
    sampler = BucketBatchSampler([5, 1, 4, 2, 3], batch_size=2, shuffle=False)
    assert list(sampler) == [[1, 3], [4, 2], [0]] and len(sampler) == 3


def test_run_reports_padding_and_bucketing_cuts_it(synth_corpus: Path, tmp_path: Path) -> None:
    common = dict(
        manifest=synth_corpus, backbone="tiny-wavlm", method="frozen", epochs=1,
        batch_size=8, max_seconds=3.0, feature_cache_dir=tmp_path / "cache",
    )  # fmt: skip
    on = train(TrainConfig(**common), tmp_path / "on").history[0]["speed"]
    off = train(TrainConfig(**common, bucketing=False), tmp_path / "off").history[0]["speed"]
    assert on["padding_fraction"] < off["padding_fraction"]
    assert on["audio_seconds_per_second"] > 0 and off["train_seconds"] > 0
