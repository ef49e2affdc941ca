"""Seeded synthetic scenes and videos: Fashion-MNIST sprites over real photo backgrounds.

Ground truth that no local data set has (per-pixel object masks, object identities, motion
classes) is made here by compositing real Fashion-MNIST items on real photos. The module is
shared by the video methods (FAME's background-bias benchmark), segmentation pretraining
(MDP) and unsupervised video object segmentation (SSL-UVOS); its pieces are usable alone:

* :func:`list_background_photos` / :func:`load_backgrounds`: a pool of background images,
  from the Debian ``opencv-doc`` sample photos (:data:`DEFAULT_PHOTO_DIR`) or, where they
  are missing, generated smooth colour fields and textures (:func:`generated_background`);
* :func:`load_sprites` / :func:`tint`: Fashion-MNIST items as alpha mattes (alpha from
  intensity) with a colour;
* :func:`composite`: renders any number of sprites with per-frame position, rotation and
  size over a background, returning frames and an object-identity mask per frame (a single
  frame is a still image with an instance mask);
* :func:`moving_sprite_videos` / :func:`motion_splits`: labelled motion clips (translation
  directions, rotation, scaling) with an optional *background bias*: in the training split
  the background is spuriously predictive of the motion class, in the test split it is not;
* :func:`segmentation_scenes` / :func:`synthetic_segmentation_sets`: still canvases of several
  items with per-pixel class labels in one of several taxonomies (:data:`SEG_TAXONOMIES`:
  the 10 fine classes, a coarse grouping, a partial labelling), rendered as data sets that
  differ in taxonomy and style (:data:`SEG_DATASETS`) for multi-dataset segmentation (MDP);
* :class:`MotionClipDataset` serves ``(clip, label[, masks])``; :func:`write_video_folders`
  writes a set as UCF101-style class folders of frame folders (or video files) for the
  readers of :mod:`vislearn.data.video.io`.

Everything is a function of an explicit integer seed (NumPy ``SeedSequence``), so the same
arguments give the same bytes on every machine.

Conventions: a clip is a uint8 tensor ``[T, C, H, W]``; masks are uint8 ``[T, H, W]`` with 0
for background and ``k`` for the ``k``-th object (1 = the object whose motion defines the
class, 2... = distractors); image coordinates are ``x`` to the right and ``y`` down, so a
positive rotation angle turns clockwise on screen.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError
from vislearn.core.utils import write_json
from vislearn.data.datasets import IMAGE_EXTENSIONS, load_image
from vislearn.data.fmnist import load_embedded_fmnist, load_fashion_mnist
from vislearn.data.video.io import clip_indices, write_video

__all__ = [
    "DEFAULT_MOTION_CLASSES",
    "DEFAULT_PHOTO_DIR",
    "DEFAULT_PHOTOS",
    "MOTION_CLASSES",
    "MotionClipDataset",
    "MotionVideos",
    "SEG_DATASETS",
    "SEG_TAXONOMIES",
    "SegScenes",
    "Sprites",
    "composite",
    "generated_background",
    "label_boundaries",
    "list_background_photos",
    "load_backgrounds",
    "load_sprites",
    "motion_splits",
    "moving_sprite_videos",
    "segmentation_scenes",
    "synthetic_segmentation_sets",
    "tint",
    "write_video_folders",
]

#: Where Debian's ``opencv-doc`` puts its sample photos and videos.
DEFAULT_PHOTO_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
#: Natural colour photos of that folder used as backgrounds by default (calibration
#: chessboards, logos, text and near-duplicate views are left out).
DEFAULT_PHOTOS: tuple[str, ...] = (
    "baboon.jpg",
    "building.jpg",
    "fruits.jpg",
    "apple.jpg",
    "orange.jpg",
    "home.jpg",
    "butterfly.jpg",
    "starry_night.jpg",
    "HappyFish.jpg",
    "squirrel_cls.jpg",
    "messi5.jpg",
    "smarties.png",
    "rubberwhale1.png",
    "aloeL.jpg",
    "board.jpg",
    "graf1.png",
    "leuvenA.jpg",
    "aero1.jpg",
    "left.jpg",
    "licenseplate_motion.jpg",
    "stuff.jpg",
    "ela_original.jpg",
)

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


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent stream per (seed, keys...), stable across NumPy versions' defaults."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *keys])))


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise VislearnError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise VislearnError(f"channels must be 1 or 3, got {channels!r}")
    return channels


# ----------------------------------------------------------------------------- backgrounds


def list_background_photos(
    directory: str | os.PathLike | None = None, names: Sequence[str] | str | None = None
) -> list[Path]:
    """Background photos that exist on this machine.

    Args:
        directory: folder of photos; default :data:`DEFAULT_PHOTO_DIR`.
        names: file names to use (missing ones are skipped); ``None`` gives
            :data:`DEFAULT_PHOTOS` for the default folder and every image file otherwise;
            ``"all"`` gives every image file of the folder.

    Returns:
        Existing image paths (possibly empty), in the order of ``names`` or sorted.
    """
    folder = DEFAULT_PHOTO_DIR if directory is None else Path(directory).expanduser()
    if not folder.is_dir():
        return []
    if names is None and directory is None:
        names = DEFAULT_PHOTOS
    if names is None or names == "all":
        return sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
    if isinstance(names, str):
        names = [names]
    return [folder / n for n in names if (folder / n).is_file()]


def generated_background(
    size: int, seed: int, channels: int = 3, height: int | None = None
) -> Tensor:
    """A smooth random colour field with texture, uint8 ``[channels, height, size]``.

    A linear colour gradient, a few random low-frequency colour waves, soft colour blobs and
    smooth noise at two scales, from the seed alone: a stand-in for a photo when none is installed
    (textured enough that frame differences and colour statistics are informative).
    """
    h, w = (size if height is None else height), size
    rng = _rng(seed, 7)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    c0, c1 = rng.uniform(0.1, 0.9, (2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy + 1.5) / 3.0
    img = c0[:, None, None] * (1 - ramp) + c1[:, None, None] * ramp
    for _ in range(int(rng.integers(2, 5))):
        heading = rng.uniform(0, 2 * math.pi)
        freq = rng.uniform(0.5, 5.0) * np.array([math.cos(heading), math.sin(heading)])
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * (freq[0] * xx + freq[1] * yy) + phase)
        img = img + rng.uniform(-0.12, 0.12, 3)[:, None, None] * wave
    for _ in range(int(rng.integers(1, 4))):  # soft blobs of another colour
        cx, cy, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.35)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
        img = img * (1 - 0.7 * blob) + rng.uniform(0, 1, 3)[:, None, None] * 0.7 * blob
    noise = torch.from_numpy(rng.standard_normal((2, 3, h, w)).astype(np.float32))
    noise = 0.8 * noise.mean(1, keepdim=True) * math.sqrt(3) + 0.2 * noise  # mostly luminance
    for i, cells in enumerate((max(2, w // 16), max(2, w // 4))):
        coarse = F.adaptive_avg_pool2d(noise[i : i + 1], (max(2, h * cells // w), cells))
        up = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
        img = img + (0.12 if i == 0 else 0.06) * up.numpy() / (up.std().item() + 1e-6)
    out = torch.from_numpy(np.clip(img, 0, 1).astype(np.float32))
    if channels == 1:
        out = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2]).unsqueeze(0)
    return (out * 255).round().to(torch.uint8)


def _random_crop(photo: Tensor, size: int, rng: np.random.Generator) -> Tensor:
    """A random square crop (side 40-100% of the shorter side) resized to ``size``, maybe
    mirrored; ``photo`` is uint8 ``[C, S, S]``."""
    side = photo.shape[-1]
    crop = max(2, int(round(side * rng.uniform(0.4, 1.0))))
    top, left = (int(rng.integers(0, side - crop + 1)) for _ in range(2))
    patch = photo[:, top : top + crop, left : left + crop].float().unsqueeze(0)
    patch = F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True)
    if rng.random() < 0.5:
        patch = patch.flip(-1)
    return patch[0].round().clamp(0, 255).to(torch.uint8)


def load_backgrounds(
    count: int,
    size: int,
    source: str = "auto",
    directory: str | os.PathLike | None = None,
    names: Sequence[str] | str | None = None,
    seed: int = 0,
    channels: int = 3,
) -> tuple[Tensor, list[str]]:
    """A pool of ``count`` distinct background images, uint8 ``[count, channels, size, size]``.

    Args:
        count: number of backgrounds.
        size: side length.
        source: ``"photos"`` (real photos; an error when none exist), ``"generated"``
            (:func:`generated_background`), or ``"auto"`` (photos when the folder exists,
            otherwise generated).
        directory, names: where the photos are and which (:func:`list_background_photos`).
        seed: seed of the extra crops and of generated backgrounds.
        channels: 1 (luminance) or 3.

    Photo ``i`` (for ``i`` < number of photos) is the photo's shorter side resized to ``size``
    and centre-cropped; further backgrounds are seeded random crops of the photos in turn.

    Returns:
        ``(images, names)``: names such as ``"baboon.jpg"``, ``"baboon.jpg#crop3"`` or
        ``"generated#5"``.
    """
    count = _check_positive_int("count", count)
    size = _check_positive_int("size", size, 2)
    _check_channels(channels)
    if source not in ("auto", "photos", "generated"):
        raise VislearnError(f"unknown background source {source!r}; use auto, photos or generated")
    photos = [] if source == "generated" else list_background_photos(directory, names)
    if source == "photos" and not photos:
        where = DEFAULT_PHOTO_DIR if directory is None else directory
        raise VislearnError(
            f"no background photos found in {where} (install Debian's opencv-doc or pass "
            "directory=...), or use source='generated'"
        )
    images: list[Tensor] = []
    labels: list[str] = []
    if not photos:
        for i in range(count):
            images.append(generated_background(size, seed * 1_000_003 + i, channels))
            labels.append(f"generated#{i}")
        return torch.stack(images), labels
    loaded: list[Tensor] = []
    for path in photos:
        try:
            loaded.append(load_image(path, size * 2, channels))
        except Exception as exc:  # PIL raises many types for bad files
            raise VislearnError(f"cannot read background photo {path}: {exc}") from None
    rng = _rng(seed, 11)
    for i in range(count):
        j = i % len(photos)
        if i < len(photos):
            img = F.interpolate(
                loaded[j].float().unsqueeze(0), size=(size, size), mode="bilinear", antialias=True
            )[0]
            images.append(img.round().clamp(0, 255).to(torch.uint8))
            labels.append(photos[j].name)
        else:
            images.append(_random_crop(loaded[j], size, rng))
            labels.append(f"{photos[j].name}#crop{i // len(photos)}")
    return torch.stack(images), labels


# ----------------------------------------------------------------------------- sprites


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


def _random_colour(rng: np.random.Generator, channels: int) -> np.ndarray:
    """A saturated, bright colour (HSV with s in [0.6, 1], v in [0.75, 1]); gray level for
    one channel, kept away from mid-gray so the item stands out."""
    if channels == 1:
        return np.array([rng.choice([rng.uniform(0.05, 0.25), rng.uniform(0.8, 1.0)])])
    h, s, v = rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


# ----------------------------------------------------------------------------- rendering


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


def _translation_start(lo: float, hi: float, shift: float, rng: np.random.Generator) -> float:
    """A start coordinate in [lo, hi] such that start + shift also is (centred if impossible)."""
    a, b = lo - min(0.0, shift), hi - max(0.0, shift)
    if a > b:
        return (lo + hi - shift) / 2
    return float(rng.uniform(a, b))


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
        x0 = _translation_start(r, size - r, ux * total, rng)
        y0 = _translation_start(r, size - r, uy * total, rng)
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
        settings: the arguments that made the set.
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

    def __len__(self) -> int:
        return int(self.clips.shape[0])


def _assign_backgrounds(
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
    num_videos = _check_positive_int("num_videos", num_videos)
    frames = _check_positive_int("frames", frames)
    size = _check_positive_int("size", size, 8)
    _check_channels(channels)
    distractors = _check_positive_int("distractors", distractors, 0)
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
    rng = _rng(seed, 0 if split == "train" else 1)
    labels = rng.permutation(np.arange(num_videos) % num_classes)
    bg_ids = _assign_backgrounds(labels, num_classes, len(pool), bias, rng)
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
            cols.append(tint(sprites.shade[items[j]], _random_colour(rng, channels)))
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


class MotionClipDataset(Dataset):
    """Serves a :class:`MotionVideos` set.

    Items are ``(clip, label)`` with ``clip`` uint8 ``[T, C, H, W]`` (after ``transform``),
    or ``(clip, label, masks)`` with ``return_masks=True`` (masks uint8 ``[T, H, W]``).
    ``target="background"`` makes the label the background identity (for a background-only
    probe) instead of the motion class.

    With ``frames`` set, each item is a sub-clip of ``frames`` frames ``stride`` apart,
    sampled as in :func:`vislearn.data.video.io.clip_indices` (``mode``, ``num_clips``);
    ``two_clips=True`` gives two sub-clips at different starts (``[2, frames, C, H, W]``, as
    for contrastive training; the masks follow the same frames). Every motion class moves
    the same way throughout a clip, so a sub-clip keeps its label.
    """

    def __init__(
        self,
        videos: MotionVideos,
        transform: Callable[[Tensor], Any] | None = None,
        return_masks: bool = False,
        target: str = "motion",
        frames: int | None = None,
        stride: int = 1,
        mode: str = "random",
        num_clips: int = 1,
        two_clips: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if target not in ("motion", "background"):
            raise VislearnError(f"unknown target {target!r}; use 'motion' or 'background'")
        self.videos = videos
        self.transform = transform
        self.return_masks = return_masks
        self.target = target
        source = videos.labels if target == "motion" else videos.backgrounds
        self.labels = source.numpy().astype(np.int64)
        self.classes = list(videos.classes) if target == "motion" else list(videos.background_names)
        self.num_classes = len(self.classes)
        self.channels = int(videos.clips.shape[2])
        self.image_size = int(videos.clips.shape[-1])
        self.sampled = frames is not None or two_clips or num_clips > 1
        self.frames = int(videos.clips.shape[1]) if frames is None else frames
        self.stride, self.mode, self.generator = stride, mode, generator
        self.two_clips = two_clips
        self.num_clips = 2 if two_clips else num_clips
        if self.sampled:
            clip_indices(int(videos.clips.shape[1]), self.frames, stride, mode, self.num_clips)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        clip = self.videos.clips[index]
        masks = self.videos.masks[index]
        if self.sampled:
            mode = "random" if self.two_clips else self.mode
            idx = clip_indices(
                clip.shape[0],
                self.frames,
                self.stride,
                mode,
                self.num_clips,
                self.two_clips,
                self.generator,
            )
            clip, masks = clip[idx], masks[idx]
            if self.num_clips == 1:
                clip, masks = clip[0], masks[0]
        else:
            clip, masks = clip.clone(), masks.clone()
        if self.transform is not None:
            clip = self.transform(clip)
        label = int(self.labels[index])
        if self.return_masks:
            return clip, label, masks
        return clip, label


def write_video_folders(
    videos: MotionVideos,
    root: str | os.PathLike,
    format: str = "frames",
    ext: str = ".png",
    mask_root: str | os.PathLike | None = None,
    fps: int = 25,
) -> list[Path]:
    """Write a set as UCF101-style class folders: ``root/<class>/<video>`` .

    Args:
        videos: the set.
        root: output folder (created; existing videos of the same name are overwritten).
        format: ``"frames"`` (``<video>/00000.png``...; PNG is lossless so the readers of
            :mod:`vislearn.data.video.io` give back the exact clips) or ``"video"``
            (``<video>.avi``, lossless FFV1 through PyAV).
        ext: frame file extension for ``"frames"`` (``.png`` lossless, ``.jpg`` smaller).
        mask_root: if given, masks go to ``mask_root/<class>/<video>/00000.png`` (pixel value
            = object id).
        fps: frame rate of video files.

    Also writes ``root/videos.json`` (classes, and per video its label, background and path).

    Returns:
        The path of every video, in set order.
    """
    if format not in ("frames", "video"):
        raise VislearnError(f"unknown format {format!r}; use 'frames' or 'video'")
    root = Path(root)
    width = max(5, len(str(len(videos) - 1)))
    paths: list[Path] = []
    records = []
    for i in range(len(videos)):
        cls = videos.classes[int(videos.labels[i])]
        name = f"v{i:0{width}d}"
        clip = videos.clips[i].permute(0, 2, 3, 1).numpy()  # T, H, W, C
        if format == "frames":
            target = root / cls / name
            target.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(clip):
                img = Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)
                img.save(target / f"{t:05d}{ext}")
        else:
            target = root / cls / f"{name}.avi"
            write_video(target, videos.clips[i], fps=fps)
        if mask_root is not None:
            mdir = Path(mask_root) / cls / name
            mdir.mkdir(parents=True, exist_ok=True)
            for t, m in enumerate(videos.masks[i].numpy()):
                Image.fromarray(m).save(mdir / f"{t:05d}.png")
        paths.append(target)
        records.append(
            {
                "path": str(target.relative_to(root)),
                "label": int(videos.labels[i]),
                "class": cls,
                "background": int(videos.backgrounds[i]),
            }
        )
    write_json(
        root / "videos.json",
        {
            "classes": list(videos.classes),
            "background_names": videos.background_names,
            "settings": videos.settings,
            "videos": records,
        },
    )
    return paths


# ----------------------------------------------------------------------------- segmentation

#: Taxonomies over the 10 Fashion-MNIST classes for synthetic segmentation data sets:
#: ``name -> (class names, id of each Fashion-MNIST class)``; id 0 is "background" in every
#: taxonomy, and an item whose class maps to 0 is painted but labelled background.
SEG_TAXONOMIES: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    # the 10 fine classes
    "fine": (
        (
            "background",
            "t-shirt/top",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle boot",
        ),
        (1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
    ),
    # a coarse grouping: tops (T-shirt, pullover, coat, shirt), bottoms and dresses (trouser,
    # dress), footwear (sandal, sneaker, ankle boot), bags
    "coarse": (
        ("background", "tops", "bottoms", "footwear", "bags"),
        (1, 2, 1, 2, 1, 3, 1, 3, 4, 3),
    ),
    # a partial labelling: only trousers, dresses and the three kinds of shoes are annotated;
    # T-shirts, pullovers, coats, shirts and bags are drawn but labelled background
    "partial": (
        ("background", "trouser", "dress", "sandal", "sneaker", "ankle boot"),
        (0, 1, 0, 2, 0, 3, 0, 4, 0, 5),
    ),
}

#: The default synthetic segmentation data sets: each a taxonomy and a style (backgrounds,
#: item scale and count). ``fine`` uses every other default photo, ``coarse`` the rest (larger
#: and fewer items), ``partial`` generated colour-field backgrounds (smaller, more items).
SEG_DATASETS: dict[str, dict[str, Any]] = {
    "fine": {
        "taxonomy": "fine",
        "num_objects": (2, 4),
        "sprite_scale": (0.28, 0.42),
        "background_source": "auto",
        "background_names": DEFAULT_PHOTOS[0::2],
    },
    "coarse": {
        "taxonomy": "coarse",
        "num_objects": (1, 3),
        "sprite_scale": (0.38, 0.55),
        "background_source": "auto",
        "background_names": DEFAULT_PHOTOS[1::2],
    },
    "partial": {
        "taxonomy": "partial",
        "num_objects": (3, 5),
        "sprite_scale": (0.24, 0.36),
        "background_source": "generated",
        "background_names": None,
    },
}


@dataclass
class SegScenes:
    """A synthetic segmentation set (see :func:`segmentation_scenes`).

    Attributes:
        images: uint8 ``[N, C, H, W]``.
        masks: uint8 ``[N, H, W]``: taxonomy class ids, ``ignore_index`` on label boundaries.
        instances: uint8 ``[N, H, W]``: 0 background, ``k`` = the ``k``-th drawn item.
        item_labels: int64 ``[N, K]``: Fashion-MNIST class of each drawn item (-1 = none).
        classes: the taxonomy's class names (id 0 = background).
        name: data set name.
        ignore_index: the void label.
        settings: the arguments that made the set.
    """

    images: Tensor
    masks: Tensor
    instances: Tensor
    item_labels: Tensor
    classes: tuple[str, ...]
    name: str
    ignore_index: int = 255
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _range(name: str, value: Any, cast: type) -> tuple[Any, Any]:
    try:
        lo, hi = (cast(v) for v in (value if isinstance(value, Sequence) else (value, value)))
    except (TypeError, ValueError):
        raise VislearnError(
            f"{name} must be a number or a (min, max) pair, got {value!r}"
        ) from None
    if lo > hi:
        raise VislearnError(f"{name}: min {lo} > max {hi}")
    return lo, hi


def label_boundaries(masks: Tensor, radius: int) -> Tensor:
    """Pixels within ``radius`` (Chebyshev) of a different label, bool ``[N, H, W]``."""
    if radius <= 0:
        return torch.zeros(masks.shape, dtype=torch.bool)
    x = masks.float().unsqueeze(1)
    k = 2 * radius + 1
    hi = F.max_pool2d(x, k, 1, radius)
    lo = -F.max_pool2d(-x, k, 1, radius)
    return (hi != lo)[:, 0]


def segmentation_scenes(
    num_images: int,
    taxonomy: str = "fine",
    size: int = 64,
    seed: int = 0,
    split: str = "train",
    name: str | None = None,
    num_objects: int | Sequence[int] = (2, 4),
    sprite_scale: float | Sequence[float] = (0.28, 0.42),
    max_tilt: float = 0.3,
    channels: int = 3,
    ignore_boundary: int = 1,
    ignore_index: int = 255,
    num_backgrounds: int = 48,
    background_source: str = "auto",
    background_dir: str | os.PathLike | None = None,
    background_names: Sequence[str] | str | None = None,
    backgrounds: Tensor | None = None,
    sprite_source: str = "fmnist-mini",
    sprite_split: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> SegScenes:
    """Canvases of several Fashion-MNIST items on real photos with per-pixel class labels.

    Each image draws ``num_objects`` items (uniform integer in the range), each of side
    ``sprite_scale * size`` (uniform in the range), a colour, a tilt in
    ``[-max_tilt, max_tilt]`` radians and a centre that keeps it inside the canvas, over a
    background of the pool; later items cover earlier ones (:func:`composite`). An item's
    pixels (alpha >= 0.5) get its class in ``taxonomy`` (:data:`SEG_TAXONOMIES`); pixels
    within ``ignore_boundary`` pixels of a label change get ``ignore_index`` (as VOC's void
    band; 0 disables it).

    Args:
        num_images: set size.
        taxonomy: key of :data:`SEG_TAXONOMIES`.
        size: canvas side.
        seed: everything random follows from it, the data set ``name`` and the ``split``.
        split: ``"train"`` or ``"test"``: the Fashion-MNIST split of the items (unless
            ``sprite_split``) and an independent random stream; the background pool is shared.
        name: data set name (default: the taxonomy).
        background_source, background_dir, background_names, num_backgrounds: the pool
            (:func:`load_backgrounds`); ``backgrounds`` gives a ready uint8 pool instead.
        sprite_source, sprite_split, data_dir: see :func:`load_sprites`.
    """
    num_images = _check_positive_int("num_images", num_images)
    size = _check_positive_int("size", size, 8)
    _check_channels(channels)
    if taxonomy not in SEG_TAXONOMIES:
        raise VislearnError(f"unknown taxonomy {taxonomy!r}; choose from {list(SEG_TAXONOMIES)}")
    if split not in ("train", "test"):
        raise VislearnError(f"unknown split {split!r}; expected 'train' or 'test'")
    n_lo, n_hi = _range("num_objects", num_objects, int)
    s_lo, s_hi = _range("sprite_scale", sprite_scale, float)
    if n_lo < 0 or n_hi < 1:
        raise VislearnError(f"num_objects must allow at least one item, got {num_objects!r}")
    if not 0 < s_lo <= s_hi <= 1:
        raise VislearnError(f"sprite_scale must lie in (0, 1], got {sprite_scale!r}")
    if not 0 <= ignore_index <= 255 or ignore_boundary < 0:
        raise VislearnError("ignore_index must be in [0, 255] and ignore_boundary >= 0")
    classes, mapping = SEG_TAXONOMIES[taxonomy]
    if ignore_index < len(classes):
        raise VislearnError(f"ignore_index {ignore_index} collides with a class id")
    name = name or taxonomy
    if backgrounds is None:
        pool, _ = load_backgrounds(
            num_backgrounds,
            size,
            background_source,
            background_dir,
            background_names,
            seed=seed,
            channels=channels,
        )
    else:
        if backgrounds.dtype != torch.uint8 or tuple(backgrounds.shape[1:]) != (
            channels,
            size,
            size,
        ):
            raise VislearnError(
                f"backgrounds must be uint8 [P, {channels}, {size}, {size}], got "
                f"{tuple(backgrounds.shape)} {backgrounds.dtype}"
            )
        pool = backgrounds
    sprites = load_sprites(sprite_split or split, sprite_source, data_dir)
    code = zlib.crc32(name.encode())
    rng = _rng(seed, code, 0 if split == "train" else 1)
    lut = torch.tensor((0, *mapping), dtype=torch.uint8)  # instance class + 1 -> taxonomy id
    images = torch.empty(num_images, channels, size, size, dtype=torch.uint8)
    masks = torch.empty(num_images, size, size, dtype=torch.uint8)
    instances = torch.empty(num_images, size, size, dtype=torch.uint8)
    item_labels = torch.full((num_images, n_hi), -1, dtype=torch.int64)
    for i in range(num_images):
        k = int(rng.integers(n_lo, n_hi + 1))
        bg = pool[int(rng.integers(0, len(pool)))]
        if k == 0:
            images[i], masks[i], instances[i] = bg, 0, 0
            continue
        items = rng.integers(0, len(sprites), k)
        sides = rng.uniform(s_lo, s_hi, k) * size
        centres = np.stack([rng.uniform(s / 2, size - s / 2, 2) for s in sides])
        tilts = rng.uniform(-max_tilt, max_tilt, k)
        colours = [tint(sprites.shade[j], _random_colour(rng, channels)) for j in items]
        frame, inst = composite(
            bg,
            colours,
            [sprites.alpha[j] for j in items],
            torch.from_numpy(centres).float()[None],
            torch.from_numpy(tilts).float()[None],
            torch.from_numpy(sides).float()[None],
        )
        fm = sprites.labels[torch.from_numpy(items)]
        item_labels[i, :k] = fm
        cls_of_instance = torch.cat([torch.zeros(1, dtype=torch.long), fm.long() + 1])
        images[i], instances[i] = frame[0], inst[0]
        masks[i] = lut[cls_of_instance[inst[0].long()]]
    if ignore_boundary:
        masks[label_boundaries(masks, ignore_boundary)] = ignore_index
    settings = {
        "num_images": num_images,
        "taxonomy": taxonomy,
        "size": size,
        "seed": seed,
        "split": split,
        "name": name,
        "num_objects": [n_lo, n_hi],
        "sprite_scale": [s_lo, s_hi],
        "max_tilt": max_tilt,
        "channels": channels,
        "ignore_boundary": ignore_boundary,
        "ignore_index": ignore_index,
        "num_backgrounds": len(pool),
        "background_source": background_source if backgrounds is None else "given",
        "background_names": (
            list(background_names)
            if isinstance(background_names, Sequence) and not isinstance(background_names, str)
            else background_names
        ),
        "sprite_source": sprite_source,
        "sprite_split": sprite_split or split,
    }
    return SegScenes(
        images=images,
        masks=masks,
        instances=instances,
        item_labels=item_labels,
        classes=classes,
        name=name,
        ignore_index=ignore_index,
        settings=settings,
    )


def synthetic_segmentation_sets(
    names: Sequence[str] = ("fine", "coarse", "partial"),
    num_images: int = 2000,
    split: str = "train",
    size: int = 64,
    seed: int = 0,
    **overrides: Any,
) -> dict[str, SegScenes]:
    """The data sets ``names`` of :data:`SEG_DATASETS` (each its own taxonomy and style),
    rendered with :func:`segmentation_scenes`; ``overrides`` apply to all of them."""
    unknown = [n for n in names if n not in SEG_DATASETS]
    if unknown or not names:
        raise VislearnError(
            f"unknown synthetic segmentation data sets {unknown}; choose from {list(SEG_DATASETS)}"
        )
    return {
        n: segmentation_scenes(
            num_images,
            split=split,
            size=size,
            seed=seed,
            name=n,
            **{**SEG_DATASETS[n], **overrides},
        )
        for n in names
    }
