"""Reference segmenters for judging SSL-UVOS on videos with ground truth: the no-block ablation
(:class:`RawKeyAttention`), k-means on any per-token features, frame differencing and the
token-grid oracle. Each returns integer labels ``[T, H, W]`` at the frame size (0 =
background, 1.. = proposals), the format of :mod:`vislearn.eval.vos`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.ops.neighbours import kmeans
from vislearn.tasks.vos.block import attention_descriptors

__all__ = [
    "RawKeyAttention",
    "block_descriptors",
    "frame_difference_labels",
    "kmeans_labels",
    "patch_mean_rgb",
    "token_majority",
    "token_oracle_labels",
    "upsample_labels",
]


class RawKeyAttention(nn.Module):
    """A stand-in for :class:`~vislearn.tasks.vos.block.SpatioTemporalBlock` without any
    training: the attention of the frozen ViT's keys on themselves, split into ``num_heads``
    heads (``softmax(k_i . k_j / sqrt(d_h))``). :func:`~vislearn.tasks.vos.segment.
    segment_video` with it is SSL-UVOS's clustering without the block (the "no block"
    ablation)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise VislearnError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads = dim, num_heads
        self.scale = (dim // num_heads) ** -0.5

    def query_key(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        m = keys.shape[0]
        k = keys.view(m, self.num_heads, -1).transpose(0, 1)  # [heads, M, dh]
        return k * self.scale, k


def upsample_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Token-grid labels ``[T, h, w]`` -> ``[T, H, W]`` by nearest neighbour."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def kmeans_labels(
    features: Tensor, grid: tuple[int, int], size: tuple[int, int], k: int, seed: int = 0
) -> Tensor:
    """Spherical k-means (:func:`~vislearn.ops.neighbours.kmeans`) of one video's per-token
    ``features`` ``[T, N, D]`` over all its tokens; proposal ids ``1..k`` by decreasing size,
    labels ``[T, H, W]`` at ``size``. Every token gets a proposal (nothing is background)."""
    t, n, _ = features.shape
    if n != grid[0] * grid[1]:
        raise VislearnError(f"{n} tokens per frame do not fill a {grid[0]}x{grid[1]} grid")
    idx = kmeans(features.flatten(0, 1), min(k, t * n), seed=seed)
    order = torch.argsort(torch.bincount(idx, minlength=k), descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, len(order) + 1)
    return upsample_labels(rank[idx].view(t, *grid), size)


def patch_mean_rgb(frames: Tensor, patch: int) -> Tensor:
    """Mean RGB of every ``patch x patch`` cell, ``[T, N, C]``, centred on the video's mean
    colour (so spherical k-means compares colour directions around it, not raw brightness)."""
    x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    pooled = F.avg_pool2d(x, patch).flatten(2).transpose(1, 2)  # [T, N, C]
    return pooled - pooled.mean((0, 1), keepdim=True)


def frame_difference_labels(frames: Tensor, threshold: float) -> Tensor:
    """One proposal: pixels whose mean absolute difference to the next frame (the previous one
    for the last frame), 3 x 3 box-smoothed, exceeds ``threshold`` (frames in ``[0, 1]``)."""
    x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    if x.shape[0] < 2:
        raise VislearnError("frame differencing needs at least 2 frames")
    diff = (x[1:] - x[:-1]).abs().mean(1, keepdim=True)  # [T-1, 1, H, W]
    diff = torch.cat([diff, diff[-1:]])
    diff = F.avg_pool2d(diff, 3, stride=1, padding=1, count_include_pad=False)
    return (diff[:, 0] > threshold).long()


def token_majority(masks: Tensor, patch: int) -> Tensor:
    """Every ``patch x patch`` cell's majority ground-truth id (ties: the lower id), on the
    token grid ``[T, H / patch, W / patch]``. ``masks``: int ``[T, H, W]``."""
    t, h, w = masks.shape
    if h % patch or w % patch:
        raise VislearnError(f"mask size {h}x{w} is not a multiple of the patch size {patch}")
    k = int(masks.max()) + 1
    votes = F.avg_pool2d(F.one_hot(masks.long(), k).permute(0, 3, 1, 2).float(), patch)
    return votes.argmax(1)


def token_oracle_labels(masks: Tensor, patch: int) -> Tensor:
    """The best any token-level segmenter can do: :func:`token_majority` upsampled to the
    frame. ``masks``: int ``[T, H, W]``."""
    return upsample_labels(token_majority(masks, patch), tuple(masks.shape[-2:]))


@torch.no_grad()
def block_descriptors(keys: Tensor, block: nn.Module, key_stride: int) -> Tensor:
    """SSL-UVOS's token descriptors of one video without the clustering: every token's
    head-averaged attention over the tokens of the key frames ``0, r, 2r, ...``,
    ``[T, N, Tk N]``. ``keys``: the frozen ViT's keys ``[T, N, D]``; ``block``: a
    :class:`~vislearn.tasks.vos.block.SpatioTemporalBlock` or :class:`RawKeyAttention`."""
    t, n, _ = keys.shape
    q, _ = block.query_key(keys.flatten(0, 1))
    _, k = block.query_key(keys[::key_stride].flatten(0, 1))
    return attention_descriptors(q, k).view(t, n, -1)
