"""A queue of instance subspaces (KSCL negatives), stored in a :class:`MemoryQueue`.

Each entry is a basis ``V ∈ R^{L×D}`` whose rows have norm ≤ 1 (:func:`subspace_basis`).
``MemoryQueue`` stores unit rows (it normalises what it is given), so each basis row ``v`` is
stored *lifted* as the unit row ``[v, sqrt(1 − ‖v‖²)]`` of dimension ``D + 1``: normalisation
leaves it unchanged and the first ``D`` coordinates give ``v`` back exactly. An entry occupies
``L`` consecutive rows; every enqueue writes whole entries, so entries never straddle the ring's
write pointer, and the ring, its distributed gather (rank order) and its checkpointing are
``MemoryQueue``'s.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vislearn.engine.queue import MemoryQueue

__all__ = ["SubspaceQueue"]


class SubspaceQueue(nn.Module):
    """FIFO of ``size`` subspace bases ``[L, D]``.

    The initial entries are random (like ``MemoryQueue``'s random unit keys): rows of a random
    unit vector in ``R^{D+1}`` cut to ``D`` coordinates.
    """

    def __init__(self, size: int, rank: int, dim: int) -> None:
        super().__init__()
        if size <= 0 or rank <= 0 or dim <= 0:
            raise ValueError(f"size, rank and dim must be positive, got {size}, {rank}, {dim}")
        self.size, self.rank, self.dim = int(size), int(rank), int(dim)
        self.rows = MemoryQueue(self.size * self.rank, self.dim + 1)

    @torch.no_grad()
    def enqueue(self, bases: Tensor) -> None:
        """Append ``bases`` ``[B, L, D]`` (rows of norm ≤ 1; detached)."""
        if bases.dim() != 3 or tuple(bases.shape[1:]) != (self.rank, self.dim):
            raise ValueError(
                f"bases must have shape [B, {self.rank}, {self.dim}], got {tuple(bases.shape)}"
            )
        flat = bases.detach().reshape(-1, self.dim).to(self.rows.queue.dtype)
        lift = (1.0 - flat.pow(2).sum(1, keepdim=True)).clamp_min(0.0).sqrt()
        self.rows.enqueue(torch.cat([flat, lift], dim=1))

    @property
    def bases(self) -> Tensor:
        """A detached copy ``[size, L, D]`` of the stored bases."""
        return self.rows.negatives[:, : self.dim].reshape(self.size, self.rank, self.dim)

    def extra_repr(self) -> str:
        return f"size={self.size}, rank={self.rank}, dim={self.dim}"
