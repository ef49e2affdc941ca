"""SSL-UVOS inference: segment a whole video into temporally consistent clusters
(Ding et al., "Betrayed by Attention", ECCV 2024, arXiv:2311.17893); the object clusters
are picked by :mod:`vislearn.tasks.vos.objects` and written or drawn by
:mod:`vislearn.tasks.vos.output`.

:func:`segment_video` runs the pipeline on one video:

1. frozen ViT keys of every frame (batched, no gradients) at ``resolution``;
2. the trained block's queries of **every** frame and keys of the key frames ``0, r, 2r, ...``
   (``r = key_stride``), both through ``block.query_key`` (its ``norm1`` + ``qkv``);
3. per-token descriptors: the head-averaged softmax of a query over all key-frame tokens
   (:func:`~vislearn.tasks.vos.block.attention_descriptors`), computed on the fly for one window
   of frames at a time and again, in chunks, for the assignment -- the ``[T N, Tk N]``
   matrix is never held whole;
4. clustering (:mod:`vislearn.tasks.vos.cluster`): the official leader scheme (3-frame windows,
   then merging) or agglomerative clustering of a token sample;
5. every token assigned to its nearest centroid: one clustering for the whole video, so
   cluster ids are consistent over time by construction;
6. the object clusters chosen by an :class:`ObjectRule` (the paper gives none; the official
   code outputs every cluster), and the label maps upsampled (nearest) to the original size.

Deviations from the official code, on purpose: every frame is predicted (the official loader
drops the last frame and the evaluator copies the previous prediction); key frames are
``range(0, T, r)``, so a video shorter than ``r`` frames uses frame 0 (the official
``floor(T / r)`` key frames leave none and the code fails) and a tail of frames after the
last multiple of ``r`` gets its own key frame (the official drops it: 25 frames, ``r = 10``
gives key frames 0, 10, 20 here, 0, 10 there); an epsilon in the symmetric KL; ImageNet
normalisation (the features' default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.tasks.vos.block import SpatioTemporalBlock, attention_descriptors
from vislearn.tasks.vos.cluster import (
    agglomerative_cluster,
    assign,
    merge_centroids,
    window_centroids,
)
from vislearn.tasks.vos.features import ViTKeyFeatures
from vislearn.tasks.vos.objects import ObjectRule, cluster_statistics, select_objects

__all__ = ["CLUSTER_METHODS", "VideoSegmentation", "segment_video"]

CLUSTER_METHODS: tuple[str, ...] = ("leader", "agglomerative")


#: Upper bound on the elements of one ``[heads, rows, Tk N]`` attention block (fp32: 512 MB).
_MAX_ATTENTION_ELEMENTS = 2**27


@dataclass
class VideoSegmentation:
    """The result of :func:`segment_video`.

    Attributes:
        labels: object IDs at the original frame size, ``[T, H, W]``, 0 = background,
            ``1..K`` objects (uint8; int64 if more than 255 IDs).
        clusters: the cluster index of every token, int64 ``[T, h, w]`` (token grid).
        num_clusters: clusters found (every one holds at least one token).
        sizes, border, motion: per-cluster statistics ``[num_clusters]`` (see
            :class:`ObjectRule`).
        object_ids: ``object_ids[j]`` is the cluster shown with ID ``j + 1``.
        key_frames: the key frame indices.
        grid: token grid ``(h, w)``; resolution: the ViT input size ``(H', W')``.
        notes: fallbacks and deviations taken (e.g. fewer frames than ``key_stride``).
    """

    labels: Tensor
    clusters: Tensor
    num_clusters: int
    sizes: Tensor
    border: Tensor
    motion: Tensor
    object_ids: list[int]
    key_frames: list[int]
    grid: tuple[int, int]
    resolution: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    @property
    def num_objects(self) -> int:
        return len(self.object_ids)


def _float_frames(frames: Tensor) -> Tensor:
    if not isinstance(frames, Tensor) or frames.dim() != 4:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise VislearnError(f"frames must be a [T, C, H, W] tensor, got {shape}")
    if frames.shape[0] == 0:
        raise VislearnError("the video has no frames")
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if not frames.is_floating_point():
        raise VislearnError(f"frames must be uint8 or float in [0, 1], got {frames.dtype}")
    return frames.float()


def _nearest_index(out: int, size: int) -> Tensor:
    """Source index of each of ``out`` output pixels for nearest upsampling of ``size``."""
    return ((torch.arange(out, dtype=torch.float64) + 0.5) * size / out).long().clamp(max=size - 1)


def _resolve_resolution(
    resolution: Sequence[int] | None, h: int, w: int, patch: int
) -> tuple[int, int]:
    if resolution is None:
        rh, rw = h // patch * patch, w // patch * patch
        if rh == 0 or rw == 0:
            raise VislearnError(f"frames of {h}x{w} are smaller than the patch size {patch}")
        return rh, rw
    if len(resolution) != 2:
        raise VislearnError(f"resolution must be (H, W), got {resolution!r}")
    rh, rw = (int(v) for v in resolution)
    if rh < patch or rw < patch or rh % patch or rw % patch:
        raise VislearnError(
            f"resolution {rh}x{rw} must be positive multiples of the patch size {patch}"
        )
    return rh, rw


@torch.no_grad()
def segment_video(
    frames: Tensor,
    features: ViTKeyFeatures,
    block: SpatioTemporalBlock,
    resolution: Sequence[int] | None = None,
    key_stride: int = 10,
    tau: float = 1.0,
    window: int = 3,
    method: str = "leader",
    num_clusters: int | None = None,
    objects: ObjectRule | str = "motion",
    chunk: int = 4096,
    device: torch.device | str | None = None,
    batch_size: int = 8,
    max_rounds: int = 10000,
    linkage: str = "average",
    max_tokens: int = 4000,
    seed: int = 0,
    eps: float = 1e-8,
) -> VideoSegmentation:
    """Segment one video with a trained SSL-UVOS block (see the module docstring).

    Args:
        frames: ``[T, C, H, W]``, uint8 or floats in ``[0, 1]`` (a 1-channel video is
            repeated to 3 channels for an RGB ViT).
        features: the frozen ViT (:class:`ViTKeyFeatures`).
        block: the trained :class:`SpatioTemporalBlock` (its width must be the ViT's).
        resolution: ViT input ``(H', W')``, multiples of the patch size (frames are resized
            bilinearly); ``None``: the native size floored to multiples of the patch size.
            The official evaluation uses ``(320, 480)``.
        key_stride: ``r``: key frames are ``0, r, 2r, ... < T``.
        tau: symmetric-KL threshold of the leader scheme (and the default cut of the
            agglomerative one).
        window: frames per level-1 window of the leader scheme.
        method: ``"leader"`` (official) or ``"agglomerative"``
            (:func:`~vislearn.tasks.vos.cluster.agglomerative_cluster` on a seeded sample of
            ``max_tokens`` tokens, with ``linkage``; cut at ``num_clusters`` if given).
        num_clusters: agglomerative only; ``None`` cuts at distance ``tau``.
        objects: an :class:`ObjectRule` or a mode (``"motion"``, ``"all"``, ``"salient"``).
        chunk: query tokens per descriptor block and per assignment block; one block holds
            ``heads x chunk x Tk N`` floats (``chunk`` is lowered to keep that under 2^27).
        device: where to compute; ``None``: the device of ``features``. Both modules are
            moved there.
        batch_size: frames per ViT forward.
        max_rounds: merging rounds of the leader scheme.
        eps: the epsilon of the symmetric KL.

    Memory: besides the keys and queries (``T N D`` floats each), one window's descriptors
    ``window N x Tk N`` and an ``[window N, window N]`` boolean matrix.
    """
    if method not in CLUSTER_METHODS:
        raise VislearnError(f"method must be one of {list(CLUSTER_METHODS)}, got {method!r}")
    rule = ObjectRule(mode=objects) if isinstance(objects, str) else objects
    for name, value in (("key_stride", key_stride), ("window", window), ("chunk", chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VislearnError(f"{name} must be a positive integer, got {value!r}")
    if batch_size < 1:
        raise VislearnError(f"batch_size must be >= 1, got {batch_size}")
    if tau < 0:
        raise VislearnError(f"tau must be >= 0, got {tau}")
    if block.dim != features.dim:
        raise VislearnError(
            f"the block is {block.dim} wide but the ViT's keys are {features.dim} wide: "
            "the block was trained for another backbone"
        )
    x = _float_frames(frames)
    t, ch, hh, ww = x.shape
    in_chans = features.vit.patch_embed.in_channels
    if ch != in_chans:
        if ch == 1 and in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise VislearnError(f"frames have {ch} channels, the ViT expects {in_chans}")
    if device is None:
        device = next(features.parameters()).device
    device = torch.device(device)
    features.to(device)
    block.to(device)
    p = features.patch_size
    rh, rw = _resolve_resolution(resolution, hh, ww, p)
    notes: list[str] = []

    # 1. keys of every frame, and the frames pooled to the token grid (for the object rule)
    keys, pooled = [], []
    for s in range(0, t, batch_size):
        xb = x[s : s + batch_size].to(device)
        if (rh, rw) != (hh, ww):
            xb = F.interpolate(xb, size=(rh, rw), mode="bilinear", align_corners=False)
            xb = xb.clamp(0, 1)
        k, _, (h, w) = features(xb)
        keys.append(k)
        pooled.append(F.avg_pool2d(xb, p).cpu())
    keys_all = torch.cat(keys)  # [T, N, D]
    n = h * w

    # 2. key frames; queries of every frame, keys of the key frames
    key_frames = list(range(0, t, key_stride))
    if t < key_stride:
        notes.append(
            f"{t} frames < key_stride {key_stride}: frame 0 is the only key frame "
            "(the official code has none in this case and fails)"
        )
    q, _ = block.query_key(keys_all.flatten(0, 1))  # [heads, T N, dh]
    _, k = block.query_key(keys_all[key_frames].flatten(0, 1))  # [heads, Tk N, dh]
    del keys_all
    heads, width = q.shape[0], k.shape[1]
    rows = max(1, min(chunk, _MAX_ATTENTION_ELEMENTS // (heads * width)))

    def descriptors(t0: int, t1: int) -> Tensor:
        return attention_descriptors(q[:, t0 * n : t1 * n], k, rows)

    # 3-4. clustering
    if method == "leader":
        level1 = [
            window_centroids(descriptors(s, min(s + window, t)), tau, eps, rows)
            for s in range(0, t, window)
        ]
        centroids = merge_centroids(torch.cat(level1), tau, max_rounds, eps, rows)
    else:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(t * n, generator=g)[:max_tokens].sort().values.to(device)
        sample = torch.cat(
            [
                attention_descriptors(q[:, idx[s : s + rows]], k, rows)
                for s in range(0, len(idx), rows)
            ]
        )
        threshold = tau if num_clusters is None else None
        centroids, _ = agglomerative_cluster(
            sample, num_clusters, threshold, linkage, max_tokens, seed, eps, rows
        )

    # 5. every token to its nearest centroid, a few frames at a time
    step = max(1, rows // n)
    labels = torch.cat(
        [
            assign(descriptors(s, min(s + step, t)), centroids, eps, rows).cpu()
            for s in range(0, t, step)
        ]
    )
    used, labels = torch.unique(labels, return_inverse=True)  # drop empty clusters
    num = int(used.numel())
    clusters = labels.view(t, h, w)

    # 6. objects, and labels at the original size
    stats = cluster_statistics(clusters, torch.cat(pooled), num, rule.border_cover)
    object_ids, rule_notes = select_objects(stats, rule)
    notes.extend(rule_notes)
    dtype = torch.uint8 if len(object_ids) <= 255 else torch.int64
    to_id = torch.zeros(num, dtype=dtype)
    for j, c in enumerate(object_ids):
        to_id[c] = j + 1
    ids = to_id[clusters]
    out = ids[:, _nearest_index(hh, h)][:, :, _nearest_index(ww, w)]
    return VideoSegmentation(
        labels=out,
        clusters=clusters,
        num_clusters=num,
        sizes=stats["size"],
        border=stats["border"],
        motion=stats["motion"],
        object_ids=object_ids,
        key_frames=key_frames,
        grid=(h, w),
        resolution=(rh, rw),
        notes=notes,
    )
