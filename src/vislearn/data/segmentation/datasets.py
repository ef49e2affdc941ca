"""Segmentation data sets: the :class:`SegmentationDataset` interface, in-memory arrays,
subsets, and several data sets over their concatenated label spaces
(:class:`MultiDatasetSegmentation`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError
from vislearn.data.segmentation.labels import IGNORE_INDEX, LabelSpace, check_mask

__all__ = [
    "ArraySegmentationDataset",
    "MultiDatasetSegmentation",
    "SegmentationDataset",
    "SegmentationSubset",
    "fraction_subset",
    "validation_from_rest",
    "validation_split",
]


class SegmentationDataset(Dataset):
    """Base class: ``(image uint8 [C, H, W], mask int64 [H, W])`` items over ``label_space``.

    Subclasses set ``label_space`` and ``name`` and implement ``__len__`` / ``__getitem__``.
    """

    label_space: LabelSpace
    name: str

    @property
    def num_classes(self) -> int:
        return self.label_space.num_classes

    @property
    def ignore_index(self) -> int:
        return self.label_space.ignore_index

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label_space.classes


class ArraySegmentationDataset(SegmentationDataset):
    """Images ``uint8 [N, C, H, W]`` and masks ``[N, H, W]`` held in memory."""

    def __init__(
        self,
        images: Tensor,
        masks: Tensor,
        label_space: LabelSpace,
        name: str | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise VislearnError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if (
            masks.ndim != 3
            or masks.shape[0] != images.shape[0]
            or masks.shape[1:] != images.shape[2:]
        ):
            raise VislearnError(
                f"masks must be [N, H, W] matching images {tuple(images.shape)}, got "
                f"{tuple(masks.shape)}"
            )
        if images.shape[0] == 0:
            raise VislearnError("segmentation data set is empty")
        check_mask(masks, label_space, f"data set {name or label_space.name!r}")
        self.images, self.masks = images, masks
        self.label_space = label_space
        self.name = name or label_space.name

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.masks[index].long()


class SegmentationSubset(SegmentationDataset):
    """The items ``indices`` of a segmentation data set (same label space)."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int]) -> None:
        if len(indices) == 0:
            raise VislearnError(f"empty subset of {dataset.name!r}")
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.label_space, self.name = dataset.label_space, dataset.name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.dataset[self.indices[index]]


