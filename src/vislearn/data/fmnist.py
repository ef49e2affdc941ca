"""Fashion-MNIST: IDX reader, local-copy discovery, full and embedded loaders.

Nothing is downloaded unless a caller asks for it with ``download=True``. The full data set is
looked for, in order, in an explicit ``data_dir``, in ``$VISLEARN_DATA``, in the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) and in the download cache
``~/.cache/vislearn``. A small class-balanced real subset (5,000 train / 1,000 test images) ships
inside the package (``assets/fmnist_subset.npz``) so that a fresh install runs with no set-up.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import zlib
from pathlib import Path

import numpy as np

from vislearn.core.errors import VislearnError

__all__ = [
    "FMNIST_CLASSES",
    "find_fashion_mnist",
    "load_embedded_fmnist",
    "load_fashion_mnist",
    "read_idx",
]

FMNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Where the Debian package ``dataset-fashion-mnist`` installs the four IDX files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Where ``download=True`` puts the files when no ``data_dir`` is given.
CACHE_DIR = Path("~/.cache/vislearn")
#: Environment variable naming a directory that holds (or contains) the files.
ENV_VAR = "VISLEARN_DATA"

#: The four files per split, without the ``.gz`` suffix.
_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_FILES: tuple[str, ...] = _FILES["train"] + _FILES["test"]

# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_EMBEDDED_NAME = "fmnist_subset.npz"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian NumPy array.

    The header (two zero bytes, a type byte, the number of dimensions, one big-endian int32 per
    dimension) is validated against the file size. A corrupt, truncated or non-IDX file raises
    :class:`VislearnError` naming the file.
    """
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VislearnError(f"IDX file not found: {path}") from None
    except OSError as exc:
        raise VislearnError(f"cannot read IDX file {path}: {exc}") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise VislearnError(f"corrupt or truncated gzip file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise VislearnError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()!r})")
    ndim = raw[3]
    if ndim == 0:
        raise VislearnError(f"{path} is not a valid IDX file (zero dimensions in the header)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise VislearnError(f"IDX file {path} is truncated (header incomplete)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise VislearnError(
            f"IDX file {path} is {what}: header says shape {dims} ({expected} bytes), "
            f"file has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _resolve_file(directory: Path, stem: str) -> Path | None:
    """Return ``directory/stem.gz`` or ``directory/stem`` if either is a file."""
    for name in (f"{stem}.gz", stem):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _layouts(base: Path) -> list[Path]:
    """Directories under ``base`` that may hold the four files (flat, torchvision, Debian-like)."""
    return [base, base / "FashionMNIST" / "raw", base / "fashion-mnist"]


def _complete_dir(base: Path) -> Path | None:
    """The first layout under ``base`` holding all four files, else ``None``."""
    for directory in _layouts(base):
        if all(_resolve_file(directory, stem) for stem in _ALL_FILES):
            return directory
    return None


def _fix_hint() -> str:
    return (
        "install the Debian package (apt-get install dataset-fashion-mnist), set "
        f"{ENV_VAR} to a directory holding {', '.join(s + '.gz' for s in _ALL_FILES)}, "
        "pass --data-dir, or pass download=True where internet access exists"
    )


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the directory holding the four Fashion-MNIST IDX files.

    Accepted file names are the usual ``*-ubyte.gz`` names or the same without ``.gz``; each
    searched directory ``D`` is tried as ``D``, ``D/FashionMNIST/raw`` (torchvision layout) and
    ``D/fashion-mnist``. Search order: ``data_dir``, ``$VISLEARN_DATA``, the Debian package
    directory ``/usr/share/datasets/fashion-mnist``, the download cache ``~/.cache/vislearn``.

    An explicit ``data_dir`` that lacks the files is an error (no silent fall-back). When nothing
    is found the :class:`VislearnError` lists every place searched and how to fix it.
    """
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        if not base.is_dir():
            raise VislearnError(f"Fashion-MNIST data directory does not exist: {base}")
        found = _complete_dir(base)
        if found is not None:
            return found
        missing = [s + "[.gz]" for s in _ALL_FILES if _resolve_file(base, s) is None]
        searched = ", ".join(str(d) for d in _layouts(base))
        raise VislearnError(
            f"Fashion-MNIST files not found in data_dir {base} (missing {', '.join(missing)}; "
            f"searched {searched}); point it at the directory holding the four IDX files"
        )

    bases: list[tuple[str, Path]] = []
    env = os.environ.get(ENV_VAR)
    if env:
        bases.append((f"${ENV_VAR}", Path(env).expanduser()))
    bases.append(("Debian package dataset-fashion-mnist", DEBIAN_DIR))
    bases.append(("download cache", CACHE_DIR.expanduser()))
    searched: list[str] = []
    for label, base in bases:
        found = _complete_dir(base)
        if found is not None:
            return found
        searched.append(f"{label}: " + ", ".join(str(d) for d in _layouts(base)))
    if not env:
        searched.insert(0, f"${ENV_VAR}: not set")
    raise VislearnError(
        "Fashion-MNIST not found; searched " + "; ".join(searched) + ". To fix: " + _fix_hint()
    )


def _download(data_dir: str | os.PathLike | None) -> Path:
    """Fetch Fashion-MNIST with torchvision into ``data_dir`` or the cache; return its dir."""
    root = Path(data_dir).expanduser() if data_dir is not None else CACHE_DIR.expanduser()
    try:
        from torchvision.datasets import FashionMNIST

        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            FashionMNIST(root=str(root), train=train, download=True)
    except Exception as exc:  # network, disk and mirror failures all land here
        raise VislearnError(
            f"downloading Fashion-MNIST into {root} failed ({type(exc).__name__}: {exc}); "
            "without internet install the Debian package dataset-fashion-mnist or set "
            f"{ENV_VAR}"
        ) from None
    found = _complete_dir(root)
    if found is None:
        raise VislearnError(f"download finished but Fashion-MNIST files are missing under {root}")
    return found


def _check_split(split: str) -> str:
    if split not in _FILES:
        raise VislearnError(f"unknown split {split!r}; expected 'train' or 'test'")
    return split


def _validate_pair(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise VislearnError(
            f"{source}: expected uint8 images of shape [N, 28, 28], got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise VislearnError(
            f"{source}: {len(images)} images but labels of shape {tuple(labels.shape)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(FMNIST_CLASSES)):
        raise VislearnError(f"{source}: labels outside 0..{len(FMNIST_CLASSES) - 1}")


def load_fashion_mnist(
    split: str, data_dir: str | os.PathLike | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Load the full Fashion-MNIST ``split`` ("train" or "test").

    Returns ``(images, labels)``: uint8 ``[N, 28, 28]`` and int64 ``[N]``. The files are
    located with :func:`find_fashion_mnist`. With ``download=True`` and no local copy,
    torchvision downloads them into ``data_dir`` (if given) or ``~/.cache/vislearn``; a failed
    download raises :class:`VislearnError`.
    """
    _check_split(split)
    try:
        directory = find_fashion_mnist(data_dir)
    except VislearnError:
        if not download:
            raise
        directory = _download(data_dir)
    image_stem, label_stem = _FILES[split]
    image_path = _resolve_file(directory, image_stem)
    label_path = _resolve_file(directory, label_stem)
    assert image_path is not None and label_path is not None  # guaranteed by the search
    images = read_idx(image_path)
    labels = read_idx(label_path).astype(np.int64)
    _validate_pair(images, labels, f"Fashion-MNIST {split} in {directory}")
    return images, labels


def load_embedded_fmnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load the embedded real Fashion-MNIST subset shipped with the package.

    ``split="train"`` gives 5,000 images (500 per class), ``"test"`` 1,000 (100 per class),
    drawn class-balanced with seed 0 by ``scripts/make_embedded_subset.py``. Returns uint8
    ``[N, 28, 28]`` images and int64 ``[N]`` labels.
    """
    _check_split(split)
    resource = importlib.resources.files("vislearn.data").joinpath("assets", _EMBEDDED_NAME)
    try:
        with resource.open("rb") as fh, np.load(fh) as npz:
            images = np.asarray(npz[f"{split}_images"], dtype=np.uint8)
            labels = np.asarray(npz[f"{split}_labels"]).astype(np.int64)
    except FileNotFoundError:
        raise VislearnError(
            f"embedded Fashion-MNIST subset missing ({resource}); the installation is "
            "incomplete: reinstall vislearn or run scripts/make_embedded_subset.py"
        ) from None
    except (OSError, KeyError, ValueError) as exc:
        raise VislearnError(f"embedded Fashion-MNIST subset {resource} is corrupt: {exc}") from None
    _validate_pair(images, labels, f"embedded Fashion-MNIST subset ({split})")
    return images, labels
