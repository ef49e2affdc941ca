"""Batched multi-view augmentation that runs on the training device.

SSL methods are bottlenecked by per-image PIL augmentation (two or more views of every
image, every step). Here the data loader only delivers ``uint8`` images of one size and
the augmentation is done on the whole batch, on the model's device, as tensor ops:

* random resized crop + horizontal flip: one ``affine_grid``/``grid_sample`` per batch,
* colour jitter (brightness, contrast, saturation, hue rotation in YIQ space), in that
  fixed order (torchvision shuffles the order per call; a fixed order is a documented
  simplification),
* random grayscale, Gaussian blur (per-sample sigma, separable grouped convolution),
  solarisation, and normalisation.

All random parameters come from an explicit ``torch.Generator`` so a run is reproducible
and a resumed run continues the exact random stream (its state is checkpointed).

A view's output side is a fraction of the input's (``ViewConfig.size``, 1 by default), so
the views of one augmentation may differ in size (DINO's multi-crop: two global views and
smaller local ones); a method then batches views of one size together.

Presets follow the papers' recipes (:data:`PRESETS`). For views <= 64 px Gaussian blur is
switched off, as in the CIFAR recipes of SimCLR/solo-learn/lightly; on grayscale images
saturation, hue and grayscale are no-ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError

GRAY_MEAN, GRAY_STD = (0.2860,), (0.3530,)  # Fashion-MNIST train statistics
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet


@dataclass(frozen=True)
class ViewConfig:
    """Parameters of one augmented view (torchvision-equivalent names and defaults)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    #: output side as a fraction of the input image side (rounded, at least 1 px): 1.0 for the
    #: usual views, 3/7 for DINO's local crops (96 px of 224 px images; 12 px of 28 px ones)
    size: float = 1.0


@dataclass(frozen=True)
class AugmentConfig:
    views: tuple[ViewConfig, ...] = field(default_factory=lambda: (ViewConfig(), ViewConfig()))


