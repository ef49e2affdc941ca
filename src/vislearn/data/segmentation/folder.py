"""The PASCAL VOC folder layout: reading (:class:`SegmentationFolder`) and writing
(:func:`write_segmentation_folder`, palette PNG masks)::

    root/JPEGImages/<id>.jpg            (any image extension)
    root/SegmentationClass/<id>.png     (palette or 8-bit gray PNG: pixel value = class id)
    root/ImageSets/Segmentation/<split>.txt   (one id per line)
    root/classes.txt                    (optional: one class name per line)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path
from vislearn.data.datasets import IMAGE_EXTENSIONS
from vislearn.data.segmentation.datasets import SegmentationDataset
from vislearn.data.segmentation.labels import IGNORE_INDEX, VOC_CLASSES, LabelSpace, check_mask
from vislearn.data.video.davis import read_label_png, write_label_png

__all__ = ["SegmentationFolder", "write_segmentation_folder"]


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
