"""Cost and deviation metrics for cached sampling.

* :func:`count_flops`: FLOPs of a callable with ``torch.utils.flop_counter.FlopCounterMode``.
  The stock counter has no formula for the CPU fused attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``) and would count attention as free on
  CPU; a formula is added for it (``4 * B * H * Nq * Nk * d``, the same as the GPU kernels).
  Token gathers/scatters, norms and element-wise ops are not counted (as in the official
  ``--test-FLOPs`` counters, which count matmuls, softmax and GELU only).
* :func:`wall_time`: seconds of a callable, synchronising an accelerator before and after
  (CUDA kernels run asynchronously: without the syncs a timer measures the launches).
* :func:`flops_ratio`: uncached FLOPs / cached FLOPs (the "FLOPs speedup").
* :func:`psnr`, :func:`relative_l2`: deviation of a cached result from the uncached one
  produced from the same noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "flops_ratio", "psnr", "relative_l2", "wall_time"]


def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, nq, d = q_shape
    nk, dv = k_shape[-2], v_shape[-1]
    return 2 * b * h * nq * nk * d + 2 * b * h * nq * nk * dv


def _custom_mapping() -> dict:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flops} if op is not None else {}


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``fn(*args, **kwargs)`` and return ``(result, flops)``."""
    with FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        out = fn(*args, **kwargs)
    return out, int(counter.get_total_flops())


def _sync(device: torch.device | str | None) -> None:
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()


def wall_time(
    fn: Callable[..., Any], *args: Any, device: torch.device | str | None = None, **kwargs: Any
) -> tuple[Any, float]:
    """Run ``fn(*args, **kwargs)`` and return ``(result, seconds)``; on a CUDA / MPS
    ``device`` the queue is drained before the clock starts and before it stops."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync(device)
    return out, time.perf_counter() - t0


def flops_ratio(uncached_flops: float, cached_flops: float) -> float:
    """How many times fewer FLOPs the cached run needed."""
    return float(uncached_flops) / max(float(cached_flops), 1.0)


def relative_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``|x - ref|_2 / |ref|_2`` over the whole tensor."""
    x, ref = x.detach().double(), ref.detach().double()
    return float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-12))


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio of ``x`` against ``ref`` in dB.

    ``data_range`` defaults to ``ref.max() - ref.min()`` (pass 2.0 for images in [-1, 1],
    1.0 for [0, 1]); identical tensors give ``inf``.
    """
    x, ref = x.detach().double(), ref.detach().double()
    if data_range is None:
        data_range = float(ref.max() - ref.min()) or 1.0
    mse = float(((x - ref) ** 2).mean())
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)
