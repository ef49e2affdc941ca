"""Video object segmentation scores: region similarity J and boundary F-measure, DAVIS-17
conventions, with the matching protocols used to score unsupervised (object-discovery) output.

Measures (per object, per frame)
--------------------------------
* **J** (:func:`region_j`): IoU of the predicted and GT masks over non-void pixels (GT value
  255 is void); 1 when the union is empty.
* **F** (:func:`boundary_f`): F-measure of boundary pixels (:func:`boundary_map`) matched
  within a tolerance disk, after removing void pixels from both masks.
* Per-object statistics (:func:`stats`): mean, recall (fraction of frames > 0.5) and decay.
* Global numbers pool *objects* across sequences: ``J_mean`` is the mean over all objects of
  their frame-mean J (likewise recall and decay), and
  ``JF_mean = (J_mean + F_mean) / 2``.

Protocols (how predicted ids are matched to GT objects; :func:`evaluate_sequences`)
----------------------------------------------------------------------------------
* ``"davis"`` -- the official DAVIS-2017 *unsupervised* protocol. Candidates are the
  predicted ids ``1..max_proposals`` (20); higher ids are ignored (treated as background;
  ``strict=True`` instead refuses them, as the official script does). One Hungarian assignment
  per sequence maximises the frame-averaged (J+F)/2. When there are fewer candidates than GT
  objects, empty proposals are added (the official zero-padding): a GT object left with an
  empty proposal scores 0 in every frame where it is visible (and 1 in a frame where it is
  absent, as an empty prediction of an absent object is correct).
* ``"per_frame"`` -- **not the official protocol**: the modified evaluator shipped with
  SSL-UVOS (inherited from motiongrouping) runs a separate Hungarian assignment in *every
  frame* on J+F over up to ``max_proposals`` (300) ids. It is an oracle: the best cluster is
  chosen for each object in each frame, so identity switches and background clusters are not
  penalised. Use it only to compare with numbers produced that way.
* ``"identity"`` -- predicted id k is GT object k (the semi-supervised convention; ids
  present in the prediction but not in the GT are ignored).

Conventions and choices
-----------------------
* Only frames with a GT annotation are scored (sparse annotation as in FBMS is fine); a
  scored frame without a prediction is an error.
* GT objects of a sequence are the ids 1..254 present in any of its annotated frames (the
  official script counts ids 1..max of the *first* frame; they agree when every object is
  in the first frame, as in DAVIS). Each object is scored in every annotated frame.
* A prediction whose size differs from the GT is resized to the GT size with
  nearest-neighbour sampling (pixel centres) before scoring.
* ``drop_first_last=True`` skips the first and last annotated frames (the DAVIS
  semi-supervised convention); the unsupervised task scores every frame (default).
* ``single_object=True`` (DAVIS-16, SegTrack-v2, FBMS: one merged foreground): all GT ids
  1..254 become one object. Predictions are either merged by ``foreground_ids`` (a list of
  ids, a mapping sequence -> ids, or ``"all"`` for every id > 0) into one mask, or, when
  ``foreground_ids`` is None, the best single predicted id of each sequence is chosen by the
  protocol's matching (``"davis"``: one id for the whole sequence; ``"per_frame"``: the best
  id in each frame, an oracle).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from vislearn.core.errors import VislearnError

VOID_LABEL = 255
PROTOCOLS = ("davis", "per_frame", "identity")
DEFAULT_MAX_PROPOSALS = {"davis": 20, "per_frame": 300, "identity": 254}
_LUT_LIMIT = 1 << 16


# ----------------------------------------------------------------------------- measures


def _as_mask(x: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(x)
    if m.ndim != 2:
        raise VislearnError(f"{name} must be a 2-D [H, W] mask, got shape {m.shape}")
    return m.astype(bool, copy=False)


def _check_shapes(*masks: np.ndarray | None) -> None:
    shapes = {m.shape for m in masks if m is not None}
    if len(shapes) > 1:
        raise VislearnError(f"mask sizes differ: {sorted(shapes)}")


def region_j(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J: |pred & gt| / |pred | gt| over non-void pixels; 1.0 when the union
    is empty (nothing to find and nothing found)."""
    p, g = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    v = None if void is None else _as_mask(void, "void")
    _check_shapes(p, g, v)
    if v is not None:
        p, g = p & ~v, g & ~v
    union = int(np.count_nonzero(p | g))
    return 1.0 if union == 0 else int(np.count_nonzero(p & g)) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask, at the mask's own size (the idea of DAVIS's
    ``seg2bmap``).

    Rule: pixel (y, x) is a boundary pixel when its value differs from that of its right
    (y, x+1), bottom (y+1, x) or bottom-right (y+1, x+1) neighbour, counting only neighbours
    inside the image. Both foreground and background pixels can be marked, so the boundary
    sits half a pixel up-left of the true contour: for a filled h x w rectangle with rows
    r0..r1 and columns c0..c1 away from the image border, it is the ring of the rectangle
    with rows r0-1..r1 and columns c0-1..c1, i.e. ``2 * (h + w)`` pixels, and it is closed on
    all four sides. (Marking only foreground pixels with a differing right/bottom neighbour
    would miss the top and left edges.) The image border itself is not a boundary: a mask
    covering the whole image has none.
    """
    seg = _as_mask(mask, "mask")
    b = np.zeros_like(seg)
    b[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    b[:-1, :] |= seg[:-1, :] != seg[1:, :]
    b[:-1, :-1] |= seg[:-1, :-1] != seg[1:, 1:]
    return b


def boundary_tolerance(shape: Sequence[int], bound_th: float = 0.008) -> float:
    """Boundary match radius in pixels: ``ceil(bound_th * hypot(H, W))`` when ``bound_th < 1``
    (a fraction of the image diagonal; 8 px at 480x854), else ``bound_th`` pixels."""
    if bound_th < 0:
        raise VislearnError(f"bound_th must be >= 0, got {bound_th}")
    if bound_th >= 1:
        return float(bound_th)
    return float(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def disk(radius: float) -> np.ndarray:
    """Disk structuring element: offsets (dy, dx) with dy^2 + dx^2 <= radius^2, in a
    ``(2 * floor(radius) + 1)``-sided square."""
    r = int(math.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    return dy * dy + dx * dx <= radius * radius


class _Outline:
    """Boundary pixels of one mask (frame coordinates) and the tolerance radius.

    :meth:`hits` counts another outline's pixels that fall inside this boundary dilated by
    :func:`disk` of the radius, i.e. those within Euclidean distance ``radius`` of one of its
    pixels. It answers that with a k-d tree nearest-neighbour query on the boundary pixels
    rather than by dilating an image: the same set (the disk is exactly the offsets of length
    <= radius), at a cost that grows with the boundary length instead of the frame area
    times the disk area (a radius-8 ``binary_dilation`` of a 480x854 frame took ~1 s on the
    shared 2-core test machine, the query a few ms). The tests check it against
    ``binary_dilation`` with :func:`disk`.
    """

    def __init__(self, ys: np.ndarray, xs: np.ndarray, radius: float):
        self.ys, self.xs, self.radius = ys, xs, radius
        self.count = int(ys.size)
        if self.count:
            self.box = (ys.min(), ys.max(), xs.min(), xs.max())
        self._tree: cKDTree | None = None

    def hits(self, other: _Outline) -> int:
        """How many of ``other``'s boundary pixels lie in this boundary dilated by the disk."""
        if not self.count or not other.count:
            return 0
        r = self.radius
        (y0, y1, x0, x1), (v0, v1, u0, u1) = self.box, other.box
        if v0 > y1 + r or v1 < y0 - r or u0 > x1 + r or u1 < x0 - r:
            return 0  # bounding boxes farther apart than the radius
        if self._tree is None:
            self._tree = cKDTree(np.column_stack([self.ys, self.xs]))
        dist, _ = self._tree.query(
            np.column_stack([other.ys, other.xs]), k=1, distance_upper_bound=r + 1
        )
        return int(np.count_nonzero(dist <= r))


