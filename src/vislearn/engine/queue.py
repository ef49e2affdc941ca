"""MoCo-style queue of negative keys (a ring buffer saved with the model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from vislearn.core.distributed import gather_no_grad

__all__ = ["LabelledMemoryQueue", "MemoryQueue"]


class MemoryQueue(nn.Module):
    r"""Fixed-size FIFO of L2-normalised keys, used as negatives by ``info_nce``.

    Buffers (both persistent, so they are in ``state_dict`` and Lightning checkpoints and a
    resumed run continues with the same negatives):

    * ``queue`` ``[size, dim]``: initialised with random unit vectors
      ``normalize(randn(size, dim))`` from the global torch RNG;
    * ``ptr``: long scalar, the row the next key is written to.

    :meth:`enqueue` writes ``B`` keys at rows ``(ptr + t) mod size``, ``t = 0..B-1`` and sets
    ``ptr ← (ptr + B) mod size``: a true ring buffer, so no key is dropped when ``size`` is not a
    multiple of the batch. If ``B > size`` only the newest ``size`` keys are kept. Under DDP the
    keys of all ranks are gathered first (rank order), so every rank holds the same buffer, equal
    to the single-process buffer for the global batch; the initial buffers agree when ranks are
    seeded alike or when DDP broadcasts buffers from rank 0 (its default).

    Args:
        size: number of stored keys ``K``.
        dim: key dimension ``D``.
    """

    queue: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"MemoryQueue size and dim must be positive, got {size}, {dim}")
        self.size = int(size)
        self.dim = int(dim)
        self.register_buffer("queue", F.normalize(torch.randn(self.size, self.dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Detach, L2-normalise, gather over ranks and write ``keys`` ``[B, dim]`` into the ring."""
        self._write(keys)

    def _write(self, keys: Tensor, **payload: Tensor) -> None:
        """Write ``keys`` and, row for row, each ``payload[name]`` ``[B]`` into buffer ``name``."""
        with record_function("queue"):
            self._write_rows(keys, **payload)

    def _write_rows(self, keys: Tensor, **payload: Tensor) -> None:
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape [B, {self.dim}], got {tuple(keys.shape)}")
        columns = {"queue": F.normalize(keys.detach(), dim=1), **payload}
        columns = {name: gather_no_grad(v)[-self.size :] for name, v in columns.items()}
        n = columns["queue"].shape[0]
        if n == 0:
            return
        # rows and pointer stay on the device: no host sync per step
        rows = (self.ptr + torch.arange(n, device=self.queue.device)) % self.size
        for name, values in columns.items():
            buffer = getattr(self, name)
            buffer[rows] = values.to(device=buffer.device, dtype=buffer.dtype)
        self.ptr.add_(n).remainder_(self.size)

    @property
    def negatives(self) -> Tensor:
        """A detached copy of the buffer ``[size, dim]`` (row order carries no meaning).

        A copy, so that calling :meth:`enqueue` after computing the loss but before
        ``backward()`` does not invalidate tensors saved by autograd.
        """
        return self.queue.detach().clone()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


class LabelledMemoryQueue(MemoryQueue):
    """A :class:`MemoryQueue` whose keys carry a class: a true label or a pseudo-label.

    Extra persistent buffers, written row for row with the keys (gathered over ranks alike):

    * ``labels`` ``[size]`` long: the key's class, ``-1`` for none (the random initial keys,
      and samples without a confident pseudo-label);
    * ``is_labelled`` ``[size]`` bool: the class is a ground-truth label (not a pseudo-label).
    """

    labels: Tensor
    is_labelled: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__(size, dim)
        self.register_buffer("labels", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("is_labelled", torch.zeros(self.size, dtype=torch.bool))

    @torch.no_grad()
    def enqueue(  # type: ignore[override]
        self, keys: Tensor, labels: Tensor, is_labelled: Tensor
    ) -> None:
        """Write ``keys`` ``[B, dim]`` with their classes ``labels`` ``[B]`` (``-1``: none) and
        ``is_labelled`` ``[B]`` flags."""
        if labels.shape != (keys.shape[0],) or is_labelled.shape != labels.shape:
            raise ValueError(
                f"labels and is_labelled must have shape [{keys.shape[0]}], got "
                f"{tuple(labels.shape)} and {tuple(is_labelled.shape)}"
            )
        # flags travel as uint8: gloo cannot all_gather bool tensors
        self._write(keys, labels=labels.long(), is_labelled=is_labelled.to(torch.uint8))
