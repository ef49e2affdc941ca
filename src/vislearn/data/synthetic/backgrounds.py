"""Background pools for the synthetic scenes: real photos (Debian ``opencv-doc`` samples)
or generated smooth colour fields and textures."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.datasets import IMAGE_EXTENSIONS, load_image
from vislearn.data.synthetic.common import check_channels, check_positive_int, seeded_rng

__all__ = [
    "DEFAULT_PHOTOS",
    "DEFAULT_PHOTO_DIR",
    "HELDOUT_PHOTOS",
    "generated_background",
    "list_background_photos",
    "load_backgrounds",
    "random_crop",
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

#: Further photos of that folder, none of them in :data:`DEFAULT_PHOTOS`: the scenes of the
#: held-out segmentation set (``SEG_DATASETS["heldout"]``), which no pretraining sees.
HELDOUT_PHOTOS: tuple[str, ...] = (
    "Blender_Suzanne1.jpg",
    "basketball1.png",
    "chicky_512.png",
    "box_in_scene.png",
    "blox.jpg",
    "pic3.png",
    "aero3.jpg",
    "graf3.png",
)


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
    rng = seeded_rng(seed, 7)
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


def random_crop(photo: Tensor, size: int, rng: np.random.Generator) -> Tensor:
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
    count = check_positive_int("count", count)
    size = check_positive_int("size", size, 2)
    check_channels(channels)
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
    rng = seeded_rng(seed, 11)
    for i in range(count):
        j = i % len(photos)
        if i < len(photos):
            img = F.interpolate(
                loaded[j].float().unsqueeze(0), size=(size, size), mode="bilinear", antialias=True
            )[0]
            images.append(img.round().clamp(0, 255).to(torch.uint8))
            labels.append(photos[j].name)
        else:
            images.append(random_crop(loaded[j], size, rng))
            labels.append(f"{photos[j].name}#crop{i // len(photos)}")
    return torch.stack(images), labels
