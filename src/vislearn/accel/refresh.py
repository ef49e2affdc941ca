"""Token selection for a whole cache cycle, chosen at the refresh (full) step for every block at
once.

On a full step each block records what its score needs (value norms, attention column sums,
cross-attention maps). Between two full steps these inputs do not change, the step types and
the token counts ``k`` of the coming calls are known from the plan, and the staleness counters
(ToCa's s3) depend only on the earlier choices of the same cycle. So right after the full step
the fresh tokens of every coming conservative call are chosen here, for all blocks together:
the blocks' scores are stacked into ``(D, B, N)``, staleness and the spatial bonus are added
once per coming call, and one ``topk`` with the largest ``k`` of that call picks every block's
tokens (a block with a smaller ``k`` takes the head of the sorted list: the same set). The
conservative calls then only read their indices -- no scoring, counting or random draws. Each
choice is kept twice: ``(B, k)`` token indices and, for the feed-forward, flat row indices into
the ``(B N, C)`` hidden states laid out ``(k, B)`` so that every block's slice is contiguous (one
``index_select`` / ``index_copy_`` per block; CPU ``scatter`` with an expanded index is slow).

The choice equals the call-by-call choice of :meth:`vislearn.accel.hook.BlockHooks.select` (up
to ties between equal scores), except that ``random`` scores are drawn in another order (one
draw per cycle and module). Not planned ahead, chosen call by call: blocks whose score reads
the cross-attention map while conservative calls recompute rows of it (``score="attention"``
with ``cross_attention="partial"``, PixArt), since the map changes within the cycle.
"""

from __future__ import annotations

from typing import Any

import torch

from vislearn.accel.config import CacheConfig
from vislearn.accel.schedule import StepType, fresh_ratio
from vislearn.accel.selection import (
    attention_column_score,
    cfg_mix,
    cross_attention_entropy_score,
    random_score,
    spatial_bonus,
    vnorm_score,
)
from vislearn.accel.state import RunState

__all__ = ["modules_of", "plan_cycle", "plannable"]


def plannable(config: CacheConfig, i: int) -> bool:
    """Whether block ``i``'s choices can be made at the refresh (see the module docstring)."""
    p = config.policy
    return not (
        config.needs_probs and config.score_source[i] == "cross" and p.cross_attention == "partial"
    )


def modules_of(config: CacheConfig, i: int) -> tuple[str, ...]:
    """The modules of block ``i`` that recompute selected tokens on conservative calls."""
    if config.score_source[i] == "cross" and config.policy.cross_attention == "partial":
        return ("cross_attn", "mlp")
    return ("mlp",)


def plan_cycle(
    config: CacheConfig,
    st: RunState,
    blocks: list[int],
    tokens: int,
    batch: int,
    device: Any,
    bonus: bool = True,
) -> None:
    """Choose the fresh tokens of the coming conservative calls of ``blocks`` (just computed
    fully) into ``st.sel``; mark them ``planned``. ``bonus=False`` leaves out the spatial
    bonus (token sequences that are not an image grid)."""
    depth = len(st.blocks)
    groups: dict[tuple, list[int]] = {}
    for i in blocks:
        if not plannable(config, i):
            st.blocks[i].planned = False
            continue
        ahead = st.planner.upcoming(0 if i == 0 else 1)
        calls = tuple(c for c, t in ahead if t is StepType.CONSERVATIVE)
        for module in modules_of(config, i):
            groups.setdefault((calls, module, config.score_source[i]), []).append(i)
        st.blocks[i].planned = True
    empty = None
    for (calls, module, _), idxs in groups.items():
        if not calls:
            continue
        p = config.policy
        ks = [
            [int(fresh_ratio(p, c, st.num_steps, i, depth, module) * tokens) for i in idxs]
            for c in calls
        ]
        if not any(max(row) for row in ks):
            picks = [None] * len(calls)
        else:
            picks = _choose(config, st, idxs, ks, tokens, batch, device, bonus)
        offs = None
        for c, row, top in zip(calls, ks, picks, strict=True):
            flat = None
            if top is not None:  # row indices into (B N, C), laid out (k, B) per block
                if offs is None:
                    offs = torch.arange(batch, device=device).mul_(tokens).view(1, batch, 1)
                flat = (top + offs).transpose(1, 2).contiguous()
            for d, (i, k) in enumerate(zip(idxs, row, strict=True)):
                if k == 0 or top is None:
                    if empty is None:
                        empty = torch.empty(batch, 0, dtype=torch.long, device=device)
                        empty = (empty, empty.view(-1))
                    st.sel[(c, i, module)] = empty
                else:
                    st.sel[(c, i, module)] = (top[d, :, :k], flat[d, :k].view(-1))


def _base_score(config: CacheConfig, st: RunState, idxs: list[int]) -> torch.Tensor:
    """The stacked ``(D, B, N)`` score of ``idxs`` before staleness and bonus."""
    score, bcs = config.policy.score, [st.blocks[i] for i in idxs]
    if score in ("vnorm", "vnorm_high"):
        v = cfg_mix(torch.stack([bc.vnorm for bc in bcs]), st.cfg, batch_dim=1)
        return vnorm_score(v, high=score == "vnorm_high")
    if config.score_source[idxs[0]] == "cross":
        probs = cfg_mix(torch.stack([bc.xattn_probs for bc in bcs]), st.cfg, batch_dim=1)
        return cross_attention_entropy_score(probs)
    cols = cfg_mix(torch.stack([bc.attn_cols for bc in bcs]), st.cfg, batch_dim=1)
    return attention_column_score(cols)


def _choose(config, st, idxs, ks, tokens, batch, device, bonus) -> list[torch.Tensor | None]:
    """Per coming call, the ``(D, B, kmax)`` top indices (``None`` where every ``k`` is 0)."""
    p = config.policy
    d = len(idxs)
    if p.score == "random":
        draws = random_score(batch, tokens, st.cfg, st.generator, device, lead=(len(ks), d))
        base = None
    else:
        base = _base_score(config, st, idxs).to(device)
    stale = None
    out: list[torch.Tensor | None] = []
    for j, row in enumerate(ks):
        kmax = max(row)
        score = draws[j] if base is None else base
        top = None
        if kmax:
            if p.staleness_weight and stale is not None:
                score = score + p.staleness_weight * stale / p.interval
            if bonus:
                score = spatial_bonus(score, st.grid, int(p.bonus_grid), float(p.bonus_ratio))
            top = score.topk(kmax, dim=-1).indices
        out.append(top)
        if j == len(ks) - 1:
            break
        stale = torch.ones(d, batch, tokens, device=device) if stale is None else stale + 1
        if top is not None:  # chosen tokens are fresh again; runs of equal k share one scatter
            start = 0
            for end in range(1, d + 1):
                if end == d or row[end] != row[start]:
                    if row[start]:
                        stale[start:end].scatter_(2, top[start:end, :, : row[start]], 0.0)
                    start = end
    return out
