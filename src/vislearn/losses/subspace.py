r"""Instance subspaces and the K-shot contrastive score of KSCL (Xu, Xiong & Qi, TPAMI 2022).

For an instance with ``K`` L2-normalised key embeddings ``k^1..k^K`` (columns of
``Kn ∈ R^{d×K}``), the Gram matrix ``G = Knᵀ Kn = U Λ Uᵀ`` (``K×K``, cheap) gives the top-``L``
principal directions of the keys, ``v_l = Kn u_l / sqrt(λ_l)``, and the score of a unit query
``q`` is the length of its projection onto their span:

.. math::
    s(q)^2 = \lVert V^\top q\rVert^2 = c^\top M c,\qquad c = Kn^\top q,\qquad
    M = \sum_{l \le L} \frac{u_l u_l^\top}{\max(\lambda_l, \varepsilon)}

``s = |q·k|`` for ``K = L = 1``: MoCo's logit up to its sign. [UNVERIFIED reconstruction: the
paper's exact score is not available; KSCL: Xu, Xiong & Qi, TPAMI 2022, arXiv:2007.13310.]

Numerical choices (all documented parameters):

* ``ε`` floors the eigenvalues (``1/max(λ, ε)``): a direction with ``λ < ε`` (duplicate or
  near-duplicate augmentations) contributes at most ``λ/ε < 1`` instead of ``0/0``. This is
  the ε-regularisation of the Gram matrix in the form of an eigenvalue floor rather than
  ``G + εI``: the shift would scale every score by about ``1/sqrt(1 + ε)`` and break the exact
  ``K = 1`` reduction to ``|q·k|``, while the floor leaves every direction with ``λ ≥ ε``
  exact.
* Only sign- and order-invariant quantities are used: ``M`` and ``‖Vᵀq‖``, never a raw
  eigenvector.
* :func:`subspace_metric` has its own backward (the Daleckii–Krein formula of a spectral
  function), which is finite for repeated eigenvalues, where the backward of
  ``torch.linalg.eigh`` divides by ``λ_i − λ_j = 0``. Pairs of eigenvalues on the same side of
  the top-``L`` cut use the exact divided difference (no division by the gap); only pairs that
  straddle the cut divide by the gap, floored at ``ε`` (there the subspace is genuinely
  ill-defined).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kscl_logits", "subspace_basis", "subspace_metric", "subspace_score"]


@contextlib.contextmanager
def _full_precision(x: Tensor) -> Iterator[torch.dtype]:
    """Autocast off and at least float32 (``eigh`` has no half-precision kernels, and the
    eigenvalue floor needs the precision)."""
    with torch.autocast(x.device.type, enabled=False):
        yield torch.promote_types(x.dtype, torch.float32)


def _check_rank(rank: int, num_keys: int) -> None:
    if not 1 <= rank <= num_keys:
        raise ValueError(f"subspace rank L must be in [1, K={num_keys}], got {rank}")


def _spectrum(gram: Tensor, rank: int, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Eigen-decomposition of a batch of Gram matrices with the top-``rank`` mask and
    ``h = 1/max(λ, ε)`` on the kept eigenvalues (0 elsewhere)."""
    lam, u = torch.linalg.eigh(gram)  # ascending
    top = torch.zeros_like(lam, dtype=torch.bool)
    top[..., lam.shape[-1] - rank :] = True
    h = torch.where(top, 1.0 / lam.clamp_min(eps), torch.zeros_like(lam))
    return lam, u, top, h


