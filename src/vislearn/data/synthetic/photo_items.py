"""Fashion-MNIST items pasted on photo crops: a labelled classification set with a per-image
foreground mask (the data of ``benchmarks/photo_mra.py``, the benchmark of MRA: "Masked
Autoencoders are Robust Data Augmentors", Xu et al., arXiv:2206.04846, 2022).

Fashion-MNIST has a black background: about 27 of its 49 patches (4 px) hold the item, so a
patch selector has almost nothing to discard, and "background" is a constant that an MAE
re-synthesises trivially. Here every image is one Fashion-MNIST item (its class is the label)
composited over a random crop of a real photo, so the background is textured, the object covers
a known part of the canvas, and its ground-truth mask is exact:

* **Items**: image ``i`` of a split uses Fashion-MNIST item ``i`` of the same split (train
  items for the train split, test items for the test split), as a matte with
  ``alpha = clip(4 I / 255, 0, 1)`` and texture ``I / 255`` (:func:`~vislearn.data.synthetic.
  sprites.load_sprites` with ``alpha_gain=4``: twice the video sprites' opacity, so that dark
  items are not see-through and the mask holds most of every item), tinted with a random
  saturated colour (:func:`~vislearn.data.synthetic.sprites.random_colour`; the formula of
  :func:`~vislearn.data.synthetic.sprites.tint`), scaled to a square of side
  ``U(0.6, 0.85) S`` px and placed uniformly where that square fits in the ``S x S`` canvas
  (no rotation, no flip: the class stays the item's).
* **Backgrounds**: a random crop of one photo: the photo's shorter side is resized to ``4 S``
  (whole photo kept, not centre-cropped), a square of side ``U(0.3, 1)`` of that shorter side is
  cut at a uniform position and resized to ``S`` (torchvision's ``roi_align``: 2 x 2 bilinear
  samples averaged per output pixel), mirrored with probability 0.5. The **train split draws
  from the 22 photos of** :data:`~vislearn.data.synthetic.backgrounds.DEFAULT_PHOTOS`, **the
  test split from the 8 other photos of** :data:`~vislearn.data.synthetic.backgrounds.
  HELDOUT_PHOTOS` (disjoint files: the test backgrounds are unseen scenes, four of them grey
  renders or grey photos, two other views of training scenes: aero3 / aero1, graf3 / graf1).
  Without the photo folder (Debian's ``opencv-doc``) it is an error.
* **Mask**: ``masks[i]`` (uint8 ``[S, S]``, 1 = item) is where the warped alpha reaches 0.5,
  the convention of :func:`~vislearn.data.synthetic.sprites.composite`. At 32 px it covers
  ~24 % of the pixels and touches ~24 of the 64 patches of 4 px (~14 of them more than half).

Everything is drawn from ``seed`` (one stream per split) with vectorised NumPy / torch, so the
same arguments give the same bytes. Building the 60k train + 10k test images at 32 px takes
about 15 s on one loaded CPU thread (one ``grid_sample`` per chunk of items, one ``roi_align``
per photo); the result is cached in memory per process and, with ``$VISLEARN_PHOTO_CACHE``
set, on disk (:func:`load_photo_items`).

Data set names (:func:`vislearn.data.get_dataset`): ``photo-fmnist`` (the full Fashion-MNIST,
60k / 10k) and ``photo-fmnist-mini`` (the embedded 5k / 1k subset, for tests and smoke runs);
``image_size`` defaults to 32 (the ``vit_mini`` MAE's 8 x 8 patches of 4 px;
``backbone_kwargs: {img_size: 32}``), ``channels`` to 3 (1: luminance of the same images).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path
from vislearn.data.datasets import ArrayImageDataset, to_mode
from vislearn.data.fmnist import FMNIST_CLASSES
from vislearn.data.synthetic.backgrounds import (
    DEFAULT_PHOTO_DIR,
    DEFAULT_PHOTOS,
    HELDOUT_PHOTOS,
    list_background_photos,
)
from vislearn.data.synthetic.common import check_channels, check_positive_int, seeded_rng
from vislearn.data.synthetic.sprites import load_sprites

__all__ = [
    "PHOTO_DATASETS",
    "PHOTO_SEED",
    "PhotoItemsDataset",
    "load_photo_items",
    "photo_items_dataset",
    "render_photo_items",
]

#: data set name -> Fashion-MNIST source of the items
PHOTO_DATASETS: dict[str, str] = {"photo-fmnist": "fmnist", "photo-fmnist-mini": "fmnist-mini"}
#: the seed of the registered data sets (every run sees the same images)
PHOTO_SEED = 0
#: photo pool per split: disjoint files
SPLIT_PHOTOS: dict[str, tuple[str, ...]] = {"train": DEFAULT_PHOTOS, "test": HELDOUT_PHOTOS}
ITEM_SIDE = (0.6, 0.85)  # item square side, fraction of the canvas
CROP_SIDE = (0.3, 1.0)  # background crop side, fraction of the photo's shorter side
PHOTO_SCALE = 4  # photos are loaded with their shorter side at PHOTO_SCALE * image_size
TINT_FLOOR = 0.35  # vislearn.data.synthetic.sprites.tint's default
ALPHA_GAIN = 4.0  # item opacity: clip(ALPHA_GAIN * I / 255, 0, 1)
#: bilinear samples per output pixel and side in the background crops (2 x 2: an average
#: over the pixel's footprint up to 2x downscaling, slightly aliased beyond)
SAMPLES = 2
_CHUNK = 4096
#: environment variable naming a folder for rendered splits (benchmarks/photo_mra.py sets it)
CACHE_ENV = "VISLEARN_PHOTO_CACHE"
CACHE_VERSION = 1  # bump when the rendering changes


class PhotoItemsDataset(ArrayImageDataset):
    """:class:`~vislearn.data.datasets.ArrayImageDataset` of composited items with their
    ground-truth foreground: ``masks`` uint8 ``[N, H, W]`` (1 = item), ``photo_index`` ``[N]``
    (index into ``photos``, the file names of the split's pool).

    ``mask_channel=True`` serves each image with one extra channel, the mask as 0 / 255 (the
    convention of the video sets' ``mask_channel``): what
    :class:`~vislearn.data.augment.MultiViewAugment` crops along with the pixels and hands to
    MRA (:class:`~vislearn.data.mra.MaskReconstruct`). ``channels`` stays the image's.
    """

    def __init__(
        self,
        images: Tensor,
        labels: np.ndarray,
        masks: Tensor,
        photo_index: np.ndarray,
        photos: list[str],
        mask_channel: bool = False,
    ) -> None:
        super().__init__(images, labels, classes=FMNIST_CLASSES)
        if masks.shape != (images.shape[0], *images.shape[-2:]) or masks.dtype != torch.uint8:
            raise VislearnError(f"masks must be uint8 [N, H, W], got {tuple(masks.shape)}")
        self.masks, self.photo_index, self.photos = masks, photo_index, photos
        self.mask_channel = bool(mask_channel)

    def with_mask_channel(self) -> PhotoItemsDataset:
        """The same images (shared memory) served with the mask as an extra channel."""
        return PhotoItemsDataset(
            self.images, self.labels, self.masks, self.photo_index, self.photos, True
        )

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = super().__getitem__(index)
        if self.mask_channel:
            image = torch.cat([image, self.masks[index][None] * 255])
        return image, label


def _load_photo(path: Path, short_side: int, channels: int) -> Tensor:
    """A photo as uint8 ``[C, h, w]`` with its shorter side resized to ``short_side``."""
    try:
        with Image.open(path) as opened:
            img = to_mode(ImageOps.exif_transpose(opened), "L" if channels == 1 else "RGB")
    except Exception as exc:  # PIL raises many types for bad files
        raise VislearnError(f"cannot read background photo {path}: {exc}") from None
    w, h = img.size
    scale = short_side / min(w, h)
    size = (max(short_side, round(w * scale)), max(short_side, round(h * scale)))
    img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    arr = np.array(img, dtype=np.uint8)
    return torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1)).permute(2, 0, 1)


def _colours(rng: np.random.Generator, n: int, channels: int) -> np.ndarray:
    """``n`` colours ``[n, C]``: :func:`~vislearn.data.synthetic.sprites.random_colour`'s
    distribution, vectorised (HSV, s in [0.6, 1], v in [0.75, 1]; one channel: dark or bright)."""
    if channels == 1:
        dark, bright = rng.uniform(0.05, 0.25, n), rng.uniform(0.8, 1.0, n)
        return np.where(rng.random(n) < 0.5, dark, bright)[:, None]
    h, s, v = rng.uniform(0, 1, n), rng.uniform(0.6, 1.0, n), rng.uniform(0.75, 1.0, n)
    k = (np.array([5.0, 3.0, 1.0])[None] + h[:, None] * 6.0) % 6.0
    return v[:, None] - (v * s)[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _backgrounds(
    photos: list[Tensor], which: np.ndarray, rng: np.random.Generator, size: int
) -> Tensor:
    """One random square crop per image of photo ``which[i]``, uint8 ``[N, C, S, S]``
    (not yet mirrored)."""
    from torchvision.ops import roi_align

    n, c = len(which), photos[0].shape[0]
    frac, u, v = rng.uniform(*CROP_SIDE, n), rng.random(n), rng.random(n)
    out = torch.empty(n, c, size, size, dtype=torch.uint8)
    for j, photo in enumerate(photos):
        idx = np.flatnonzero(which == j)
        if not len(idx):
            continue
        h, w = photo.shape[-2:]
        side = frac[idx] * min(h, w)
        x0, y0 = u[idx] * (w - side), v[idx] * (h - side)
        boxes = np.stack([np.zeros(len(idx)), x0, y0, x0 + side, y0 + side], 1)
        crops = roi_align(
            photo[None].float(),
            torch.from_numpy(boxes).float(),
            output_size=size,
            sampling_ratio=SAMPLES,
            aligned=True,
        )
        out[torch.from_numpy(idx)] = crops.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _place(alpha: Tensor, shade: Tensor, side: Tensor, cx: Tensor, cy: Tensor, size: int) -> Tensor:
    """Items scaled to squares of ``side`` px centred at ``(cx, cy)`` on an ``S x S`` canvas:
    warped ``[N, 2, S, S]`` (alpha, shade), bilinear, transparent outside the item."""
    n = alpha.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = size / side
    theta[:, 0, 2] = (size / 2 - cx) * 2 / side
    theta[:, 1, 2] = (size / 2 - cy) * 2 / side
    grid = F.affine_grid(theta, [n, 2, size, size], align_corners=False)
    src = torch.stack([alpha, shade], 1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def render_photo_items(
    source: str,
    split: str,
    image_size: int = 32,
    channels: int = 3,
    seed: int = PHOTO_SEED,
    data_dir: str | None = None,
    photo_dir: str | None = None,
) -> dict[str, Any]:
    """Render ``split`` (see the module docstring): ``images`` uint8 ``[N, C, S, S]``,
    ``labels`` int64 ``[N]``, ``masks`` uint8 ``[N, S, S]``, ``photo_index`` int64 ``[N]`` and
    ``photos`` (the pool's file names)."""
    if split not in SPLIT_PHOTOS:
        raise VislearnError(f"unknown split {split!r}; expected 'train' or 'test'")
    size = check_positive_int("image_size", image_size, 8)
    check_channels(channels)
    paths = list_background_photos(photo_dir, SPLIT_PHOTOS[split])
    if not paths:
        where = photo_dir or DEFAULT_PHOTO_DIR
        raise VislearnError(
            f"photo-fmnist needs the background photos in {where} (Debian package opencv-doc)"
        )
    photos = [_load_photo(p, PHOTO_SCALE * size, channels) for p in paths]
    items = load_sprites(split, source, data_dir, alpha_gain=ALPHA_GAIN)
    n = len(items)
    rng = seeded_rng(seed, 0 if split == "train" else 1)
    which = rng.integers(0, len(photos), n)
    side = rng.uniform(*ITEM_SIDE, n) * size
    cx = side / 2 + rng.random(n) * (size - side)
    cy = side / 2 + rng.random(n) * (size - side)
    colour = torch.from_numpy(_colours(rng, n, channels)).float()
    background = _backgrounds(photos, which, rng, size)
    mirror = torch.from_numpy(rng.random(n) < 0.5)
    images = torch.empty(n, channels, size, size, dtype=torch.uint8)
    masks = torch.empty(n, size, size, dtype=torch.uint8)
    as_t = functools.partial(torch.as_tensor, dtype=torch.float32)
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        warped = _place(items.alpha[sl], items.shade[sl], as_t(side[sl]), as_t(cx[sl]),
                        as_t(cy[sl]), size)  # fmt: skip
        a, shade = warped[:, :1], warped[:, 1:]
        ink = colour[sl, :, None, None] * (TINT_FLOOR + (1 - TINT_FLOOR) * shade)
        bg = background[sl].float().div_(255.0)
        flip = mirror[sl]
        bg[flip] = bg[flip].flip(-1)
        images[sl] = (bg + a * (ink - bg)).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        masks[sl] = (a[:, 0] >= 0.5).to(torch.uint8)
    return {
        "images": images,
        "labels": items.labels.numpy().astype(np.int64),
        "masks": masks,
        "photo_index": which.astype(np.int64),
        "photos": [p.name for p in paths],
    }


@functools.lru_cache(maxsize=4)
def load_photo_items(
    source: str,
    split: str,
    image_size: int = 32,
    channels: int = 3,
    seed: int = PHOTO_SEED,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """:func:`render_photo_items`, cached in memory per process and, where the environment
    variable :data:`CACHE_ENV` names a folder, on disk (one ``.pt`` file per split and
    setting, written atomically, read with ``weights_only=True``), so benchmark workers load
    instead of rendering again."""
    args = (source, split, image_size, channels, seed, data_dir)
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        return render_photo_items(*args)
    key = json.dumps([CACHE_VERSION, *args])
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    path = Path(folder).expanduser() / f"photo_items_{source}_{split}_{digest}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            return {**blob, **{k: blob[k].numpy() for k in ("labels", "photo_index")}}
        except (OSError, RuntimeError, KeyError, AttributeError):
            pass  # unreadable: render again and overwrite it
    blob = render_photo_items(*args)
    with atomic_path(path) as tmp:
        torch.save({**blob, "labels": torch.from_numpy(blob["labels"]),
                    "photo_index": torch.from_numpy(blob["photo_index"])}, tmp)  # fmt: skip
    return blob


def photo_items_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> PhotoItemsDataset:
    """The registered data set ``name`` (:data:`PHOTO_DATASETS`); ``data_dir`` is where the full
    Fashion-MNIST lives (as for ``fmnist``)."""
    if name not in PHOTO_DATASETS:
        raise VislearnError(f"unknown photo data set {name!r}; choose from {list(PHOTO_DATASETS)}")
    data_dir = None if data_dir is None else str(data_dir)
    d = load_photo_items(
        PHOTO_DATASETS[name], split, image_size or 32, channels or 3, PHOTO_SEED, data_dir
    )
    return PhotoItemsDataset(d["images"], d["labels"], d["masks"], d["photo_index"], d["photos"])
