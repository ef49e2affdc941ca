"""Momentum (EMA) encoders and their schedules."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` to be updated by :func:`ema_update`."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """``target = m * target + (1 - m) * online`` for parameters; buffers are copied.

    One fused ``_foreach_lerp_`` over all parameters and one ``_foreach_copy_`` over the
    buffers. The parameter lists of a pair are built once and cached on the target (the
    ``Parameter`` objects survive ``.to(device)`` and memory-format changes, which replace
    their ``.data``); buffers are replaced by ``.to()``, so their lists are rebuilt."""
    cached = target.__dict__.get("_ema_params")
    if cached is None or cached[0] is not online:
        t_params, o_params = list(target.parameters()), list(online.parameters())
        if len(t_params) != len(o_params):
            raise ValueError(f"EMA pair has {len(o_params)} vs {len(t_params)} parameters")
        cached = (online, t_params, o_params)
        target.__dict__["_ema_params"] = cached
    torch._foreach_lerp_(cached[1], cached[2], 1.0 - m)
    t_bufs, o_bufs = list(target.buffers()), list(online.buffers())
    if len(t_bufs) != len(o_bufs):
        raise ValueError(f"EMA pair has {len(o_bufs)} vs {len(t_bufs)} buffers")
    if t_bufs:
        torch._foreach_copy_(t_bufs, o_bufs)


def cosine_momentum(step: int, total: int, base: float, final: float = 1.0) -> float:
    """BYOL schedule: ``final - (final - base) * (cos(pi * step / total) + 1) / 2``."""
    progress = min(1.0, step / max(1, total))
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