def _outline(mask: np.ndarray, radius: float, y0: int = 0, x0: int = 0) -> _Outline:
    """Outline of ``mask``, a window of a frame whose top-left pixel is (y0, x0). The window
    must include one empty row/column beyond the object on every side that is not the image
    border, so that the boundary rule sees the same neighbours as on the whole frame."""
    ys, xs = np.nonzero(boundary_map(mask))
    return _Outline(ys + y0, xs + x0, radius)


def _f_from_outlines(pred: _Outline | None, gt: _Outline | None) -> float:
    n_p = 0 if pred is None else pred.count
    n_g = 0 if gt is None else gt.count
    if n_p == 0 or n_g == 0:
        # both empty: P = R = 1; only GT empty: P = 0, R = 1; only pred empty: P = 1, R = 0
        return 1.0 if n_p == n_g else 0.0
    assert pred is not None and gt is not None
    precision = gt.hits(pred) / n_p  # predicted boundary pixels near the GT boundary
    recall = pred.hits(gt) / n_g  # GT boundary pixels near the predicted boundary
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def boundary_f(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008
) -> float:
    """Boundary F-measure (DAVIS): void pixels are removed from both masks, each boundary map
    (:func:`boundary_map`) is dilated by a disk of radius :func:`boundary_tolerance`;
    precision = predicted boundary pixels inside the dilated GT boundary / predicted boundary
    pixels, recall = GT boundary pixels inside the dilated predicted boundary / GT boundary
    pixels, F = 2PR / (P + R) (0 when P + R = 0). Both boundaries empty -> 1; exactly one
    empty -> 0. (The dilation is evaluated as a distance query, see :class:`_Outline`.)"""
    p, g = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    v = None if void is None else _as_mask(void, "void")
    _check_shapes(p, g, v)
    if v is not None:
        p, g = p & ~v, g & ~v
    radius = boundary_tolerance(p.shape, bound_th)
    return _f_from_outlines(_outline(p, radius), _outline(g, radius))


