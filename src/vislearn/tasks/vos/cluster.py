"""Clustering of attention descriptors for SSL-UVOS inference
(Ding et al., "Betrayed by Attention", ECCV 2024, arXiv:2311.17893).

Every token of a video is described by a probability vector over the tokens of the key frames
(the spatio-temporal block's head-averaged attention). Two descriptors are compared with the
symmetric Kullback-Leibler divergence ``D(a, b) = KL(a||b) + KL(b||a)``. This module holds the
clustering pieces, as pure tensor code (any device, memory bounded by chunking):

* :func:`symmetric_kl` -- ``D`` between two sets of descriptors, with an epsilon inside the
  logarithms (the official code has none and gives ``inf``/``nan`` on zero probabilities);
* :func:`smooth` and :func:`leader_cluster` -- the two steps of the official "hierarchical
  clustering" on one window of frames: mean-shift-like smoothing, then a greedy threshold
  ("leader") pass in token order;
* :func:`window_centroids`, :func:`merge_centroids`, :func:`hierarchical_cluster` -- level 1
  per window of consecutive frames, then repeated leader passes over the centroid list until
  the count stops changing;
* :func:`agglomerative_cluster` -- the standard alternative: SciPy agglomerative clustering
  on the symmetric-KL distances of a (seeded) token subsample;
* :func:`assign` -- each token to its nearest centroid.

The number of clusters is not fixed: it follows from the threshold ``tau`` (official 1.0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vislearn.core.errors import VislearnError

__all__ = [
    "LINKAGES",
    "agglomerative_cluster",
    "assign",
    "hierarchical_cluster",
    "leader_cluster",
    "merge_centroids",
    "smooth",
    "symmetric_kl",
    "window_centroids",
]

#: SciPy linkages valid for an arbitrary (non-Euclidean) distance.
LINKAGES: tuple[str, ...] = ("average", "complete", "single", "weighted")


class _Prepared:
    """Descriptors with their ``log(x + eps)`` and negative entropies ``sum x log(x + eps)``,
    computed once and sliced per chunk."""

    def __init__(self, x: Tensor, eps: float) -> None:
        self.x = x
        self.log = torch.log(x + eps)
        self.negent = (x * self.log).sum(-1)

    def rows(self, s: int, e: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.x[s:e], self.log[s:e], self.negent[s:e]


def _check(desc: Tensor, name: str = "descriptors") -> None:
    if desc.dim() != 2:
        raise VislearnError(f"{name} must be [M, K], got shape {tuple(desc.shape)}")


def _block(a: tuple[Tensor, Tensor, Tensor], b: _Prepared) -> Tensor:
    """``D`` between prepared rows ``a`` and all of ``b``: the two cross-entropies subtracted
    from the two negative entropies, clamped at zero (rounding)."""
    x, lx, nx = a
    d = nx[:, None] + b.negent[None, :] - x @ b.log.T - lx @ b.x.T
    return d.clamp_min_(0)


def symmetric_kl(
    a: Tensor, b: Tensor | None = None, eps: float = 1e-8, chunk: int = 4096
) -> Tensor:
    """Symmetric KL divergence ``KL(a_i||b_j) + KL(b_j||a_i)``, ``[M, L]``.

    ``a``: ``[M, K]``, ``b``: ``[L, K]`` (rows are probability vectors); ``b=None`` compares
    ``a`` with itself and sets the diagonal to exactly zero. Computed as negative entropies
    minus cross-entropies, ``sum a log a + sum b log b - sum a log b - sum b log a``, with
    ``log(x + eps)`` everywhere, ``chunk`` rows of ``a`` at a time (temporary memory
    ``chunk x (L + K)`` beyond the inputs, their logarithms and the result).
    """
    _check(a, "a")
    self_cmp = b is None
    pb = _Prepared(a if b is None else b, eps)
    _check(pb.x, "b")
    if pb.x.shape[1] != a.shape[1]:
        raise VislearnError(f"descriptor widths differ: {a.shape[1]} vs {pb.x.shape[1]}")
    pa = pb if self_cmp else _Prepared(a, eps)
    m = a.shape[0]
    out = a.new_empty(m, pb.x.shape[0])
    for s in range(0, m, chunk):
        e = min(s + chunk, m)
        out[s:e] = _block(pa.rows(s, e), pb)
    if self_cmp:
        out.fill_diagonal_(0.0)
    return out


def _renormalise(x: Tensor) -> Tensor:
    return x / x.sum(-1, keepdim=True).clamp_min(1e-12)


def _near_rows(p: _Prepared, tau: float, chunk: int):
    """Yield ``(start, stop, near)``: which descriptors lie within ``D <= tau`` of rows
    ``start:stop`` (bool ``[stop - start, M]``; a row is always near itself)."""
    m = p.x.shape[0]
    for s in range(0, m, chunk):
        e = min(s + chunk, m)
        near = _block(p.rows(s, e), p) <= tau
        idx = torch.arange(e - s, device=near.device)
        near[idx, idx + s] = True  # itself, whatever the rounding
        yield s, e, near


def smooth(desc: Tensor, tau: float = 1.0, eps: float = 1e-8, chunk: int = 4096) -> Tensor:
    """Mean-shift-like smoothing (step 7(a)): every descriptor is replaced by the
    renormalised sum of all descriptors within ``D <= tau`` of it, itself included.

    Memory: ``chunk x M`` distances at a time (plus the descriptors' logarithms)."""
    _check(desc)
    p = _Prepared(desc, eps)
    out = torch.empty_like(desc)
    for s, e, near in _near_rows(p, tau, chunk):
        out[s:e] = _renormalise(near.to(desc.dtype) @ desc)
    return out


def _leader_groups(near: np.ndarray) -> np.ndarray:
    """Greedy threshold grouping on a boolean ``[M, M]`` neighbourhood matrix: in index
    order, every still-unassigned item opens a group with all unassigned items near it."""
    m = near.shape[0]
    assignment = np.full(m, -1, dtype=np.int64)
    free = np.ones(m, dtype=bool)
    group = 0
    for i in range(m):
        if not free[i]:
            continue
        members = near[i] & free
        members[i] = True
        assignment[members] = group
        free &= ~members
        group += 1
    return assignment


def _group_means(desc: Tensor, assignment: Tensor, groups: int) -> Tensor:
    sums = desc.new_zeros(groups, desc.shape[1]).index_add_(0, assignment, desc)
    return _renormalise(sums)  # the mean of probability vectors, renormalised


def leader_cluster(
    desc: Tensor, tau: float = 1.0, eps: float = 1e-8, chunk: int = 4096
) -> tuple[Tensor, Tensor]:
    """Greedy threshold ("leader") clustering (step 7(b)).

    In token order, each token not yet assigned starts a group with every unassigned token
    within ``D <= tau`` of it; the group's mean (renormalised) is its centroid. The result
    depends on the order of the rows, as in the official code.

    Returns ``(centroids [C, K], assignment [M] int64)``. Memory: an ``[M, M]`` boolean
    neighbourhood matrix in host memory (``M`` = tokens of one window of frames, or the
    centroid list), distances ``chunk`` rows at a time.
    """
    _check(desc)
    if desc.shape[0] == 0:
        return desc.new_zeros(0, desc.shape[1]), torch.zeros(0, dtype=torch.long)
    p = _Prepared(desc, eps)
    near = np.empty((desc.shape[0], desc.shape[0]), dtype=bool)
    for s, e, rows in _near_rows(p, tau, chunk):
        near[s:e] = rows.cpu().numpy()
    assignment = torch.from_numpy(_leader_groups(near)).to(desc.device)
    groups = int(assignment.max()) + 1
    return _group_means(desc, assignment, groups), assignment


def window_centroids(
    desc: Tensor, tau: float = 1.0, eps: float = 1e-8, chunk: int = 4096
) -> Tensor:
    """Level 1 on the tokens of one window of frames ``[M, K]``: :func:`smooth`, then the
    centroids of :func:`leader_cluster` on the smoothed descriptors."""
    return leader_cluster(smooth(desc, tau, eps, chunk), tau, eps, chunk)[0]


def merge_centroids(
    centroids: Tensor,
    tau: float = 1.0,
    max_rounds: int = 10000,
    eps: float = 1e-8,
    chunk: int = 4096,
) -> Tensor:
    """Levels 2+: repeated leader passes over a centroid list (unweighted group means, as in
    the official code) until the number of centroids stops changing or ``max_rounds``."""
    _check(centroids, "centroids")
    for _ in range(max_rounds):
        merged, _ = leader_cluster(centroids, tau, eps, chunk)
        done = merged.shape[0] == centroids.shape[0]
        centroids = merged
        if done:
            break
    return centroids


def hierarchical_cluster(
    desc_per_frame: Tensor,
    tau: float = 1.0,
    window: int = 3,
    max_rounds: int = 10000,
    eps: float = 1e-8,
    chunk: int = 4096,
) -> Tensor:
    """The official "hierarchical clustering" of descriptors ``[T, N, K]``: level 1
    (:func:`window_centroids`) on each window of ``window`` consecutive frames (the last
    window is shorter when ``T`` is not a multiple), then :func:`merge_centroids` on all
    windows' centroids. Returns the centroids ``[C, K]`` (assign tokens with :func:`assign`).

    For long videos compute each window's descriptors on the fly and call the two steps
    yourself (as :func:`vislearn.tasks.vos.segment.segment_video` does).
    """
    if desc_per_frame.dim() != 3 or desc_per_frame.shape[0] == 0:
        raise VislearnError(
            f"descriptors must be [T >= 1, N, K], got shape {tuple(desc_per_frame.shape)}"
        )
    if window < 1:
        raise VislearnError(f"window must be >= 1, got {window}")
    t = desc_per_frame.shape[0]
    level1 = [
        window_centroids(desc_per_frame[s : s + window].flatten(0, 1), tau, eps, chunk)
        for s in range(0, t, window)
    ]
    return merge_centroids(torch.cat(level1), tau, max_rounds, eps, chunk)


def assign(desc: Tensor, centroids: Tensor, eps: float = 1e-8, chunk: int = 4096) -> Tensor:
    """Index of the nearest centroid (smallest ``D``) of every descriptor, int64 ``[M]``;
    ``chunk`` descriptors at a time."""
    _check(desc)
    _check(centroids, "centroids")
    if centroids.shape[0] == 0:
        raise VislearnError("cannot assign descriptors to an empty centroid list")
    if centroids.shape[1] != desc.shape[1]:
        raise VislearnError(
            f"widths differ: descriptors {desc.shape[1]}, centroids {centroids.shape[1]}"
        )
    pc = _Prepared(centroids.to(desc), eps)
    out = []
    for s in range(0, desc.shape[0], chunk):
        out.append(_block(_Prepared(desc[s : s + chunk], eps).rows(0, chunk), pc).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=desc.device)


def agglomerative_cluster(
    desc: Tensor,
    num_clusters: int | None = None,
    threshold: float | None = None,
    linkage: str = "average",
    max_tokens: int = 4000,
    seed: int = 0,
    eps: float = 1e-8,
    chunk: int = 4096,
) -> tuple[Tensor, Tensor]:
    """Agglomerative clustering on symmetric-KL distances (an alternative to the leader
    scheme, not in the official code).

    ``max_tokens`` descriptors at most (a uniform sample without replacement drawn by a
    ``torch.Generator`` seeded with ``seed`` when there are more) are clustered with
    :func:`scipy.cluster.hierarchy.linkage` on their condensed distance matrix (memory
    ``max_tokens^2 / 2`` doubles, ~64 MB at 4000), cut at ``num_clusters`` clusters
    (``criterion="maxclust"``) or, when it is ``None``, at the merge distance ``threshold``
    (``criterion="distance"``; default ``1.0``, the leader scheme's ``tau``). ``linkage`` is
    one of :data:`LINKAGES` (Ward/centroid linkages need Euclidean distances and are refused).
    Each cluster's renormalised mean is a centroid; **every** descriptor (sampled or not) is
    then assigned to its nearest centroid with :func:`assign`, and centroids that receive no
    descriptor are dropped.

    Returns ``(centroids [C, K], assignment [M] int64)``.
    """
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as scipy_linkage
    from scipy.spatial.distance import squareform

    _check(desc)
    if linkage not in LINKAGES:
        raise VislearnError(f"linkage must be one of {list(LINKAGES)}, got {linkage!r}")
    if num_clusters is not None and num_clusters < 1:
        raise VislearnError(f"num_clusters must be >= 1, got {num_clusters}")
    m = desc.shape[0]
    if m == 0:
        raise VislearnError("no descriptors to cluster")
    if m > max_tokens:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(m, generator=g)[:max_tokens].sort().values.to(desc.device)
        sample = desc[idx]
    else:
        sample = desc
    if sample.shape[0] == 1:
        labels = np.zeros(1, dtype=np.int64)
    else:
        dist = symmetric_kl(sample, None, eps, chunk).double().cpu().numpy()
        dist = (dist + dist.T) / 2  # exact symmetry for squareform
        np.fill_diagonal(dist, 0.0)
        tree = scipy_linkage(squareform(dist, checks=False), method=linkage)
        if num_clusters is not None:
            labels = fcluster(tree, t=num_clusters, criterion="maxclust")
        else:
            labels = fcluster(tree, t=1.0 if threshold is None else threshold, criterion="distance")
        labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    lab = torch.from_numpy(labels).to(desc.device)
    centroids = _group_means(sample, lab, int(lab.max()) + 1)
    assignment = assign(desc, centroids, eps, chunk)
    used, assignment = torch.unique(assignment, return_inverse=True)
    return centroids[used], assignment
