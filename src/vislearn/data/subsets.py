"""Class-balanced labelled subsets for semi-supervised and few-label evaluation.

Within each class the indices are shuffled once by a seeded :class:`numpy.random.Generator`
and the first ``k`` are taken, so for a fixed seed the subsets are nested: the 1 % subset is
contained in the 10 % subset, and ``per_class=5`` in ``per_class=10``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from vislearn.core.errors import VislearnError

__all__ = ["as_labels", "balanced_subset", "split_labelled_unlabelled"]

LabelsLike = np.ndarray | torch.Tensor | Sequence[int]


def as_labels(labels: LabelsLike) -> np.ndarray:
    """Validated int64 class labels: one-dimensional, non-empty, integer, none negative."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise VislearnError(f"labels must be one-dimensional, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise VislearnError("cannot take a labelled subset of an empty data set")
    if not np.issubdtype(arr.dtype, np.integer):
        raise VislearnError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise VislearnError(
            "labels contain negative values (unlabelled samples); a labelled subset needs "
            "a labelled data set"
        )
    return arr.astype(np.int64, copy=False)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def balanced_subset(
    labels: LabelsLike,
    fraction: float | None = None,
    per_class: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Return sorted indices of a class-balanced subset of ``labels``.

    Give exactly one of:

    * ``fraction`` in (0, 1]: ``round(fraction * N_c)`` samples of each class ``c`` (rounded
      half up), but at least one;
    * ``per_class``: exactly that many samples of every class.

    The choice is deterministic for a given ``seed`` and differs between seeds. Errors
    (:class:`VislearnError`): both or neither given, ``fraction`` outside (0, 1], ``per_class``
    below 1 or larger than the smallest class, empty or negative labels.
    """
    arr = as_labels(labels)
    if (fraction is None) == (per_class is None):
        raise VislearnError("give exactly one of fraction= or per_class= for a labelled subset")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float | np.floating):
            raise VislearnError(f"fraction must be a number in (0, 1], got {fraction!r}")
        if not 0.0 < float(fraction) <= 1.0:
            raise VislearnError(f"fraction must be in (0, 1], got {fraction}")
    classes, counts = np.unique(arr, return_counts=True)
    if per_class is not None:
        if isinstance(per_class, bool) or not isinstance(per_class, int | np.integer):
            raise VislearnError(f"per_class must be a positive integer, got {per_class!r}")
        if per_class < 1:
            raise VislearnError(f"per_class must be at least 1, got {per_class}")
        smallest = int(counts.min())
        if per_class > smallest:
            cls = int(classes[counts.argmin()])
            raise VislearnError(
                f"per_class={per_class} is larger than the smallest class "
                f"(class {cls} has {smallest} samples)"
            )
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for cls, n_c in zip(classes, counts, strict=True):
        members = np.flatnonzero(arr == cls)
        order = rng.permutation(members)
        if per_class is not None:
            k = int(per_class)
        else:
            assert fraction is not None
            k = max(1, _round_half_up(float(fraction) * int(n_c)))
        chosen.append(order[:k])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_labelled_unlabelled(
    labels: LabelsLike,
    fraction: float | None = None,
    per_class: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split all indices into a class-balanced labelled part and the complementary rest.

    The labelled part is :func:`balanced_subset` with the same arguments; the unlabelled part
    is every other index. Both are sorted int64 arrays and together cover ``range(len(labels))``.
    """
    labelled = balanced_subset(labels, fraction=fraction, per_class=per_class, seed=seed)
    n = len(as_labels(labels))
    mask = np.ones(n, dtype=bool)
    mask[labelled] = False
    return labelled, np.flatnonzero(mask).astype(np.int64)
