"""Compiled block paths of the cached steps (``DuCaCache(..., compile=True)``).

A cached block is a handful of small ops (gate-and-add, a row gather, a norm, the modulation,
the feed-forward on the selected rows, a row update, gate-and-add); on a GPU each is a kernel
launch. Here each step type's block path is one function of tensors only -- the block's
weights are arguments, not modules -- compiled once with ``torch.compile`` and shared by every
block: ``dynamic=True`` keeps one graph for all token counts ``k`` (they vary with the step and
the layer under the ``toca`` ratio schedule), so all blocks reuse the compiled code instead of
recompiling per block. On CUDA the default mode is ``"reduce-overhead"`` (CUDA graphs): the
MLP cache is then updated out of place and the outputs that outlive the call (that cache, the
final hidden state) are cloned out of the graph's memory pool, which the next replay
overwrites; in other modes the cache is updated in place. The CUDA-graph path has not been run
on a GPU yet (no device in the sessions that wrote it). On a CPU the feed-forward matmuls
dominate a conservative block and inductor's code is about as fast as eager ATen (see
``docs/results/dit_ops.json``): the compiled path is for launch-bound accelerators.

The feed-forward must be diffusers' ``FeedForward`` with a (tanh-)GELU activation (DiT, PixArt);
other blocks, and blocks with a cross-attention cache (PixArt's partial cross-attention rows),
run the eager path. Full and aggressive steps are not compiled (the block's own forward; nothing
to compute).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CompiledPaths", "ff_weights"]


def ff_weights(block: nn.Module) -> tuple | None:
    """``(norm weight, norm bias, eps, w1, b1, w2, b2, approximate)`` of a block whose
    feed-forward the compiled path reproduces, else ``None``."""
    ff = getattr(block, "ff", None)
    net = getattr(ff, "net", None)
    norm = block.norm3 if block.norm_type == "ada_norm_zero" else block.norm2
    if block.norm_type not in ("ada_norm_zero", "ada_norm_single") or net is None:
        return None
    if not isinstance(norm, nn.LayerNorm) or len(net) not in (3, 4):
        return None
    act, lin = net[0], net[2]
    if type(act).__name__ != "GELU" or not isinstance(lin, nn.Linear):
        return None
    if not all(isinstance(m, nn.Dropout) for m in list(net)[1::2]):
        return None
    return (
        norm.weight,
        norm.bias,
        float(norm.eps),
        act.proj.weight,
        act.proj.bias,
        lin.weight,
        lin.bias,
        str(act.approximate),
    )


def _recompute_rows(
    h: torch.Tensor,
    gate_msa: torch.Tensor,
    attn: torch.Tensor,
    rows: torch.Tensor,
    shift: torch.Tensor,
    scale1: torch.Tensor,
    weights: tuple,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h + gate_msa * attn, the MLP output of the selected token rows)`` of a conservative
    block; ``rows``: flat ``(k B,)`` row indices."""
    ln_w, ln_b, eps, w1, b1, w2, b2, approximate = weights
    b, c = h.shape[0], h.shape[-1]
    h = torch.addcmul(h, gate_msa, attn)
    tok = h.reshape(-1, c).index_select(0, rows).view(-1, b, c)
    x = F.layer_norm(tok, (c,), ln_w, ln_b, eps)
    x = torch.addcmul(shift[:, 0].unsqueeze(0), x, scale1[:, 0].unsqueeze(0))
    y = F.linear(F.gelu(F.linear(x.reshape(-1, c), w1, b1), approximate=approximate), w2, b2)
    return h, y


def conservative_block(
    h: torch.Tensor,
    gate_msa: torch.Tensor,
    attn: torch.Tensor,
    rows: torch.Tensor,
    shift: torch.Tensor,
    scale1: torch.Tensor,
    gate_mlp: torch.Tensor,
    mlp: torch.Tensor,
    weights: tuple,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hidden states, updated MLP cache)`` of a conservative block (see
    :meth:`vislearn.accel.hook.BlockHooks.partial`); ``rows``: flat ``(k B,)`` row indices."""
    h, y = _recompute_rows(h, gate_msa, attn, rows, shift, scale1, weights)
    c = h.shape[-1]
    mlp = mlp.reshape(-1, c).index_copy(0, rows, y.to(mlp.dtype)).view(mlp.shape)
    return torch.addcmul(h, gate_mlp, mlp), mlp


def conservative_block_(
    h: torch.Tensor,
    gate_msa: torch.Tensor,
    attn: torch.Tensor,
    rows: torch.Tensor,
    shift: torch.Tensor,
    scale1: torch.Tensor,
    gate_mlp: torch.Tensor,
    mlp: torch.Tensor,
    weights: tuple,
) -> torch.Tensor:
    """:func:`conservative_block` updating the MLP cache in place (no copy of the cache; for
    modes without CUDA graphs, which would not replay a mutation of a non-static input)."""
    h, y = _recompute_rows(h, gate_msa, attn, rows, shift, scale1, weights)
    mlp.view(-1, h.shape[-1]).index_copy_(0, rows, y.to(mlp.dtype))
    return torch.addcmul(h, gate_mlp, mlp)


def reuse_block(
    h: torch.Tensor,
    gate_msa: torch.Tensor,
    attn: torch.Tensor,
    gate_mlp: torch.Tensor,
    mlp: torch.Tensor,
) -> torch.Tensor:
    """A reuse (FORA) block, or a conservative one that recomputes no token."""
    return torch.addcmul(torch.addcmul(h, gate_msa, attn), gate_mlp, mlp)


class CompiledPaths:
    """The compiled block functions of one cache (compiled lazily, on first use)."""

    def __init__(self, mode: str | None = None, backend: str = "inductor") -> None:
        self.mode = mode
        self.backend = backend
        self._fns: dict[tuple[str, str], Any] = {}

    def mode_for(self, device: torch.device) -> str:
        if self.mode is not None:
            return self.mode
        return "reduce-overhead" if device.type == "cuda" else "default"

    def _get(self, name: str, fn, device: torch.device):
        mode = self.mode_for(device)
        key = (name, mode)
        if key not in self._fns:
            self._fns[key] = torch.compile(fn, dynamic=True, mode=mode, backend=self.backend)
        return self._fns[key], mode == "reduce-overhead"

    def conservative(self, h, gate_msa, attn, rows, shift, scale1, gate_mlp, mlp, weights):
        """``(hidden states, MLP cache)``; the cache is updated in place unless CUDA graphs
        are on (then a fresh tensor, cloned out of the graph pool)."""
        if self.mode_for(h.device) != "reduce-overhead":
            fn, _ = self._get("conservative_", conservative_block_, h.device)
            return fn(h, gate_msa, attn, rows, shift, scale1, gate_mlp, mlp, weights), mlp
        fn, _ = self._get("conservative", conservative_block, h.device)
        out, mlp = fn(h, gate_msa, attn, rows, shift, scale1, gate_mlp, mlp, weights)
        return out, mlp.clone()

    def reuse(self, h, gate_msa, attn, gate_mlp, mlp):
        fn, _ = self._get("reuse", reuse_block, h.device)
        return fn(h, gate_msa, attn, gate_mlp, mlp)