_SIMCLR = ViewConfig(crop_scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2))
_BYOL_1 = ViewConfig(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_p=1.0)
_BYOL_2 = replace(_BYOL_1, blur_p=0.1, solarize_p=0.2)
#: crop (scale 0.5-1) + flip only: supervised training and the weak view of semi-supervised methods
_WEAK = ViewConfig(crop_scale=(0.5, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=0.0)
# DINO (Caron et al., 2021): BYOL's two global views with crops of scale 0.4-1 (the release's
# default; its ViT-S/16 recipe uses 0.25-1), and small local views (scale 0.05-0.4, 96 px of
# 224, blur p 0.5) that the ``dino`` method appends ``local_crops`` times (DINO_LOCAL_VIEW)
_DINO_1 = replace(_BYOL_1, crop_scale=(0.4, 1.0))
_DINO_2 = replace(_BYOL_2, crop_scale=(0.4, 1.0))
DINO_LOCAL_VIEW = replace(_BYOL_1, crop_scale=(0.05, 0.4), blur_p=0.5, size=96 / 224)
PRESETS: dict[str, AugmentConfig] = {
    "moco_v2": AugmentConfig((ViewConfig(), ViewConfig())),
    "simclr": AugmentConfig((_SIMCLR, _SIMCLR)),
    "byol": AugmentConfig((_BYOL_1, _BYOL_2)),
    "dino": AugmentConfig((_DINO_1, _DINO_2)),
    "supervised": AugmentConfig((_WEAK,)),
    # FixMatch-style (weak, strong) pair; the strong view is MoCo v2's (crop 0.2-1, flip, colour
    # jitter p=0.8, grayscale p=0.2, blur p=0.5) instead of RandAugment + Cutout
    "semi": AugmentConfig((_WEAK, ViewConfig())),
    # MAE pretraining (He et al.): random resized crop (scale 0.2-1) + flip, nothing else
    "mae": AugmentConfig((ViewConfig(jitter_p=0.0, gray_p=0.0, blur_p=0.0),)),
}
OP_STAGES = ("uint8", "normalized")


def uniform_draws(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    """``n`` draws uniform in ``[lo, hi)`` from generator ``g`` (CPU)."""
    return torch.rand(n, generator=g) * (hi - lo) + lo


def bernoulli_draws(n: int, p: float, g: torch.Generator) -> Tensor:
    """``n`` boolean draws, each ``True`` with probability ``p``, from generator ``g``."""
    return torch.rand(n, generator=g) < p


def _gray(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)


def _rotate_hue(x: Tensor, turns: Tensor) -> Tensor:
    """Rotate hue by ``turns`` (fraction of a full circle) via the YIQ chroma plane."""
    yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        device=x.device,
        dtype=x.dtype,
    )
    c = x.permute(0, 2, 3, 1) @ yiq.T  # B,H,W,3
    ang = (2 * math.pi * turns).to(x).view(-1, 1, 1)
    i, q = c[..., 1], c[..., 2]
    c = torch.stack([c[..., 0], i * ang.cos() - q * ang.sin(), i * ang.sin() + q * ang.cos()], -1)
    return (c @ torch.linalg.inv(yiq).T).permute(0, 3, 1, 2)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int | None = None) -> Tensor:
    """Per-sample Gaussian blur (separable, reflect padding).

    ``kernel_size`` defaults to ~10% of the image side (odd, at least 3), as in SimCLR.
    """
    b, c, h, w = x.shape
    k = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1) if kernel_size is None else int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {k}")
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    ker = torch.exp(-(r[None] ** 2) / (2 * sigma.to(x).view(-1, 1) ** 2))
    ker = (ker / ker.sum(1, keepdim=True)).repeat_interleave(c, 0)  # B*C, k
    y = F.pad(x.reshape(1, b * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, ker.view(b * c, 1, k, 1), groups=b * c)
    y = F.conv2d(y, ker.view(b * c, 1, 1, k), groups=b * c)
    return y.view(b, c, h, w)


def crop_flip_theta(
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip_p: float,
    g: torch.Generator,
) -> Tensor:
    """Affine matrices ``[n, 2, 3]`` (for ``affine_grid``) of random resized crops + flips.

    Area fraction ~ U(scale), log aspect ratio ~ U(log ratio), centre uniform among the crops
    that fit (sides clamped to the image), horizontal flip with probability ``hflip_p``.
    """
    area = uniform_draws(n, *scale, g)
    logr = uniform_draws(n, math.log(ratio[0]), math.log(ratio[1]), g)
    w = torch.sqrt(area * logr.exp()).clamp(max=1.0)
    h = torch.sqrt(area / logr.exp()).clamp(max=1.0)
    cx = (torch.rand(n, generator=g) * (1 - w) + w / 2) * 2 - 1
    cy = (torch.rand(n, generator=g) * (1 - h) + h / 2) * 2 - 1
    flip = torch.where(bernoulli_draws(n, hflip_p, g), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


def color_jitter(
    x: Tensor, strength: tuple[float, float, float, float], p: float, g: torch.Generator
) -> Tensor:
    """Random colour jitter of a float batch ``[B, C, H, W]`` in [0, 1], applied with prob. ``p``.

    Brightness, contrast (around the image's mean gray), saturation and hue rotation, in that
    fixed order, one draw per sample; saturation and hue only for 3 channels. A clip can be
    passed as ``[B, C, T*H, W]`` to get the same parameters for all of its frames.
    """
    n = x.shape[0]
    bri, con, sat, hue = strength
    if not (p > 0 and any(strength)):
        return x
    on = bernoulli_draws(n, p, g).to(x.device).view(-1, 1, 1, 1)
    y = x * uniform_draws(n, 1 - bri, 1 + bri, g).to(x).view(-1, 1, 1, 1)
    m = _gray(y).mean((1, 2, 3), keepdim=True)
    y = (y - m) * uniform_draws(n, 1 - con, 1 + con, g).to(x).view(-1, 1, 1, 1) + m
    y = y.clamp(0, 1)
    if x.shape[1] == 3:
        s = uniform_draws(n, 1 - sat, 1 + sat, g).to(x).view(-1, 1, 1, 1)
        y = ((y - _gray(y)) * s + _gray(y)).clamp(0, 1)
        y = _rotate_hue(y, uniform_draws(n, -hue, hue, g)).clamp(0, 1)
    return torch.where(on, y, x)


def random_grayscale(x: Tensor, p: float, g: torch.Generator) -> Tensor:
    """Turn each sample of ``[B, C, H, W]`` to gray with probability ``p`` (3 channels only)."""
    if not (p > 0 and x.shape[1] == 3):
        return x
    on = bernoulli_draws(x.shape[0], p, g).to(x.device).view(-1, 1, 1, 1)
    return torch.where(on, _gray(x), x)


class ViewAugment(nn.Module):
    """One random view of a ``uint8`` batch ``[B, C, H, W]`` -> normalised float batch."""

    def __init__(self, cfg: ViewConfig, size: int, channels: int) -> None:
        super().__init__()
        if not cfg.size > 0:
            raise VislearnError(f"a view's size fraction must be > 0, got {cfg.size}")
        self.cfg, self.channels = cfg, channels
        self.size = max(1, round(size * cfg.size))  # output side in pixels
        self.normalize = Normalize(channels)
        self.use_blur = cfg.blur_p > 0 and self.size > 64

    def crop_flip(self, x: Tensor, g: torch.Generator) -> Tensor:
        cfg, n = self.cfg, x.shape[0]
        theta = crop_flip_theta(n, cfg.crop_scale, cfg.crop_ratio, cfg.hflip_p, g)
        grid = F.affine_grid(
            theta.to(x), [n, x.shape[1], self.size, self.size], align_corners=False
        )
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    def forward(self, images: Tensor, g: torch.Generator) -> Tensor:
        return self.finish(self.crop_flip(images.float() / 255.0, g), g)

    def with_foreground(
        self, images: Tensor, foreground: Tensor, g: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """The view of ``images`` and the same crop and flip of ``foreground`` (``[B, 1, H, W]``,
        0 / 255), as a float mask in [0, 1] (bilinear); the random draws are :meth:`forward`'s."""
        x = self.crop_flip(torch.cat([images, foreground.to(images.dtype)], 1).float() / 255.0, g)
        return self.finish(x[:, :-1], g), x[:, -1:]

    def finish(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Colour jitter, grayscale, blur, solarisation and normalisation of a cropped view."""
        cfg, n = self.cfg, x.shape[0]
        x = color_jitter(x, cfg.jitter, cfg.jitter_p, g)
        x = random_grayscale(x, cfg.gray_p, g)
        if self.use_blur:
            on = bernoulli_draws(n, cfg.blur_p, g).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(on, gaussian_blur(x, uniform_draws(n, *cfg.blur_sigma, g)), x)
        if cfg.solarize_p > 0:
            on = bernoulli_draws(n, cfg.solarize_p, g).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(on & (x >= 0.5), 1.0 - x, x)
        return self.normalize(x)


class MultiViewAugment(nn.Module):
    """A list of :class:`ViewAugment`; ``forward(images)`` returns one tensor per view.

    Extra batch operations can be attached to a view with :meth:`add_op` (RandAugment on the
    ``uint8`` images before the view's crop, MRA on the finished normalised view, ...); they
    draw their randomness from the same checkpointed :attr:`generator`.

    A batch with one channel more than the views' (``data.mask_channel``: the ground-truth
    foreground as 0 / 255) has that channel split off; every view crops and flips it with its
    pixels (:meth:`ViewAugment.with_foreground`, the same random draws as without it) and a
    ``normalized`` op whose ``uses_foreground`` is true gets it as ``foreground=`` (``[B, 1,
    S, S]`` in [0, 1]). ``uint8`` ops see the pixels only (the mask does not follow them).
    """

    def __init__(self, cfg: AugmentConfig | str, size: int, channels: int, seed: int = 0) -> None:
        super().__init__()
        if isinstance(cfg, str):
            if cfg not in PRESETS:
                raise VislearnError(f"unknown augmentation {cfg!r}; choose from {sorted(PRESETS)}")
            cfg = PRESETS[cfg]
        self.views = nn.ModuleList(ViewAugment(v, size, channels) for v in cfg.views)
        self.generator = torch.Generator().manual_seed(seed)
        self.ops = nn.ModuleDict()

    def add_op(self, view: int, op: nn.Module, stage: str = "normalized") -> None:
        """Run ``op(x, generator) -> x`` on view ``view``: at ``stage="uint8"`` on the ``uint8``
        batch before the view's crop (shape and dtype kept), at ``"normalized"`` on the view's
        normalised float output. One op per (view, stage)."""
        if stage not in OP_STAGES:
            raise VislearnError(f"augmentation stage must be one of {OP_STAGES}, got {stage!r}")
        if not 0 <= view < len(self.views):
            raise VislearnError(f"view {view} out of range: this preset has {len(self.views)}")
        self.ops[f"{stage}_{view}"] = op

    def forward(self, images: Tensor) -> list[Tensor]:
        fg = None
        if images.shape[1] == self.views[0].channels + 1:  # a ground-truth foreground channel
            images, fg = images[:, :-1], images[:, -1:]
        out = []
        for i, view in enumerate(self.views):
            x = images
            if f"uint8_{i}" in self.ops:
                x = self.ops[f"uint8_{i}"](x, self.generator)
            if fg is None:
                x, mask = view(x, self.generator), None
            else:
                x, mask = view.with_foreground(x, fg, self.generator)
            if f"normalized_{i}" in self.ops:
                op = self.ops[f"normalized_{i}"]
                extra = {"foreground": mask} if getattr(op, "uses_foreground", False) else {}
                x = op(x, self.generator, **extra)
            out.append(x)
        return out


class Normalize(nn.Module):
    """``uint8`` images -> float, scaled to [0, 1] and normalised (the evaluation transform)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mean, std = (GRAY_MEAN, GRAY_STD) if channels == 1 else (RGB_MEAN, RGB_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return (images - self.mean) / self.std


class BatchRandAugment(nn.Module):
    """RandAugment (Cubuk et al., 2020) on a ``uint8`` batch ``[B, C, H, W]``, per image.

    torchvision's ``transforms.v2.RandAugment`` (its operations, magnitudes and fill; default
    ``num_ops=2``, ``magnitude=9`` of 31 bins) draws one operation sequence per call, i.e. per
    batch. Here every image draws its own ``num_ops`` operations and signs from ``generator``;
    images that drew the same (operation, sign) are transformed together by torchvision's own
    operation code (fixed magnitude, so the result equals the per-image transform; the
    statistics of contrast, autocontrast and equalize are per image).
    """

    def __init__(
        self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31, fill: int = 0
    ) -> None:
        super().__init__()
        from torchvision.transforms import v2

        if num_ops < 0 or not 0 <= magnitude < num_magnitude_bins:
            raise VislearnError(
                f"RandAugment needs num_ops >= 0 and 0 <= magnitude < {num_magnitude_bins}, got "
                f"{num_ops}, {magnitude}"
            )
        self.ra = v2.RandAugment(num_ops, magnitude, num_magnitude_bins, fill=fill)
        self.names = list(self.ra._AUGMENTATION_SPACE)

    def magnitude(self, name: str, height: int, width: int) -> tuple[float, bool]:
        """The unsigned magnitude of operation ``name`` and whether it takes a random sign."""
        fn, signed = self.ra._AUGMENTATION_SPACE[name]
        values = fn(self.ra.num_magnitude_bins, height, width)
        return (0.0 if values is None else float(values[self.ra.magnitude])), signed

    def apply(self, x: Tensor, name: str, magnitude: float) -> Tensor:
        """torchvision's operation ``name`` at ``magnitude`` on a ``uint8`` batch."""
        ra = self.ra
        return ra._apply_image_or_video_transform(x, name, magnitude, ra.interpolation, ra._fill)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dtype != torch.uint8:
            raise VislearnError(f"RandAugment runs on uint8 images, got {x.dtype}")
        b, (h, w) = x.shape[0], x.shape[-2:]
        out = x.clone()
        for _ in range(self.ra.num_ops):
            ops = torch.randint(len(self.names), (b,), generator=generator)
            negative = torch.rand(b, generator=generator) <= 0.5
            for op in ops.unique().tolist():
                name = self.names[op]
                mag, signed = self.magnitude(name, h, w)
                for neg in (False, True) if signed else (None,):
                    sel = ops == op if neg is None else (ops == op) & (negative == neg)
                    idx = sel.nonzero().flatten().to(x.device)
                    if len(idx):
                        out[idx] = self.apply(out[idx], name, -mag if neg else mag)
        return out
