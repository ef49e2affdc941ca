"""Patch masks shared by MAE pretraining (random masking) and MRA (score-guided masking).

Conventions: patches are numbered row-major over the ``grid x grid`` patch grid; ``keep``
``[B, L]`` is True for a visible patch; ``mask`` ``[B, L]`` is 1.0 for a hidden patch;
``ids_keep`` ``[B, k]`` lists the visible patches in increasing index and ``ids_restore``
``[B, L]`` undoes the "visible first, then hidden" order. A mask ratio ``r`` in ``[0, 1)``
keeps ``max(1, round((1 - r) L))`` patches visible (rounded half up), for MAE and MRA alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError

#: MRA's per-patch foreground scores computed by the MAE (see :mod:`vislearn.data.mra`)
PATCH_SCORES = ("token_dot", "attention")
#: every MRA selector: the MAE's scores and the ground-truth ``"oracle"`` (an upper bound)
MRA_SCORES = (*PATCH_SCORES, "oracle")

__all__ = [
    "MRA_SCORES",
    "PATCH_SCORES",
    "check_mask_ratio",
    "keep_top",
    "masking_from_keep",
    "num_visible",
    "patch_mask_to_pixels",
    "random_keep",
]


def check_mask_ratio(mask_ratio: float) -> float:
    """``mask_ratio`` as a float in ``[0, 1)``, else a :class:`VislearnError`."""
    try:
        r = float(mask_ratio)
    except (TypeError, ValueError):
        raise VislearnError(f"mask ratio must be a number in [0, 1), got {mask_ratio!r}") from None
    if not 0.0 <= r < 1.0:
        raise VislearnError(f"mask ratio must be in [0, 1), got {mask_ratio!r}")
    return r


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Visible patches for a mask ratio: ``max(1, round((1 - mask_ratio) * num_patches))``,
    rounded half up (49 patches at ratio 0.5: 25 visible)."""
    r = check_mask_ratio(mask_ratio)
    return max(1, min(num_patches, math.floor((1.0 - r) * num_patches + 0.5)))


def keep_top(scores: Tensor, k: int) -> Tensor:
    """Boolean ``[B, L]`` marking the ``k`` highest ``scores`` of each row (ties: lower index)."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order[:, :k], True)


def random_keep(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """MAE's uniform random masking: ``num_visible`` patches per image, drawn without
    replacement (the lowest of i.i.d. uniform noise drawn on the CPU from ``generator``)."""
    noise = torch.rand(batch, num_patches, generator=generator).to(device)
    return keep_top(-noise, num_visible(num_patches, mask_ratio))


def masking_from_keep(keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``keep`` ``[B, L]`` (the same count per row) -> ``(ids_keep, mask, ids_restore)``."""
    counts = keep.sum(1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("every row must keep the same number of patches")
    hidden = (~keep).to(torch.uint8)
    ids_shuffle = torch.argsort(hidden, dim=1, stable=True)  # visible first, in grid order
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return ids_shuffle[:, : int(counts[0])], hidden.float(), ids_restore


def patch_mask_to_pixels(keep: Tensor, grid: int, size: tuple[int, int]) -> Tensor:
    """``[B, L]`` patch mask -> ``[B, 1, H, W]`` boolean pixel mask (nearest)."""
    m = keep.view(-1, 1, grid, grid).float()
    return F.interpolate(m, size=size, mode="nearest") > 0.5
