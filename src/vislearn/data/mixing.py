"""Batch mixing on the training device: CutMix (Yun et al., 2019) with one box per batch, and
Mixup (Zhang et al., 2018).

CutMix is used by CsMl ("seeding" an anchor view with a patch of a neighbour's view), BINGO
and the supervised recipe's ``batch_augment="cutmix"``; Mixup by ``batch_augment="mixup"``. All
randomness comes from an explicit ``torch.Generator`` (the method's checkpointed augmentation
stream), so a run and its resumption draw the same boxes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["beta_sample", "cutmix", "cutmix_box", "mixup"]


def beta_sample(alpha: float, beta: float, generator: torch.Generator) -> float:
    """One draw from ``Beta(alpha, beta)`` driven by ``generator``.

    ``torch.distributions.Beta`` takes no generator, so one 63-bit integer is drawn from
    ``generator`` and seeds NumPy's exact Beta sampler: reproducible, resumable with the
    generator's state, and exact for any shape parameters.
    """
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"Beta parameters must be > 0, got {alpha}, {beta}")
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, beta))


def cutmix_box(
    height: int, width: int, lam: float, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """A CutMix box ``(y0, y1, x0, x1)`` (half-open) for a nominal kept fraction ``lam``.

    The box has sides ``int(H * sqrt(1 - lam))`` by ``int(W * sqrt(1 - lam))``, is centred on a
    pixel drawn uniformly from the image, and is clipped to the image, so the area actually
    pasted can be smaller than ``1 - lam``; use the box (not ``lam``) to get the real fraction.
    Height and width are kept apart (the released code swaps them, harmless only for squares).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


def cutmix(
    anchor: Tensor, other: Tensor, alpha: float, generator: torch.Generator
) -> tuple[Tensor, float]:
    """Paste one random box of ``other`` into ``anchor`` (same box for the whole batch).

    ``lam0 ~ Beta(alpha, alpha)`` sets the nominal box (:func:`cutmix_box`); the returned
    ``lam`` is the fraction of pixels that still come from ``anchor``, computed from the
    clipped box: ``lam = 1 - (y1 - y0)(x1 - x0) / (H W)``.

    Args:
        anchor, other: ``[B, C, H, W]`` batches of equal shape (any dtype).
        alpha: Beta shape parameter (CsMl/BINGO release: 2).
        generator: source of randomness.

    Returns:
        ``(mixed, lam)``: a new tensor (the inputs are not modified) and the kept fraction.
    """
    if anchor.shape != other.shape or anchor.dim() != 4:
        raise ValueError(
            f"cutmix needs two [B, C, H, W] batches of equal shape, got {tuple(anchor.shape)} "
            f"and {tuple(other.shape)}"
        )
    h, w = anchor.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(h, w, beta_sample(alpha, alpha, generator), generator)
    mixed = anchor.clone()
    mixed[..., y0:y1, x0:x1] = other[..., y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)


def mixup(
    anchor: Tensor, other: Tensor, alpha: float, generator: torch.Generator
) -> tuple[Tensor, float]:
    """``lam * anchor + (1 - lam) * other`` with one ``lam ~ Beta(alpha, alpha)`` per batch.

    Args:
        anchor, other: float batches of equal shape.
        alpha: Beta shape parameter (Mixup: 0.2-0.4 on ImageNet, 1 on CIFAR).
        generator: source of randomness.

    Returns:
        ``(mixed, lam)``; the inputs are not modified.
    """
    if anchor.shape != other.shape:
        raise ValueError(
            f"mixup needs batches of equal shape, got {tuple(anchor.shape)} and "
            f"{tuple(other.shape)}"
        )
    lam = beta_sample(alpha, alpha, generator)
    return anchor * lam + other * (1.0 - lam), lam
