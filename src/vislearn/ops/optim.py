"""Optimisers, parameter groups and per-step learning-rate schedules (one place for every
trainer: :func:`lr_lambda`, :func:`step_scheduler`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch import nn

from vislearn.core.errors import VislearnError


def param_groups(
    modules: Iterable[nn.Module], weight_decay: float, exclude_bias_norm: bool = True, **extra
) -> list[dict]:
    """Split parameters into a decayed group and a no-decay group (biases and norm weights).

    A parameter with ``ndim <= 1`` is a bias or a normalisation scale; decaying those hurts
    SSL (SimCLR/BYOL/LARS practice). Extra keys (e.g. ``lr``) are copied into both groups.
    """
    decay, no_decay = [], []
    seen: set[int] = set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if exclude_bias_norm and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, **extra}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, **extra})
    return groups


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    The update of each parameter tensor is scaled by the trust ratio
    ``eta * ||w|| / (||g|| + wd * ||w||)``; groups with ``lars_exclude=True`` (biases, norms)
    use plain SGD, as in SimCLR/BYOL.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        eps: float = 1e-8,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eta=eta,
            eps=eps,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if group["weight_decay"]:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    w_norm, g_norm = torch.norm(p), torch.norm(p.grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0),
                        group["eta"]
                        * w_norm
                        / (g_norm + group["weight_decay"] * w_norm + group["eps"]),
                        torch.ones_like(w_norm),
                    )
                    d_p = d_p * trust
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_optimizer(
    name: str,
    groups: list[dict],
    lr: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """``sgd`` | ``lars`` | ``adamw`` over prepared parameter groups."""
    for g in groups:  # torch optimisers reject unknown keys only for some; keep them clean
        if name != "lars":
            g.pop("lars_exclude", None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    raise VislearnError(f"unknown optimizer {name!r}; choose sgd, lars or adamw")


def warmup_cosine(step: int, total: int, warmup: int, final_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine to ``final_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def poly(step: int, total: int, warmup: int, power: float = 0.9) -> float:
    """LR multiplier: linear warm-up, then ``(1 - progress) ** power`` (DeepLab's "poly")."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return (1.0 - progress) ** power


def warmup_constant(step: int, warmup: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then constant."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


SCHEDULES = ("cosine", "poly", "constant")


def lr_lambda(
    schedule: str, total: int, warmup: int = 0, final_ratio: float = 0.0, power: float = 0.9
) -> Callable[[int], float]:
    """The per-step LR multiplier of ``schedule``: ``cosine`` (to ``final_ratio``), ``poly``
    (with ``power``) or ``constant``, each after ``warmup`` linear warm-up steps."""
    if schedule == "cosine":
        return partial(warmup_cosine, total=total, warmup=warmup, final_ratio=final_ratio)
    if schedule == "poly":
        return partial(poly, total=total, warmup=warmup, power=power)
    if schedule == "constant":
        return partial(warmup_constant, warmup=warmup)
    raise VislearnError(f"unknown lr schedule {schedule!r}; choose {', '.join(SCHEDULES)}")


def step_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    total: int,
    warmup: int = 0,
    final_ratio: float = 0.0,
    power: float = 0.9,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimiser step with :func:`lr_lambda`'s multiplier."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(schedule, total, warmup, final_ratio, power)
    )
