"""Rank helpers and the one audited cross-rank gather of vislearn.

Everything in vislearn that concatenates tensors over processes goes through :func:`gather`
(differentiable) or :func:`gather_no_grad` (queues, buffers, metrics). Both are the identity
when ``torch.distributed`` is not initialised or the world has one process, so losses and
modules behave identically in single-process runs and tests.

Gradient semantics of :func:`gather`
------------------------------------
Let rank ``r`` hold ``x_r`` and compute ``X = [x_0; x_1; ...; x_{W-1}] = gather(x_r)`` and a
local loss ``L_r(X)``. DDP back-propagates ``L_r`` on every rank and averages the parameter
gradients, i.e. it optimises ``L = (1/W) * sum_s L_s``. The contribution of ``x_r`` to ``L``
therefore needs ``sum_s dL_s/dx_r``: the gradients that *every* rank computed for the slice of
``X`` that came from rank ``r``. The backward of
:func:`torch.distributed.nn.functional.all_gather` does exactly that (a reduce-scatter with
``SUM``), so after DDP's average the update equals the single-process update on the global
batch. A gather whose backward only keeps the local slice (or averages) is off by a factor or
drops the cross-rank terms; ``tests/test_distributed.py`` checks this on 2 gloo processes.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather", "gather_no_grad", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` over all ranks along dim 0, keeping gradients correct.

    Returns ``cat([x_0, ..., x_{W-1}], dim=0)`` in rank order, so the local rows sit at
    ``[rank() * n, (rank() + 1) * n)``. In the backward pass the gradient that reaches the local
    ``x`` is the **sum over all ranks** of the gradients of their gathered copies for this
    slice (see the module docstring for why this is what DDP needs).

    Every rank must pass a tensor of the same shape (equal per-rank batch sizes; use
    ``drop_last=True`` or equal shards). Identity when not distributed.
    """
    if world_size() == 1:
        return x
    if not (x.requires_grad and torch.is_grad_enabled()):
        return gather_no_grad(x)  # e.g. momentum-encoder keys: no backward needed
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # torch >= 2.6 marks the autograd-aware collectives as deprecated in favour of
        # functional collectives, which do not run on every backend; the semantics we rely on
        # (gather forward, sum-reduce-scatter backward) are unchanged.
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (detached) over all ranks along dim 0, without autograd.

    For queues, memory banks and statistics. Same rank ordering and equal-shape requirement as
    :func:`gather`. Returns ``x.detach()`` when not distributed.
    """
    x = x.detach()
    n = world_size()
    if n == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)
