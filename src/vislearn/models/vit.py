"""A plain Vision Transformer (pre-norm blocks, class token, learned positions).

Attention uses ``F.scaled_dot_product_attention`` (fused kernels on GPU). Positional
embeddings are interpolated when the input size differs from ``img_size``. The pooled feature
is the final class token (``pool="cls"``, default) or the mean of the final patch tokens
(``pool="mean"``); both after the final LayerNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.models.registry import register_backbone


def resize_pos_embed(pos_embed: Tensor, h: int, w: int) -> Tensor:
    """Resize a ``[1, 1 + g*g, D]`` position embedding (class token first, then a square
    ``g x g`` patch grid in row-major order) to an ``h x w`` grid by bicubic interpolation;
    the class token's embedding is kept as is."""
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    g = math.isqrt(patch_pos.shape[1])
    if g * g != patch_pos.shape[1]:
        raise VislearnError(
            f"position embedding has {patch_pos.shape[1]} patch tokens, not a square grid"
        )
    patch_pos = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=(h, w), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


POOLS = ("cls", "mean")


class VisionTransformer(nn.Module):
    """ViT returning the pooled final tokens (and, on request, patch-token maps of every
    block). ``pool``: ``"cls"`` (class token) or ``"mean"`` (mean of the patch tokens)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise VislearnError(f"ViT pool must be one of {POOLS}, got {pool!r}")
        self.pool = pool
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.stage_channels = [embed_dim] * depth
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def interpolate_pos_embed(self, h: int, w: int) -> Tensor:
        """Positional embedding for an ``h x w`` patch grid (bicubic interpolation)."""
        if h == w == self.grid:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, h, w)

    def tokens(self, x: Tensor) -> tuple[Tensor, int, int]:
        """Patch-embed ``x`` and prepend the class token; returns tokens and grid size."""
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.interpolate_pos_embed(h, w), h, w

    def forward_features(self, x: Tensor, return_stages: bool = False):
        x, h, w = self.tokens(x)
        maps = []
        for blk in self.blocks:
            x = blk(x)
            if return_stages:
                maps.append(x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, h, w))
        x = self.norm(x)
        pooled = x[:, 0] if self.pool == "cls" else x[:, 1:].mean(1)
        return (pooled, maps) if return_stages else pooled

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


@register_backbone
def vit_mini(
    in_chans: int = 1, img_size: int = 28, patch_size: int = 4, pool: str = "cls"
) -> VisionTransformer:
    """A 4-block, 128-wide ViT (~0.8 M params) for CPU runs on 28-32 px images."""
    return VisionTransformer(img_size, patch_size, in_chans, 128, 4, 4, pool=pool)


@register_backbone
def vit_tiny(
    in_chans: int = 3, img_size: int = 224, patch_size: int = 16, pool: str = "cls"
) -> VisionTransformer:
    return VisionTransformer(img_size, patch_size, in_chans, 192, 12, 3, pool=pool)


@register_backbone
def vit_small(
    in_chans: int = 3, img_size: int = 224, patch_size: int = 16, pool: str = "cls"
) -> VisionTransformer:
    return VisionTransformer(img_size, patch_size, in_chans, 384, 12, 6, pool=pool)


@register_backbone
def vit_base(
    in_chans: int = 3, img_size: int = 224, patch_size: int = 16, pool: str = "cls"
) -> VisionTransformer:
    return VisionTransformer(img_size, patch_size, in_chans, 768, 12, 12, pool=pool)


# DINO's released ViTs (Caron et al., 2021): ViT-S / ViT-B with 8 or 16 px patches at 224 px,
# LayerNorm eps 1e-6, qkv bias, class-token output -- vislearn's ViT exactly. Their files
# (timm key names) load with vislearn.models.load_vit_weights.
@register_backbone
def dino_vits8(in_chans: int = 3, img_size: int = 224, pool: str = "cls") -> VisionTransformer:
    """DINO ViT-S/8 (21.7 M parameters)."""
    return vit_small(in_chans, img_size, 8, pool)


@register_backbone
def dino_vits16(in_chans: int = 3, img_size: int = 224, pool: str = "cls") -> VisionTransformer:
    """DINO ViT-S/16 (21.7 M parameters)."""
    return vit_small(in_chans, img_size, 16, pool)


@register_backbone
def dino_vitb8(in_chans: int = 3, img_size: int = 224, pool: str = "cls") -> VisionTransformer:
    """DINO ViT-B/8 (85.8 M parameters)."""
    return vit_base(in_chans, img_size, 8, pool)


@register_backbone
def dino_vitb16(in_chans: int = 3, img_size: int = 224, pool: str = "cls") -> VisionTransformer:
    """DINO ViT-B/16 (85.8 M parameters)."""
    return vit_base(in_chans, img_size, 16, pool)