class _SubspaceMetric(torch.autograd.Function):
    """``M = U diag(h(λ)) Uᵀ`` with ``h = 1/max(λ, ε)`` on the top-L eigenvalues, 0 below."""

    @staticmethod
    def forward(ctx: Any, gram: Tensor, rank: int, eps: float) -> Tensor:
        lam, u, top, h = _spectrum(gram, rank, eps)
        ctx.save_for_backward(lam, u, top, h)
        ctx.eps = eps
        return (u * h.unsqueeze(-2)) @ u.transpose(-1, -2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        lam, u, top, h = ctx.saved_tensors
        eps = ctx.eps
        # divided differences Φ_ij = (h_i - h_j) / (λ_i - λ_j), Φ_ii = h'(λ_i)
        li, lj = lam.unsqueeze(-1), lam.unsqueeze(-2)
        hi, hj = h.unsqueeze(-1), h.unsqueeze(-2)
        ti, tj = top.unsqueeze(-1), top.unsqueeze(-2)
        above_i, above_j = li >= eps, lj >= eps
        # both kept: h = 1/max(λ, ε); -h_i h_j times the share of [λ_j, λ_i] above ε
        span = (li - lj).abs()
        over = (torch.maximum(li, lj) - eps).clamp_min(0)
        share = torch.where(
            above_i & above_j,
            torch.ones_like(span),
            torch.where(above_i ^ above_j, (over / span.clamp_min(1e-30)).clamp(0, 1), 0 * span),
        )
        both_top = -hi * hj * share
        # one kept (h) and one dropped (0): h_kept / (λ_kept - λ_dropped), the gap floored at ε
        gap = torch.where(ti, li - lj, lj - li).clamp_min(eps)
        cross = torch.where(ti, hi, hj) / gap
        phi = torch.where(ti & tj, both_top, torch.where(ti ^ tj, cross, torch.zeros_like(gap)))
        inner = u.transpose(-1, -2) @ grad @ u
        g = u @ (phi * inner) @ u.transpose(-1, -2)
        return (g + g.transpose(-1, -2)) / 2, None, None


def subspace_metric(gram: Tensor, rank: int, eps: float = 1e-3) -> Tensor:
    """``M = Σ_{l≤L} u_l u_lᵀ / max(λ_l, ε)`` for a batch of Gram matrices ``[..., K, K]``.

    Differentiable with a backward that stays finite for repeated eigenvalues (module
    docstring). For ``L = K`` and ``λ ≥ ε`` this is ``G⁻¹``.
    """
    if gram.dim() < 2 or gram.shape[-1] != gram.shape[-2]:
        raise ValueError(f"gram must be [..., K, K], got {tuple(gram.shape)}")
    _check_rank(rank, gram.shape[-1])
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return _SubspaceMetric.apply(gram, rank, eps)


def subspace_score(
    query: Tensor, keys: Tensor, rank: int | None = None, eps: float = 1e-3, squared: bool = False
) -> Tensor:
    """Score ``s_i = ‖P_i q_i‖`` of query ``i`` against the subspace of its own ``K`` keys.

    Args:
        query: ``[N, D]`` (normalised inside).
        keys: ``[N, K, D]`` (each key normalised inside).
        rank: subspace rank ``L`` (default ``K``).
        eps: eigenvalue floor ``ε``.
        squared: return ``s²`` instead of ``s``.

    Returns:
        ``[N]`` scores in ``[0, 1]``; differentiable in ``query`` and ``keys``.
    """
    if keys.dim() != 3 or query.dim() != 2 or keys.shape[::2] != query.shape:
        raise ValueError(
            f"query [N, D] and keys [N, K, D] expected, got {tuple(query.shape)} and "
            f"{tuple(keys.shape)}"
        )
    with _full_precision(query) as dtype:
        q = F.normalize(query.to(dtype), dim=-1)
        kn = F.normalize(keys.to(dtype), dim=-1)
        metric = subspace_metric(kn @ kn.transpose(1, 2), rank or kn.shape[1], eps)
        c = (kn @ q.unsqueeze(-1)).squeeze(-1)  # [N, K]
        s2 = (c.unsqueeze(1) @ metric @ c.unsqueeze(-1)).reshape(-1)
        return s2 if squared else s2.clamp_min(1e-12).sqrt()


@torch.no_grad()
def subspace_basis(keys: Tensor, rank: int | None = None, eps: float = 1e-3) -> Tensor:
    """Basis ``V`` ``[N, L, D]`` (rows ``v_l = Kn u_l / sqrt(max(λ_l, ε))``) of each instance.

    ``‖Vᵀq‖² = cᵀ M c``, the score of :func:`subspace_score`. Rows are orthogonal with norm
    ``sqrt(min(1, λ_l/ε))``: unit for real directions, shrunk towards 0 for degenerate ones.
    Row signs and the order of equal eigenvalues are arbitrary; only ``‖Vᵀq‖`` is meaningful.
    """
    if keys.dim() != 3:
        raise ValueError(f"keys must be [N, K, D], got {tuple(keys.shape)}")
    rank = rank or keys.shape[1]
    _check_rank(rank, keys.shape[1])
    with _full_precision(keys) as dtype:
        kn = F.normalize(keys.to(dtype), dim=-1)
        _, u, _, h = _spectrum(kn @ kn.transpose(1, 2), rank, eps)
        u, h = u[..., -rank:], h[..., -rank:]  # top-L, ascending
        return (u * h.sqrt().unsqueeze(-2)).transpose(1, 2) @ kn


def kscl_logits(
    query: Tensor,
    keys: Tensor,
    negative_bases: Tensor,
    temperature: float = 0.2,
    rank: int | None = None,
    eps: float = 1e-3,
    squared: bool = False,
) -> Tensor:
    r"""KSCL logits ``[N, 1 + M]``: ``[s_+(q_i), s_1(q_i), ..., s_M(q_i)] / τ``.

    The loss is ``F.cross_entropy(logits, 0)``:

    .. math::
        L = -\log \frac{e^{s_{+}(q)/\tau}}{e^{s_{+}(q)/\tau} + \sum_n e^{s_n(q)/\tau}}

    Args:
        query: ``[N, D]`` online queries.
        keys: ``[N, K, D]`` the ``K`` keys spanning each positive subspace (gradient flows
            through the subspace if they carry one).
        negative_bases: ``[M, L', D]`` queued bases (:func:`subspace_basis`), constants.
        temperature: ``τ > 0``.
        rank, eps, squared: as in :func:`subspace_score`.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if negative_bases.dim() != 3 or negative_bases.shape[-1] != query.shape[-1]:
        raise ValueError(
            f"negative_bases must be [M, L, {query.shape[-1]}], got {tuple(negative_bases.shape)}"
        )
    pos = subspace_score(query, keys, rank, eps, squared)
    with _full_precision(query) as dtype:
        q = F.normalize(query.to(dtype), dim=-1)
        m, rk, d = negative_bases.shape
        proj = q @ negative_bases.detach().to(dtype).reshape(m * rk, d).T  # [N, M*L]
        neg2 = proj.reshape(-1, m, rk).pow(2).sum(-1)
        neg = neg2 if squared else neg2.clamp_min(1e-12).sqrt()
        return torch.cat([pos.unsqueeze(1), neg], dim=1) / temperature
