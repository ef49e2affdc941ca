"""Masked autoencoder pieces (He et al., "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022) on top of the registry ViT (:mod:`vislearn.models.vit`).

The encoder is an unchanged :class:`~vislearn.models.vit.VisionTransformer` (class token,
learned positions); :func:`encode` runs it on a subset of the patch tokens. The decoder
(:class:`MAEDecoder`) is a narrow ViT over all positions: the visible tokens projected to its
width, a shared learned mask token at every hidden position, fixed 2-D sin-cos positions, and a
linear head predicting the ``p * p * C`` pixels of each patch.

Conventions:

* Patches are numbered row-major over the ``h x w`` grid; a patch vector holds its pixels in
  ``(row, column, channel)`` order (:func:`patchify` / :func:`unpatchify`).
* Masks (``keep``, ``mask``, ``ids_keep``, ``ids_restore``) and the number of visible patches
  of a mask ratio follow :mod:`vislearn.data.masking`, shared with MRA.
* Pixels are in the space the MAE was trained in: images normalised with the vislearn
  statistics of their channel count (:class:`~vislearn.data.augment.Normalize`). The default
  target is those pixels; ``norm_pix_loss`` normalises each target patch by its own mean and
  standard deviation (the paper's better-representation option, unusable for MRA, which needs
  predictions in pixel space).

:class:`MaskedAutoencoder` bundles a trained encoder and decoder for inference (MRA), and
:func:`load_mae` rebuilds one from a vislearn ``mae`` checkpoint or its exported
``mae.safetensors``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.data.augment import GRAY_MEAN, GRAY_STD, RGB_MEAN, RGB_STD
from vislearn.data.masking import PATCH_SCORES, masking_from_keep
from vislearn.models.io import load_network, network_spec, register_network, save_network
from vislearn.models.registry import create_backbone
from vislearn.models.vit import Block, VisionTransformer

#: ``format`` metadata entry of an exported MAE
MAE_FORMAT = "vislearn-mae"


# ---- patches and masks ----------------------------------------------------------------------
def patchify(x: Tensor, patch_size: int) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, L, p * p * C]`` (row-major patches, pixels in (y, x, c) order)."""
    b, c, h, w = x.shape
    p = patch_size
    if h % p or w % p:
        raise VislearnError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int], channels: int) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, L, p * p * C]`` -> ``[B, C, h p, w p]``."""
    b = patches.shape[0]
    (gh, gw), p = grid, patch_size
    x = patches.reshape(b, gh, gw, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, gh * p, gw * p)


def sincos_2d(dim: int, grid: int, cls_token: bool = True) -> Tensor:
    """Fixed 2-D sine-cosine positions ``[1 + grid**2, dim]`` (a zero row for the class token):
    half of the channels encode the row, half the column, each as sines then cosines of
    ``pos / 10000**(i / (dim / 4))``."""
    if dim % 4:
        raise VislearnError(f"sin-cos positions need a width divisible by 4, got {dim}")
    q = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)
    pos = torch.arange(grid, dtype=torch.float64)
    ys, xs = torch.meshgrid(pos, pos, indexing="ij")

    def enc(p: Tensor) -> Tensor:
        angles = p.reshape(-1, 1) * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([enc(ys), enc(xs)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table])
    return table.float()


# ---- encoder passes ----------------------------------------------------------------------------
def encode(encoder: VisionTransformer, x: Tensor, ids_keep: Tensor | None = None) -> Tensor:
    """Final (LayerNorm-ed) tokens ``[B, 1 + k, D]`` of ``encoder`` on the class token and the
    visible patches ``ids_keep`` (all patches when ``None``)."""
    tokens, _, _ = encoder.tokens(x)
    if ids_keep is not None:
        patches = tokens[:, 1:]
        idx = ids_keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
        tokens = torch.cat([tokens[:, :1], torch.gather(patches, 1, idx)], dim=1)
    for blk in encoder.blocks:
        tokens = blk(tokens)
    return encoder.norm(tokens)


def class_attention(encoder: VisionTransformer, x: Tensor) -> Tensor:
    """Last block's attention of the class-token query over the patch tokens, averaged over
    heads: ``[B, L]`` (all patches visible)."""
    tokens, _, _ = encoder.tokens(x)
    for blk in encoder.blocks[:-1]:
        tokens = blk(tokens)
    attn = encoder.blocks[-1].attn
    b, n, d = tokens.shape
    h = attn.num_heads
    qkv = attn.qkv(encoder.blocks[-1].norm1(tokens)).view(b, n, 3, h, d // h)
    q, k = qkv[:, :1, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # B,h,1,dh / B,h,n,dh
    weights = (q @ k.transpose(-2, -1) / math.sqrt(d // h)).softmax(-1)  # B,h,1,n
    return weights.mean(1)[:, 0, 1:]


def token_dot_scores(encoder: VisionTransformer, x: Tensor) -> Tensor:
    """``<z_cls, z_i>`` of the final class token with each final patch token: ``[B, L]``."""
    z = encode(encoder, x)
    return torch.einsum("bd,bld->bl", z[:, 0], z[:, 1:])


# ---- decoder ----------------------------------------------------------------------------------
class MAEDecoder(nn.Module):
    """MAE's lightweight decoder over a ``grid x grid`` patch grid.

    Args:
        grid: patches per side (the encoder's ``img_size // patch_size``).
        encoder_dim: encoder width; ``patch_size``, ``in_chans``: of the predicted pixels.
        dim, depth, num_heads: decoder width, blocks and heads (paper: 512, 8, 16 for ViT-B/16;
            vislearn's 28 px recipe: 64, 2, 4).
    """

    def __init__(
        self,
        grid: int,
        encoder_dim: int,
        patch_size: int,
        in_chans: int,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise VislearnError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.grid, self.patch_size, self.in_chans = grid, patch_size, in_chans
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, grid)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, patch_size * patch_size * in_chans)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """``latent`` ``[B, 1 + k, D_enc]`` (class token first, then the visible tokens in
        ``ids_keep`` order) -> patch predictions ``[B, L, p * p * C]`` in grid order."""
        x = self.embed(latent)
        b, num_patches = ids_restore.shape
        if num_patches != self.grid**2:
            raise VislearnError(
                f"the MAE decoder was built for {self.grid}x{self.grid} patches, got "
                f"{num_patches}; resize the images to the MAE's size"
            )
        fill = self.mask_token.expand(b, num_patches + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], fill.to(x.dtype)], dim=1)
        idx = ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        x = torch.cat([x[:, :1], torch.gather(patches, 1, idx)], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:]


def mae_loss(images: Tensor, pred: Tensor, mask: Tensor, patch_size: int, norm_pix: bool) -> Tensor:
    """Mean squared error over the hidden patches only:
    ``sum_i mask_i * mean_j (pred_ij - target_ij)^2 / sum_i mask_i`` over all images' patches,
    the target being ``patchify(images)``, or with ``norm_pix`` each target patch standardised
    (``(t - mean) / sqrt(var + 1e-6)``, unbiased variance as in the paper's code)."""
    target = patchify(images, patch_size)
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred.float() - target.float()) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)


def channel_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation an MAE of ``channels`` inputs is trained with (vislearn's defaults)."""
    return (GRAY_MEAN, GRAY_STD) if channels == 1 else (RGB_MEAN, RGB_STD)


# ---- a trained MAE for inference ----------------------------------------------------------------
class MaskedAutoencoder(nn.Module):
    """A trained encoder + decoder, for reconstruction with a chosen set of visible patches.

    Inputs are ``[B, C, S, S]`` images normalised with ``mean`` / ``std`` (buffers; vislearn's
    statistics for ``C`` channels) at the training size ``S = img_size``.
    """

    def __init__(
        self, encoder: VisionTransformer, decoder: MAEDecoder, norm_pix_loss: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(encoder, VisionTransformer):
            raise VislearnError(f"an MAE encoder must be a ViT, got {type(encoder).__name__}")
        self.encoder, self.decoder = encoder, decoder
        self.norm_pix_loss = bool(norm_pix_loss)
        self.patch_size, self.grid = encoder.patch_size, encoder.grid
        self.in_chans = decoder.in_chans
        self.img_size = self.grid * self.patch_size
        mean, std = channel_stats(self.in_chans)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def patch_scores(self, x: Tensor, score: str = "token_dot") -> Tensor:
        """Per-patch foreground scores ``[B, L]`` on all patches (higher = keep visible)."""
        if score == "token_dot":
            return token_dot_scores(self.encoder, x)
        if score == "attention":
            return class_attention(self.encoder, x)
        raise VislearnError(f"unknown patch score {score!r}; choose from {PATCH_SCORES}")

    def predict(self, x: Tensor, ids_keep: Tensor, ids_restore: Tensor) -> Tensor:
        """Decoder patch predictions ``[B, L, p * p * C]`` from the visible patches."""
        return self.decoder(encode(self.encoder, x, ids_keep), ids_restore)

    def reconstruct(self, x: Tensor, keep: Tensor) -> Tensor:
        """Images ``[B, C, S, S]`` predicted from the patches where ``keep`` ``[B, L]`` is True
        (every patch is the decoder's output; paste-back is the caller's choice)."""
        ids_keep, _, ids_restore = masking_from_keep(keep)
        pred = self.predict(x, ids_keep, ids_restore)
        return unpatchify(pred, self.patch_size, (self.grid, self.grid), self.in_chans)


def _decoder_spec(hp: dict) -> dict:
    return {
        "dim": int(hp.get("decoder_dim", 64)),
        "depth": int(hp.get("decoder_depth", 2)),
        "num_heads": int(hp.get("decoder_heads", 4)),
    }


def _mae_from_hparams(hp: dict) -> dict | None:
    """:func:`build_mae` kwargs of a ``mae`` training checkpoint (None when it holds no
    decoder: not an MAE run)."""
    if not any(k.startswith("decoder.") for k in hp.get("state_dict") or {}):
        return None
    return mae_kwargs(
        hp["backbone"],
        hp.get("backbone_kwargs"),
        int(hp.get("in_chans") or 3),
        _decoder_spec(hp),
        bool(hp.get("norm_pix_loss", False)),
    )


@register_network(
    "mae",
    from_hparams=_mae_from_hparams,
    ckpt_keys={"backbone.": "encoder.", "decoder.": "decoder."},
)
def build_mae(
    backbone: str,
    backbone_kwargs: dict | None,
    in_chans: int,
    decoder: dict,
    norm_pix_loss: bool = False,
) -> MaskedAutoencoder:
    """An untrained :class:`MaskedAutoencoder` of the given layout."""
    encoder = create_backbone(backbone, in_chans=in_chans, **(backbone_kwargs or {}))
    if not isinstance(encoder, VisionTransformer):
        raise VislearnError(f"an MAE needs a ViT backbone, got {backbone!r}")
    dec = MAEDecoder(encoder.grid, encoder.num_features, encoder.patch_size, in_chans, **decoder)
    return MaskedAutoencoder(encoder, dec, norm_pix_loss)


def mae_kwargs(
    backbone: str, backbone_kwargs: dict | None, in_chans: int, decoder: dict, norm_pix: bool
) -> dict:
    """The :func:`build_mae` arguments of a layout (what an ``mae.safetensors`` records)."""
    return {
        "backbone": backbone,
        "backbone_kwargs": dict(backbone_kwargs or {}),
        "in_chans": int(in_chans),
        "decoder": dict(decoder),
        "norm_pix_loss": bool(norm_pix),
    }


def save_mae(state: dict[str, Tensor] | nn.Module, path: str | os.PathLike, **layout: Any) -> None:
    """Write an MAE (``encoder.*`` + ``decoder.*`` tensors) with its layout (:func:`mae_kwargs`
    arguments), so that :func:`load_mae` / :func:`~vislearn.models.io.load_network` rebuild
    it from the file alone."""
    save_network(state, path, "mae", mae_kwargs(**layout), extra={"format": MAE_FORMAT})


def load_mae(path: str | os.PathLike) -> MaskedAutoencoder:
    """A frozen (eval mode, no gradients) MAE from a local file.

    Accepted: the ``mae.safetensors`` a ``vislearn pretrain mae`` run writes (metadata gives the
    layout), or its Lightning checkpoint (``checkpoints/last.ckpt``, read with
    ``weights_only=True``; layout from its hyper-parameters).
    """
    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"MAE checkpoint not found: {path}")
    spec = network_spec(path, "mae")
    if spec is None or spec.arch != "mae":
        if path.suffix == ".safetensors":
            raise VislearnError(
                f"{path} is not an MAE exported by vislearn (no 'vislearn-mae' metadata); pass "
                "the run's mae.safetensors or checkpoints/last.ckpt"
            )
        raise VislearnError(
            f"{path} does not hold a vislearn MAE (no decoder weights); train one with "
            "`vislearn pretrain mae`"
        )
    return freeze(load_network(path, "mae"))


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` for every parameter; returns ``module``."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
