"""The adaLN parameters of every block at once, for the cached (conservative / reuse) steps.

A cached block needs its ``gate_msa``, ``shift_mlp``, ``scale_mlp`` and ``gate_mlp`` at the
current timestep (and class). Block by block that costs an embedding of the timestep and class
plus a ``6C x C`` linear per block; here it is one call per model call:

``ada_norm_zero`` (DiT)
    when every block's ``norm1.emb`` holds the same weights (checked when the cache is enabled:
    converted DiT checkpoints copy the single ``t_embedder`` / ``y_embedder`` of the released
    model into every block), the timestep and class are embedded once, as the released DiT
    forward does (Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023,
    arXiv:2212.09748). Blocks with embedders of their own (a DiT trained in diffusers) share
    the sinusoidal projection; their timestep MLPs run as two batched matmuls and their class
    tables as one stacked lookup. The four needed chunks of the ``D`` blocks' ``norm1.linear``
    are stacked into a ``(D, 4C, C)`` weight at the start of a run and applied as one batched
    matmul.
``ada_norm_single`` (PixArt)
    ``scale_shift_table + timestep`` for all blocks as one broadcast add.
``layer_norm``
    no modulation.

The ``1 +`` of ``x * (1 + scale) + shift`` is folded into the stacked bias / table, so a block
modulates with one ``addcmul``. Results equal the block-by-block computation up to float
rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Modulation", "same_weights"]


def same_weights(modules: Sequence[nn.Module]) -> bool:
    """Whether all ``modules`` hold equal parameters and buffers (same names, shapes, values)."""
    first = dict(modules[0].state_dict())
    for m in modules[1:]:
        other = m.state_dict()
        if other.keys() != first.keys():
            return False
        for k, v in first.items():
            w = other[k]
            if w.shape != v.shape or w.dtype != v.dtype or not torch.equal(w, v.to(w.device)):
                return False
    return True


class Modulation:
    """Per call: a list with one ``(gate_msa, shift_mlp, 1 + scale_mlp, gate_mlp)`` per block,
    each broadcastable to ``(B, N, C)`` (``None`` entries for ``layer_norm`` blocks)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        self.blocks = list(blocks)
        kinds = {b.norm_type for b in self.blocks}
        self.kind = kinds.pop() if len(kinds) == 1 else "mixed"
        self.emb_mode = "per_block"  # "shared" | "stacked" | "per_block"
        self.weight: torch.Tensor | None = None  # (D, 4C, C) or (D, 4, C) table
        self.bias: torch.Tensor | None = None  # (D, 1, 4C)
        self.emb_stack: tuple | None = None  # stacked embedder weights ("stacked")

    @property
    def shared_emb(self) -> bool:
        return self.emb_mode == "shared"

    def check(self) -> None:
        """At enable: do all blocks embed timestep and class with the same weights (or with
        embedders of one standard layout that stack)?"""
        self.emb_mode = "per_block"
        if self.kind != "ada_norm_zero":
            return
        embs = [b.norm1.emb for b in self.blocks]
        if any(e is None for e in embs):
            return
        if same_weights(embs):
            self.emb_mode = "shared"
        elif all(_stackable(e, embs[0]) for e in embs):
            self.emb_mode = "stacked"

    def prepare(self) -> None:
        """At the start of a run: stack the blocks' current weights (a copy of the four needed
        chunks; DiT-XL/2 in bf16: ~300 MB, kept while the cache is enabled)."""
        self.weight = self.bias = None
        with torch.no_grad():
            if self.kind == "ada_norm_zero":
                c = self.blocks[0].norm1.linear.in_features
                w = torch.stack([b.norm1.linear.weight[2 * c :] for b in self.blocks])
                lin = [b.norm1.linear.bias for b in self.blocks]
                if all(x is not None for x in lin):
                    bias = torch.stack([x[2 * c :] for x in lin]).clone()
                else:
                    bias = w.new_zeros(w.shape[0], 4 * c)
                bias[:, 2 * c : 3 * c] += 1  # scale_mlp -> 1 + scale_mlp
                self.weight, self.bias = w, bias[:, None, :]
                self.emb_stack = None
                if self.emb_mode == "stacked":
                    te = [b.norm1.emb.timestep_embedder for b in self.blocks]
                    tables = [b.norm1.emb.class_embedder.embedding_table for b in self.blocks]
                    self.emb_stack = (
                        torch.stack([m.linear_1.weight for m in te]).transpose(1, 2),
                        torch.stack([m.linear_1.bias for m in te])[:, None],
                        torch.stack([m.linear_2.weight for m in te]).transpose(1, 2),
                        torch.stack([m.linear_2.bias for m in te])[:, None],
                        torch.stack([t.weight for t in tables]),
                    )
            elif self.kind == "ada_norm_single":
                table = torch.stack([b.scale_shift_table[2:] for b in self.blocks]).clone()
                table[:, 2] += 1
                self.weight = table  # (D, 4, C): gate_msa, shift_mlp, 1 + scale_mlp, gate_mlp

    def __call__(self, h: torch.Tensor, timestep, class_labels) -> list:
        if self.kind == "ada_norm_zero" and self.weight is not None:
            return self._ada_zero(h, timestep, class_labels)
        if self.kind == "ada_norm_single" and self.weight is not None:
            b = h.shape[0]
            p = self.weight[:, None] + timestep.view(b, 6, -1)[None, :, 2:].to(self.weight.dtype)
            return [(m[:, 0:1], m[:, 1:2], m[:, 2:3], m[:, 3:4]) for m in p.unbind(0)]
        return [per_block(blk, h, timestep, class_labels) for blk in self.blocks]

    def _ada_zero(self, h: torch.Tensor, timestep, class_labels) -> list:
        d = len(self.blocks)
        n1 = self.blocks[0].norm1
        if self.shared_emb:
            cond = n1.silu(n1.emb(timestep, class_labels, hidden_dtype=h.dtype))
            cond = cond.to(self.weight.dtype).expand(d, *cond.shape)
        elif (
            self.emb_stack is not None
            and class_labels is not None
            and not any(b.norm1.emb.training for b in self.blocks)
        ):
            w1, b1, w2, b2, tables = self.emb_stack
            proj = n1.emb.time_proj(timestep).to(dtype=h.dtype)  # no weights: once
            proj = proj.to(w1.dtype).expand(d, *proj.shape)
            temb = torch.baddbmm(b2, F.silu(torch.baddbmm(b1, proj, w1)), w2)
            cond = F.silu(temb + tables[:, class_labels]).to(self.weight.dtype)
        else:
            cond = torch.stack(
                [
                    b.norm1.silu(b.norm1.emb(timestep, class_labels, hidden_dtype=h.dtype))
                    for b in self.blocks
                ]
            ).to(self.weight.dtype)
        out = torch.baddbmm(self.bias, cond, self.weight.transpose(1, 2))  # (D, B, 4C)
        out = out.view(d, out.shape[1], 4, -1)
        return [(m[:, None, 0], m[:, None, 1], m[:, None, 2], m[:, None, 3]) for m in out.unbind(0)]


