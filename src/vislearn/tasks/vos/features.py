"""Frozen ViT features for SSL-UVOS: the last block's patch *keys* and the output class token.

SSL-UVOS feeds the spatio-temporal block with the key vectors of DINO's last attention layer
(all heads concatenated, ``D`` = embed dim), not with its output tokens: keys of one object
are similar across frames. The class token is the last block's output, before the final
LayerNorm (as in the official code). Positional embeddings are interpolated to the input size
by :meth:`VisionTransformer.interpolate_pos_embed`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.models.vit import VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ViTKeyFeatures(nn.Module):
    """A frozen ViT returning ``(keys [B, N, D], cls [B, D], (h, w))`` per frame.

    Args:
        vit: a :class:`VisionTransformer` (e.g. DINO ViT-S/8 loaded from a local file); its
            parameters are frozen and it is kept in eval mode.
        mean, std: normalisation of the ``[0, 1]`` RGB input (ImageNet statistics by default,
            used for training and inference alike -- the official code mixes ImageNet and
            Kinetics statistics; Ding et al., ECCV 2024).
    """

    def __init__(
        self,
        vit: VisionTransformer,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise VislearnError(f"SSL-UVOS needs a ViT backbone, got {type(vit).__name__}")
        self.vit = vit.eval().requires_grad_(False)
        self.patch_size = vit.patch_size
        self.dim = vit.num_features
        self.num_heads = vit.blocks[-1].attn.num_heads
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> ViTKeyFeatures:
        super().train(mode)
        self.vit.eval()  # frozen, always
        return self

    @torch.no_grad()
    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """``frames``: ``[B, C, H, W]`` floats in ``[0, 1]``, ``H`` and ``W`` multiples of the
        patch size."""
        if frames.dim() != 4:
            raise VislearnError(f"expected frames [B, C, H, W], got shape {tuple(frames.shape)}")
        hh, ww = frames.shape[-2:]
        p = self.patch_size
        if hh % p or ww % p:
            raise VislearnError(f"frame size {hh}x{ww} is not a multiple of the patch size {p}")
        x, h, w = self.vit.tokens((frames - self.mean) / self.std)
        for blk in self.vit.blocks[:-1]:
            x = blk(x)
        last = self.vit.blocks[-1]
        b, n, d = x.shape
        qkv = last.attn.qkv(last.norm1(x)).view(b, n, 3, d)
        keys = qkv[:, 1:, 1]  # patch tokens' keys, heads concatenated
        cls = last(x)[:, 0]
        return keys, cls, (h, w)

    def block_tokens(self, frames: Tensor) -> Tensor:
        """The spatio-temporal block's input for ``frames`` ``[B, C, H, W]``: the class token
        then the patch keys, ``[B, 1 + N, D]``."""
        keys, cls, _ = self(frames)
        return torch.cat([cls[:, None], keys], 1)


@torch.no_grad()
def cache_tokens(features: ViTKeyFeatures, videos: Tensor, batch_size: int = 64) -> Tensor:
    """The block's input for every frame of ``videos``: float ``[N, T, 1 + n, D]`` (the class
    token, then the ``n`` patch keys), computed once so that training the block does not run
    the frozen ViT at every step (:class:`~vislearn.tasks.vos.data.UVOSClipDataset` and
    :class:`~vislearn.tasks.vos.module.UVOSModule` take these tokens in place of frames;
    colour augmentation is then not possible).

    ``videos``: uint8 ``[N, T, C, H, W]`` (or floats in ``[0, 1]``), sides multiples of the
    patch size."""
    if videos.dim() != 5:
        raise VislearnError(f"videos must be [N, T, C, H, W], got {tuple(videos.shape)}")
    n, t = videos.shape[:2]
    frames = videos.flatten(0, 1)
    out = []
    for s in range(0, len(frames), batch_size):
        x = frames[s : s + batch_size]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out.append(features.block_tokens(x))
    tokens = torch.cat(out)
    return tokens.view(n, t, *tokens.shape[1:])
