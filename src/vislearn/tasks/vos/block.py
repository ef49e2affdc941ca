"""The spatio-temporal block of SSL-UVOS (Ding et al., "Betrayed by Attention", ECCV 2024,
arXiv:2311.17893).

One pre-norm transformer block with joint attention over the tokens of ``T`` frames,
``[CLS_t, k_t(0..N-1)]`` per frame, and no positional or temporal embedding (position enters
only through the frozen keys). Defaults follow the official code: 8 heads, no qkv bias, MLP
ratio 4, dropout 0.1 on the projection and MLP outputs, 0.4 on the attention probabilities.
The attention the losses use is the post-dropout softmax averaged over heads, with every
frame's class-token row and column removed and the rows *not* renormalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError


class SpatioTemporalBlock(nn.Module):
    """Pre-norm transformer block over the tokens of several frames.

    ``forward(tokens [B, T, 1 + N, D]) -> (out [B, T, 1 + N, D], attn [B, T N, T N])``;
    :meth:`query_key` gives the per-head queries and keys of class-token-free key features for
    inference (``norm1`` + ``qkv`` only, as in the official inference).
    """

    def __init__(
        self,
        dim: int = 384,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.1,
        attn_drop: float = 0.4,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise VislearnError(f"block dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads = dim, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(drop)
        )

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, n, dh]
        return q, k, v

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if tokens.dim() != 4 or tokens.shape[-1] != self.dim:
            raise VislearnError(
                f"expected tokens [B, T, 1 + N, {self.dim}], got {tuple(tokens.shape)}"
            )
        b, t, n1, d = tokens.shape
        x = tokens.reshape(b, t * n1, d)
        q, k, v = self._heads(x)
        attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(-1))
        y = (attn @ v).transpose(1, 2).reshape(b, t * n1, d)
        x = x + self.proj_drop(self.proj(y))
        x = x + self.mlp(self.norm2(x))
        patch = torch.ones(t, n1, dtype=torch.bool, device=tokens.device)
        patch[:, 0] = False
        patch = patch.flatten()
        mean_attn = attn.mean(1)[:, patch][:, :, patch]
        return x.view(b, t, n1, d), mean_attn

    def query_key(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """Per-head queries and keys ``[heads, M, dh]`` of features ``[M, D]``, pre-scaled so
        that ``softmax(q @ k.T)`` is the block's attention."""
        q, k, _ = self._heads(keys[None])
        return q[0] * self.scale, k[0]


def attention_descriptors(q: Tensor, k: Tensor, chunk: int = 4096) -> Tensor:
    """Head-averaged attention of queries over all keys, ``[M, K]``, rows summing to one.

    ``q``: ``[heads, M, dh]`` (pre-scaled), ``k``: ``[heads, K, dh]``; computed in chunks of
    ``chunk`` queries so memory stays ``heads x chunk x K``."""
    out = []
    for s in range(0, q.shape[1], chunk):
        out.append(F.softmax(q[:, s : s + chunk] @ k.transpose(-2, -1), dim=-1).mean(0))
    return torch.cat(out, 0)