def _stackable(emb: nn.Module, first: nn.Module) -> bool:
    """``emb`` is a diffusers ``CombinedTimestepLabelEmbeddings`` laid out like ``first``
    (sinusoidal projection, linear-SiLU-linear timestep MLP, class table)."""
    try:
        tp, te, ce = emb.time_proj, emb.timestep_embedder, emb.class_embedder
        tp0 = first.time_proj
    except AttributeError:
        return False
    same_proj = all(
        getattr(tp, k, None) == getattr(tp0, k, None)
        for k in ("num_channels", "flip_sin_to_cos", "downscale_freq_shift", "scale")
    )
    mlp = (
        getattr(te, "cond_proj", None) is None
        and getattr(te, "post_act", None) is None
        and isinstance(getattr(te, "act", None), nn.SiLU)
        and te.linear_1.bias is not None
        and te.linear_2.bias is not None
    )
    return (
        type(emb).__name__ == "CombinedTimestepLabelEmbeddings"
        and type(tp).__name__ == "Timesteps"
        and same_proj
        and mlp
        and hasattr(ce, "embedding_table")
        and te.linear_1.weight.shape == first.timestep_embedder.linear_1.weight.shape
        and ce.embedding_table.weight.shape == first.class_embedder.embedding_table.weight.shape
    )


def per_block(block: nn.Module, h: torch.Tensor, timestep, class_labels):
    """One block's ``(gate_msa, shift_mlp, 1 + scale_mlp, gate_mlp)``, as diffusers' block
    forward computes them, without normalising the tokens."""
    nt = block.norm_type
    if nt == "ada_norm_zero":
        n1 = block.norm1
        emb = n1.linear(n1.silu(n1.emb(timestep, class_labels, hidden_dtype=h.dtype)))
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb.chunk(6, dim=1)
        return gate_msa[:, None], shift_mlp[:, None], 1 + scale_mlp[:, None], gate_mlp[:, None]
    if nt == "ada_norm_single":
        b = h.shape[0]
        params = block.scale_shift_table[None] + timestep.reshape(b, 6, -1)
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = params.chunk(6, dim=1)
        return gate_msa, shift_mlp, 1 + scale_mlp, gate_mlp
    return None, None, None, None
