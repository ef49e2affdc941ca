"""Samplers for segmentation training: :class:`EpochSliceSampler`."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

from vislearn.core.errors import VislearnError

__all__ = ["EpochSliceSampler"]


class EpochSliceSampler(Sampler[int]):
    """Fixed-length epochs over a data set of any size, every item equally often.

    An endless stream of seeded permutations of ``range(n)`` (one per pass) is cut into
    epochs of ``per_rank * world`` indices; epoch ``e`` (set by Lightning through
    :meth:`set_epoch`) serves slice ``e`` and rank ``r`` every ``world``-th index of it from
    ``r``. Small subsets repeat within an epoch, large sets span several epochs, and a resumed
    run continues the same stream.
    """

    def __init__(self, n: int, per_rank: int, seed: int = 0, rank: int = 0, world: int = 1):
        if n < 1 or per_rank < 1:
            raise VislearnError(f"need n >= 1 and per_rank >= 1, got {n}, {per_rank}")
        self.n, self.per_rank, self.seed = int(n), int(per_rank), int(seed)
        self.rank, self.world, self.epoch = int(rank), int(world), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        size = self.per_rank * self.world
        start = self.epoch * size
        first, last = start // self.n, (start + size - 1) // self.n
        stream = np.concatenate(
            [
                np.random.default_rng([self.seed, k]).permutation(self.n)
                for k in range(first, last + 1)
            ]
        )
        offset = start - first * self.n
        return iter(stream[offset : offset + size][self.rank :: self.world].tolist())
