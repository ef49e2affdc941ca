"""Clip-consistent batched augmentation on the device.

:class:`ClipAugment` applies the image augmentations of :mod:`vislearn.data.augment` to a
batch of clips, with one set of random parameters per clip (the same crop, flip, colour
jitter, grayscale and blur on every frame). Its two stages, :meth:`ClipAugment.spatial`
(uint8 ``[B, T, C, H, W]`` -> float ``[B, C, T, S, S]`` in [0, 1]) and
:meth:`ClipAugment.photometric`, leave room for FAME between them
(:mod:`vislearn.data.video.fame`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.data.augment import (
    ViewConfig,
    bernoulli_draws,
    color_jitter,
    crop_flip_theta,
    gaussian_blur,
    random_grayscale,
    uniform_draws,
)
from vislearn.data.video.io import KINETICS_MEAN, KINETICS_STD

__all__ = ["ClipAugment"]


class ClipAugment(nn.Module):
    """Batched clip augmentation with one set of random parameters per clip.

    ``forward(clips, g)`` = ``normalize(photometric(spatial(clips, g), g))``; call the stages
    yourself to insert FAME after :meth:`spatial` (FAME needs un-normalised [0, 1] clips).

    Args:
        cfg: the image :class:`~vislearn.data.augment.ViewConfig` (crop scale/ratio, flip,
            colour jitter, grayscale, blur; solarisation is applied too if set). FAME's
            recipe is the default ``ViewConfig()`` (crop 0.2-1, jitter 0.4/0.4/0.4/0.1 with
            p 0.8, grayscale 0.2, blur 0.5 with sigma 0.1-2).
        size: output side ``S``; the blur kernel is ``2 * floor(0.1 * S / 2) + 1`` (at least 3).
        channels: 1 or 3.
        mean, std: normalisation (default :data:`KINETICS_MEAN`/:data:`KINETICS_STD` for 3
            channels, 0.5/0.25 for 1).
    """

    def __init__(
        self,
        cfg: ViewConfig | None = None,
        size: int = 112,
        channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = ViewConfig() if cfg is None else cfg
        self.size, self.channels = size, channels
        if mean is None:
            mean = KINETICS_MEAN if channels == 3 else (0.5,)
        if std is None:
            std = KINETICS_STD if channels == 3 else (0.25,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1, 1), persistent=False)

    def spatial(self, clips: Tensor, g: torch.Generator) -> Tensor:
        """uint8 (or [0, 1] float) ``[B, T, C, H, W]`` -> float ``[B, C, T, S, S]`` in [0, 1]:
        random resized crop + horizontal flip, identical for every frame of a clip."""
        if clips.ndim != 5:
            raise VislearnError(f"clips must be [B, T, C, H, W], got {tuple(clips.shape)}")
        b, t, c = clips.shape[:3]
        x = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips.float()
        cfg = self.cfg
        theta = crop_flip_theta(b, cfg.crop_scale, cfg.crop_ratio, cfg.hflip_p, g)
        theta = theta.repeat_interleave(t, 0).to(x)
        frames = x.reshape(b * t, c, *x.shape[-2:])
        grid = F.affine_grid(theta, [b * t, c, self.size, self.size], align_corners=False)
        out = F.grid_sample(
            frames, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        return out.view(b, t, c, self.size, self.size).transpose(1, 2).clamp(0, 1)

    def photometric(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Colour jitter, grayscale, blur (and solarisation) of float ``[B, C, T, H, W]`` in
        [0, 1], with the same parameters for all frames of a clip (contrast uses the clip's
        mean gray)."""
        b, c, t, h, w = x.shape
        cfg = self.cfg
        y = x.reshape(b, c, t * h, w)  # fold time into height: per-pixel ops see one image
        y = color_jitter(y, cfg.jitter, cfg.jitter_p, g)
        y = random_grayscale(y, cfg.gray_p, g)
        y = y.view(b, c, t, h, w)
        if cfg.blur_p > 0:
            on = bernoulli_draws(b, cfg.blur_p, g).to(x.device).view(-1, 1, 1, 1, 1)
            sigma = uniform_draws(b, *cfg.blur_sigma, g).repeat_interleave(t)
            frames = y.transpose(1, 2).reshape(b * t, c, h, w)
            blurred = gaussian_blur(frames, sigma).view(b, t, c, h, w).transpose(1, 2)
            y = torch.where(on, blurred, y)
        if cfg.solarize_p > 0:
            on = bernoulli_draws(b, cfg.solarize_p, g).to(x.device).view(-1, 1, 1, 1, 1)
            y = torch.where(on & (y >= 0.5), 1.0 - y, y)
        return y

    def normalize(self, x: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` in [0, 1] -> normalised."""
        return (x - self.mean) / self.std

    def forward(self, clips: Tensor, g: torch.Generator) -> Tensor:
        return self.normalize(self.photometric(self.spatial(clips, g), g))
