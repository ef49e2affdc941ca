"""Anchor/neighbour pairs for methods with cross-sample positives (CsMl, BINGO).

:class:`NeighbourPairDataset` wraps any vislearn data set and returns, for sample ``i``,
``(anchor uint8, neighbour uint8, label)`` where the neighbour is sample ``partners[i]``. The
method fills ``partners`` each epoch, one member drawn uniformly from every sample's kNN bag
(:func:`draw_partners`). The table lives in shared memory and is updated in place, so data
loader workers (persistent ones included) see the new pairs at the next epoch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["NeighbourPairDataset", "draw_partners"]


def draw_partners(bags: Tensor, seed: int, epoch: int) -> Tensor:
    """One member per row of ``bags`` ``[N, k]`` drawn uniformly: ``partners[i] = bags[i, c_i]``.

    Deterministic in ``(seed, epoch)`` (independent of ranks and workers), so every rank and a
    resumed run draw the same pairs.
    """
    if bags.dim() != 2 or bags.shape[1] < 1:
        raise ValueError(f"bags must have shape [N, k>=1], got {tuple(bags.shape)}")
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1))
    cols = torch.randint(0, bags.shape[1], (bags.shape[0], 1), generator=g)
    return bags.cpu().gather(1, cols).squeeze(1)


class NeighbourPairDataset(Dataset):
    """``(anchor, neighbour, label)`` triples over a base data set of ``(image, label)``.

    Until :meth:`set_partners` is called every sample is its own neighbour.
    """

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self.partners = torch.arange(len(base), dtype=torch.long).share_memory_()

    def set_partners(self, partners: Tensor) -> None:
        """Set the neighbour index of every sample (in place, visible to loader workers)."""
        partners = torch.as_tensor(partners, dtype=torch.long).cpu()
        n = len(self.partners)
        if partners.shape != (n,):
            raise ValueError(f"partners must have shape [{n}], got {tuple(partners.shape)}")
        if n and (int(partners.min()) < 0 or int(partners.max()) >= n):
            raise ValueError(f"partner indices must lie in [0, {n})")
        self.partners.copy_(partners)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        anchor, label = self.base[index]
        neighbour, _ = self.base[int(self.partners[index])]
        return anchor, neighbour, label