def stats(per_frame: np.ndarray) -> dict[str, float]:
    """Per-object statistics of a per-frame score sequence, as DAVIS computes them.

    * ``mean``: mean ignoring NaN.
    * ``recall``: fraction of frames scoring > 0.5.
    * ``decay``: mean of the first bin minus mean of the last of 4 bins. Bin edges (0-based)
      are ``e_i = round_half_up(i * (n - 1) / 4)`` for i = 0..4 and bin i holds frames
      ``e_i..e_{i+1}`` inclusive, so neighbouring bins share a frame (for n = 8 the first bin
      is frames 0-2, the last 5-7).
    """
    v = np.asarray(per_frame, dtype=np.float64).ravel()
    n = v.size
    if n == 0:
        return {"mean": math.nan, "recall": math.nan, "decay": math.nan}

    def nanmean(x: np.ndarray) -> float:
        x = x[~np.isnan(x)]
        return float(x.mean()) if x.size else math.nan

    edges = [(i * (n - 1) + 2) // 4 for i in range(5)]
    first = v[edges[0] : edges[1] + 1]
    last = v[edges[3] : edges[4] + 1]
    return {
        "mean": nanmean(v),
        "recall": float(np.mean(v > 0.5)),
        "decay": nanmean(first) - nanmean(last),
    }


# ----------------------------------------------------------------------------- one frame


def _index_map(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position + 1 of each pixel's label in the sorted ``ids``; 0 for labels not in ids.
    Labels are non-negative (checked by :func:`_label_array`)."""
    if ids.size == 0:
        return np.zeros(labels.shape, dtype=np.int64)
    top = max(int(labels.max()), int(ids.max()))
    if top < _LUT_LIMIT:  # a lookup table is much faster than a search per pixel
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return lut[labels]
    pos = np.minimum(np.searchsorted(ids, labels), ids.size - 1)
    return np.where(ids[pos] == labels, pos + 1, 0)


def _present_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a non-negative label map."""
    if labels.size and int(labels.max()) < _LUT_LIMIT:
        return np.flatnonzero(np.bincount(labels.ravel()))
    return np.unique(labels)


def _outlines(index: np.ndarray, count: int, radius: float) -> list[_Outline | None]:
    """Outline of every label 1..count of an index map (None for labels absent)."""
    h, w = index.shape
    out: list[_Outline | None] = []
    for k, box in enumerate(ndimage.find_objects(index, max_label=count), start=1):
        if box is None:
            out.append(None)
            continue
        y0, y1 = max(box[0].start - 1, 0), min(box[0].stop + 1, h)
        x0, x1 = max(box[1].start - 1, 0), min(box[1].stop + 1, w)
        out.append(_outline(index[y0:y1, x0:x1] == k, radius, y0, x0))
    return out


@dataclass
class _FrameScores:
    j: np.ndarray  # [K, N] J of predicted id k against GT object n
    f: np.ndarray  # [K, N]
    j_empty: np.ndarray  # [N] J of an empty prediction against GT object n
    f_empty: np.ndarray  # [N]


def _frame_scores(
    pred: np.ndarray, gt: np.ndarray, pred_ids: np.ndarray, gt_ids: np.ndarray, bound_th: float
) -> _FrameScores:
    """J and F of every (predicted id, GT id) pair in one frame; GT value 255 is void."""
    valid = gt != VOID_LABEL
    p = _index_map(pred, pred_ids) * valid
    g = _index_map(gt, gt_ids) * valid
    k, n = pred_ids.size, gt_ids.size
    counts = np.bincount((p * (n + 1) + g).ravel(), minlength=(k + 1) * (n + 1))
    counts = counts.reshape(k + 1, n + 1)
    inter = counts[1:, 1:]
    area_p, area_g = counts[1:].sum(1), counts[:, 1:].sum(0)
    union = area_p[:, None] + area_g[None, :] - inter
    j = np.where(union > 0, inter / np.maximum(union, 1), 1.0)

    radius = boundary_tolerance(gt.shape, bound_th)
    p_out, g_out = _outlines(p, k, radius), _outlines(g, n, radius)
    f = np.array([[_f_from_outlines(po, go) for go in g_out] for po in p_out]).reshape(k, n)
    j_empty = (area_g == 0).astype(np.float64)
    f_empty = np.array([_f_from_outlines(None, go) for go in g_out], dtype=np.float64)
    return _FrameScores(j, f, j_empty, f_empty)


# ----------------------------------------------------------------------------- one sequence


def _resize_nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize sampling at pixel centres."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def _label_array(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise VislearnError(f"{what} must be a 2-D [H, W] label map, got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if a.dtype.kind not in "iu":
        raise VislearnError(f"{what} must hold integer ids, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise VislearnError(f"{what} has negative ids (min {a.min()})")
    return a


def _foreground_ids_for(foreground_ids: Any, seq: str) -> Any:
    if isinstance(foreground_ids, Mapping):
        if seq not in foreground_ids:
            raise VislearnError(f"foreground_ids has no entry for sequence {seq}")
        foreground_ids = foreground_ids[seq]
    if isinstance(foreground_ids, str) and foreground_ids != "all":
        raise VislearnError(f"foreground_ids must be ids or 'all', got {foreground_ids!r}")
    return foreground_ids


def evaluate_sequence(
    name: str,
    preds: Mapping[int, np.ndarray],
    gts: Mapping[int, np.ndarray],
    protocol: str = "davis",
    max_proposals: int | None = None,
    bound_th: float = 0.008,
    single_object: bool = False,
    foreground_ids: Sequence[int] | Mapping[str, Sequence[int]] | str | None = None,
    strict: bool = False,
    drop_first_last: bool = False,
) -> list[dict[str, Any]]:
    """Score one sequence: ``preds`` and ``gts`` map frame index -> label map ``[H, W]``.
    Returns one row per GT object (see :func:`evaluate_sequences` for the options) with its
    per-frame ``J`` and ``F`` arrays, the frame indices, the matched predicted id per frame
    (``pred_ids``; 0 = an empty proposal) and the :func:`stats` of J and F."""
    if protocol not in PROTOCOLS:
        raise VislearnError(f"unknown protocol {protocol!r}; use one of {list(PROTOCOLS)}")
    limit = DEFAULT_MAX_PROPOSALS[protocol] if max_proposals is None else int(max_proposals)
    frames = sorted(gts)
    if drop_first_last:
        frames = frames[1:-1]
    if not frames:
        raise VislearnError(f"sequence {name} has no annotated frames to score")
    missing = [i for i in frames if i not in preds]
    if missing:
        raise VislearnError(
            f"sequence {name}: no prediction for {len(missing)} annotated frame(s), "
            f"first frame index {missing[0]}"
        )
    fg = _foreground_ids_for(foreground_ids, name) if single_object else None

    gt_frames, pred_frames = [], []
    gt_set: set[int] = set()
    pred_set: set[int] = set()
    for i in frames:
        gt = _label_array(gts[i], f"GT of {name} frame {i}")
        pred = _label_array(preds[i], f"prediction of {name} frame {i}")
        if pred.shape != gt.shape:
            pred = _resize_nearest(pred, gt.shape)
        if single_object:
            gt = np.where(gt == VOID_LABEL, VOID_LABEL, gt > 0).astype(np.uint8)
            if fg is not None:
                keep = pred > 0 if isinstance(fg, str) and fg == "all" else np.isin(pred, fg)
                pred = keep.astype(np.uint8)
        ids = _present_ids(pred)
        if strict and ids.size and ids.max() > limit:
            raise VislearnError(
                f"sequence {name} frame {i}: predicted id {ids.max()} exceeds the maximum of "
                f"{limit} proposals"
            )
        pred_set.update(int(x) for x in ids if 0 < x <= limit)
        gt_set.update(int(x) for x in _present_ids(gt) if 0 < x < VOID_LABEL)
        gt_frames.append(gt)
        pred_frames.append(pred)

    gt_ids = np.array(sorted(gt_set), dtype=np.int64)
    pred_ids = gt_ids if protocol == "identity" else np.array(sorted(pred_set), dtype=np.int64)
    n = gt_ids.size
    if n == 0:
        return []
    pad = max(n - pred_ids.size, 0)
    cand_ids = np.concatenate([pred_ids, np.zeros(pad, dtype=np.int64)])
    j_all = np.empty((len(frames), cand_ids.size, n))
    f_all = np.empty_like(j_all)
    for t, (pred, gt) in enumerate(zip(pred_frames, gt_frames, strict=True)):
        s = _frame_scores(pred, gt, pred_ids, gt_ids, bound_th)
        j_all[t] = np.concatenate([s.j, np.tile(s.j_empty, (pad, 1))])
        f_all[t] = np.concatenate([s.f, np.tile(s.f_empty, (pad, 1))])

    t_idx = np.arange(len(frames))[:, None]
    if protocol == "identity":
        rows = np.tile(np.arange(n), (len(frames), 1))
    elif protocol == "davis":
        _, cols = _match((j_all.mean(0) + f_all.mean(0)) / 2)
        rows = np.tile(cols, (len(frames), 1))
    else:
        rows = np.stack([_match(j_all[t] + f_all[t])[1] for t in range(len(frames))])
    obj = np.arange(n)[None, :]
    j_obj, f_obj, id_obj = j_all[t_idx, rows, obj], f_all[t_idx, rows, obj], cand_ids[rows]

    out = []
    for col, gid in enumerate(gt_ids):
        js, fs = stats(j_obj[:, col]), stats(f_obj[:, col])
        out.append(
            {
                "sequence": name,
                "object": int(gid),
                "frames": list(frames),
                "pred_ids": id_obj[:, col].copy(),
                "J": j_obj[:, col].copy(),
                "F": f_obj[:, col].copy(),
                **{f"J_{k}": v for k, v in js.items()},
                **{f"F_{k}": v for k, v in fs.items()},
            }
        )
    return out


def _match(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment of candidates (rows) to GT objects (columns) maximising the total
    score; returns (objects, candidate row per object) with every object assigned."""
    cand, objs = linear_sum_assignment(score, maximize=True)
    order = np.argsort(objs)
    return objs[order], cand[order]


# ----------------------------------------------------------------------------- data sets


def summarize(rows: Sequence[Mapping[str, Any]], protocol: str = "davis") -> dict[str, Any]:
    """Global numbers from per-object rows, objects pooled across sequences."""
    if not rows:
        raise VislearnError("no GT objects to score (every annotation is background)")
    out: dict[str, Any] = {"protocol": protocol}
    for m in ("J", "F"):
        for k in ("mean", "recall", "decay"):
            out[f"{m}_{k}"] = float(np.mean([r[f"{m}_{k}"] for r in rows]))
    out["JF_mean"] = (out["J_mean"] + out["F_mean"]) / 2
    out["num_objects"] = len(rows)
    out["num_sequences"] = len({r["sequence"] for r in rows})
    out["objects"] = list(rows)
    return out


def evaluate_sequences(
    preds: Mapping[str, Mapping[int, np.ndarray]],
    gts: Mapping[str, Mapping[int, np.ndarray]],
    protocol: str = "davis",
    max_proposals: int | None = None,
    bound_th: float = 0.008,
    single_object: bool = False,
    foreground_ids: Sequence[int] | Mapping[str, Sequence[int]] | str | None = None,
    strict: bool = False,
    drop_first_last: bool = False,
) -> dict[str, Any]:
    """Score predictions against GT, both ``{sequence: {frame index: label map [H, W]}}``.

    Every GT sequence must have predictions (extra predicted sequences are ignored).
    ``protocol``: ``"davis"`` (official unsupervised, ``max_proposals`` 20), ``"per_frame"``
    (SSL-UVOS's per-frame oracle, 300; not the official protocol) or ``"identity"``; see the
    module docstring, also for ``single_object`` / ``foreground_ids``, ``strict`` and
    ``drop_first_last``. ``bound_th`` sets the F tolerance (:func:`boundary_tolerance`).

    Returns ``J_mean, J_recall, J_decay, F_mean, F_recall, F_decay, JF_mean`` (objects pooled
    across sequences), ``num_objects``, ``num_sequences``, ``protocol`` and ``objects``: one
    row per GT object (:func:`evaluate_sequence`).
    """
    rows: list[dict[str, Any]] = []
    for name in gts:
        if name not in preds:
            raise VislearnError(f"no predictions for sequence {name}")
        rows += evaluate_sequence(
            name,
            preds[name],
            gts[name],
            protocol=protocol,
            max_proposals=max_proposals,
            bound_th=bound_th,
            single_object=single_object,
            foreground_ids=foreground_ids,
            strict=strict,
            drop_first_last=drop_first_last,
        )
    return summarize(rows, protocol)


def evaluate_folder(
    results_dir: str | os.PathLike,
    davis_root: str | os.PathLike,
    split: str = "val",
    year: str | int = "2017",
    task: str = "unsupervised",
    resolution: str = "480p",
    sequences: Sequence[str] | None = None,
    protocol: str = "davis",
    **options: Any,
) -> dict[str, Any]:
    """Score a results folder (``results_dir/<seq>/<frame>.png``, DAVIS submission format)
    against a DAVIS-layout data set (:func:`vislearn.data.video.davis.read_davis`), one sequence at
    a time. ``options`` are those of :func:`evaluate_sequences`."""
    from vislearn.data.video.davis import read_annotations, read_davis, read_predictions

    rows: list[dict[str, Any]] = []
    for seq in read_davis(davis_root, split, year, task, resolution, sequences):
        gts = read_annotations(seq)
        preds = read_predictions(results_dir, seq, frames=list(gts))
        rows += evaluate_sequence(seq.name, preds, gts, protocol=protocol, **options)
    return summarize(rows, protocol)
