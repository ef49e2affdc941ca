"""Scoring whole predictions of video object segmentation: J and F of every (predicted id,
ground-truth object) pair per frame, the matching protocols (``"davis"``, ``"per_frame"``,
``"identity"``) per sequence, and the global summary over sequences or a folder. See
:mod:`vislearn.eval.vos` for the protocols and conventions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from vislearn.core.errors import VislearnError
from vislearn.eval.vos.measures import (
    VOID_LABEL,
    Outline,
    boundary_tolerance,
    f_from_outlines,
    mask_outline,
    stats,
)

__all__ = [
    "DEFAULT_MAX_PROPOSALS",
    "PROTOCOLS",
    "evaluate_folder",
    "evaluate_sequence",
    "evaluate_sequences",
    "summarize",
]

PROTOCOLS = ("davis", "per_frame", "identity")


DEFAULT_MAX_PROPOSALS = {"davis": 20, "per_frame": 300, "identity": 254}


_LUT_LIMIT = 1 << 16


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


def _outlines(index: np.ndarray, count: int, radius: float) -> list[Outline | None]:
    """Outline of every label 1..count of an index map (None for labels absent)."""
    h, w = index.shape
    out: list[Outline | None] = []
    for k, box in enumerate(ndimage.find_objects(index, max_label=count), start=1):
        if box is None:
            out.append(None)
            continue
        y0, y1 = max(box[0].start - 1, 0), min(box[0].stop + 1, h)
        x0, x1 = max(box[1].start - 1, 0), min(box[1].stop + 1, w)
        out.append(mask_outline(index[y0:y1, x0:x1] == k, radius, y0, x0))
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
    f = np.array([[f_from_outlines(po, go) for go in g_out] for po in p_out]).reshape(k, n)
    j_empty = (area_g == 0).astype(np.float64)
    f_empty = np.array([f_from_outlines(None, go) for go in g_out], dtype=np.float64)
    return _FrameScores(j, f, j_empty, f_empty)


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
    strict: bool = True,
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
    strict: bool = True,
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
