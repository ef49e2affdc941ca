"""Segmentation scenes: still canvases of several sprites with per-pixel class labels in
one of several taxonomies, rendered as data sets for multi-dataset segmentation (MDP)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.synthetic.backgrounds import DEFAULT_PHOTOS, HELDOUT_PHOTOS, load_backgrounds
from vislearn.data.synthetic.common import check_channels, check_positive_int, seeded_rng
from vislearn.data.synthetic.sprites import composite, load_sprites, random_colour, tint

__all__ = [
    "SEG_DATASETS",
    "SEG_TAXONOMIES",
    "SegScenes",
    "label_boundaries",
    "segmentation_scenes",
    "synthetic_segmentation_sets",
]

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
    # a fourth grouping that no default pretraining set uses (the held-out taxonomy): warm
    # tops, light tops, dresses, trousers, open shoes, closed shoes, bags
    "heldout": (
        (
            "background",
            "pullover/coat",
            "t-shirt/shirt",
            "dress",
            "trouser",
            "sandal",
            "sneaker/boot",
            "bag",
        ),
        (2, 4, 1, 3, 1, 5, 2, 6, 7, 6),
    ),
}


#: The synthetic segmentation data sets: each a taxonomy and a style (backgrounds, item scale
#: and count). ``fine`` uses every other default photo, ``coarse`` the rest (larger and fewer
#: items), ``partial`` generated colour fields (smaller, more items); items are large enough
#: that foreground classes are not vanishingly rare (``fine``: background ~70 % of the labelled
#: pixels at 48 px, each class 1-5 %). ``heldout`` -- its own taxonomy and photos
#: (:data:`HELDOUT_PHOTOS`) -- is the "unseen data set" of the MDP benchmark: no default
#: pretraining (``vislearn seg pretrain``'s ``data.datasets``) includes it.
SEG_DATASETS: dict[str, dict[str, Any]] = {
    "fine": {
        "taxonomy": "fine",
        "num_objects": (4, 6),
        "sprite_scale": (0.5, 0.7),
        "background_source": "auto",
        "background_names": DEFAULT_PHOTOS[0::2],
    },
    "coarse": {
        "taxonomy": "coarse",
        "num_objects": (2, 4),
        "sprite_scale": (0.55, 0.75),
        "background_source": "auto",
        "background_names": DEFAULT_PHOTOS[1::2],
    },
    "partial": {
        "taxonomy": "partial",
        "num_objects": (5, 7),
        "sprite_scale": (0.45, 0.6),
        "background_source": "generated",
        "background_names": None,
    },
    "heldout": {
        "taxonomy": "heldout",
        "num_objects": (3, 5),
        "sprite_scale": (0.5, 0.7),
        "background_source": "auto",
        "background_names": HELDOUT_PHOTOS,
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
    num_images = check_positive_int("num_images", num_images)
    size = check_positive_int("size", size, 8)
    check_channels(channels)
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
    rng = seeded_rng(seed, code, 0 if split == "train" else 1)
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
        colours = [tint(sprites.shade[j], random_colour(rng, channels)) for j in items]
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
