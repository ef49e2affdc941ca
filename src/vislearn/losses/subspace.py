r"""Instance subspaces and the K-shot contrastive score of KSCL (Xu, Xiong & Qi, TPAMI 2022).

For an instance with ``K`` L2-normalised key embeddings ``k^1..k^K`` (columns of
``Kn ∈ R^{d×K}``), the Gram matrix ``G = Knᵀ Kn = U Λ Uᵀ`` (``K×K``, cheap) gives the top-``L``
principal directions of the keys, ``v_l = Kn u_l / sqrt(λ_l)`` (unit vectors; ``λ_l`` is the
keys' energy along ``v_l``, ``Σ_l λ_l = K``), and the score of a unit query ``q`` is a weighted
length of its projection onto their span:

.. math::
    s(q)^2 = \sum_{l \le L} w_l (v_l^\top q)^2 = c^\top M c,\qquad c = Kn^\top q,\qquad
    M = \sum_{l \le L} h_l\, u_l u_l^\top,\qquad w_l = \lambda_l h_l

[UNVERIFIED reconstruction: the paper's exact score is not available; KSCL: Xu, Xiong & Qi,
TPAMI 2022, arXiv:2007.13310.] The weights are two documented options:

* ``weighting="projection"`` (default): ``w_l = 1`` -- ``s = ‖P q‖``, the length of the
  orthogonal projection onto the span of the top-``L`` directions -- up to ``eps_mode``:

  - ``eps_mode="floor"`` (default): ``h_l = 1/max(λ_l, ε)``, i.e. ``w_l = min(1, λ_l/ε)``.
    Every direction with ``λ_l ≥ ε`` gets **full weight**, however little of the keys' energy
    it carries: two keys at cosine 0.99 have ``λ = 1.99, 0.01``, and their difference
    direction (mostly augmentation noise) counts as much as their mean. Only directions below
    ``ε`` (duplicate or near-duplicate augmentations) are shrunk, to ``λ/ε < 1`` instead of
    ``0/0``. This is the exact span projection the method describes, not a bug; it stays the
    default (the benchmarked setting).
  - ``eps_mode="ridge"``: ``h_l = 1/(λ_l + ε)``, i.e. ``w_l = λ_l/(λ_l + ε)`` (Tikhonov,
    ``(G + εI)⁻¹`` restricted to the top ``L``): smooth, every direction slightly shrunk; with
    ``K = 1`` the score is ``|q·k| / sqrt(1 + ε)``.

* ``weighting="eigenvalue"``: ``w_l = λ_l / λ_1`` (``λ_1`` the largest eigenvalue), i.e.
  ``h_l = 1/λ_1`` for every kept direction: each direction counts in proportion to the keys'
  energy along it, the principal one fully. Equal to ``"projection"`` when the keys are
  orthonormal, and a near-degenerate direction fades out continuously (``w → 0`` as
  ``λ → 0``) instead of at ``ε``. ``λ_1 ≥ 1`` for unit keys, so ``ε`` plays no role in the
  forward pass (``eps_mode`` applies to ``λ_1``: ``max(λ_1, ε)`` or ``λ_1 + ε``). With
  ``L = K``: ``s² = ‖c‖² / λ_1``.

``subspace_rank`` ``L < K`` keeps only the top-``L`` directions (in every mode). In every mode
``0 ≤ w_l ≤ 1``, so ``s ∈ [0, 1]``, and for ``K = L = 1`` the score is ``|q·k|`` (``"floor"``
and ``"eigenvalue"``; ``"ridge"`` divides it by ``sqrt(1 + ε)``): MoCo's logit ``q·k`` **up to
its sign** -- KSCL at ``K = 1`` does not reduce exactly to MoCo (a negative with a negative
cosine scores ``|q·k| > 0``).

Numerical choices:

* ``ε`` regularises the eigenvalues as above. The default floor (rather than ``G + εI``) keeps
  every direction with ``λ ≥ ε`` exact, and with it the ``K = 1`` score exactly ``|q·k|``.
* Only sign- and order-invariant quantities are used: ``M`` and ``‖Vᵀq‖``, never a raw
  eigenvector.
* :func:`subspace_metric` has its own backward (the Daleckii–Krein formula of a spectral
  function), which is finite for repeated eigenvalues, where the backward of
  ``torch.linalg.eigh`` divides by ``λ_i − λ_j = 0``. Pairs of eigenvalues on the same side of
  the top-``L`` cut use the exact divided difference (no division by the gap); only pairs that
  straddle the cut divide by the gap, floored at ``ε`` (there the subspace is genuinely
  ill-defined). ``weighting="eigenvalue"`` adds the term of ``λ_1`` (``∂λ_1/∂G = u_1 u_1ᵀ``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "EPS_MODES",
    "WEIGHTINGS",
    "check_subspace_options",
    "kscl_logits",
    "subspace_basis",
    "subspace_metric",
    "subspace_score",
]

#: ``weighting`` options (module docstring)
WEIGHTINGS = ("projection", "eigenvalue")
#: ``eps_mode`` options (module docstring)
EPS_MODES = ("floor", "ridge")


@contextlib.contextmanager
def _full_precision(x: Tensor) -> Iterator[torch.dtype]:
    """Autocast off and at least float32 (``eigh`` has no half-precision kernels, and the
    eigenvalue floor needs the precision)."""
    with torch.autocast(x.device.type, enabled=False):
        yield torch.promote_types(x.dtype, torch.float32)


def _check_rank(rank: int, num_keys: int) -> None:
    if not 1 <= rank <= num_keys:
        raise ValueError(f"subspace rank L must be in [1, K={num_keys}], got {rank}")


def check_subspace_options(eps: float, weighting: str, eps_mode: str) -> None:
    """A ``ValueError`` for an ``eps`` <= 0 or an unknown ``weighting`` / ``eps_mode``."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if eps_mode not in EPS_MODES:
        raise ValueError(f"eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")


