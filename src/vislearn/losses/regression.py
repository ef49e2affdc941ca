"""Regression (non-contrastive) losses between an online prediction and a target."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["byol_loss"]


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    r"""BYOL / SimSiam normalised regression loss.

    .. math::
        L = \frac{1}{N}\sum_i \left\| \bar p_i - \bar z_i \right\|_2^2
          = \frac{1}{N}\sum_i \left(2 - 2\,\frac{p_i\cdot z_i}{\|p_i\|\,\|z_i\|}\right)

    ``z`` is **not** detached here: the caller passes a target computed under
    ``torch.no_grad()`` (BYOL's momentum encoder) or detaches it (SimSiam's stop-gradient). If
    ``z`` requires grad, gradients flow into it as well.

    Args:
        p: ``[N, D]`` predictions of the online branch, any norm.
        z: ``[N, D]`` targets, any norm.

    Returns:
        Scalar in ``[0, 4]``; the symmetric BYOL loss is ``byol_loss(p1, z2) + byol_loss(p2, z1)``.
    """
    if p.dim() != 2 or p.shape != z.shape:
        raise ValueError(
            f"p and z must be 2-D tensors of equal shape, got {tuple(p.shape)}, {tuple(z.shape)}"
        )
    cos = (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)
    return (2 - 2 * cos).mean()
