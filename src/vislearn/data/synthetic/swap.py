"""Appearance-swap motion videos: each video renders one trajectory over one background twice,
with a different sprite (Fashion-MNIST item and tint) in each half.

The design for contrastive video learning where motion is the only shared content that the
augmentations leave: the two clips of a training pair come from different halves
(:class:`~vislearn.data.synthetic.clips.MotionClipDataset` with ``two_clips=True``), so they
share trajectory and background but not the sprite's appearance, and never share a frame.
FAME replaces the first clip's background, which leaves the motion as the only cue common to
both clips; plain video MoCo can still match the shared background.

Motion is continuous: a direction ``theta`` (the label is its 45-degree bin, the bins'
centres at 0, 45, ... degrees clockwise from "right" since y points down; ``theta`` is drawn
within +-``direction_spread`` of half a bin around the centre, so labels have a margin),
a speed in pixels per frame, a rotation rate and a scaling rate (log side per frame), all
drawn uniformly per video. Backgrounds are random crops (40-100 % of the side, maybe
mirrored) of a pool of photos (``background_source`` as in
:func:`~vislearn.data.synthetic.backgrounds.load_backgrounds`); the background identity is
the photo, and ``background_bias`` ties photos to direction classes in the training split
as :func:`~vislearn.data.synthetic.motion.moving_sprite_videos` does.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from vislearn.core.errors import VislearnError
from vislearn.data.synthetic.backgrounds import load_backgrounds, random_crop
from vislearn.data.synthetic.common import (
    check_channels,
    check_positive_int,
    seeded_rng,
    translation_start,
)
from vislearn.data.synthetic.motion import MotionVideos, assign_backgrounds
from vislearn.data.synthetic.sprites import composite, load_sprites, random_colour, tint

__all__ = ["DIRECTION_CLASSES", "appearance_swap_videos", "direction_bin"]

#: The 8 direction classes, bin ``k`` centred on ``k * 45`` degrees clockwise from right.
DIRECTION_CLASSES: tuple[str, ...] = (
    "right",
    "down_right",
    "down",
    "down_left",
    "left",
    "up_left",
    "up",
    "up_right",
)


def direction_bin(theta: np.ndarray | float, bins: int = 8) -> np.ndarray:
    """The direction class of angles ``theta`` (radians, clockwise on screen from +x)."""
    width = 2 * math.pi / bins
    return (np.floor((np.asarray(theta) + width / 2) % (2 * math.pi) / width) % bins).astype(
        np.int64
    )


def appearance_swap_videos(
    num_videos: int,
    half_frames: int = 10,
    size: int = 32,
    seed: int = 0,
    channels: int = 3,
    background_bias: float = 0.0,
    split: str = "train",
    num_backgrounds: int = 22,
    background_source: str = "auto",
    background_dir: str | os.PathLike | None = None,
    speed: tuple[float, float] = (0.7, 1.8),
    rotation: float = 0.1,
    scaling: float = 0.03,
    direction_spread: float = 0.75,
    sprite_source: str = "fmnist-mini",
    sprite_scale: float = 0.4,
    data_dir: str | os.PathLike | None = None,
) -> MotionVideos:
    """A :class:`MotionVideos` set of ``2 * half_frames``-frame videos (see the module
    docstring). ``masks`` mark the sprite (1) of each frame; ``sprite_labels`` is ``[N, 2]``
    (the item of each half); ``centers``/``angles``/``sides`` are ``[N, 2 * half_frames, 1]``
    (the second half repeats the first); ``motion`` holds ``(theta, speed, omega, rho)``.

    Args:
        num_videos, half_frames, size, seed, channels: as named (frames are square).
        background_bias: in [0, 1], training split only: the photo comes from the direction
            class's own subset (photo ``j`` belongs to class ``j % 8``) with this probability.
        split: ``"train"`` or ``"test"`` (also picks the Fashion-MNIST items' split).
        num_backgrounds: photos in the pool (crops are drawn from them).
        speed: range of the translation speed (px per frame).
        rotation: the rotation rate is uniform in +-``rotation`` rad per frame.
        scaling: the log-side rate is uniform in +-``scaling`` per frame.
        direction_spread: the direction is uniform within +-``direction_spread`` half-bins
            of its bin centre (1: anywhere; < 1: a margin between classes).
    """
    num_videos = check_positive_int("num_videos", num_videos)
    half = check_positive_int("half_frames", half_frames)
    size = check_positive_int("size", size, 8)
    check_channels(channels)
    if split not in ("train", "test"):
        raise VislearnError(f"unknown split {split!r}; expected 'train' or 'test'")
    if not 0.0 <= background_bias <= 1.0:
        raise VislearnError(f"background_bias must be in [0, 1], got {background_bias}")
    if not (0 <= speed[0] <= speed[1]) or rotation < 0 or scaling < 0:
        raise VislearnError("speed must be an increasing non-negative range; rates >= 0")
    if not 0 < direction_spread <= 1:
        raise VislearnError(f"direction_spread must be in (0, 1], got {direction_spread}")
    bins = len(DIRECTION_CLASSES)
    pool, pool_names = load_backgrounds(
        num_backgrounds, 4 * size, background_source, background_dir, seed=seed, channels=channels
    )
    bias = background_bias if split == "train" else 0.0
    if bias > 0 and len(pool) < bins:
        raise VislearnError(f"background_bias needs at least {bins} backgrounds")
    sprites = load_sprites(split, sprite_source, data_dir)
    rng = seeded_rng(seed, 20 if split == "train" else 21)
    labels = rng.permutation(np.arange(num_videos) % bins)
    bg_ids = assign_backgrounds(labels, bins, len(pool), bias, rng)
    width = 2 * math.pi / bins
    theta = labels * width + rng.uniform(-1, 1, num_videos) * direction_spread * width / 2
    spd = rng.uniform(speed[0], speed[1], num_videos)
    omega = rng.uniform(-rotation, rotation, num_videos)
    rho = rng.uniform(-scaling, scaling, num_videos)
    side0 = sprite_scale * size
    t = np.arange(half, dtype=np.float64)
    frames = 2 * half
    clips = torch.empty(num_videos, frames, channels, size, size, dtype=torch.uint8)
    masks = torch.empty(num_videos, frames, size, size, dtype=torch.uint8)
    centers = torch.empty(num_videos, frames, 1, 2)
    angles = torch.empty(num_videos, frames, 1)
    sides = torch.empty(num_videos, frames, 1)
    sprite_labels = torch.empty(num_videos, 2, dtype=torch.int64)
    for i in range(num_videos):
        background = random_crop(pool[bg_ids[i]], size, rng)
        vx, vy = spd[i] * math.cos(theta[i]), spd[i] * math.sin(theta[i])
        s_t = side0 * np.exp(rho[i] * (t - (half - 1) / 2))
        r = float(s_t.max()) / 2
        x0 = translation_start(r, size - r, vx * (half - 1), rng)
        y0 = translation_start(r, size - r, vy * (half - 1), rng)
        c_t = torch.from_numpy(np.stack([x0 + vx * t, y0 + vy * t], 1)[:, None]).float()
        a_t = torch.from_numpy(rng.uniform(-math.pi, math.pi) + omega[i] * t)[:, None].float()
        s_t = torch.from_numpy(s_t)[:, None].float()
        items = rng.choice(len(sprites), 2, replace=False)
        for h, item in enumerate(items):
            colour = tint(sprites.shade[item], random_colour(rng, channels))
            part = slice(h * half, (h + 1) * half)
            clips[i, part], masks[i, part] = composite(
                background, [colour], [sprites.alpha[item]], c_t, a_t, s_t
            )
            centers[i, part], angles[i, part], sides[i, part] = c_t, a_t, s_t
        sprite_labels[i] = sprites.labels[torch.from_numpy(items)]
    settings: dict[str, Any] = {
        "design": "appearance_swap",
        "halves": 2,
        "half_frames": half,
        "num_videos": num_videos,
        "frames": frames,
        "size": size,
        "seed": seed,
        "classes": list(DIRECTION_CLASSES),
        "speed": list(speed),
        "rotation": rotation,
        "scaling": scaling,
        "direction_spread": direction_spread,
        "channels": channels,
        "background_bias": background_bias,
        "split": split,
        "num_backgrounds": len(pool),
        "background_source": background_source,
        "sprite_source": sprite_source,
        "sprite_scale": sprite_scale,
    }
    motion = torch.from_numpy(np.stack([theta % (2 * math.pi), spd, omega, rho], 1)).float()
    return MotionVideos(
        clips=clips,
        masks=masks,
        labels=torch.from_numpy(labels.astype(np.int64)),
        backgrounds=torch.from_numpy(bg_ids.astype(np.int64)),
        classes=DIRECTION_CLASSES,
        background_names=list(pool_names),
        centers=centers,
        angles=angles,
        sides=sides,
        sprite_labels=sprite_labels,
        settings=settings,
        motion=motion,
    )
