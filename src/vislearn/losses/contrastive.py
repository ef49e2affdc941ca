"""Contrastive (InfoNCE-family) losses as pure functions.

All embeddings passed in are L2-normalised inside (``F.normalize`` along the last dim), so
callers hand over raw projector outputs. Queues of negatives are the exception: their rows are
expected to be unit vectors already (``MemoryQueue`` stores them that way) and are used as
constants (detached).

Distributed semantics: each function returns the mean over the *local* anchors. With equal
per-rank batches, averaging the per-rank losses (what DDP's gradient averaging does) gives the
loss of the global batch, and the options that gather (``gather_keys``, ``gather_distributed``)
keep gradients exact through :func:`vislearn.core.distributed.gather`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.distributed import gather, rank

__all__ = [
    "class_positive_mask",
    "class_positive_info_nce",
    "info_nce",
    "multi_positive_info_nce",
    "nt_xent",
]


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_pair(a: Tensor, b: Tensor, names: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names} must be 2-D tensors of equal shape [N, D], got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_queue(queue: Tensor, dim: int) -> None:
    if queue.dim() != 2 or queue.shape[1] != dim:
        raise ValueError(f"queue must have shape [K, {dim}], got {tuple(queue.shape)}")


def info_nce(
    query: Tensor,
    key: Tensor,
    queue: Tensor | None = None,
    temperature: float = 0.2,
    gather_keys: bool = False,
) -> Tensor:
    r"""InfoNCE loss of MoCo (with a queue) or of MoCo v3 / CLIP (in-batch negatives).

    With ``q_i = query_i/||query_i||`` and ``k_i = key_i/||key_i||``:

    *Queue* (``queue`` = ``[K, D]`` unit rows ``n_j``, detached):

    .. math::
        L = \frac{1}{N}\sum_i -\log \frac{e^{q_i\cdot k_i/\tau}}
            {e^{q_i\cdot k_i/\tau} + \sum_{j=1}^{K} e^{q_i\cdot n_j/\tau}}

    i.e. logits row ``i`` is ``[q_i·k_i, q_i·n_1, ..., q_i·n_K] / τ`` with target 0.

    *In-batch* (``queue is None``): the other keys are the negatives,

    .. math::
        L = \frac{1}{N}\sum_i -\log \frac{e^{q_i\cdot k_i/\tau}}{\sum_{j} e^{q_i\cdot k_j/\tau}}

    With ``gather_keys=True`` the sum over ``j`` runs over the keys of all ranks (gathered with
    gradient) and the target of local query ``i`` is ``rank * N + i``. Keys from a momentum
    encoder (computed under ``no_grad``) simply carry no gradient.

    Args:
        query: ``[N, D]`` queries (online branch), any norm.
        key: ``[N, D]`` positive keys, any norm.
        queue: optional ``[K, D]`` negatives, unit rows; detached inside.
        temperature: ``τ > 0``.
        gather_keys: gather in-batch keys over ranks (only without a queue).

    Returns:
        Scalar mean cross-entropy over the local queries.
    """
    _check_pair(query, key, "query and key")
    _check_temperature(temperature)
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1)
    n = q.shape[0]
    if queue is not None:
        if gather_keys:
            raise ValueError("gather_keys applies to in-batch negatives; pass queue=None")
        _check_queue(queue, q.shape[1])
        negatives = queue.detach().to(dtype=q.dtype)
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ negatives.T
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature
        targets = torch.zeros(n, dtype=torch.long, device=q.device)
    else:
        offset = 0
        if gather_keys:
            k = gather(k)
            offset = rank() * n
        logits = (q @ k.T) / temperature
        targets = torch.arange(offset, offset + n, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, targets)


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.5,
    gather_distributed: bool = False,
) -> Tensor:
    r"""NT-Xent loss of SimCLR over both views (2N anchors).

    With ``u = normalize([z1; z2])`` (``2N`` unit vectors; ``u_{i+N}`` is the other view of
    ``u_i``) and ``p(a)`` the index of the other view of anchor ``a``:

    .. math::
        L = \frac{1}{2N}\sum_{a=1}^{2N} -\log
            \frac{e^{u_a\cdot u_{p(a)}/\tau}}{\sum_{b\ne a} e^{u_a\cdot u_b/\tau}}

    Self-similarity is excluded from the denominator. With ``gather_distributed=True`` the
    local anchors are compared with the views of all ranks (``2·N·W`` candidates, gathered with
    gradient); the loss is still averaged over the local ``2N`` anchors, so the mean over
    ranks equals the loss of the global batch.

    Args:
        z1: ``[N, D]`` first view embeddings, any norm.
        z2: ``[N, D]`` second view embeddings of the same samples, any norm.
        temperature: ``τ > 0`` (SimCLR default 0.5).
        gather_distributed: use negatives from all ranks.

    Returns:
        Scalar mean over the ``2N`` local anchors.
    """
    _check_pair(z1, z2, "z1 and z2")
    _check_temperature(temperature)
    a = F.normalize(z1, dim=1)
    b = F.normalize(z2, dim=1)
    n = a.shape[0]
    anchors = torch.cat([a, b], dim=0)  # [2N, D]
    offset = 0
    if gather_distributed:
        a_all, b_all = gather(a), gather(b)
        offset = rank() * n
    else:
        a_all, b_all = a, b
    m = a_all.shape[0]  # N * world
    candidates = torch.cat([a_all, b_all], dim=0)  # [2M, D]
    logits = (anchors @ candidates.T) / temperature  # [2N, 2M]
    local = torch.arange(n, device=a.device)
    self_idx = torch.cat([local + offset, local + offset + m])
    pos_idx = torch.cat([local + offset + m, local + offset])
    rows = torch.arange(2 * n, device=a.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, self_idx] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, pos_idx)


def multi_positive_info_nce(
    query: Tensor,
    positives: Sequence[Tensor] | Tensor,
    queue: Tensor,
    temperature: float = 0.2,
    weights: Tensor | Sequence[float] | None = None,
) -> Tensor:
    r"""InfoNCE with several positives per query sharing one set of queue negatives.

    Each positive ``k^p`` gets its own softmax over ``[k^p, n_1, ..., n_K]`` (the other
    positives are *not* negatives), and the per-positive cross-entropies are averaged with
    weights ``w``:

    .. math::
        \ell_{p,i} = -\log \frac{e^{q_i\cdot k^p_i/\tau}}
                     {e^{q_i\cdot k^p_i/\tau} + \sum_{j=1}^{K} e^{q_i\cdot n_j/\tau}},
        \qquad
        L = \frac{\sum_{p,i} w_{p,i}\,\ell_{p,i}}{\sum_{p,i} w_{p,i}}

    ``weights`` of shape ``[P]`` weight whole positives (uniform by default, giving
    ``mean_p mean_i ℓ``); shape ``[P, N]`` weights each (positive, query) pair, e.g. a 0/1
    mask of valid cross-sample positives. With one positive this equals :func:`info_nce`
    with the same queue. Computed stably as ``ℓ = softplus(LSE_j(q·n_j/τ) − q·k^p/τ)``.

    Args:
        query: ``[N, D]`` queries, any norm.
        positives: list of ``P`` tensors ``[N, D]`` or one tensor ``[P, N, D]``, any norm.
        queue: ``[K, D]`` negatives, unit rows; detached inside.
        temperature: ``τ > 0``.
        weights: optional non-negative ``[P]`` or ``[P, N]`` weights with a positive sum.

    Returns:
        Scalar weighted mean of the per-positive cross-entropies.
    """
    _check_temperature(temperature)
    shapes = (
        [tuple(positives.shape)]
        if isinstance(positives, Tensor)
        else [tuple(p.shape) for p in positives]
    )
    if isinstance(positives, Tensor):
        ok = positives.dim() == 3 and positives.shape[0] > 0 and positives.shape[1:] == query.shape
    else:
        ok = len(shapes) > 0 and all(shape == tuple(query.shape) for shape in shapes)
    if query.dim() != 2 or not ok:
        raise ValueError(
            f"positives must be P>=1 tensors shaped like query {tuple(query.shape)} "
            f"(a list of [N, D] or one [P, N, D] tensor), got shapes {shapes}"
        )
    pos = positives if isinstance(positives, Tensor) else torch.stack(list(positives), dim=0)
    _check_queue(queue, query.shape[1])
    q = F.normalize(query, dim=1)
    k = F.normalize(pos, dim=2)
    n_pos, n = k.shape[:2]
    s_pos = (k * q.unsqueeze(0)).sum(dim=2) / temperature  # [P, N]
    s_neg = (q @ queue.detach().to(dtype=q.dtype).T) / temperature  # [N, K]
    lse_neg = torch.logsumexp(s_neg, dim=1)  # [N]
    terms = F.softplus(lse_neg.unsqueeze(0) - s_pos)  # [P, N]
    if weights is None:
        return terms.mean()
    w = torch.as_tensor(weights, dtype=terms.dtype, device=terms.device)
    if w.dim() == 1:
        w = w.unsqueeze(1)
    if w.shape not in {(n_pos, 1), (n_pos, n)}:
        raise ValueError(f"weights must have shape [{n_pos}] or [{n_pos}, {n}]")
    w = w.expand(n_pos, n)
    if bool((w < 0).any()) or not bool(w.sum() > 0):
        raise ValueError("weights must be non-negative with a positive sum")
    return (w * terms).sum() / w.sum()


def class_positive_mask(query_classes: Tensor, queue_classes: Tensor) -> Tensor:
    """``[N, K]`` bool: queue entry ``j`` is a positive of query ``i`` iff both carry a class
    (``>= 0``; ``-1`` means none: unlabelled without a confident pseudo-label) and it is the
    same one."""
    if query_classes.dim() != 1 or queue_classes.dim() != 1:
        raise ValueError("query_classes and queue_classes must be one-dimensional")
    same = query_classes.unsqueeze(1) == queue_classes.to(query_classes.device).unsqueeze(0)
    return same & (query_classes >= 0).unsqueeze(1)


def class_positive_info_nce(
    query: Tensor,
    key: Tensor,
    queue: Tensor,
    query_classes: Tensor,
    queue_classes: Tensor,
    temperature: float = 0.2,
    instance_weight: float | None = None,
) -> Tensor:
    r"""MoCo's InfoNCE whose positives are the own key *and* every queue entry of the query's
    class (SupCon's :math:`L_{out}` form over a MoCo queue; the class positives of SsCL).

    With ``q_i, k_i`` normalised, queue rows ``n_j`` and candidates
    ``s_i = [q_i·k_i, q_i·n_1, ..., q_i·n_K] / τ`` (one softmax over all of them, positives
    included), positives ``P_i = {0} ∪ {j : c_j = c_i ≥ 0}``
    (:func:`class_positive_mask`) and weights ``w_i`` summing to one over ``P_i``:

    .. math::
        L = \frac{1}{N}\sum_i -\sum_{j \in P_i} w_{ij} \log
            \frac{e^{s_{ij}}}{\sum_{j'=0}^{K} e^{s_{ij'}}}

    ``instance_weight=None``: uniform, ``w_ij = 1/|P_i|``. A number ``α ∈ [0, 1]``: the own key
    gets ``α`` and the class positives share ``1 - α`` (the own key gets 1 when the query has
    none). A query without class positives, or ``α = 1``, gives exactly :func:`info_nce`.

    Args:
        query: ``[N, D]`` queries, any norm.
        key: ``[N, D]`` own positive keys, any norm.
        queue: ``[K, D]`` unit rows (detached inside).
        query_classes: ``[N]`` long, the query's class or ``-1``.
        queue_classes: ``[K]`` long, each queue entry's class or ``-1``.
        temperature: ``τ > 0``.
        instance_weight: ``None`` or the own key's weight ``α`` in ``[0, 1]``.

    Returns:
        Scalar mean over the queries.
    """
    _check_pair(query, key, "query and key")
    _check_temperature(temperature)
    _check_queue(queue, query.shape[1])
    if query_classes.shape != (query.shape[0],) or queue_classes.shape != (queue.shape[0],):
        raise ValueError(
            f"query_classes must have shape [{query.shape[0]}] and queue_classes "
            f"[{queue.shape[0]}], got {tuple(query_classes.shape)} and "
            f"{tuple(queue_classes.shape)}"
        )
    if instance_weight is not None and not 0.0 <= instance_weight <= 1.0:
        raise ValueError(f"instance_weight must be None or in [0, 1], got {instance_weight}")
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1)
    negatives = queue.detach().to(dtype=q.dtype)
    logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ negatives.T], dim=1) / temperature
    class_pos = class_positive_mask(query_classes, queue_classes).to(q.dtype)  # [N, K]
    n_class = class_pos.sum(dim=1, keepdim=True)
    if instance_weight is None:
        weights = torch.cat([torch.ones_like(n_class), class_pos], dim=1) / (1 + n_class)
    else:
        own = torch.where(n_class > 0, float(instance_weight), 1.0)
        weights = torch.cat([own, class_pos * (1 - own) / n_class.clamp(min=1)], dim=1)
    return -(weights * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
