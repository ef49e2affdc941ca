"""Pixel-to-prototype losses of MDP (multi-dataset segmentation pretraining), pure functions.

Notation: ``v`` are L2-normalised pixel embeddings ``[N, d]`` (pixels flattened over the
batch), ``P`` unit-norm class prototypes ``[C, d]`` over the *concatenated* label space of all
data sets, ``y`` pixel labels ``[N]`` with ``ignore_index`` for unlabelled pixels, and
``s_ic = v_i . p_c`` the cosine similarities.

* :func:`pixel_prototype_contrastive` --
  ``L_pp = -(1/|Omega|) sum_{i in Omega} log( exp(s_{i y_i}/tau) / sum_{c in C} exp(s_ic/tau) )``:
  each labelled pixel against *every* class of every data set ("interactive" contrast: classes
  absent from the image and classes of other taxonomies are in the denominator). It equals
  cross-entropy of the logits ``v P^T / tau``.
* :func:`soft_prototype_contrastive` -- the same with a soft target distribution over classes
  (pixel-level mixing: ``{a: lam, b: 1 - lam}``).
* :func:`pixel_class_sparse_coding` -- pull each pixel towards its top-k most similar
  prototypes besides its own class (reconstruction of "pixel-to-class sparse coding"; see the
  function for the exact form).

The published MDP paper (Shi et al., arXiv 2106.04121) gives no formulas we could read; these
are our reconstruction from the abstract and the authors' rebuttal, and every free choice
is an argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "pixel_class_sparse_coding",
    "pixel_prototype_contrastive",
    "soft_prototype_contrastive",
    "sparse_coding_targets",
    "two_hot",
]


def _zero(embeddings: Tensor) -> Tensor:
    """A zero that keeps the graph (no labelled pixel in the batch)."""
    return embeddings.sum() * 0.0


def pixel_prototype_contrastive(
    embeddings: Tensor,
    prototypes: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    ignore_index: int = 255,
    class_mask: Tensor | None = None,
) -> Tensor:
    """Pixel-to-prototype InfoNCE, averaged over labelled pixels.

    Args:
        embeddings: ``[N, d]`` L2-normalised pixel embeddings.
        prototypes: ``[C, d]`` unit-norm prototypes (no gradient needed).
        labels: ``[N]`` class ids; ``ignore_index`` pixels contribute nothing (no loss, no
            gradient).
        temperature: ``tau``.
        class_mask: optional bool ``[N, C]``: classes allowed in pixel ``i``'s denominator
            (e.g. only its own data set's classes, an ablation of the interactive contrast);
            the true class must be allowed. ``None`` = all classes.
    """
    valid = labels != ignore_index
    if not bool(valid.any()):
        return _zero(embeddings)
    logits = embeddings[valid] @ prototypes.t() / temperature
    if class_mask is not None:
        logits = logits.masked_fill(~class_mask[valid], float("-inf"))
    return F.cross_entropy(logits, labels[valid].long())


def soft_prototype_contrastive(
    embeddings: Tensor, prototypes: Tensor, targets: Tensor, temperature: float = 0.1
) -> Tensor:
    """``mean_i -sum_c targets_ic log softmax_c(v_i . p_c / tau)`` for soft targets ``[N, C]``
    (rows summing to 1)."""
    if embeddings.shape[0] == 0:
        return _zero(embeddings)
    logp = F.log_softmax(embeddings @ prototypes.t() / temperature, dim=1)
    return -(targets * logp).sum(1).mean()


def two_hot(a: Tensor, b: Tensor, lam: Tensor | float, num_classes: int) -> Tensor:
    """Soft targets ``lam * onehot(a) + (1 - lam) * onehot(b)``, ``[N, num_classes]``."""
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=a.device).reshape(-1, 1)
    return (
        lam_t * F.one_hot(a.long(), num_classes).float()
        + (1 - lam_t) * F.one_hot(b.long(), num_classes).float()
    )


def sparse_coding_targets(
    similarities: Tensor,
    labels: Tensor,
    k: int = 3,
    weight_temperature: float = 0.1,
    candidates: Tensor | None = None,
    weighting: str = "softmax",
) -> Tensor:
    """The sparse code of each pixel over the prototypes: weights ``[N, C]`` on its top-k
    most similar candidate classes, excluding its own class; rows sum to 1 (or are all zero
    for a pixel without candidates).

    Args:
        similarities: ``[N, C]`` cosine similarities ``s_ic`` (treated as constants).
        labels: ``[N]`` true classes (always excluded from the code).
        k: code size (clipped to the number of candidates).
        weight_temperature: ``tau'`` of ``weighting="softmax"``: ``w_ic proportional to
            exp(s_ic / tau')`` over the top-k.
        candidates: optional bool ``[N, C]``: classes a pixel may be coded with (MDP default:
            the classes of the *other* data sets); ``None`` = every class but the true one.
        weighting: ``"softmax"`` or ``"uniform"`` (``1/k`` each).
    """
    if weighting not in ("softmax", "uniform"):
        raise ValueError(f"weighting must be softmax or uniform, got {weighting!r}")
    n, c = similarities.shape
    allowed = (
        torch.ones_like(similarities, dtype=torch.bool)
        if candidates is None
        else candidates.clone()
    )
    allowed[torch.arange(n, device=labels.device), labels.long()] = False
    k = max(0, min(int(k), c - 1))
    out = torch.zeros_like(similarities, dtype=torch.float32)
    if k == 0 or n == 0:
        return out
    masked = similarities.detach().float().masked_fill(~allowed, float("-inf"))
    top, idx = masked.topk(k, dim=1)
    ok = torch.isfinite(top)
    if weighting == "softmax":
        w = torch.softmax((top / weight_temperature).masked_fill(~ok, float("-inf")), dim=1)
    else:
        w = ok.float() / ok.sum(1, keepdim=True).clamp_min(1)
    w = torch.nan_to_num(w, nan=0.0).masked_fill(~ok, 0.0)
    return out.scatter_(1, idx, w)


def pixel_class_sparse_coding(
    embeddings: Tensor,
    prototypes: Tensor,
    labels: Tensor,
    k: int = 3,
    temperature: float = 0.1,
    weight_temperature: float | None = None,
    candidates: Tensor | None = None,
    ignore_index: int = 255,
    weighting: str = "softmax",
) -> Tensor:
    """Pixel-to-class sparse coding: pull each labelled pixel towards its top-k similar
    prototypes of other classes ("CSC2" of the rebuttal: pull the top-k close).

    ``L_sc = mean_i -sum_{c in K_i} w_ic log softmax_c(s_i / tau)`` with ``K_i`` and ``w_i``
    from :func:`sparse_coding_targets` (computed without gradient). The softmax runs over all
    classes, so raising the top-k also lowers the rest: the embedding learns which classes of
    other taxonomies a pixel resembles (a "shirt" pixel of one data set and the "tops"
    prototype of another). Pixels without candidates are left out of the mean.

    Args:
        embeddings, prototypes, labels, ignore_index: as :func:`pixel_prototype_contrastive`.
        k, weight_temperature (default ``temperature``), candidates, weighting: see
            :func:`sparse_coding_targets`.
        temperature: ``tau`` of the log-softmax.
    """
    valid = labels != ignore_index
    if not bool(valid.any()):
        return _zero(embeddings)
    v, y = embeddings[valid], labels[valid]
    sim = v @ prototypes.t()
    w = sparse_coding_targets(
        sim.detach(),
        y,
        k,
        temperature if weight_temperature is None else weight_temperature,
        None if candidates is None else candidates[valid],
        weighting,
    )
    has = w.sum(1) > 0
    if not bool(has.any()):
        return _zero(embeddings)
    logp = F.log_softmax(sim[has] / temperature, dim=1)
    return -(w[has].to(logp.dtype) * logp).sum(1).mean()
