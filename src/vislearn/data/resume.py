"""Mid-epoch resume of the training order: samplers that can start an epoch part-way, and a
``DataLoader`` whose ``state_dict`` / ``load_state_dict`` Lightning 2.x saves in and restores
from every checkpoint (its ``combined_loader`` loop state).

A checkpoint written after ``k`` batches of epoch ``e`` stores ``{"epoch": e, "batches": k}``
(one written at the end of the epoch stores ``{"epoch": e + 1, "batches": 0}``); on resume
the sampler serves epoch ``e``'s seeded order from sample ``k * batch_size`` on, so the
resumed run sees exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

__all__ = ["ResumableSampler", "SeededDistributedSampler", "TrainLoader"]


class ResumableSampler:
    """Mixin for a sampler with an ``epoch`` attribute: :meth:`resume` makes the epoch
    ``epoch`` start at its ``start``-th index (other epochs are whole)."""

    epoch: int = 0
    _resume_at: tuple[int, int] = (-1, 0)

    def resume(self, epoch: int, start: int) -> None:
        self.epoch = int(epoch)
        self._resume_at = (int(epoch), int(start))

    def _skip_served(self, indices: list[int]) -> list[int]:
        epoch, start = self._resume_at
        return indices[start:] if epoch == self.epoch else indices


class SeededDistributedSampler(ResumableSampler, DistributedSampler):
    """``DistributedSampler`` (seeded, ``set_epoch``) that can resume part-way into an epoch.
    ``len()`` stays the whole epoch's: Lightning counts the batches already done itself."""

    def __iter__(self) -> Iterator[int]:
        return iter(self._skip_served(list(super().__iter__())))


class TrainLoader(DataLoader):
    """``DataLoader`` with the position of the training loop as its state.

    ``position()`` returns ``(epoch, batches done in it)`` at checkpoint time (the data
    module reads it from the trainer); the sampler must be a :class:`ResumableSampler`.

    The loader draws its workers' base seed from its own generator (seeded with ``seed``),
    not from the global torch stream: a resumed run creates its iterator at another point of
    that stream than the uninterrupted run did, and must not shift it."""

    def __init__(
        self,
        *args: Any,
        position: Callable[[], tuple[int, int]],
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("generator", torch.Generator().manual_seed(int(seed)))
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.position()
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume(state["epoch"], state["batches"] * int(self.batch_size or 1))
