"""The two training losses of SSL-UVOS (Ding et al., "Betrayed by Attention", ECCV 2024,
arXiv:2311.17893), as pure tensor functions.

Both take the spatio-temporal block's attention ``attn`` ``[B, T N, T N]`` (post-dropout,
head-averaged, class-token rows and columns removed, rows *not* renormalised -- the second
output of :class:`~vislearn.tasks.vos.block.SpatioTemporalBlock`) and a set of query points: ``P``
spatial indices ``points`` into the ``N`` tokens of a frame, the same in every frame, so the
queries are the ``T P`` tokens ``(s, p)``. Row ``s N + i`` / column ``t N + j`` of ``attn`` is
token ``i`` of frame ``s`` / token ``j`` of frame ``t``.

* :func:`semantic_consistency_loss` (the official ``slot_loss``): the block's output features
  of a query's most attended tokens in every frame must be cosine-similar to the query's,
  those of its least attended tokens dissimilar.
* :func:`motion_consistency_loss` (the official ``motion_loss``, "dynamic motion consistency"
  with entropy normalisation): the attention rows of a query's most attended tokens in its
  own frame must be closer in cross-entropy to the query's row than those of its least
  attended tokens, weighted towards confident (low-entropy) queries.

**Ranking and ties.** Tokens are ranked with :func:`torch.topk` (largest for the positives,
smallest for the negatives). The official code sorts the whole row with ``argsort``; the
selected *sets* agree except among tied attention values. Attention dropout (``p = 0.4``)
zeroes many entries, so the negatives of a training step are largely drawn from tied zeros;
which of them are picked is implementation-defined in both codes.

**Set sizes scale with the grid.** The released counts (30 / 200 semantic, 10 / 50 motion)
are for ``N = 1152`` tokens per frame (``24 x 48`` at 8 px patches). Both losses take absolute
counts; :func:`loss_set_sizes` turns fractions of ``N`` into counts (floor 1), and
:data:`RELEASE_FRACTIONS` holds the release's fractions, so a 144-token grid gets 4 / 25 and
1 / 6. The query token itself is never ranked in its own frame, and the positive and negative
sets of a ranking are disjoint: a request of ``num_pos + num_neg > N - 1`` is an error instead
of silently overlapping sets (clamping to ``N`` made the negatives of a small grid include
the positives and the query).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError

__all__ = [
    "RELEASE_FRACTIONS",
    "loss_set_sizes",
    "motion_consistency_loss",
    "semantic_consistency_loss",
]

#: the released set sizes as fractions of the 1152 tokens of a frame (SSL-UVOS trains at
#: 192 x 384 px with 8 px patches): semantic 30 / 200, motion 10 / 50
RELEASE_FRACTIONS: dict[str, float] = {
    "sem_pos": 30 / 1152,
    "sem_neg": 200 / 1152,
    "mot_pos": 10 / 1152,
    "mot_neg": 50 / 1152,
}


def loss_set_sizes(n: int, pos_fraction: float, neg_fraction: float) -> tuple[int, int]:
    """``(num_pos, num_neg)`` for ``n`` tokens per frame: ``max(1, round(fraction * n))`` each.

    Raises if the two sets cannot be disjoint and exclude the query (``num_pos + num_neg >
    n - 1``) or a fraction is outside ``(0, 1)``."""
    for name, f in (("positive", pos_fraction), ("negative", neg_fraction)):
        if not 0 < f < 1:
            raise VislearnError(f"the {name} set fraction must be in (0, 1), got {f}")
    kp, kn = max(1, round(pos_fraction * n)), max(1, round(neg_fraction * n))
    _check_sizes(kp, kn, n)
    return kp, kn


def _check(attn: Tensor, points: Tensor, frames: int) -> tuple[int, int, int]:
    """``(B, T, N)`` of a ``[B, T N, T N]`` attention over ``frames`` frames."""
    if attn.dim() != 3 or attn.shape[1] != attn.shape[2]:
        raise VislearnError(f"attention must be [B, T N, T N], got {tuple(attn.shape)}")
    if points.dim() != 1 or points.numel() == 0:
        raise VislearnError(f"points must be a non-empty 1-D index tensor, got {points.shape}")
    b, tn = attn.shape[:2]
    if frames < 1 or tn % frames:
        raise VislearnError(f"attention size {tn} is not a multiple of the {frames} frames")
    n = tn // frames
    if int(points.min()) < 0 or int(points.max()) >= n:
        raise VislearnError(f"query points must lie in [0, {n}), got {points.tolist()}")
    return b, frames, n


def _check_sizes(num_pos: int, num_neg: int, n: int) -> None:
    if num_pos < 1 or num_neg < 1:
        raise VislearnError(f"need num_pos, num_neg >= 1, got {num_pos}, {num_neg}")
    if num_pos + num_neg > n - 1:
        raise VislearnError(
            f"{num_pos} positives + {num_neg} negatives do not fit disjointly in the {n - 1} "
            f"tokens of a {n}-token frame other than the query: lower the set sizes "
            "(loss_set_sizes scales them with the grid)"
        )


def _query_mask(points: Tensor, frames: int, n: int) -> Tensor:
    """bool ``[S, P, T, N]``: True at the query ``(s, points[p])`` itself (``t = s``)."""
    eye = torch.eye(frames, dtype=torch.bool, device=points.device)  # [S, T]
    tok = F.one_hot(points, n).bool()  # [P, N]
    return eye[:, None, :, None] & tok[None, :, None, :]


def semantic_consistency_loss(
    attn: Tensor,
    feats: Tensor,
    points: Tensor,
    num_pos: int = 30,
    num_neg: int = 200,
    pos_margin: float = 0.9,
    neg_margin: float = 0.1,
) -> Tensor:
    """Cosine hinge between each query's features and those of its most / least attended
    tokens in every frame.

    For every query ``(s, p)`` and every target frame ``t`` (``t = s`` included), frame
    ``t``'s tokens are ranked by the query's attention row ``attn[s N + p, t N : (t + 1) N]``;
    ``Pos`` = the ``num_pos`` highest, ``Neg`` = the ``num_neg`` lowest. With ``z`` the block's
    output features, ``c_j = cos(z_{t,j}, z_{s,p})``::

        loss = mean_{b,s,p,t,j in Pos} relu(pos_margin - c_j)
             + mean_{b,s,p,t,j in Neg} relu(c_j - neg_margin)

    The query feature is not detached (gradients reach the block through both ends).

    Args:
        attn: ``[B, T N, T N]`` attention (only used for ranking; no gradient flows via it).
        feats: ``[B, T, N, C]`` block output features of the patch tokens.
        points: ``[P]`` int64 spatial query indices in ``[0, N)``.
        num_pos, num_neg: set sizes per target frame (:func:`loss_set_sizes`); in the
            query's own frame the query is not ranked.
        pos_margin, neg_margin: the hinge margins (0.9 / 0.1 as released).
    """
    if feats.dim() != 4:
        raise VislearnError(f"features must be [B, T, N, C], got {tuple(feats.shape)}")
    b, t, n = _check(attn, points, feats.shape[1])
    if feats.shape[:3] != (b, t, n):
        raise VislearnError(
            f"features {tuple(feats.shape)} do not match attention {tuple(attn.shape)}"
        )
    _check_sizes(num_pos, num_neg, n)
    rows = attn.detach().view(b, t, n, t, n)[:, :, points]  # [B, S, P, T, N]
    query = _query_mask(points, t, n)
    pos = rows.masked_fill(query, -float("inf")).topk(num_pos, dim=-1).indices
    neg = rows.masked_fill(query, float("inf")).topk(num_neg, dim=-1, largest=False).indices
    z = F.normalize(feats, dim=-1)
    sim = torch.einsum("bspc,btnc->bsptn", z[:, :, points], z)  # [B, S, P, T, N]
    pos_sim, neg_sim = sim.gather(-1, pos), sim.gather(-1, neg)
    return F.relu(pos_margin - pos_sim).mean() + F.relu(neg_sim - neg_margin).mean()


def motion_consistency_loss(
    attn: Tensor,
    points: Tensor,
    num_pos: int = 10,
    num_neg: int = 50,
    margin: float = 1.0,
    eps: float = 1e-10,
    *,
    num_frames: int,
) -> Tensor:
    """Entropy-weighted cross-entropy ranking of attention rows within the query's frame.

    Every row ``a_i = attn[i]`` (length ``T N``) is L1-normalised, ``â_i = a_i / max(|a_i|_1,
    1e-12)``, and serves as token ``i``'s correspondence ("motion") descriptor. For a query
    ``(s, p)``:

    1. ``Pos`` / ``Neg``: the ``num_pos`` highest / ``num_neg`` lowest tokens ``j`` of the
       query's *own* frame ``s`` by ``attn[s N + p, s N + j]`` (intra-frame ranking).
    2. ``q = â_{s,p}``, detached.
    3. ``ℓ_j = Σ_c q_c log(â_{s,j,c} + eps)`` (= minus the cross-entropy of ``â_{s,j}`` under
       ``q``); gradients reach the block through ``â_{s,j}``.
    4. ``w_{s,p} = softmax_p(Σ_c q_c log(q_c + eps))``, a softmax of the negative entropy over
       the ``P`` points of frame ``s`` (per clip): confident queries weigh more. No gradient.
    5. ``loss = mean_{b, s, n, k} Σ_p w_{s,p} relu(ℓ_{n(p)} - ℓ_{k(p)} + margin)`` over the
       ``num_neg x num_pos`` pairs of the ``n``-th negative and ``k``-th positive of each
       point (as released). The sum is linear, so this equals
       ``mean_{b,s} Σ_p w_{s,p} mean_{n in Neg(s,p), k in Pos(s,p)} relu(...)``: how the
       negatives and positives of different points are paired up does not matter.

    Choices where the notes leave room (all as in the released code): ``eps`` is added inside
    both logarithms, so ``q_c = 0`` contributes ``0 · log(eps) = 0`` to the entropy; the L1
    normalisation divides by ``max(sum, 1e-12)`` (``F.normalize(p=1)``; rows are non-negative);
    the weights are normalised over the points of one clip and frame, not over the batch.

    Args:
        attn: ``[B, T N, T N]`` attention with gradient.
        points: ``[P]`` int64 spatial query indices in ``[0, N)``.
        num_pos, num_neg: set sizes (10 / 50 as released at 1152 tokens;
            :func:`loss_set_sizes`); the query is not ranked.
        margin: ranking margin (1.0).
        eps: inside the logarithms (1e-10).
        num_frames: ``T`` (keyword-only, required: ``attn`` alone does not say how its
            ``T N`` tokens split into frames).
    """
    b, t, n = _check(attn, points, num_frames)
    _check_sizes(num_pos, num_neg, n)
    a = attn / attn.sum(-1, keepdim=True).clamp_min(1e-12)  # L1-normalised rows
    log_a = torch.log(a + eps).view(b, t, n, t * n)
    q = a.view(b, t, n, t * n)[:, :, points].detach()  # [B, S, P, T N]
    own = attn.detach().view(b, t, n, t, n)[:, :, points]  # [B, S, P, T, N]
    own = own.diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)  # [B, S, P, N]: frame t = s
    query = F.one_hot(points, n).bool()[None, None]  # [1, 1, P, N]
    pos = own.masked_fill(query, -float("inf")).topk(num_pos, dim=-1).indices
    neg = own.masked_fill(query, float("inf")).topk(num_neg, dim=-1, largest=False).indices
    ell = torch.einsum("bspc,bsjc->bspj", q, log_a)  # [B, S, P, N]
    ell_pos, ell_neg = ell.gather(-1, pos), ell.gather(-1, neg)
    w = torch.softmax((q * torch.log(q + eps)).sum(-1), dim=-1)  # [B, S, P]
    hinge = F.relu(ell_neg.unsqueeze(-1) - ell_pos.unsqueeze(-2) + margin)  # [B, S, P, Kn, Kp]
    return (w[..., None, None] * hinge).sum(2).mean()
