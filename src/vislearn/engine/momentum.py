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
    """``target = m * target + (1 - m) * online`` for parameters; buffers are copied."""
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_lerp_(t_params, o_params, 1.0 - m)
    for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
        tb.copy_(ob)


def cosine_momentum(step: int, total: int, base: float, final: float = 1.0) -> float:
    """BYOL schedule: ``final - (final - base) * (cos(pi * step / total) + 1) / 2``."""
    progress = min(1.0, step / max(1, total))
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
