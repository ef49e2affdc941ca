"""Training data for semi-supervised runs: a seeded balanced labelled fraction, hidden labels
everywhere else, and batches with a fixed number of labelled rows.

:class:`PartiallyLabelledDataset` keeps the labels of the ``labelled`` indices and reports ``-1``
for every other sample, so a method never sees a hidden label. :class:`SemiSupervisedSampler`
orders the indices so that every consecutive chunk of ``batch_size`` holds
``labelled_per_batch`` labelled samples followed by ``batch_size - labelled_per_batch``
unlabelled ones (FixMatch's labelled / unlabelled batches, as one batch). Both streams are
seeded permutations, cycled when a stream is shorter than the epoch, drawn anew every epoch
(``set_epoch``, which Lightning calls on a loader's sampler); a resumed run continues an
epoch part-way (:class:`~vislearn.data.resume.ResumableSampler`).

An epoch has ``len(dataset) // (batch_size * world)`` batches per rank, the length of the plain
loader, so runs with and without a label fraction are step-for-step comparable.

:class:`LabelledSubset` is a :class:`~torch.utils.data.Subset` that keeps the labels and the
data set attributes: the training set of a run that holds images out (a validation split
carved from the training split, ``ImageDataModule(exclude=...)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler

from vislearn.core.errors import VislearnError
from vislearn.data.resume import ResumableSampler

__all__ = ["LabelledSubset", "PartiallyLabelledDataset", "SemiSupervisedSampler"]


class PartiallyLabelledDataset(Dataset):
    """``base`` with every label outside ``labelled`` replaced by ``-1``.

    ``labels`` is the visible label array (``-1`` where hidden); images, ``num_classes``,
    ``classes``, ``channels`` and ``image_size`` are the base data set's.
    """

    def __init__(self, base: Dataset, labelled: np.ndarray) -> None:
        base_labels = getattr(base, "labels", None)
        if base_labels is None:
            raise VislearnError("a label fraction needs a labelled data set")
        self.base = base
        self.labelled = np.asarray(labelled, dtype=np.int64)
        self.labels = np.full(len(base_labels), -1, dtype=np.int64)
        self.labels[self.labelled] = np.asarray(base_labels)[self.labelled]
        for attr in ("num_classes", "classes", "channels", "image_size"):
            setattr(self, attr, getattr(base, attr, None))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, _ = self.base[index]
        return image, int(self.labels[index])


class LabelledSubset(Dataset):
    """The samples ``indices`` of ``base``, with ``labels`` (``base.labels[indices]``, when
    ``base`` has labels), ``num_classes``, ``classes``, ``channels`` and ``image_size``."""

    def __init__(self, base: Dataset, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        base_labels = getattr(base, "labels", None)
        self.labels = None if base_labels is None else np.asarray(base_labels)[self.indices]
        for attr in ("num_classes", "classes", "channels", "image_size"):
            setattr(self, attr, getattr(base, attr, None))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.base[int(self.indices[index])]


def _stream(indices: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` entries of concatenated random permutations of ``indices``."""
    if length == 0:
        return np.empty(0, dtype=np.int64)
    rounds = -(-length // len(indices))
    return np.concatenate([rng.permutation(indices) for _ in range(rounds)])[:length]


class SemiSupervisedSampler(ResumableSampler, Sampler[int]):
    """Indices in batches of ``labelled_per_batch`` labelled + the rest unlabelled.

    Args:
        labelled, unlabelled: disjoint index arrays of the data set.
        batch_size: rows per batch (per rank); use the loader's ``batch_size`` and
            ``drop_last=True``.
        labelled_per_batch: labelled rows at the start of every batch, in ``[0, batch_size]``.
        num_batches: batches per epoch and rank.
        seed: the streams of epoch ``e`` come from ``numpy.random.default_rng([seed, e])``.
        rank, world: this rank takes the ``rank``-th of every ``world`` consecutive batches of
            the global stream, so the ranks together see what one process would.
    """

    def __init__(
        self,
        labelled: np.ndarray,
        unlabelled: np.ndarray,
        batch_size: int,
        labelled_per_batch: int,
        num_batches: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if (
            isinstance(labelled_per_batch, bool)
            or not isinstance(labelled_per_batch, int | np.integer)
            or not 0 <= labelled_per_batch <= batch_size
        ):
            raise VislearnError(
                f"data.labelled_batch_size must be in [0, {batch_size}] (the batch size), "
                f"got {labelled_per_batch!r}"
            )
        self.labelled = np.asarray(labelled, dtype=np.int64)
        self.unlabelled = np.asarray(unlabelled, dtype=np.int64)
        self.n_lab, self.n_unl = labelled_per_batch, batch_size - labelled_per_batch
        if self.n_lab and not len(self.labelled):
            raise VislearnError("labelled rows were requested but no sample is labelled")
        if self.n_unl and not len(self.unlabelled):
            raise VislearnError(
                "every training sample is labelled (data.label_fraction=1), so batches cannot "
                f"hold {self.n_unl} unlabelled rows; set data.labelled_batch_size to the batch "
                f"size ({batch_size})"
            )
        self.batch_size, self.num_batches = batch_size, num_batches
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.num_batches * self.world
        lab = _stream(self.labelled, total * self.n_lab, rng).reshape(total, self.n_lab)
        unl = _stream(self.unlabelled, total * self.n_unl, rng).reshape(total, self.n_unl)
        batches = np.concatenate([lab, unl], axis=1)[self.rank :: self.world]
        return iter(self._skip_served(batches.reshape(-1).tolist()))
