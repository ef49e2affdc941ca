"""Choosing the object clusters of an SSL-UVOS segmentation: per-cluster statistics
(:func:`cluster_statistics`) and the rule (:class:`ObjectRule`, :func:`select_objects`). The
paper gives no rule; the official code outputs every cluster."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vislearn.core.errors import VislearnError

__all__ = ["OBJECT_MODES", "ObjectRule", "cluster_statistics", "select_objects"]

OBJECT_MODES: tuple[str, ...] = ("motion", "all", "salient")


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
      nothing is background. With more clusters than ``max_objects``, the most
      background-like ones are left out first (highest ``border``, then largest), so the
      cap does not drop the small clusters that objects tend to be.
    * ``"salient"``: the largest non-background cluster as ID 1 (if every cluster is
      background, the one with the lowest ``border``, then the largest).

    ``max_objects`` caps the number of IDs in every mode (20 by default: the DAVIS
    evaluation scores at most 20 proposals per video; ``None``: no cap).
    """

    mode: str = "motion"
    motion_threshold: float = 1.5
    border_cover: float = 0.1
    border_frames: float = 0.5
    min_size: float = 0.01
    max_objects: int | None = 20
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
        ids = present
        if rule.max_objects is not None and len(ids) > rule.max_objects:
            keep = sorted(ids, key=lambda i: (border[i], size[i], i))[: rule.max_objects]
            notes.append(
                f"{len(ids)} clusters > max_objects {rule.max_objects}: left out the "
                f"{len(ids) - len(keep)} most border-bound / largest"
            )
            ids = keep
        return sorted(ids, key=lambda i: (-size[i], i)), notes
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
