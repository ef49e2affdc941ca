"""Image data sets: in-memory arrays, image folders, and a by-name factory.

Every data set returns ``(image, label)`` with ``image`` a uint8 tensor ``[C, H, W]`` and
``label`` an ``int`` (``-1`` when unlabelled), and exposes ``labels`` (int64 array or ``None``),
``num_classes`` (0 when unlabelled), ``classes`` (names, may be empty), ``channels`` and
``image_size``. Augmentations are applied on top (an optional ``transform`` callable receives
the uint8 tensor).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError
from vislearn.data.fmnist import FMNIST_CLASSES, load_embedded_fmnist, load_fashion_mnist

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "ArrayImageDataset",
    "ImageFolderDataset",
    "get_dataset",
    "infer_folder_format",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
#: Names :func:`get_dataset` understands besides a folder path.
BUILTIN_DATASETS: tuple[str, ...] = ("fmnist-mini", "fmnist", "photo-fmnist", "photo-fmnist-mini")
#: Side length used for image folders when ``image_size`` is not given.
DEFAULT_FOLDER_IMAGE_SIZE = 64
_VERIFY_PROGRESS_THRESHOLD = 1000

Transform = Callable[[torch.Tensor], Any]


class ArrayImageDataset(Dataset):
    """Images held in memory as one uint8 array.

    Args:
        images: uint8 array or tensor ``[N, H, W]`` (grayscale) or ``[N, C, H, W]``.
        labels: integer labels ``[N]``, or ``None`` for an unlabelled set (label ``-1``).
        classes: class names, if known; ``num_classes`` is ``len(classes)`` when given,
            otherwise ``max(labels) + 1``.
        transform: optional callable applied to each uint8 ``[C, H, W]`` tensor.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor | Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        tensor = (
            images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
        )
        if tensor.dtype != torch.uint8:
            raise VislearnError(f"images must be uint8, got {tensor.dtype}")
        if tensor.ndim == 3:
            tensor = tensor.unsqueeze(1)
        if tensor.ndim != 4:
            raise VislearnError(
                f"images must have shape [N, H, W] or [N, C, H, W], got {tuple(tensor.shape)}"
            )
        if tensor.shape[0] == 0:
            raise VislearnError("images array is empty")
        self.images = tensor.contiguous()
        self.labels: np.ndarray | None = None
        if labels is not None:
            if isinstance(labels, torch.Tensor):
                labels = labels.detach().cpu().numpy()
            arr = np.asarray(labels)
            if arr.ndim != 1 or len(arr) != len(self.images):
                raise VislearnError(
                    f"{len(self.images)} images but labels of shape {tuple(arr.shape)}"
                )
            if not np.issubdtype(arr.dtype, np.integer):
                raise VislearnError(f"labels must be integers, got dtype {arr.dtype}")
            self.labels = arr.astype(np.int64)
        self.classes: list[str] = list(classes) if classes is not None else []
        if self.classes:
            self.num_classes = len(self.classes)
            if self.labels is not None and self.labels.max() >= self.num_classes:
                raise VislearnError(
                    f"label {int(self.labels.max())} out of range for {self.num_classes} classes"
                )
        elif self.labels is not None:
            self.num_classes = int(self.labels.max()) + 1
        else:
            self.num_classes = 0
        self.channels = int(self.images.shape[1])
        self.image_size = int(self.images.shape[2])
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index].clone()
        label = int(self.labels[index]) if self.labels is not None else -1
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def _is_image_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(directory: Path) -> list[Path]:
    """All image files below ``directory`` (recursive, hidden entries skipped, sorted)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image_file(f))
    return found


def _class_names(root: Path) -> list[str]:
    """Sorted names of sub-folders of ``root`` that contain at least one image file."""
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and _images_under(d)
    )


def _verify(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many types for bad files
        return False


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert to ``"L"`` or ``"RGB"``, scaling 16/32-bit and float images to 8 bits."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            arr = arr * 255.0 if arr.size and arr.max() <= 1.0 else arr
        elif img.mode.startswith("I;16") or (arr.size and arr.max() > 255):
            arr = arr / 257.0  # 16-bit range onto 8-bit ("I" only when values exceed 255)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == mode else img.convert(mode)


def load_image(path: str | os.PathLike, image_size: int, channels: int) -> torch.Tensor:
    """Open an image file and return it as a uint8 tensor ``[channels, S, S]``.

    EXIF orientation is applied; the image is converted to L or RGB, its shorter side resized
    to ``image_size`` (bilinear, antialiased) and the centre ``image_size`` square cropped.
    """
    with Image.open(path) as opened:
        img = ImageOps.exif_transpose(opened)
        img = to_mode(img, "L" if channels == 1 else "RGB")
    w, h = img.size
    scale = image_size / min(w, h)
    new_w, new_h = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    left = int(round((new_w - image_size) / 2.0))
    top = int(round((new_h - image_size) / 2.0))
    img = img.crop((left, top, left + image_size, top + image_size))
    arr = np.array(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def serve_readable(ds: Any, index: int) -> tuple[Any, int]:
    """``ds[index]`` for a file-backed data set whose files may still fail to decode late:
    ``ds._load(i)`` is tried from ``index`` on and the first readable sample is served
    (``ds.transform`` applied) with its label ``ds.samples[i][1]``. A failing file is warned
    about once, counted in ``ds.failed`` and remembered in ``ds._bad``, so an epoch never
    crashes on one bad file; only when no sample is readable is it an error."""
    n = len(ds.samples)
    index = int(index)
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for {n} samples")
    index %= n
    for attempt in range(n):
        i = (index + attempt) % n
        if i in ds._bad:
            continue
        try:
            item = ds._load(i)
        except Exception as exc:  # noqa: BLE001 - a file that passed the checks but cannot be decoded
            ds._bad.add(i)
            ds.failed += 1
            if ds.failed == 1:
                warnings.warn(
                    f"cannot read {ds.samples[i][0]} ({type(exc).__name__}: {exc}); using another "
                    "sample instead (further failures are counted in .failed, not reported)",
                    stacklevel=3,
                )
            continue
        if ds.transform is not None:
            item = ds.transform(item)
        return item, ds.samples[i][1]
    raise VislearnError(f"no readable sample left in {ds.root}")


class ImageFolderDataset(Dataset):
    """Images in a folder, labelled by class sub-folder or unlabelled.

    * ``root/<class>/.../*.png`` (class sub-folders containing images): labelled; classes are
      the sorted sub-folder names, as in torchvision's ``ImageFolder``. Files directly in
      ``root`` are then ignored (with a warning).
    * ``root/*.jpg`` (no class sub-folder holds images): unlabelled, label ``-1``.

    Every file is checked at construction with PIL ``verify()`` (progress bar above 1,000
    files); unreadable files are skipped with one warning and listed in ``skipped``. A file
    that still fails in ``__getitem__`` is reported once, counted in ``failed``, and replaced
    by the next readable sample, so an epoch never crashes on one bad file.

    Args:
        root: the folder.
        image_size: output side length (shorter side resized, then centre-cropped).
        channels: 1 (grayscale) or 3 (RGB).
        classes: fixed class list (e.g. the train split's) so that labels agree across splits;
            a class sub-folder not in it is an error, a missing one is allowed.
        transform: optional callable applied to each uint8 ``[C, H, W]`` tensor.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int,
        channels: int = 3,
        classes: Sequence[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise VislearnError(f"image folder does not exist: {self.root}")
        if not self.root.is_dir():
            raise VislearnError(f"not a folder: {self.root}")
        if channels not in (1, 3):
            raise VislearnError(f"channels must be 1 or 3, got {channels}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise VislearnError(f"image_size must be a positive integer, got {image_size!r}")
        self.image_size = image_size
        self.channels = channels
        self.transform = transform

        candidates, labels, self.classes = self._scan(classes)
        bar_needed = len(candidates) > _VERIFY_PROGRESS_THRESHOLD
        checked = candidates
        if bar_needed:
            from tqdm.auto import tqdm

            checked = tqdm(candidates, desc=f"checking images in {self.root.name}", unit="img")
        ok = [_verify(p) for p in checked]
        self.samples: list[tuple[Path, int]] = [
            (p, y) for p, y, good in zip(candidates, labels, ok, strict=True) if good
        ]
        self.skipped: list[str] = [
            str(p) for p, good in zip(candidates, ok, strict=True) if not good
        ]
        if self.skipped:
            names = ", ".join(Path(s).name for s in self.skipped[:5])
            more = " ..." if len(self.skipped) > 5 else ""
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image file(s) in {self.root}: "
                f"{names}{more}",
                stacklevel=2,
            )
        if not self.samples:
            raise VislearnError(
                f"no images found in {self.root} (extensions: "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
                + (f"; {len(self.skipped)} unreadable file(s) skipped)" if self.skipped else ")")
            )
        self.num_classes = len(self.classes)
        self.labels: np.ndarray | None = (
            np.array([y for _, y in self.samples], dtype=np.int64) if self.classes else None
        )
        self.failed = 0
        self._bad: set[int] = set()

    def _scan(self, classes: Sequence[str] | None) -> tuple[list[Path], list[int], list[str]]:
        subdirs = sorted(
            d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        per_class = {d.name: _images_under(d) for d in subdirs}
        per_class = {name: files for name, files in per_class.items() if files}
        top_level = sorted(p for p in self.root.iterdir() if p.is_file() and _is_image_file(p.name))
        if not per_class:  # unlabelled folder
            if classes:
                raise VislearnError(
                    f"{self.root} has no class sub-folders but a labelled split was expected "
                    f"(classes {list(classes)[:5]}...)"
                )
            return top_level, [-1] * len(top_level), []
        if top_level:
            warnings.warn(
                f"{self.root} has class sub-folders; ignoring {len(top_level)} image file(s) "
                "directly inside it",
                stacklevel=3,
            )
        if classes is None:
            names = sorted(per_class)
        else:
            names = list(classes)
            unknown = sorted(set(per_class) - set(names))
            if unknown:
                raise VislearnError(
                    f"{self.root} has class folder(s) {unknown} not among the expected "
                    f"classes {names}"
                )
        index = {name: i for i, name in enumerate(names)}
        files: list[Path] = []
        labels: list[int] = []
        for name in sorted(per_class):
            files.extend(per_class[name])
            labels.extend([index[name]] * len(per_class[name]))
        return files, labels, names

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, i: int) -> torch.Tensor:
        path, _ = self.samples[i]
        return load_image(path, self.image_size, self.channels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return serve_readable(self, index)


def _resize_array(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resize uint8 ``[N, H, W]`` images to ``image_size`` square (bilinear, antialiased)."""
    out = np.empty((len(images), image_size, image_size), dtype=np.uint8)
    for start in range(0, len(images), 8192):
        chunk = torch.from_numpy(images[start : start + 8192]).unsqueeze(1).float()
        resized = F.interpolate(
            chunk,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        out[start : start + 8192] = resized.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    return out


def _fmnist_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None,
    image_size: int | None,
    channels: int | None,
) -> ArrayImageDataset:
    if name == "fmnist-mini":
        images, labels = load_embedded_fmnist(split)
    else:
        images, labels = load_fashion_mnist(split, data_dir=data_dir)
    if image_size is not None and image_size != images.shape[-1]:
        images = _resize_array(images, image_size)
    tensor = torch.from_numpy(images).unsqueeze(1)
    if channels == 3:
        tensor = tensor.expand(-1, 3, -1, -1)
    return ArrayImageDataset(tensor, labels, classes=FMNIST_CLASSES)


#: largest side inferred from an image folder's first image (larger images are resized to it)
MAX_INFERRED_IMAGE_SIZE = 224
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_ANNOUNCED: set[tuple[str, int, int]] = set()


def _first_image(directory: Path) -> Path | None:
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if _is_image_file(f):
                return Path(dirpath) / f
    return None


def infer_folder_format(
    root: Path, image_size: int | None, channels: int | None
) -> tuple[int, int]:
    """``(image_size, channels)`` of an image folder: the given values, else read from its
    first image (sorted order): its shorter side (at most :data:`MAX_INFERRED_IMAGE_SIZE`) and
    1 channel for a greyscale image, 3 otherwise; an unreadable first image gives
    :data:`DEFAULT_FOLDER_IMAGE_SIZE` px and 3 channels. One line on stderr says what was
    inferred (once per folder and format)."""
    if image_size is not None and channels is not None:
        return image_size, channels
    first = _first_image(root)
    size, chans, source = DEFAULT_FOLDER_IMAGE_SIZE, 3, "defaults"
    if first is not None:
        try:
            with Image.open(first) as im:
                size = min(min(im.size), MAX_INFERRED_IMAGE_SIZE)
                chans = 1 if im.mode in _GRAY_MODES else 3
                source = f"its first image {first.name}: {im.size[0]}x{im.size[1]} {im.mode}"
        except OSError:
            pass
    size = size if image_size is None else image_size
    chans = chans if channels is None else channels
    if (str(root), size, chans) not in _ANNOUNCED:
        _ANNOUNCED.add((str(root), size, chans))
        print(
            f"vislearn: image folder {root}: {size} px, {chans} channel(s) (from {source}; "
            "set data.image_size / data.channels to change)",
            file=sys.stderr,
        )
    return size, chans


def _folder_dataset(
    root: Path, split: str, image_size: int | None, channels: int | None
) -> ImageFolderDataset:
    train_dir = root / "train"
    size, chans = infer_folder_format(
        train_dir if train_dir.is_dir() else root, image_size, channels
    )
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not train_dir.is_dir():
        if split == "test":
            raise VislearnError(
                f"{root} has no train/ and test/ (or val/) sub-folders, so it is a train split "
                "only; split='test' needs root/test or root/val"
            )
        return ImageFolderDataset(root, size, chans)
    if split == "train":
        return ImageFolderDataset(train_dir, size, chans)
    if test_dir is None:
        raise VislearnError(f"{root} has train/ but no test/ or val/ sub-folder for split='test'")
    train_classes = _class_names(train_dir)  # so that test labels use the train mapping
    return ImageFolderDataset(test_dir, size, chans, classes=train_classes or None)


def get_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> ArrayImageDataset | ImageFolderDataset:
    """Build a data set by name.

    Args:
        name: ``"fmnist-mini"`` (embedded 5k/1k real subset; the default everywhere),
            ``"fmnist"`` (full Fashion-MNIST, located by
            :func:`~vislearn.data.fmnist.find_fashion_mnist`), ``"photo-fmnist[-mini]"`` (their
            items on photo crops, with masks: :mod:`vislearn.data.synthetic.photo_items`), or
            an image folder: its ``train/`` and ``test/`` (or ``val/``) sub-folders per split,
            else itself as the train split (a relative name is also looked for in ``data_dir``).
        split: ``"train"`` or ``"test"``.
        data_dir: where the full Fashion-MNIST lives (see ``find_fashion_mnist``).
        image_size: output side; Fashion-MNIST defaults to 28 (other sizes are resized once at
            load, bilinear antialiased), image folders to the shorter side of their first
            image (at most 224; :func:`infer_folder_format`).
        channels: 1 or 3; Fashion-MNIST defaults to 1 (3 repeats the gray channel), folders
            to their first image's (1 for greyscale, else 3).
    """
    if split not in ("train", "test"):
        raise VislearnError(f"unknown split {split!r}; expected 'train' or 'test'")
    if channels is not None and channels not in (1, 3):
        raise VislearnError(f"channels must be 1 or 3, got {channels}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise VislearnError(f"image_size must be a positive integer, got {image_size!r}")
    key = str(name).strip().lower()
    if key.startswith("photo-") and key in BUILTIN_DATASETS:  # that module imports this one
        from vislearn.data.synthetic.photo_items import photo_items_dataset

        return photo_items_dataset(key, split, data_dir, image_size, channels)
    if key in BUILTIN_DATASETS:
        return _fmnist_dataset(key, split, data_dir, image_size, channels)
    candidates = [Path(name).expanduser()]
    if data_dir is not None and not Path(name).is_absolute():
        candidates.append(Path(data_dir).expanduser() / name)
    for path in candidates:
        if path.is_dir():
            return _folder_dataset(path, split, image_size, channels)
    raise VislearnError(
        f"unknown data set {name!r}: not a built-in name ({', '.join(BUILTIN_DATASETS)}) and "
        "not an existing image folder"
    )
