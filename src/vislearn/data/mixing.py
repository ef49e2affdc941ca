"""Batch mixing on the training device: CutMix (Yun et al., 2019) with one box per batch, and
Mixup (Zhang et al., 2018).

CutMix is used by CsMl ("seeding" an anchor view with a patch of a neighbour's view), BINGO
and the supervised recipe's ``batch_augment="cutmix"``; Mixup by ``batch_augment="mixup"``.
MDP's cross-dataset mixing for segmentation (:func:`region_mix` of images and label maps,
:func:`pixel_mix` of images, :func:`mix_pixel_embeddings`) reuses the same box and Beta draws. All
randomness comes from an explicit ``torch.Generator`` (the method's checkpointed augmentation
stream), so a run and its resumption draw the same boxes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "beta_sample",
    "cross_dataset_partners",
    "cutmix",
    "cutmix_box",
    "mix_pixel_embeddings",
    "mixup",
    "pixel_mix",
    "region_mix",
]


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


# ----------------------------------------------------------------------------- segmentation
# Cross-dataset mixing for multi-dataset segmentation pretraining (MDP). Label maps are int64
# [B, H, W] of class ids in a concatenated label space (a class id tells its data set).


def cross_dataset_partners(dataset_ids: Tensor, generator: torch.Generator) -> Tensor:
    """For each sample, a random partner index from a *different* data set, int64 ``[B]``.

    Samples whose data set is the only one in the batch get a random other sample (any data
    set; themselves only when the batch has one sample).
    """
    ids = dataset_ids.cpu().long()
    b = ids.numel()
    out = torch.empty(b, dtype=torch.long)
    u = torch.rand(b, generator=generator, dtype=torch.float64)
    for i in range(b):
        pool = torch.nonzero(ids != ids[i]).flatten()
        if pool.numel() == 0:
            pool = torch.tensor([j for j in range(b) if j != i] or [i])
        out[i] = pool[min(int(u[i] * pool.numel()), pool.numel() - 1)]
    return out.to(dataset_ids.device)


def region_mix(
    images: Tensor,
    labels: Tensor,
    partners: Tensor,
    alpha: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, tuple[int, int, int, int]]:
    """Cross-dataset region mixing (CutMix for segmentation): paste one box of each sample's
    partner into it, image *and* labels.

    The box is :func:`cutmix_box` of ``lam ~ Beta(alpha, alpha)`` (area ``1 - lam`` before
    clipping at the border), one per batch. Inside it, ``images[i]`` and ``labels[i]`` become
    those of ``partners[i]`` (the partner's own class ids, i.e. its data set's classes in the
    concatenated space); outside they are unchanged.

    Returns:
        ``(mixed_images, mixed_labels, (y0, y1, x0, x1))``; the inputs are not modified.
    """
    if images.shape[0] != labels.shape[0] or images.shape[-2:] != labels.shape[-2:]:
        raise ValueError(
            f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match"
        )
    h, w = images.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(h, w, beta_sample(alpha, alpha, generator), generator)
    mixed, mixed_labels = images.clone(), labels.clone()
    mixed[..., y0:y1, x0:x1] = images[partners][..., y0:y1, x0:x1]
    mixed_labels[..., y0:y1, x0:x1] = labels[partners][..., y0:y1, x0:x1]
    return mixed, mixed_labels, (y0, y1, x0, x1)


def pixel_mix(
    images: Tensor,
    labels: Tensor,
    partners: Tensor,
    alpha: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Pixel-level (Mixup) mixing of each sample with its partner: every pixel becomes
    ``lam * x_i + (1 - lam) * x_partner`` with one ``lam ~ Beta(alpha, alpha)`` per batch, and
    carries *two* labels, ``labels[i]`` with weight ``lam`` and ``labels[partners[i]]`` with
    ``1 - lam`` (an "intermediate class" between classes of two data sets).

    Returns:
        ``(mixed_images, labels_a, labels_b, lam)`` with ``labels_a = labels`` and
        ``labels_b = labels[partners]``.
    """
    lam = beta_sample(alpha, alpha, generator)
    return images * lam + images[partners] * (1.0 - lam), labels, labels[partners], lam


def mix_pixel_embeddings(
    embeddings: Tensor,
    labels: Tensor,
    class_group: Tensor,
    num_pairs: int,
    alpha: float,
    generator: torch.Generator,
    ignore_index: int = 255,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pixel-level mixing in embedding space: ``num_pairs`` pairs of labelled pixels ``(i, j)``
    whose classes belong to different groups (data sets), mixed as
    ``normalize(lam v_i + (1 - lam) v_j)`` with ``lam ~ Beta(alpha, alpha)`` per pair.

    Args:
        embeddings: ``[N, d]`` pixel embeddings (L2-normalised).
        labels: ``[N]`` class ids (``ignore_index`` = unlabelled).
        class_group: ``[C]`` group (data set) of each class id.
        num_pairs: pairs drawn (fewer when there are fewer labelled pixels).

    ``i`` is drawn uniformly from the labelled pixels and ``j`` uniformly from the labelled
    pixels of other groups (any labelled pixel when all share one group).

    Returns:
        ``(mixed [M, d], labels_i [M], labels_j [M], lam [M])`` (``M = 0`` when no pixel is
        labelled).
    """
    valid = torch.nonzero(labels != ignore_index).flatten()
    d = embeddings.shape[1]
    if valid.numel() == 0 or num_pairs < 1:
        empty = labels.new_empty(0)
        return embeddings.new_empty(0, d), empty, empty, embeddings.new_empty(0)
    dev = embeddings.device
    m = int(num_pairs)
    pick = lambda n: torch.randint(0, n, (m,), generator=generator)  # noqa: E731
    i = valid[pick(valid.numel()).to(dev)]
    groups = class_group.to(dev)[labels[valid]]
    gi = class_group.to(dev)[labels[i]]
    # j: a uniform labelled pixel of another group, found by sorting pixels by group
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    num_groups = int(class_group.max()) + 1
    counts = torch.bincount(sorted_groups, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    others = valid.numel() - counts[gi]  # labelled pixels outside i's group
    u = torch.rand(m, generator=generator, dtype=torch.float64).to(dev)
    r = (u * others.clamp_min(1)).long().clamp_max((others - 1).clamp_min(0))
    # position r among the pixels outside group gi: skip over gi's block in sorted order
    pos = torch.where(r < starts[gi], r, r + counts[gi])
    any_pos = (u * valid.numel()).long().clamp_max(valid.numel() - 1)
    pos = torch.where(others > 0, pos, any_pos)
    j = valid[order[pos]]
    lam = torch.from_numpy(
        np.random.default_rng(int(torch.randint(0, 2**63 - 1, (1,), generator=generator)))
        .beta(alpha, alpha, m)
        .astype(np.float32)
    ).to(dev, embeddings.dtype)
    mixed = lam[:, None] * embeddings[i] + (1 - lam[:, None]) * embeddings[j]
    mixed = torch.nn.functional.normalize(mixed, dim=1)
    return mixed, labels[i], labels[j], lam