def fraction_subset(
    dataset: SegmentationDataset, fraction: float, seed: int = 0
) -> SegmentationDataset:
    """A seeded ``fraction`` of the images (at least one): the first ``round(f N)`` of one
    permutation, so smaller fractions are nested in larger ones. ``1.0`` returns ``dataset``."""
    if not 0.0 < fraction <= 1.0:
        raise VislearnError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return dataset
    n = len(dataset)
    keep = max(1, int(round(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)[:keep]
    return SegmentationSubset(dataset, np.sort(order).tolist())


def validation_split(
    dataset: SegmentationDataset, fraction: float, seed: int = 0
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """``(train, val)``: a seeded ``fraction`` of ``dataset``'s images held out for model
    selection (at least one image each side), the rest for training."""
    n = len(dataset)
    if not 0.0 < fraction < 1.0:
        raise VislearnError(f"validation fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise VislearnError(f"cannot carve a validation split from {n} image(s)")
    k = min(n - 1, max(1, int(round(fraction * n))))
    order = np.random.default_rng([seed, 7]).permutation(n)
    val, train = np.sort(order[:k]).tolist(), np.sort(order[k:]).tolist()
    return SegmentationSubset(dataset, train), SegmentationSubset(dataset, val)


def validation_from_rest(
    dataset: SegmentationDataset, labelled: SegmentationDataset, fraction: float, seed: int = 0
) -> SegmentationDataset:
    """A validation set of ``round(fraction * len(labelled))`` (at least one) seeded images of
    ``dataset`` outside the ``labelled`` subset (:func:`fraction_subset` of it): model
    selection on images that neither training nor a pretraining restricted to the same subset
    has seen, while every labelled image trains."""
    if not 0.0 < fraction < 1.0:
        raise VislearnError(f"validation fraction must be in (0, 1), got {fraction}")
    used = set(getattr(labelled, "indices", range(len(dataset))))
    rest = [i for i in range(len(dataset)) if i not in used]
    if not rest:
        raise VislearnError(
            "no images outside the labelled subset to validate on (data.fraction is 1): use "
            "data.val_from=labelled"
        )
    k = min(len(rest), max(1, int(round(fraction * len(labelled)))))
    pick = np.random.default_rng([seed, 11]).permutation(len(rest))[:k]
    return SegmentationSubset(dataset, sorted(rest[i] for i in pick))


class MultiDatasetSegmentation(Dataset):
    """Several segmentation data sets over their concatenated label spaces.

    Class ``c`` of data set ``d`` is global id ``offsets[d] + c``; no classes are merged,
    even when two data sets name them alike (MDP's setting: the network must learn the
    relations between taxonomies). Items are ``(image, global_mask, d)``.

    With ``balanced=True`` (default) index ``i`` is item ``(i // D) % len(d)`` of data set
    ``d = i % D``, so every data set fills ``1 / D`` of a shuffled epoch of
    ``D * max(len)`` items, whatever its size (smaller sets repeat); ``False`` concatenates.

    ``ignore_index`` (default 255, or -1 when the concatenated space reaches 255 classes)
    replaces every data set's own ignore value.
    """

    def __init__(
        self,
        datasets: Sequence[SegmentationDataset],
        balanced: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        if not datasets:
            raise VislearnError("no segmentation data sets given")
        self.datasets = list(datasets)
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise VislearnError(f"data set names must be distinct, got {names}")
        counts = [d.num_classes for d in self.datasets]
        self.offsets = [int(x) for x in np.concatenate([[0], np.cumsum(counts)[:-1]])]
        total = int(sum(counts))
        if ignore_index is None:
            ignore_index = IGNORE_INDEX if total < IGNORE_INDEX else -1
        classes = tuple(f"{d.name}/{c}" for d in self.datasets for c in d.classes)
        self.label_space = LabelSpace("+".join(names), classes, ignore_index)
        self.ignore_index = ignore_index
        self.num_classes = total
        #: data set of each global class id, int64 ``[num_classes]``
        self.class_dataset = torch.tensor(
            [i for i, n in enumerate(counts) for _ in range(n)], dtype=torch.long
        )
        self.balanced = balanced
        self.lengths = [len(d) for d in self.datasets]
        if min(self.lengths) == 0:
            raise VislearnError(f"empty data set among {names}")
        shapes = {tuple(d[0][0].shape) for d in self.datasets}
        if len(shapes) > 1:
            raise VislearnError(
                f"data sets serve different image shapes {sorted(shapes)}; give them one "
                "image size (data.image_size)"
            )
        self._starts = np.concatenate([[0], np.cumsum(self.lengths)])

    def __len__(self) -> int:
        if self.balanced:
            return len(self.datasets) * max(self.lengths)
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """``(data set, item)`` of global index ``index``."""
        if self.balanced:
            d = index % len(self.datasets)
            return d, (index // len(self.datasets)) % self.lengths[d]
        d = int(np.searchsorted(self._starts, index, side="right") - 1)
        return d, index - int(self._starts[d])

    def to_global(self, mask: Tensor, d: int) -> Tensor:
        """A data set's local mask in global ids (its ignore value -> ``ignore_index``)."""
        own = self.datasets[d].ignore_index
        return torch.where(
            mask == own, torch.full_like(mask, self.ignore_index), mask + self.offsets[d]
        )

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        d, j = self.locate(int(index))
        image, mask = self.datasets[d][j]
        return image, self.to_global(mask.long(), d), d
