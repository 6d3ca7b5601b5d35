"""Length-bucketed batching: fewer padded frames per batch, same randomness from a seed.

Training: each epoch shuffles all items with ``(seed, epoch)``, cuts the order into pools of
``pool_batches * batch_size`` items, sorts each pool by length, cuts it into batches and shuffles
the order of all batches. Items of similar length end up together (little padding) while which
items meet still changes every epoch. Evaluation: items sorted by length, in fixed batches.

``padding_fraction(lengths, batches)`` = padded positions / all positions of the batches, where a
batch of ``n`` items whose longest has ``L`` positions occupies ``n * L``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Fraction of zero padding in ``batches`` (lists of item indices) of items of ``lengths``."""
    total = valid = 0
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        total += len(sizes) * max(sizes, default=0)
        valid += sum(sizes)
    return 0.0 if total == 0 else 1.0 - valid / total


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of items of similar length (see the module docstring).

    Args:
        lengths: length of each item (samples or frames, after cropping).
        batch_size: items per batch (the last batch of a pool may be smaller).
        shuffle: training order (seeded per epoch) or fixed, length-sorted evaluation batches.
        seed: non-negative seed; epoch ``e`` uses ``(seed, e)``.
        pool_batches: batches per sorted pool; larger pools pad less but mix less.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        pool_batches: int = 50,
    ) -> None:
        if batch_size < 1 or pool_batches < 1:
            raise ValueError("batch_size and pool_batches must be >= 1")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = pool_batches * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order :meth:`__iter__` yields."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """The current epoch's batches, as lists of item indices."""
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(n)
        out: list[list[int]] = []
        for start in range(0, n, self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            out += [
                pool[i : i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size)
            ]
        return [out[i] for i in rng.permutation(len(out))]

    def padding_fraction(self) -> float:
        """Padding share of the current epoch's batches."""
        return padding_fraction(self.lengths.tolist(), self.batches())

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        n = len(self.lengths)
        if not self.shuffle:
            return -(-n // self.batch_size)
        full, rest = divmod(n, self.pool)
        return full * -(-self.pool // self.batch_size) + -(-rest // self.batch_size)
