"""Semantic segmentation data: label spaces, data sets, the VOC folder reader, multi-dataset
concatenation and device-side joint augmentation.

Every segmentation data set serves ``(image, mask)``: ``image`` uint8 ``[C, H, W]`` and
``mask`` int64 ``[H, W]`` holding class ids of its :class:`LabelSpace` ``label_space`` or the
space's ``ignore_index`` (255 by default, the PASCAL VOC convention for "void" pixels).

* :class:`ArraySegmentationDataset`: images and masks in memory (the synthetic sets).
* :class:`SegmentationFolder`: the common folder layout (PASCAL VOC)::

      root/JPEGImages/<id>.jpg            (any image extension)
      root/SegmentationClass/<id>.png     (palette or 8-bit gray PNG: pixel value = class id)
      root/ImageSets/Segmentation/<split>.txt   (one id per line)
      root/classes.txt                    (optional: one class name per line)

  :func:`write_segmentation_folder` writes that layout (palette PNG masks), e.g. to hand a
  synthetic set to other tools.
* :class:`MultiDatasetSegmentation`: several data sets over their *concatenated* label spaces
  (class ``c`` of data set ``d`` becomes ``offset[d] + c``), served ``(image, mask, d)`` with
  per-dataset balanced indexing.
* :class:`SegmentationAugment`: random scale, crop and flip of an image batch and its label
  maps on the training device (labels by nearest neighbour, pixels from outside the image get
  the ignore index).

Masks are read and written with :mod:`vislearn.data.video.davis`'s label PNG helpers (palette
indices of a "P" PNG, values of an "L" PNG; colour images are rejected).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path
from vislearn.data.datasets import IMAGE_EXTENSIONS
from vislearn.data.video.davis import davis_palette, read_label_png, write_label_png

__all__ = [
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "ArraySegmentationDataset",
    "LabelSpace",
    "MultiDatasetSegmentation",
    "EpochSliceSampler",
    "SegmentationAugment",
    "SegmentationDataset",
    "SegmentationFolder",
    "SegmentationSubset",
    "downsample_labels",
    "fraction_subset",
    "write_segmentation_folder",
]

#: The default "void" label (PASCAL VOC): excluded from losses and metrics.
IGNORE_INDEX = 255
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass(frozen=True)
class LabelSpace:
    """The classes of one data set: ``classes[c]`` is the name of id ``c``; pixels equal to
    ``ignore_index`` carry no label."""

    name: str
    classes: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if not self.classes:
            raise VislearnError(f"label space {self.name!r} has no classes")
        if 0 <= self.ignore_index < len(self.classes):
            raise VislearnError(
                f"label space {self.name!r}: ignore_index {self.ignore_index} is a class id "
                f"(it has {len(self.classes)} classes)"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette(self) -> np.ndarray:
        """Colours for ids ``0..num_classes-1``, uint8 ``[num_classes, 3]`` (the VOC / DAVIS
        colour map of :func:`vislearn.data.video.davis.davis_palette`)."""
        return davis_palette(max(256, self.num_classes))[: self.num_classes]


def check_mask(mask: np.ndarray | Tensor, space: LabelSpace, where: str) -> None:
    """Raise a :class:`VislearnError` naming ``where`` if ``mask`` holds ids outside the space."""
    values = np.unique(np.asarray(mask))
    bad = values[(values != space.ignore_index) & ((values < 0) | (values >= space.num_classes))]
    if bad.size:
        raise VislearnError(
            f"{where}: mask values {bad[:8].tolist()} are not class ids of {space.name!r} "
            f"(0..{space.num_classes - 1}, ignore {space.ignore_index})"
        )


class SegmentationDataset(Dataset):
    """Base class: ``(image uint8 [C, H, W], mask int64 [H, W])`` items over ``label_space``.

    Subclasses set ``label_space`` and ``name`` and implement ``__len__`` / ``__getitem__``.
    """

    label_space: LabelSpace
    name: str

    @property
    def num_classes(self) -> int:
        return self.label_space.num_classes

    @property
    def ignore_index(self) -> int:
        return self.label_space.ignore_index

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label_space.classes


class ArraySegmentationDataset(SegmentationDataset):
    """Images ``uint8 [N, C, H, W]`` and masks ``[N, H, W]`` held in memory."""

    def __init__(
        self,
        images: Tensor,
        masks: Tensor,
        label_space: LabelSpace,
        name: str | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise VislearnError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if (
            masks.ndim != 3
            or masks.shape[0] != images.shape[0]
            or masks.shape[1:] != images.shape[2:]
        ):
            raise VislearnError(
                f"masks must be [N, H, W] matching images {tuple(images.shape)}, got "
                f"{tuple(masks.shape)}"
            )
        if images.shape[0] == 0:
            raise VislearnError("segmentation data set is empty")
        check_mask(masks, label_space, f"data set {name or label_space.name!r}")
        self.images, self.masks = images, masks
        self.label_space = label_space
        self.name = name or label_space.name

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.masks[index].long()


def _resize_crop(img: Image.Image, size: int, resample: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


class SegmentationFolder(SegmentationDataset):
    """A segmentation data set in the PASCAL VOC folder layout (see the module docstring).

    Args:
        root: data set folder.
        split: image-set list name (``root/<list_dir>/<split>.txt``).
        classes: class names; default ``root/classes.txt``, else the 21 VOC classes.
        image_dir, mask_dir, list_dir: sub-folders (VOC names by default; e.g.
            ``mask_dir="SegmentationClassAug"`` for the augmented VOC set).
        image_size: if given, the shorter side is resized to it (image bilinear, mask
            nearest) and the centre square cropped, so batches stack; ``None`` keeps the files'
            sizes (batching then needs equal sizes).
        channels: 3 (RGB) or 1 (gray).
        ignore_index: the "void" value in the masks.
        name: data set name (default: the folder name).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        classes: Sequence[str] | None = None,
        image_dir: str = "JPEGImages",
        mask_dir: str = "SegmentationClass",
        list_dir: str = "ImageSets/Segmentation",
        image_size: int | None = None,
        channels: int = 3,
        ignore_index: int = IGNORE_INDEX,
        name: str | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise VislearnError(f"segmentation folder not found: {self.root}")
        if channels not in (1, 3):
            raise VislearnError(f"channels must be 1 or 3, got {channels}")
        list_file = self.root / list_dir / f"{split}.txt"
        if not list_file.is_file():
            lists = sorted(p.stem for p in (self.root / list_dir).glob("*.txt"))
            raise VislearnError(
                f"image-set list {list_file} not found (lists there: {lists or 'none'})"
            )
        ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise VislearnError(f"image-set list {list_file} is empty")
        if classes is None:
            names_file = self.root / "classes.txt"
            if names_file.is_file():
                classes = [c.strip() for c in names_file.read_text().splitlines() if c.strip()]
            else:
                classes = VOC_CLASSES
        self.label_space = LabelSpace(name or self.root.name, tuple(classes), ignore_index)
        self.name = self.label_space.name
        images = {
            p.stem: p
            for p in (self.root / image_dir).glob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
        }
        self.samples: list[tuple[Path, Path]] = []
        missing = []
        for i in ids:
            mask = self.root / mask_dir / f"{i}.png"
            if i not in images or not mask.is_file():
                missing.append(i)
            else:
                self.samples.append((images[i], mask))
        if missing:
            raise VislearnError(
                f"{len(missing)} of {len(ids)} ids in {list_file} lack an image in "
                f"{self.root / image_dir} or a mask {mask_dir}/<id>.png (e.g. {missing[:3]})"
            )
        self.ids = ids
        self.image_size, self.channels = image_size, channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        try:
            with Image.open(image_path) as opened:
                img = ImageOps.exif_transpose(opened).convert("L" if self.channels == 1 else "RGB")
        except Exception as exc:  # PIL raises many types for bad files
            raise VislearnError(f"cannot read image {image_path}: {exc}") from None
        mask = read_label_png(mask_path)
        if mask.shape != (img.size[1], img.size[0]):
            raise VislearnError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{image_path.name} is {img.size[0]}x{img.size[1]}"
            )
        check_mask(mask, self.label_space, str(mask_path))
        if self.image_size is not None:
            img = _resize_crop(img, self.image_size, Image.Resampling.BILINEAR)
            mimg = Image.fromarray(mask)
            mask = np.array(_resize_crop(mimg, self.image_size, Image.Resampling.NEAREST))
        arr = np.array(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        image = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        return image, torch.from_numpy(mask.astype(np.int64))


def write_segmentation_folder(
    dataset: SegmentationDataset,
    root: str | os.PathLike,
    split: str = "train",
    image_ext: str = ".png",
) -> Path:
    """Write ``dataset`` in the VOC layout under ``root`` (palette PNG masks, ``classes.txt``,
    ``ImageSets/Segmentation/<split>.txt``); every file is written atomically. Ids are
    ``<split>_<index>``. Returns ``root``."""
    root = Path(root)
    space = dataset.label_space
    fmt = Image.registered_extensions().get(image_ext.lower())
    if fmt is None:
        raise VislearnError(f"unknown image extension {image_ext!r} (use .png or .jpg)")
    ids = []
    for i in range(len(dataset)):
        image, mask = dataset[i]
        name = f"{split}_{i:06d}"
        arr = image.permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        with atomic_path(root / "JPEGImages" / f"{name}{image_ext}") as tmp:
            img.save(tmp, format=fmt)
        write_label_png(root / "SegmentationClass" / f"{name}.png", mask.numpy())
        ids.append(name)
    with atomic_path(root / "ImageSets" / "Segmentation" / f"{split}.txt") as tmp:
        tmp.write_text("\n".join(ids) + "\n")
    with atomic_path(root / "classes.txt") as tmp:
        tmp.write_text("\n".join(space.classes) + "\n")
    return root


class SegmentationSubset(SegmentationDataset):
    """The items ``indices`` of a segmentation data set (same label space)."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int]) -> None:
        if len(indices) == 0:
            raise VislearnError(f"empty subset of {dataset.name!r}")
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.label_space, self.name = dataset.label_space, dataset.name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.dataset[self.indices[index]]


def fraction_subset(
    dataset: SegmentationDataset, fraction: float, seed: int = 0
) -> SegmentationDataset:
    """A seeded ``fraction`` of the images (at least one): the first ``round(f N)`` of one
    permutation, so smaller fractions are nested in larger ones. ``1.0`` returns ``dataset``."""
    if not 0.0 < fraction <= 1.0:
        raise VislearnError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return dataset
    n = len(dataset)
    keep = max(1, int(round(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)[:keep]
    return SegmentationSubset(dataset, np.sort(order).tolist())


class EpochSliceSampler(Sampler[int]):
    """Fixed-length epochs over a data set of any size, every item equally often.

    An endless stream of seeded permutations of ``range(n)`` (one per pass) is cut into
    epochs of ``per_rank * world`` indices; epoch ``e`` (set by Lightning through
    :meth:`set_epoch`) serves slice ``e`` and rank ``r`` every ``world``-th index of it from
    ``r``. Small subsets repeat within an epoch, large sets span several epochs, and a resumed
    run continues the same stream.
    """

    def __init__(self, n: int, per_rank: int, seed: int = 0, rank: int = 0, world: int = 1):
        if n < 1 or per_rank < 1:
            raise VislearnError(f"need n >= 1 and per_rank >= 1, got {n}, {per_rank}")
        self.n, self.per_rank, self.seed = int(n), int(per_rank), int(seed)
        self.rank, self.world, self.epoch = int(rank), int(world), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        size = self.per_rank * self.world
        start = self.epoch * size
        first, last = start // self.n, (start + size - 1) // self.n
        stream = np.concatenate(
            [
                np.random.default_rng([self.seed, k]).permutation(self.n)
                for k in range(first, last + 1)
            ]
        )
        offset = start - first * self.n
        return iter(stream[offset : offset + size][self.rank :: self.world].tolist())


class MultiDatasetSegmentation(Dataset):
    """Several segmentation data sets over their concatenated label spaces.

    Class ``c`` of data set ``d`` is global id ``offsets[d] + c``; no classes are merged,
    even when two data sets name them alike (MDP's setting: the network must learn the
    relations between taxonomies). Items are ``(image, global_mask, d)``.

    With ``balanced=True`` (default) index ``i`` is item ``(i // D) % len(d)`` of data set
    ``d = i % D``, so every data set fills ``1 / D`` of a shuffled epoch of
    ``D * max(len)`` items, whatever its size (smaller sets repeat); ``False`` concatenates.

    ``ignore_index`` (default 255, or -1 when the concatenated space reaches 255 classes)
    replaces every data set's own ignore value.
    """

    def __init__(
        self,
        datasets: Sequence[SegmentationDataset],
        balanced: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        if not datasets:
            raise VislearnError("no segmentation data sets given")
        self.datasets = list(datasets)
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise VislearnError(f"data set names must be distinct, got {names}")
        counts = [d.num_classes for d in self.datasets]
        self.offsets = [int(x) for x in np.concatenate([[0], np.cumsum(counts)[:-1]])]
        total = int(sum(counts))
        if ignore_index is None:
            ignore_index = IGNORE_INDEX if total < IGNORE_INDEX else -1
        classes = tuple(f"{d.name}/{c}" for d in self.datasets for c in d.classes)
        self.label_space = LabelSpace("+".join(names), classes, ignore_index)
        self.ignore_index = ignore_index
        self.num_classes = total
        #: data set of each global class id, int64 ``[num_classes]``
        self.class_dataset = torch.tensor(
            [i for i, n in enumerate(counts) for _ in range(n)], dtype=torch.long
        )
        self.balanced = balanced
        self.lengths = [len(d) for d in self.datasets]
        if min(self.lengths) == 0:
            raise VislearnError(f"empty data set among {names}")
        shapes = {tuple(d[0][0].shape) for d in self.datasets}
        if len(shapes) > 1:
            raise VislearnError(
                f"data sets serve different image shapes {sorted(shapes)}; give them one "
                "image size (data.image_size)"
            )
        self._starts = np.concatenate([[0], np.cumsum(self.lengths)])

    def __len__(self) -> int:
        if self.balanced:
            return len(self.datasets) * max(self.lengths)
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """``(data set, item)`` of global index ``index``."""
        if self.balanced:
            d = index % len(self.datasets)
            return d, (index // len(self.datasets)) % self.lengths[d]
        d = int(np.searchsorted(self._starts, index, side="right") - 1)
        return d, index - int(self._starts[d])

    def to_global(self, mask: Tensor, d: int) -> Tensor:
        """A data set's local mask in global ids (its ignore value -> ``ignore_index``)."""
        own = self.datasets[d].ignore_index
        return torch.where(
            mask == own, torch.full_like(mask, self.ignore_index), mask + self.offsets[d]
        )

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        d, j = self.locate(int(index))
        image, mask = self.datasets[d][j]
        return image, self.to_global(mask.long(), d), d


class SegmentationAugment(nn.Module):
    """Random scale, crop/translate and horizontal flip of a batch and its label maps.

    Each image draws a zoom ``s ~ U(scale)`` and a flip (probability ``hflip_p``); the output
    (same size as the input) shows a window of the zoomed image at a uniformly drawn offset
    (zoom-in: a random crop; zoom-out: the image placed at a random position, the border
    filled with 0 = the mean after normalisation, labelled ``ignore_index``). Images are
    sampled bilinearly, labels by nearest neighbour. All randomness comes from ``generator``
    (seeded, checkpointed by the modules that own it).
    """

    def __init__(
        self,
        scale: Sequence[float] = (0.75, 1.5),
        hflip_p: float = 0.5,
        ignore_index: int = IGNORE_INDEX,
        seed: int = 0,
    ) -> None:
        super().__init__()
        lo, hi = float(scale[0]), float(scale[1])
        if not 0 < lo <= hi:
            raise VislearnError(f"augment scale must satisfy 0 < min <= max, got {scale}")
        if not 0.0 <= hflip_p <= 1.0:
            raise VislearnError(f"hflip_p must be in [0, 1], got {hflip_p}")
        self.scale, self.hflip_p, self.ignore_index = (lo, hi), hflip_p, ignore_index
        self.generator = torch.Generator().manual_seed(int(seed))

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``images`` float ``[B, C, H, W]`` (normalised), ``labels`` int64 ``[B, H, W]``."""
        b = images.shape[0]
        g = self.generator
        lo, hi = self.scale
        if lo == hi == 1.0 and self.hflip_p == 0.0:
            return images, labels
        s = lo + (hi - lo) * torch.rand(b, generator=g, dtype=torch.float64)
        flip = torch.rand(b, generator=g, dtype=torch.float64) < self.hflip_p
        span = (1.0 - 1.0 / s).abs()  # zoom-in: window moves inside; zoom-out: image moves
        tx = (2 * torch.rand(b, generator=g, dtype=torch.float64) - 1) * span
        ty = (2 * torch.rand(b, generator=g, dtype=torch.float64) - 1) * span
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) / s
        theta[:, 1, 1] = 1.0 / s
        theta[:, 0, 2], theta[:, 1, 2] = tx, ty
        theta = theta.to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        # labels shifted by +1 so that 0 marks "outside the image" (zero padding); an ignore
        # value of -1 maps back to -1 like the outside does
        lab = (labels.unsqueeze(1) + 1).to(grid.dtype)
        lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        lab = lab[:, 0].round().long() - 1
        lab = torch.where(lab < 0, torch.full_like(lab, self.ignore_index), lab)
        return out, lab


def downsample_labels(
    labels: Tensor,
    size: Sequence[int],
    ignore_index: int = IGNORE_INDEX,
    mode: str = "majority",
    purity: float = 0.5,
) -> Tensor:
    """Label maps ``[B, H, W]`` -> ``[B, h, w]`` for losses at the feature resolution.

    ``"nearest"``: nearest-neighbour sampling. ``"majority"``: each output cell (an
    ``H/h x W/w`` block; needs integer ratios, otherwise nearest is used) takes its most
    frequent label, and becomes ``ignore_index`` when that label is the ignore value or covers
    less than ``purity`` of the block -- so boundary cells with mixed labels (the "dirty"
    pixels of coarse label maps) do not train the embedding.
    """
    b, h0, w0 = labels.shape
    h, w = int(size[0]), int(size[1])
    if (h, w) == (h0, w0):
        return labels
    if mode not in ("nearest", "majority"):
        raise VislearnError(f"unknown label downsampling {mode!r}; use nearest or majority")
    if mode == "nearest" or h0 % h or w0 % w:
        out = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")
        return out[:, 0].round().long()
    sy, sx = h0 // h, w0 // w
    blocks = labels.reshape(b, h, sy, w, sx).permute(0, 1, 3, 2, 4).reshape(b, h, w, sy * sx)
    major = blocks.mode(dim=-1).values
    share = (blocks == major[..., None]).float().mean(-1)
    bad = (major == ignore_index) | (share < purity)
    return torch.where(bad, torch.full_like(major, ignore_index), major)
