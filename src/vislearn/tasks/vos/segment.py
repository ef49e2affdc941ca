"""SSL-UVOS inference: segment a whole video into temporally consistent clusters
(``research/uvos.md`` §3), pick the object clusters, and write or draw the result.

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

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.video.davis import davis_palette, write_label_png
from vislearn.tasks.vos.block import SpatioTemporalBlock, attention_descriptors
from vislearn.tasks.vos.cluster import (
    agglomerative_cluster,
    assign,
    merge_centroids,
    window_centroids,
)
from vislearn.tasks.vos.features import ViTKeyFeatures

__all__ = [
    "CLUSTER_METHODS",
    "OBJECT_MODES",
    "ObjectRule",
    "VideoSegmentation",
    "cluster_statistics",
    "overlay_strip",
    "save_overlay_video",
    "segment_video",
    "select_objects",
    "write_masks",
]

CLUSTER_METHODS: tuple[str, ...] = ("leader", "agglomerative")
OBJECT_MODES: tuple[str, ...] = ("motion", "all", "salient")
#: Upper bound on the elements of one ``[heads, rows, Tk N]`` attention block (fp32: 512 MB).
_MAX_ATTENTION_ELEMENTS = 2**27


# ----------------------------------------------------------------------------- object rule


@dataclass(frozen=True)
class ObjectRule:
    """Which clusters are objects (our rule; neither the paper nor the official code has one).

    Statistics per cluster (:func:`cluster_statistics`, on the token grid):

    * ``size``: its fraction of all tokens of the video;
    * ``border``: the fraction of frames on which it covers at least ``border_cover`` of the
      grid's border tokens (a background region reaches the frame edge almost everywhere; an
      object touches it at most in places);
    * ``motion``: mean absolute frame difference (consecutive frames, averaged over channels
      and patches) on its tokens, divided by the same mean on all other tokens -- above 1
      when it moves more than the rest of the frame.

    A cluster is *background* when ``border > border_frames`` (it touches the border on most
    frames) or ``size < min_size`` (specks). Modes:

    * ``"motion"`` (default, the single-object view): the non-background clusters with
      ``motion >= motion_threshold``, IDs by decreasing motion score (at most
      ``max_objects``). If none passes and ``fallback`` is set, the most moving
      non-background cluster (or, if every cluster is background, the most moving one) is
      kept so that every video gets a prediction; a one-frame video has no motion and uses
      ``"salient"``.
    * ``"all"``: every cluster is an object (the official output), IDs by decreasing size;
      nothing is background.
    * ``"salient"``: the largest non-background cluster as ID 1 (if every cluster is
      background, the one with the lowest ``border``, then the largest).

    ``max_objects`` caps the number of IDs in every mode.
    """

    mode: str = "motion"
    motion_threshold: float = 1.5
    border_cover: float = 0.1
    border_frames: float = 0.5
    min_size: float = 0.01
    max_objects: int | None = None
    fallback: bool = True

    def __post_init__(self) -> None:
        if self.mode not in OBJECT_MODES:
            raise VislearnError(f"objects must be one of {list(OBJECT_MODES)}, got {self.mode!r}")
        if self.max_objects is not None and self.max_objects < 1:
            raise VislearnError(f"max_objects must be >= 1, got {self.max_objects}")


def _border_mask(h: int, w: int, device: torch.device | None = None) -> Tensor:
    m = torch.zeros(h, w, dtype=torch.bool, device=device)
    m[0], m[-1], m[:, 0], m[:, -1] = True, True, True, True
    return m


def cluster_statistics(
    clusters: Tensor,
    frames: Tensor,
    num_clusters: int | None = None,
    border_cover: float = 0.1,
) -> dict[str, Tensor]:
    """Per-cluster ``size``, ``border`` and ``motion`` (float ``[C]``, see :class:`ObjectRule`).

    ``clusters``: int ``[T, h, w]`` cluster index per token; ``frames``: ``[T, C, h, w]``
    (floats in ``[0, 1]`` or uint8) on the same grid, e.g. the frames average-pooled per
    patch. With one frame ``motion`` is all zeros.
    """
    if clusters.dim() != 3:
        raise VislearnError(f"clusters must be [T, h, w], got {tuple(clusters.shape)}")
    if frames.dim() != 4 or frames.shape[0] != clusters.shape[0]:
        raise VislearnError(
            f"frames must be [T, C, h, w] with T = {clusters.shape[0]}, got {tuple(frames.shape)}"
        )
    if frames.shape[-2:] != clusters.shape[-2:]:
        raise VislearnError(
            f"frames {tuple(frames.shape[-2:])} and clusters {tuple(clusters.shape[-2:])} "
            "are not on the same grid"
        )
    lab = clusters.long().cpu()
    t, h, w = lab.shape
    c = int(lab.max()) + 1 if num_clusters is None else num_clusters
    x = frames.float().cpu()
    if frames.dtype == torch.uint8:
        x = x / 255.0
    size = torch.bincount(lab.flatten(), minlength=c).double() / lab.numel()
    border = _border_mask(h, w)
    per_frame = lab[:, border]  # [T, n_border]
    offsets = torch.arange(t).view(-1, 1) * c
    cover = torch.bincount((per_frame + offsets).flatten(), minlength=t * c).view(t, c)
    touch = (cover.double() / per_frame.shape[1] >= border_cover).double().mean(0)
    motion = torch.zeros(c, dtype=torch.float64)
    if t > 1:
        diff = (x[1:] - x[:-1]).abs().mean(1).double().flatten()  # [(T - 1) h w]
        cur, prev = lab[1:].flatten(), lab[:-1].flatten()
        # a frame pair's difference counts for the clusters of both of its frames
        in_sum = torch.bincount(cur, diff, c) + torch.bincount(prev, diff, c)
        in_cnt = (torch.bincount(cur, minlength=c) + torch.bincount(prev, minlength=c)).double()
        out_sum, out_cnt = 2 * diff.sum() - in_sum, 2 * diff.numel() - in_cnt
        inside = in_sum / in_cnt.clamp_min(1)
        outside = out_sum / out_cnt.clamp_min(1)
        motion = torch.where(out_cnt > 0, inside / outside.clamp_min(1e-6), torch.ones_like(inside))
        motion = torch.where(in_cnt > 0, motion, torch.zeros_like(motion))
    return {"size": size.float(), "border": touch.float(), "motion": motion.float()}


def select_objects(
    stats: dict[str, Tensor], rule: ObjectRule | str = "motion"
) -> tuple[list[int], list[str]]:
    """The clusters shown as objects, in ID order (``ids[j]`` gets ID ``j + 1``), and notes
    on fallbacks taken. ``stats``: from :func:`cluster_statistics`; ``rule``: an
    :class:`ObjectRule` or a mode name with the default parameters."""
    rule = ObjectRule(mode=rule) if isinstance(rule, str) else rule
    size, border, motion = (stats[k].tolist() for k in ("size", "border", "motion"))
    c = len(size)
    notes: list[str] = []
    present = [i for i in range(c) if size[i] > 0]
    if rule.mode == "all":
        ids = sorted(present, key=lambda i: (-size[i], i))
        return ids[: rule.max_objects], notes
    foreground = [
        i for i in present if border[i] <= rule.border_frames and size[i] >= rule.min_size
    ]
    mode = rule.mode
    if mode == "motion" and max(motion, default=0.0) <= 0.0:
        notes.append("no frame difference (one frame or a still video): used the salient rule")
        mode = "salient"
    if mode == "salient":
        if foreground:
            return [max(foreground, key=lambda i: (size[i], -i))], notes
        notes.append("every cluster touches the border: kept the least border-bound one")
        return [min(present, key=lambda i: (border[i], -size[i], i))][:1], notes
    moving = [i for i in foreground if motion[i] >= rule.motion_threshold]
    ids = sorted(moving, key=lambda i: (-motion[i], i))[: rule.max_objects]
    if not ids and rule.fallback and present:
        pool = foreground or present
        ids = [max(pool, key=lambda i: (motion[i], size[i], -i))]
        where = "non-background " if foreground else ""
        notes.append(
            f"no cluster passed the motion threshold {rule.motion_threshold}: kept the most "
            f"moving {where}cluster (score {motion[ids[0]]:.2f})"
        )
    return ids, notes


# ----------------------------------------------------------------------------- pipeline


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


# ----------------------------------------------------------------------------- output


def write_masks(
    out_dir: str | os.PathLike, labels: Tensor, names: Sequence[str] | None = None
) -> list[Path]:
    """One palette PNG per frame in ``out_dir`` (DAVIS layout: index = object ID, DAVIS
    colours), each written atomically. ``labels``: integer ``[T, H, W]`` with IDs 0..255;
    ``names``: one per frame (a file name or stem; the suffix becomes ``.png``), default
    ``00000.png``, ``00001.png``, ... Returns the paths."""
    lab = torch.as_tensor(labels)
    if lab.dim() != 3:
        raise VislearnError(f"labels must be [T, H, W], got {tuple(lab.shape)}")
    if lab.is_floating_point() or lab.dtype == torch.bool:
        raise VislearnError(f"labels must hold integer IDs, got {lab.dtype}")
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) > 255):
        raise VislearnError(
            f"label IDs {int(lab.min())}..{int(lab.max())} do not fit a palette PNG (0..255)"
        )
    t = lab.shape[0]
    if names is None:
        files = [f"{i:05d}.png" for i in range(t)]
    else:
        if len(names) != t:
            raise VislearnError(f"{len(names)} names for {t} frames")
        files = [Path(str(nm)).stem + ".png" for nm in names]
        if len(set(files)) != t:
            raise VislearnError("frame names are not unique")
    out = Path(out_dir)
    arr = lab.cpu().to(torch.uint8).numpy()
    paths = []
    for i, name in enumerate(files):
        path = out / name
        write_label_png(path, arr[i])
        paths.append(path)
    return paths


def _rgb_uint8(frames: Tensor) -> Tensor:
    """``[T, C, H, W]`` uint8 or [0, 1] floats -> uint8 ``[T, H, W, 3]``."""
    if frames.dim() != 4 or frames.shape[1] not in (1, 3):
        raise VislearnError(f"frames must be [T, C, H, W] with C in (1, 3), got {frames.shape}")
    if frames.dtype != torch.uint8:
        frames = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).cpu()


def _blend(image: Tensor, labels: Tensor, alpha: float) -> Tensor:
    """uint8 ``[H, W, 3]`` with every labelled region tinted by its DAVIS colour (``alpha``)
    and outlined in it (pixels with a 4-neighbour of another label)."""
    lab = labels.long().cpu()
    pal = torch.from_numpy(davis_palette(max(256, int(lab.max()) + 1)))
    colour = pal[lab].float()
    img = image.float()
    fg = (lab > 0)[..., None]
    out = torch.where(fg, (1 - alpha) * img + alpha * colour, img)
    edge = torch.zeros_like(lab, dtype=torch.bool)
    dv, dh = lab[1:] != lab[:-1], lab[:, 1:] != lab[:, :-1]
    edge[1:] |= dv
    edge[:-1] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    contour = (edge & (lab > 0))[..., None]
    out = torch.where(contour, colour, out)
    return out.round().clamp(0, 255).to(torch.uint8)


def _check_pair(frames: Tensor, labels: Tensor) -> Tensor:
    rgb = _rgb_uint8(frames)
    lab = torch.as_tensor(labels)
    if lab.shape != rgb.shape[:3]:
        raise VislearnError(
            f"labels {tuple(lab.shape)} do not match frames {tuple(rgb.shape[:3])} ([T, H, W])"
        )
    return rgb


def overlay_strip(
    frames: Tensor,
    labels: Tensor,
    every: int | None = None,
    max_frames: int = 8,
    alpha: float = 0.5,
    gap: int = 2,
) -> Tensor:
    """Frames side by side with their masks blended (``alpha``) and outlined, uint8
    ``[H, n W + (n - 1) gap, 3]`` (white gaps). Frames ``0, every, 2 every, ...`` or, with
    ``every=None``, ``max_frames`` evenly spaced ones; at most ``max_frames``."""
    rgb = _check_pair(frames, labels)
    t = rgb.shape[0]
    if max_frames < 1:
        raise VislearnError(f"max_frames must be >= 1, got {max_frames}")
    if every is None:
        idx = sorted(set(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int).tolist()))
    else:
        if every < 1:
            raise VislearnError(f"every must be >= 1, got {every}")
        idx = list(range(0, t, every))[:max_frames]
    tiles = []
    for j, i in enumerate(idx):
        if j and gap:
            tiles.append(torch.full((rgb.shape[1], gap, 3), 255, dtype=torch.uint8))
        tiles.append(_blend(rgb[i], labels[i], alpha))
    return torch.cat(tiles, dim=1)


def save_overlay_video(
    path: str | os.PathLike, frames: Tensor, labels: Tensor, fps: int = 10, alpha: float = 0.5
) -> Path:
    """Write every frame with its blended, outlined masks as a video file
    (:func:`vislearn.data.video.io.write_video`; ``.mp4`` H.264, ``.avi``/``.mkv`` FFV1)."""
    from vislearn.data.video.io import write_video

    rgb = _check_pair(frames, labels)
    out = torch.stack([_blend(rgb[i], labels[i], alpha) for i in range(rgb.shape[0])])
    return write_video(path, out.permute(0, 3, 1, 2).contiguous(), fps=fps)
