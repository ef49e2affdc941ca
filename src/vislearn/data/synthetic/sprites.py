"""Fashion-MNIST sprites as alpha mattes, their tint, and compositing over a background."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.fmnist import load_embedded_fmnist, load_fashion_mnist

__all__ = ["Sprites", "composite", "load_sprites", "random_colour", "tint"]


@dataclass(frozen=True)
class Sprites:
    """Fashion-MNIST items as mattes: ``alpha`` and ``shade`` float ``[N, h, w]`` in [0, 1]
    (opacity and item texture), and their Fashion-MNIST class ``labels`` ``[N]``."""

    alpha: Tensor
    shade: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.alpha.shape[0])


def load_sprites(
    split: str = "train",
    source: str = "fmnist-mini",
    data_dir: str | os.PathLike | None = None,
    alpha_gain: float = 2.0,
) -> Sprites:
    """Fashion-MNIST items as sprites.

    ``alpha = clip(alpha_gain * I / 255, 0, 1)`` (dark background pixels transparent, the
    item opaque except at its faint edges) and ``shade = I / 255`` (the item's texture, used
    by :func:`tint`).

    Args:
        split: ``"train"`` or ``"test"`` items (keep them apart across data splits).
        source: ``"fmnist-mini"`` (embedded 5k/1k subset, always present) or ``"fmnist"``.
        data_dir: where the full Fashion-MNIST lives (for ``"fmnist"``).
        alpha_gain: opacity gain.
    """
    if source == "fmnist-mini":
        images, labels = load_embedded_fmnist(split)
    elif source == "fmnist":
        images, labels = load_fashion_mnist(split, data_dir=data_dir)
    else:
        raise VislearnError(f"unknown sprite source {source!r}; use fmnist-mini or fmnist")
    shade = torch.from_numpy(images.astype(np.float32) / 255.0)
    alpha = (shade * alpha_gain).clamp(0, 1)
    return Sprites(alpha=alpha, shade=shade, labels=torch.from_numpy(labels))


def tint(shade: Tensor, colour: Sequence[float] | Tensor, floor: float = 0.35) -> Tensor:
    """Colour a sprite: ``colour * (floor + (1 - floor) * shade)``, float ``[C, h, w]``.

    ``colour`` has one value per output channel (in [0, 1]); the item's own texture stays
    visible through ``shade``.
    """
    c = torch.as_tensor(colour, dtype=torch.float32).view(-1, 1, 1)
    return c * (floor + (1.0 - floor) * shade.unsqueeze(0))


def random_colour(rng: np.random.Generator, channels: int) -> np.ndarray:
    """A saturated, bright colour (HSV with s in [0.6, 1], v in [0.75, 1]); gray level for
    one channel, kept away from mid-gray so the item stands out."""
    if channels == 1:
        return np.array([rng.choice([rng.uniform(0.05, 0.25), rng.uniform(0.8, 1.0)])])
    h, s, v = rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def composite(
    background: Tensor,
    colours: Sequence[Tensor],
    alphas: Sequence[Tensor],
    centers: Tensor,
    angles: Tensor,
    sides: Tensor,
    mask_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Render sprites over a static background.

    Object ``k`` is drawn after (on top of) objects ``< k``. Its sprite is placed with its
    centre at ``centers[t, k] = (x, y)`` pixels (pixel ``i`` spans ``[i, i + 1)``), rotated by
    ``angles[t, k]`` radians (clockwise on screen) and scaled to a square of side
    ``sides[t, k]`` pixels; sampling is bilinear, transparent outside the sprite.

    Args:
        background: uint8 ``[C, H, W]``.
        colours: per object, float ``[C, h, w]`` in [0, 1] (e.g. from :func:`tint`).
        alphas: per object, float ``[h, w]`` in [0, 1].
        centers: float ``[T, K, 2]``; ``angles``, ``sides``: ``[T, K]``.
        mask_threshold: a pixel belongs to object ``k`` where its warped alpha is at least
            this and no later object covers it.

    Returns:
        ``(frames, masks)``: uint8 ``[T, C, H, W]`` and uint8 ``[T, H, W]`` (0 = background,
        ``k + 1`` = object ``k``).
    """
    c, h, w = background.shape
    t, k = centers.shape[:2]
    if not (len(colours) == len(alphas) == k and angles.shape == sides.shape == (t, k)):
        raise ValueError("composite: colours, alphas, centers, angles and sides disagree on K/T")
    out = background.float().div(255.0).expand(t, c, h, w).clone()
    masks = torch.zeros(t, h, w, dtype=torch.uint8)
    for j in range(k):
        sprite = torch.cat([colours[j].float(), alphas[j].float().unsqueeze(0)], 0)
        s = sides[:, j].double().clamp_min(1e-3)
        a = angles[:, j].double()
        cos, sin = a.cos(), a.sin()
        # canvas normalised coords -> sprite normalised coords: u = R(-a) (p - centre) / (s/2)
        dx = (w / 2 - centers[:, j, 0].double()) * 2 / s
        dy = (h / 2 - centers[:, j, 1].double()) * 2 / s
        theta = torch.zeros(t, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 1] = cos * w / s, sin * h / s
        theta[:, 1, 0], theta[:, 1, 1] = -sin * w / s, cos * h / s
        theta[:, 0, 2] = cos * dx + sin * dy
        theta[:, 1, 2] = -sin * dx + cos * dy
        grid = F.affine_grid(theta.float(), [t, c + 1, h, w], align_corners=False)
        warped = F.grid_sample(
            sprite.expand(t, -1, -1, -1), grid, mode="bilinear", align_corners=False
        )
        alpha = warped[:, c:]
        out = out * (1 - alpha) + warped[:, :c] * alpha
        masks[alpha[:, 0] >= mask_threshold] = j + 1
    return (out * 255).round().clamp(0, 255).to(torch.uint8), masks
