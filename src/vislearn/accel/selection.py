"""Token scores and the choice of "fresh" tokens on conservative steps.

A higher score means the token is recomputed. The final score of a module of a block is::

    base (V-norm | attention | random) + l3 * stale / N      (ToCa s3)
    then, in every g x g patch, best token's score *= 1 + bonus  (ToCa s4)
    fresh tokens = top-k

Classifier-free guidance: with ``cfg=True`` the score inputs of the two batch halves are
averaged (V-norms, attention column sums, cross-attention maps, as the released PixArt code
does) and the top-k of the first half is used for both halves, so cond and uncond rows always
pick the same tokens (the released DiT code does this for ``random`` only; here it holds for
every score). ``cfg`` may be a 0-d bool tensor (``cfg="auto"``, decided on the device): then
both branches are computed and chosen with ``torch.where``, never read on the host, and the
top-k runs over every row (rows with equal scores choose equal tokens).

Every function takes a leading stack of blocks too (``(D, B, ...)`` with ``batch_dim=1``), so one
call scores all blocks of a model at once.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

__all__ = [
    "attention_column_score",
    "cfg_average",
    "cfg_mix",
    "cross_attention_entropy_score",
    "random_score",
    "select_tokens",
    "spatial_bonus",
    "vnorm_score",
]


def cfg_average(t: torch.Tensor, batch_dim: int = 0) -> torch.Tensor:
    """Mean of the two batch halves, repeated over both halves (same shape as ``t``)."""
    a, b = t.chunk(2, dim=batch_dim)
    m = 0.5 * a + 0.5 * b
    return torch.cat([m, m], dim=batch_dim)


def cfg_mix(
    t: torch.Tensor, cfg: bool | torch.Tensor, batch_dim: int = 0, mode: str = "average"
) -> torch.Tensor:
    """``t`` with its batch halves made equal when ``cfg`` holds: their mean (``"average"``) or
    the first half twice (``"first"``); ``cfg`` a bool or a 0-d bool tensor (no host read)."""
    if cfg is False:
        return t
    if mode == "average":
        mixed = cfg_average(t, batch_dim)
    else:
        first = t.narrow(batch_dim, 0, t.shape[batch_dim] // 2)
        mixed = torch.cat([first, first], dim=batch_dim)
    return mixed if cfg is True else torch.where(cfg, mixed, t)


def vnorm_score(vnorm: torch.Tensor, high: bool = False) -> torch.Tensor:
    """V-caching score from per-head value norms ``(B, H, N)`` -> ``(B, N)``.

    ``high=False`` is the released code, ``normalize(sum_h(1 - |v_h|))``: tokens with a *small*
    value norm score high. ``high=True`` is the other reading, ``normalize(sum_h |v_h|)``.
    """
    s = vnorm.sum(dim=-2) if high else (1 - vnorm).sum(dim=-2)
    return F.normalize(s.float(), p=2, dim=-1)


def attention_column_score(column_sums: torch.Tensor) -> torch.Tensor:
    """ToCa s1: how much attention each token receives, ``(B, N)`` column sums of the
    head-averaged self-attention map, L2-normalised."""
    return F.normalize(column_sums.float(), p=2, dim=-1)


def cross_attention_entropy_score(probs: torch.Tensor) -> torch.Tensor:
    """ToCa s2: entropy of each token's head-averaged cross-attention distribution
    ``(B, N, L)`` over the text tokens; ``normalize(1 + H)``."""
    p = probs.float()
    h = -(p * torch.log(p + 1e-7)).sum(dim=-1)
    return F.normalize(1 + h, p=2, dim=-1)


def random_score(
    batch: int,
    tokens: int,
    cfg: bool | torch.Tensor,
    generator: torch.Generator | None,
    device: torch.device,
    lead: tuple[int, ...] = (),
) -> torch.Tensor:
    """Uniform random scores ``(*lead, batch, tokens)``; with ``cfg`` the first half's draw is
    copied to the second."""
    s = torch.rand(*lead, batch, tokens, generator=generator, device=device)
    return cfg_mix(s, cfg, batch_dim=len(lead), mode="first")


_warned_grid: set[tuple] = set()


def spatial_bonus(
    score: torch.Tensor, grid: tuple[int, int] | None, size: int, bonus: float
) -> torch.Tensor:
    """ToCa s4: in every ``size x size`` patch of the ``grid = (h, w)`` token grid (row-major
    tokens), the highest score gets ``+ bonus * itself``.

    ``grid=None`` means a square grid. A grid that cannot be cut into such patches leaves the
    score unchanged (with a one-time warning) instead of failing as the released code does.
    """
    if bonus == 0 or size <= 1:
        return score
    lead = score.shape[:-1]
    score = score.reshape(-1, score.shape[-1])
    b, n = score.shape
    if grid is None:
        side = int(round(n**0.5))
        grid = (side, side)
    h, w = grid
    if h * w != n or h % size or w % size:
        key = (h, w, n, size)
        if key not in _warned_grid:
            _warned_grid.add(key)
            warnings.warn(
                f"token grid {h}x{w} ({n} tokens) cannot be cut into {size}x{size} patches; "
                "the spatial bonus (s4) is skipped",
                stacklevel=2,
            )
        return score.view(*lead, n)
    patches = score.view(b, h // size, size, w // size, size).permute(0, 1, 3, 2, 4)
    patches = patches.reshape(b, -1, size * size)
    best = patches.argmax(dim=-1, keepdim=True)
    boost = torch.zeros_like(patches).scatter_(-1, best, 1.0)
    patches = patches * (1 + bonus * boost)
    out = patches.view(b, h // size, w // size, size, size).permute(0, 1, 3, 2, 4)
    return out.reshape(*lead, n)


def select_tokens(score: torch.Tensor, k: int, cfg: bool | torch.Tensor) -> torch.Tensor:
    """Indices ``(B, k)`` of the ``k`` highest scores per row; with ``cfg=True`` the first
    half's choice is used for both halves (with a tensor ``cfg`` the scores are expected to be
    mixed already, :func:`cfg_mix`, and every row chooses for itself)."""
    if cfg is True:
        half = score.shape[0] // 2
        idx = score[:half].topk(k, dim=-1).indices
        return torch.cat([idx, idx], dim=0)
    return score.topk(k, dim=-1).indices