def _regularise(lam: Tensor, eps: float, eps_mode: str) -> Tensor:
    """The divisor of ``h``: ``max(λ, ε)`` (floor) or ``max(λ, 0) + ε`` (ridge)."""
    return lam.clamp_min(eps) if eps_mode == "floor" else lam.clamp_min(0) + eps


def _spectrum(
    gram: Tensor, rank: int, eps: float, weighting: str = "projection", eps_mode: str = "floor"
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Eigen-decomposition of a batch of Gram matrices with the top-``rank`` mask and ``h`` on
    the kept eigenvalues (0 elsewhere): ``1/reg(λ)`` (projection) or ``1/reg(λ_1)``
    (eigenvalue), ``reg`` as :func:`_regularise`."""
    lam, u = torch.linalg.eigh(gram)  # ascending
    top = torch.zeros_like(lam, dtype=torch.bool)
    top[..., lam.shape[-1] - rank :] = True
    if weighting == "projection":
        denom = _regularise(lam, eps, eps_mode)
    else:
        denom = _regularise(lam[..., -1:], eps, eps_mode).expand_as(lam)
    h = torch.where(top, 1.0 / denom, torch.zeros_like(lam))
    return lam, u, top, h


class _SubspaceMetric(torch.autograd.Function):
    """``M = U diag(h) Uᵀ`` with ``h`` of :func:`_spectrum` (0 below the top ``L``)."""

    @staticmethod
    def forward(
        ctx: Any, gram: Tensor, rank: int, eps: float, weighting: str, eps_mode: str
    ) -> Tensor:
        lam, u, top, h = _spectrum(gram, rank, eps, weighting, eps_mode)
        ctx.save_for_backward(lam, u, top, h)
        ctx.eps, ctx.weighting, ctx.eps_mode = eps, weighting, eps_mode
        return (u * h.unsqueeze(-2)) @ u.transpose(-1, -2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        lam, u, top, h = ctx.saved_tensors
        eps = ctx.eps
        # divided differences Φ_ij = (h_i - h_j) / (λ_i - λ_j), Φ_ii = h'(λ_i), with h a
        # function of λ_i alone; the eigenvalue weighting's dependence on λ_1 is added below
        li, lj = lam.unsqueeze(-1), lam.unsqueeze(-2)
        hi, hj = h.unsqueeze(-1), h.unsqueeze(-2)
        ti, tj = top.unsqueeze(-1), top.unsqueeze(-2)
        if ctx.weighting == "eigenvalue":  # h = 1/reg(λ_1) on every kept direction
            both_top = torch.zeros_like(li - lj)
        elif ctx.eps_mode == "ridge":  # h = 1/(λ + ε): the divided difference is -h_i h_j
            both_top = -hi * hj
        else:  # h = 1/max(λ, ε): -h_i h_j times the share of [λ_j, λ_i] above ε
            above_i, above_j = li >= eps, lj >= eps
            span = (li - lj).abs()
            over = (torch.maximum(li, lj) - eps).clamp_min(0)
            share = torch.where(
                above_i & above_j,
                torch.ones_like(span),
                torch.where(
                    above_i ^ above_j, (over / span.clamp_min(1e-30)).clamp(0, 1), 0 * span
                ),
            )
            both_top = -hi * hj * share
        # one kept (h) and one dropped (0): h_kept / (λ_kept - λ_dropped), the gap floored at ε
        gap = torch.where(ti, li - lj, lj - li).clamp_min(eps)
        cross = torch.where(ti, hi, hj) / gap
        phi = torch.where(ti & tj, both_top, torch.where(ti ^ tj, cross, torch.zeros_like(gap)))
        inner = u.transpose(-1, -2) @ grad @ u
        g = u @ (phi * inner) @ u.transpose(-1, -2)
        if ctx.weighting == "eigenvalue":
            # M = P_L / reg(λ_1): dM = -(M / reg(λ_1)) reg'(λ_1) dλ_1, dλ_1 = u_1ᵀ dG u_1
            lam1, u1, h1 = lam[..., -1], u[..., -1], h[..., -1]
            metric = (u * h.unsqueeze(-2)) @ u.transpose(-1, -2)
            active = (lam1 >= eps) if ctx.eps_mode == "floor" else (lam1 >= 0)
            coef = -(grad * metric).sum((-1, -2)) * h1 * active
            g = g + coef[..., None, None] * (u1.unsqueeze(-1) * u1.unsqueeze(-2))
        return (g + g.transpose(-1, -2)) / 2, None, None, None, None


def subspace_metric(
    gram: Tensor,
    rank: int,
    eps: float = 1e-3,
    weighting: str = "projection",
    eps_mode: str = "floor",
) -> Tensor:
    """``M = Σ_{l≤L} h_l u_l u_lᵀ`` for a batch of Gram matrices ``[..., K, K]`` (``h`` as in
    the module docstring; default ``h_l = 1/max(λ_l, ε)``).

    Differentiable with a backward that stays finite for repeated eigenvalues (module
    docstring). For the defaults, ``L = K`` and ``λ ≥ ε`` this is ``G⁻¹``.
    """
    if gram.dim() < 2 or gram.shape[-1] != gram.shape[-2]:
        raise ValueError(f"gram must be [..., K, K], got {tuple(gram.shape)}")
    _check_rank(rank, gram.shape[-1])
    check_subspace_options(eps, weighting, eps_mode)
    return _SubspaceMetric.apply(gram, rank, eps, weighting, eps_mode)


def subspace_score(
    query: Tensor,
    keys: Tensor,
    rank: int | None = None,
    eps: float = 1e-3,
    squared: bool = False,
    weighting: str = "projection",
    eps_mode: str = "floor",
) -> Tensor:
    """Score ``s_i`` of query ``i`` against the subspace of its own ``K`` keys.

    Args:
        query: ``[N, D]`` (normalised inside).
        keys: ``[N, K, D]`` (each key normalised inside).
        rank: subspace rank ``L`` (default ``K``).
        eps: eigenvalue regulariser ``ε``.
        squared: return ``s²`` instead of ``s``.
        weighting: ``"projection"`` (``s = ‖P q‖``) or ``"eigenvalue"`` (module docstring).
        eps_mode: ``"floor"`` (``max(λ, ε)``) or ``"ridge"`` (``λ + ε``).

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
        metric = subspace_metric(
            kn @ kn.transpose(1, 2), rank or kn.shape[1], eps, weighting, eps_mode
        )
        c = (kn @ q.unsqueeze(-1)).squeeze(-1)  # [N, K]
        s2 = (c.unsqueeze(1) @ metric @ c.unsqueeze(-1)).reshape(-1)
        return s2 if squared else s2.clamp_min(1e-12).sqrt()


@torch.no_grad()
def subspace_basis(
    keys: Tensor,
    rank: int | None = None,
    eps: float = 1e-3,
    weighting: str = "projection",
    eps_mode: str = "floor",
) -> Tensor:
    """Basis ``V`` ``[N, L, D]`` (rows ``sqrt(h_l) Kn u_l = sqrt(w_l) v_l``) of each instance.

    ``‖Vᵀq‖² = cᵀ M c``, the score of :func:`subspace_score` with the same options. Rows are
    orthogonal with norm ``sqrt(w_l) ≤ 1``: with the defaults unit for real directions and
    shrunk towards 0 for degenerate ones (``λ < ε``). Row signs and the order of equal
    eigenvalues are arbitrary; only ``‖Vᵀq‖`` is meaningful.
    """
    if keys.dim() != 3:
        raise ValueError(f"keys must be [N, K, D], got {tuple(keys.shape)}")
    rank = rank or keys.shape[1]
    _check_rank(rank, keys.shape[1])
    check_subspace_options(eps, weighting, eps_mode)
    with _full_precision(keys) as dtype:
        kn = F.normalize(keys.to(dtype), dim=-1)
        _, u, _, h = _spectrum(kn @ kn.transpose(1, 2), rank, eps, weighting, eps_mode)
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
    weighting: str = "projection",
    eps_mode: str = "floor",
) -> Tensor:
    r"""KSCL logits ``[N, 1 + M]``: ``[s_+(q_i), s_1(q_i), ..., s_M(q_i)] / τ``.

    The loss is ``F.cross_entropy(logits, 0)``:

    .. math::
        L = -\log \frac{e^{s_{+}(q)/\tau}}{e^{s_{+}(q)/\tau} + \sum_n e^{s_n(q)/\tau}}

    Args:
        query: ``[N, D]`` online queries.
        keys: ``[N, K, D]`` the ``K`` keys spanning each positive subspace (gradient flows
            through the subspace if they carry one).
        negative_bases: ``[M, L', D]`` queued bases (:func:`subspace_basis`, built with the same
            ``weighting`` and ``eps_mode``), constants.
        temperature: ``τ > 0``.
        rank, eps, squared, weighting, eps_mode: as in :func:`subspace_score`.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if negative_bases.dim() != 3 or negative_bases.shape[-1] != query.shape[-1]:
        raise ValueError(
            f"negative_bases must be [M, L, {query.shape[-1]}], got {tuple(negative_bases.shape)}"
        )
    pos = subspace_score(query, keys, rank, eps, squared, weighting, eps_mode)
    with _full_precision(query) as dtype:
        q = F.normalize(query.to(dtype), dim=-1)
        m, rk, d = negative_bases.shape
        proj = q @ negative_bases.detach().to(dtype).reshape(m * rk, d).T  # [N, M*L]
        neg2 = proj.reshape(-1, m, rk).pow(2).sum(-1)
        neg = neg2 if squared else neg2.clamp_min(1e-12).sqrt()
        return torch.cat([pos.unsqueeze(1), neg], dim=1) / temperature
