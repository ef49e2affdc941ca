"""Device-side joint augmentation of images and label maps: :class:`SegmentationAugment`
(random scale, crop and flip; labels by nearest neighbour, pixels from outside the image get
the ignore index)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.data.segmentation.labels import IGNORE_INDEX

__all__ = ["SegmentationAugment"]


class SegmentationAugment(nn.Module):
    """Random scale, crop/translate and horizontal flip of a batch and its label maps.

    Each image draws a zoom ``s ~ U(scale)`` and a flip (probability ``hflip_p``); the output
    (same size as the input) shows a window of the zoomed image at a uniformly drawn offset
    (zoom-in: a random crop; zoom-out: the image placed at a random position, the border
    filled with 0 = the mean after normalisation, labelled ``ignore_index``). Images are
    sampled bilinearly, labels by nearest neighbour. All randomness comes from ``generator``
    (seeded, checkpointed by the modules that own it).
    """

    def __init__(
        self,
        scale: Sequence[float] = (0.75, 1.5),
        hflip_p: float = 0.5,
        ignore_index: int = IGNORE_INDEX,
        seed: int = 0,
    ) -> None:
        super().__init__()
        lo, hi = float(scale[0]), float(scale[1])
        if not 0 < lo <= hi:
            raise VislearnError(f"augment scale must satisfy 0 < min <= max, got {scale}")
        if not 0.0 <= hflip_p <= 1.0:
            raise VislearnError(f"hflip_p must be in [0, 1], got {hflip_p}")
        self.scale, self.hflip_p, self.ignore_index = (lo, hi), hflip_p, ignore_index
        self.generator = torch.Generator().manual_seed(int(seed))

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``images`` float ``[B, C, H, W]`` (normalised), ``labels`` int64 ``[B, H, W]``."""
        b = images.shape[0]
        g = self.generator
        lo, hi = self.scale
        if lo == hi == 1.0 and self.hflip_p == 0.0:
            return images, labels
        s = lo + (hi - lo) * torch.rand(b, generator=g, dtype=torch.float64)
        flip = torch.rand(b, generator=g, dtype=torch.float64) < self.hflip_p
        span = (1.0 - 1.0 / s).abs()  # zoom-in: window moves inside; zoom-out: image moves
        tx = (2 * torch.rand(b, generator=g, dtype=torch.float64) - 1) * span
        ty = (2 * torch.rand(b, generator=g, dtype=torch.float64) - 1) * span
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) / s
        theta[:, 1, 1] = 1.0 / s
        theta[:, 0, 2], theta[:, 1, 2] = tx, ty
        theta = theta.to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        # labels shifted by +1 so that 0 marks "outside the image" (zero padding); an ignore
        # value of -1 maps back to -1 like the outside does
        lab = (labels.unsqueeze(1) + 1).to(grid.dtype)
        lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        lab = lab[:, 0].round().long() - 1
        lab = torch.where(lab < 0, torch.full_like(lab, self.ignore_index), lab)
        return out, lab
