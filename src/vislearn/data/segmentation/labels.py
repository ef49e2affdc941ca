"""Label spaces and label-map utilities for semantic segmentation: the ignore index, VOC's
class names, :class:`LabelSpace`, mask checks and label downsampling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.video.davis import davis_palette

__all__ = ["IGNORE_INDEX", "LabelSpace", "VOC_CLASSES", "downsample_labels"]

#: The default "void" label (PASCAL VOC): excluded from losses and metrics.
IGNORE_INDEX = 255


VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass(frozen=True)
class LabelSpace:
    """The classes of one data set: ``classes[c]`` is the name of id ``c``; pixels equal to
    ``ignore_index`` carry no label."""

    name: str
    classes: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if not self.classes:
            raise VislearnError(f"label space {self.name!r} has no classes")
        if 0 <= self.ignore_index < len(self.classes):
            raise VislearnError(
                f"label space {self.name!r}: ignore_index {self.ignore_index} is a class id "
                f"(it has {len(self.classes)} classes)"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette(self) -> np.ndarray:
        """Colours for ids ``0..num_classes-1``, uint8 ``[num_classes, 3]`` (the VOC / DAVIS
        colour map of :func:`vislearn.data.video.davis.davis_palette`)."""
        return davis_palette(max(256, self.num_classes))[: self.num_classes]


def check_mask(mask: np.ndarray | Tensor, space: LabelSpace, where: str) -> None:
    """Raise a :class:`VislearnError` naming ``where`` if ``mask`` holds ids outside the space."""
    values = np.unique(np.asarray(mask))
    bad = values[(values != space.ignore_index) & ((values < 0) | (values >= space.num_classes))]
    if bad.size:
        raise VislearnError(
            f"{where}: mask values {bad[:8].tolist()} are not class ids of {space.name!r} "
            f"(0..{space.num_classes - 1}, ignore {space.ignore_index})"
        )


def downsample_labels(
    labels: Tensor,
    size: Sequence[int],
    ignore_index: int = IGNORE_INDEX,
    mode: str = "majority",
    purity: float = 0.5,
) -> Tensor:
    """Label maps ``[B, H, W]`` -> ``[B, h, w]`` for losses at the feature resolution.

    ``"nearest"``: nearest-neighbour sampling. ``"majority"``: each output cell (an
    ``H/h x W/w`` block; needs integer ratios, otherwise nearest is used) takes its most
    frequent label, and becomes ``ignore_index`` when that label is the ignore value or covers
    less than ``purity`` of the block -- so boundary cells with mixed labels (the "dirty"
    pixels of coarse label maps) do not train the embedding.
    """
    b, h0, w0 = labels.shape
    h, w = int(size[0]), int(size[1])
    if (h, w) == (h0, w0):
        return labels
    if mode not in ("nearest", "majority"):
        raise VislearnError(f"unknown label downsampling {mode!r}; use nearest or majority")
    if mode == "nearest" or h0 % h or w0 % w:
        out = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")
        return out[:, 0].round().long()
    sy, sx = h0 // h, w0 // w
    blocks = labels.reshape(b, h, sy, w, sx).permute(0, 1, 3, 2, 4).reshape(b, h, w, sy * sx)
    major = blocks.mode(dim=-1).values
    share = (blocks == major[..., None]).float().mean(-1)
    bad = (major == ignore_index) | (share < purity)
    return torch.where(bad, torch.full_like(major, ignore_index), major)
