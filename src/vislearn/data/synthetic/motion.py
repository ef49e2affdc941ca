"""Moving-sprite videos: labelled motion clips (translation, rotation, scaling) with an
optional background bias between the training and test splits."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.synthetic.backgrounds import load_backgrounds
from vislearn.data.synthetic.common import (
    check_channels,
    check_positive_int,
    seeded_rng,
    translation_start,
)
from vislearn.data.synthetic.sprites import composite, load_sprites, random_colour, tint

__all__ = [
    "DEFAULT_MOTION_CLASSES",
    "MOTION_CLASSES",
    "MotionVideos",
    "motion_splits",
    "moving_sprite_videos",
]

_DIRECTIONS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "down": (0.0, 1.0),
    "up": (0.0, -1.0),
    "down_right": (math.sqrt(0.5), math.sqrt(0.5)),
    "down_left": (-math.sqrt(0.5), math.sqrt(0.5)),
    "up_right": (math.sqrt(0.5), -math.sqrt(0.5)),
    "up_left": (-math.sqrt(0.5), -math.sqrt(0.5)),
}


#: Every motion class :func:`moving_sprite_videos` can make.
MOTION_CLASSES: tuple[str, ...] = (*_DIRECTIONS, "rotate_cw", "rotate_ccw", "grow", "shrink")


#: The default 8 classes: 4 translation directions, 2 rotations, 2 scalings.
DEFAULT_MOTION_CLASSES: tuple[str, ...] = (
    "right",
    "left",
    "down",
    "up",
    "rotate_cw",
    "rotate_ccw",
    "grow",
    "shrink",
)


_MAX_ROTATION_PER_FRAME = math.pi / 8  # beyond this cw/ccw alias for symmetric items


_MAX_SCALE_RANGE = 1.2  # grow/shrink: side changes by at most 1.2x the nominal side


def _main_trajectory(
    motion: str,
    frames: int,
    size: int,
    side: float,
    speed: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres ``[T, 2]``, angles ``[T]`` and sides ``[T]`` of the class-defining object.

    Every motion moves the sprite's outline by about ``speed`` pixels per frame: translation
    by ``speed``; rotation at ``speed / (side / 2)`` rad per frame (at most pi/8); scaling
    changes the side by ``2 * speed`` per frame, with the total change capped at 1.2 x side
    (linear in time, centred on the nominal side).
    """
    t = np.arange(frames, dtype=np.float64)
    r = side / 2
    angle0 = float(rng.uniform(-0.3, 0.3))  # a small random tilt; rotation classes add to it
    if motion in _DIRECTIONS:
        ux, uy = _DIRECTIONS[motion]
        total = speed * (frames - 1)
        x0 = translation_start(r, size - r, ux * total, rng)
        y0 = translation_start(r, size - r, uy * total, rng)
        centres = np.stack([x0 + ux * speed * t, y0 + uy * speed * t], 1)
        return centres, np.full(frames, angle0), np.full(frames, side)
    # rotation and scaling stay in place: the centre is drawn where the largest extent fits
    extent = side * (1 + _MAX_SCALE_RANGE / 2) / 2 if motion in ("grow", "shrink") else r * 1.2
    lo, hi = min(extent, size / 2), max(size - extent, size / 2)
    centre = rng.uniform(lo, hi, 2)
    centres = np.repeat(centre[None], frames, 0)
    if motion in ("rotate_cw", "rotate_ccw"):
        omega = min(speed / max(r, 1e-6), _MAX_ROTATION_PER_FRAME)
        sign = 1.0 if motion == "rotate_cw" else -1.0
        angle0 = float(rng.uniform(-math.pi, math.pi))
        return centres, angle0 + sign * omega * t, np.full(frames, side)
    if motion in ("grow", "shrink"):
        change = min(2 * speed * (frames - 1), _MAX_SCALE_RANGE * side)
        ramp = t / max(frames - 1, 1) - 0.5  # -0.5 .. 0.5
        sides = side + (ramp if motion == "grow" else -ramp) * change
        return centres, np.full(frames, angle0), sides
    raise VislearnError(f"unknown motion class {motion!r}; choose from {list(MOTION_CLASSES)}")


