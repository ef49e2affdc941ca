"""Occluded test images: random square occluders, seeded per image, for robustness checks.

Each image gets ``count`` squares of ``size x size`` pixels (clipped to the image only when
``size`` exceeds it), placed uniformly among the positions where the square fits entirely,
filled with the value ``fill`` (0-255, all channels). The positions of image ``i`` come from
``numpy.random.default_rng([seed, i])``, so an occluded set does not depend on batch order,
loader workers or the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError

__all__ = ["OccludedDataset", "occluder_boxes", "occlude"]


def occluder_boxes(
    height: int, width: int, size: int, seed: int, index: int, count: int = 1
) -> list[tuple[int, int, int, int]]:
    """``count`` boxes ``(y0, y1, x0, x1)`` (half-open) of image ``index``."""
    if size < 1 or count < 1:
        raise VislearnError(f"occluder size and count must be >= 1, got {size}, {count}")
    rng = np.random.default_rng([seed, index])
    sh, sw = min(size, height), min(size, width)
    boxes = []
    for _ in range(count):
        y0 = int(rng.integers(0, height - sh + 1))
        x0 = int(rng.integers(0, width - sw + 1))
        boxes.append((y0, y0 + sh, x0, x0 + sw))
    return boxes


def occlude(
    images: Tensor,
    size: int,
    seed: int = 0,
    fill: int = 0,
    count: int = 1,
    start_index: int = 0,
) -> Tensor:
    """A copy of ``images`` (``[B, C, H, W]`` or ``[C, H, W]``) with square occluders; image
    ``b`` uses the boxes of index ``start_index + b``."""
    if images.dim() == 3:
        return occlude(images[None], size, seed, fill, count, start_index)[0]
    if not 0 <= fill <= 255:
        raise VislearnError(f"occluder fill must be in [0, 255], got {fill}")
    out = images.clone()
    h, w = images.shape[-2:]
    value = fill if images.dtype == torch.uint8 else fill / 255.0
    for b in range(images.shape[0]):
        for y0, y1, x0, x1 in occluder_boxes(h, w, size, seed, start_index + b, count):
            out[b, :, y0:y1, x0:x1] = value
    return out


class OccludedDataset(Dataset):
    """``base`` (``(uint8 image, label)`` pairs) with :func:`occlude` applied to each image."""

    def __init__(
        self, base: Dataset, size: int, seed: int = 0, fill: int = 0, count: int = 1
    ) -> None:
        occluder_boxes(1, 1, size, seed, 0, count)  # validate now
        self.base, self.size, self.seed, self.fill, self.count = base, size, seed, fill, count
        for attr in ("labels", "num_classes", "classes", "channels", "image_size"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        image, label = self.base[index]
        return occlude(image, self.size, self.seed, self.fill, self.count, index), label