def _distractor_trajectory(
    frames: int, size: int, side: float, speed: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random walk: velocity of magnitude <= ``speed``, perturbed every frame, bounced off
    the canvas border; a slow random spin. It carries no class information."""
    r = side / 2
    pos = rng.uniform(r, max(r, size - r), 2)
    heading = rng.uniform(0, 2 * math.pi)
    vel = 0.6 * speed * np.array([math.cos(heading), math.sin(heading)])
    centres = np.empty((frames, 2))
    for i in range(frames):
        centres[i] = pos
        vel = vel + rng.normal(0, 0.5 * speed, 2)
        norm = np.linalg.norm(vel)
        if norm > speed:
            vel *= speed / norm
        pos = pos + vel
        for d in range(2):
            if pos[d] < 0 or pos[d] > size:
                vel[d] = -vel[d]
                pos[d] = min(max(pos[d], 0.0), float(size))
    spin = rng.uniform(-0.05, 0.05)
    angles = rng.uniform(-math.pi, math.pi) + spin * np.arange(frames)
    return centres, angles, np.full(frames, side)


@dataclass
class MotionVideos:
    """A synthetic labelled video set (see :func:`moving_sprite_videos`).

    Attributes:
        clips: uint8 ``[N, T, C, H, W]``.
        masks: uint8 ``[N, T, H, W]`` (0 background, 1 main object, 2... distractors).
        labels: int64 ``[N]`` motion class indices into ``classes``.
        backgrounds: int64 ``[N]`` background identity (index into ``background_names``).
        classes: motion class names.
        background_names: name of each background of the pool.
        centers: float ``[N, T, K, 2]`` object centres (x, y) in pixels; ``angles``,
            ``sides``: ``[N, T, K]`` rotation (radians, clockwise) and side length.
        sprite_labels: int64 ``[N, K]`` Fashion-MNIST class of each object.
        settings: the arguments that made the set (``settings["halves"] == 2``: every video
            is two halves of ``settings["half_frames"]`` frames, see
            :func:`~vislearn.data.synthetic.swap.appearance_swap_videos`).
        motion: float ``[N, 4]`` continuous motion parameters (direction in radians, speed
            in px/frame, rotation in rad/frame, log-scale rate per frame) or ``None``.
    """

    clips: Tensor
    masks: Tensor
    labels: Tensor
    backgrounds: Tensor
    classes: tuple[str, ...]
    background_names: list[str]
    centers: Tensor
    angles: Tensor
    sides: Tensor
    sprite_labels: Tensor
    settings: dict[str, Any] = field(default_factory=dict)
    motion: Tensor | None = None

    def __len__(self) -> int:
        return int(self.clips.shape[0])


def assign_backgrounds(
    labels: np.ndarray, num_classes: int, pool: int, bias: float, rng: np.random.Generator
) -> np.ndarray:
    """Background of each clip: with probability ``bias`` from the label's own subset (pool
    index ``j`` belongs to class ``j % num_classes``), otherwise uniform over the pool."""
    out = rng.integers(0, pool, len(labels))
    if bias <= 0:
        return out
    biased = rng.random(len(labels)) < bias
    for i in np.nonzero(biased)[0]:
        own = np.arange(labels[i], pool, num_classes)
        out[i] = own[rng.integers(0, len(own))]
    return out


def moving_sprite_videos(
    num_videos: int,
    frames: int = 8,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    speed: float = 2.0,
    channels: int = 3,
    distractors: int = 0,
    background_bias: float = 0.0,
    split: str = "train",
    num_backgrounds: int = 16,
    background_source: str = "auto",
    background_dir: str | os.PathLike | None = None,
    backgrounds: Tensor | None = None,
    sprite_source: str = "fmnist-mini",
    sprite_split: str | None = None,
    sprite_scale: float = 0.4,
    data_dir: str | os.PathLike | None = None,
) -> MotionVideos:
    """Labelled clips of a Fashion-MNIST item moving over a static photo.

    Each clip shows one class-defining object (mask id 1) whose motion is the label, plus
    ``distractors`` smaller objects (ids 2...) on a random walk that carries no label. Labels
    are balanced (``i % num_classes``, shuffled). Sprite items, colours, start positions and
    backgrounds are drawn from ``seed``; the background pool is shared by both splits (drawn
    from the pool seed only), so a background identity means the same image in train and test.

    **Background bias**: in ``split="train"`` each clip's background is drawn, with
    probability ``background_bias``, from its class's own subset of the pool (background ``j``
    belongs to class ``j % num_classes``), otherwise uniformly; the background then predicts
    the class with probability ``background_bias + (1 - background_bias) / num_classes``.
    In ``split="test"`` backgrounds are always uniform and independent of the class.

    Args:
        num_videos: number of clips.
        frames, size: clip length and side (square frames).
        seed: everything random follows from it (the split is mixed in, so train and test
            with the same seed differ).
        classes: motion classes (names from :data:`MOTION_CLASSES`); default
            :data:`DEFAULT_MOTION_CLASSES`.
        speed: outline displacement in pixels per frame (see ``_main_trajectory``).
        channels: 3 (colour) or 1 (gray).
        distractors: number of extra objects.
        background_bias: in [0, 1], used by the train split only.
        split: ``"train"`` or ``"test"``; also picks the Fashion-MNIST split of the sprites
            unless ``sprite_split`` is given.
        num_backgrounds: size of the background pool (at least ``num_classes`` when biased).
        background_source, background_dir: see :func:`load_backgrounds`.
        backgrounds: a ready pool, uint8 ``[P, C, size, size]`` (overrides the two above).
        sprite_source, sprite_split, data_dir: see :func:`load_sprites`.
        sprite_scale: nominal sprite side as a fraction of ``size``.
    """
    num_videos = check_positive_int("num_videos", num_videos)
    frames = check_positive_int("frames", frames)
    size = check_positive_int("size", size, 8)
    check_channels(channels)
    distractors = check_positive_int("distractors", distractors, 0)
    names = tuple(DEFAULT_MOTION_CLASSES if classes is None else classes)
    unknown = [c for c in names if c not in MOTION_CLASSES]
    if unknown or not names or len(set(names)) != len(names):
        raise VislearnError(
            f"classes must be distinct names from {list(MOTION_CLASSES)}, got {list(names)}"
        )
    if split not in ("train", "test"):
        raise VislearnError(f"unknown split {split!r}; expected 'train' or 'test'")
    if not 0.0 <= background_bias <= 1.0:
        raise VislearnError(f"background_bias must be in [0, 1], got {background_bias}")
    if not speed >= 0:
        raise VislearnError(f"speed must be >= 0, got {speed}")
    if not 0 < sprite_scale <= 1:
        raise VislearnError(f"sprite_scale must be in (0, 1], got {sprite_scale}")
    num_classes = len(names)
    if backgrounds is None:
        pool, pool_names = load_backgrounds(
            num_backgrounds, size, background_source, background_dir, seed=seed, channels=channels
        )
    else:
        pool = backgrounds
        if (
            pool.dtype != torch.uint8
            or pool.ndim != 4
            or tuple(pool.shape[1:])
            != (
                channels,
                size,
                size,
            )
        ):
            raise VislearnError(
                f"backgrounds must be uint8 [P, {channels}, {size}, {size}], got "
                f"{tuple(pool.shape)} {pool.dtype}"
            )
        pool_names = [f"background#{i}" for i in range(len(pool))]
    bias = background_bias if split == "train" else 0.0
    if bias > 0 and len(pool) < num_classes:
        raise VislearnError(
            f"background_bias needs at least one background per class: {len(pool)} "
            f"backgrounds for {num_classes} classes (raise num_backgrounds)"
        )
    sprites = load_sprites(sprite_split or split, sprite_source, data_dir)
    rng = seeded_rng(seed, 0 if split == "train" else 1)
    labels = rng.permutation(np.arange(num_videos) % num_classes)
    bg_ids = assign_backgrounds(labels, num_classes, len(pool), bias, rng)
    side = sprite_scale * size
    k = 1 + distractors
    clips = torch.empty(num_videos, frames, channels, size, size, dtype=torch.uint8)
    masks = torch.empty(num_videos, frames, size, size, dtype=torch.uint8)
    centers = torch.empty(num_videos, frames, k, 2)
    angles = torch.empty(num_videos, frames, k)
    sides = torch.empty(num_videos, frames, k)
    sprite_labels = torch.empty(num_videos, k, dtype=torch.int64)
    for i in range(num_videos):
        items = rng.integers(0, len(sprites), k)
        cols, alps, trajs = [], [], []
        for j in range(k):
            trajs.append(
                _main_trajectory(names[labels[i]], frames, size, side, speed, rng)
                if j == 0
                else _distractor_trajectory(frames, size, 0.7 * side, speed, rng)
            )
            cols.append(tint(sprites.shade[items[j]], random_colour(rng, channels)))
            alps.append(sprites.alpha[items[j]])
        # distractors first (behind), the class-defining object on top
        order = list(range(1, k)) + [0]
        c_t = torch.from_numpy(np.stack([trajs[j][0] for j in order], 1)).float()
        a_t = torch.from_numpy(np.stack([trajs[j][1] for j in order], 1)).float()
        s_t = torch.from_numpy(np.stack([trajs[j][2] for j in order], 1)).float()
        frames_i, masks_i = composite(
            pool[bg_ids[i]], [cols[j] for j in order], [alps[j] for j in order], c_t, a_t, s_t
        )
        # composite numbers objects by drawing order; renumber to 1 = main, 2.. = distractors
        ids = torch.tensor([0] + [j + 1 for j in order], dtype=torch.uint8)
        clips[i], masks[i] = frames_i, ids[masks_i.long()]
        back = torch.tensor([order.index(j) for j in range(k)])
        centers[i], angles[i], sides[i] = c_t[:, back], a_t[:, back], s_t[:, back]
        sprite_labels[i] = sprites.labels[torch.from_numpy(items)]
    settings = {
        "num_videos": num_videos,
        "frames": frames,
        "size": size,
        "seed": seed,
        "classes": list(names),
        "speed": speed,
        "channels": channels,
        "distractors": distractors,
        "background_bias": background_bias,
        "split": split,
        "num_backgrounds": len(pool),
        "background_source": background_source if backgrounds is None else "given",
        "sprite_source": sprite_source,
        "sprite_split": sprite_split or split,
        "sprite_scale": sprite_scale,
    }
    return MotionVideos(
        clips=clips,
        masks=masks,
        labels=torch.from_numpy(labels.astype(np.int64)),
        backgrounds=torch.from_numpy(bg_ids.astype(np.int64)),
        classes=names,
        background_names=list(pool_names),
        centers=centers,
        angles=angles,
        sides=sides,
        sprite_labels=sprite_labels,
        settings=settings,
    )


def motion_splits(
    num_train: int, num_test: int, seed: int = 0, **kwargs: Any
) -> tuple[MotionVideos, MotionVideos]:
    """Train and test sets of :func:`moving_sprite_videos` sharing one background pool.

    The train split gets ``background_bias`` (if given), the test split uniform backgrounds;
    sprites come from the Fashion-MNIST train and test items respectively.
    """
    if "split" in kwargs:
        raise VislearnError("motion_splits makes both splits; do not pass split=")
    train = moving_sprite_videos(num_train, seed=seed, split="train", **kwargs)
    test = moving_sprite_videos(num_test, seed=seed, split="test", **kwargs)
    return train, test
