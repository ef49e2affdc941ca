"""Tests for vislearn.data: IDX reading, Fashion-MNIST discovery, data sets, subsets."""

from __future__ import annotations

import gzip
import importlib.resources
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.core.errors import VislearnError
from vislearn.data import (
    FMNIST_CLASSES,
    ArrayImageDataset,
    ImageFolderDataset,
    balanced_subset,
    find_fashion_mnist,
    get_dataset,
    load_embedded_fmnist,
    load_fashion_mnist,
    read_idx,
    split_labelled_unlabelled,
)
from vislearn.data import fmnist as fmnist_mod

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
STEMS = {
    "train-images-idx3-ubyte": (3, 28, 28),
    "train-labels-idx1-ubyte": (3,),
    "t10k-images-idx3-ubyte": (2, 28, 28),
    "t10k-labels-idx1-ubyte": (2,),
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Serialise ``arr`` as IDX, written here independently of the reader under test."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim])
    header += b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_fake_fmnist(directory: Path, fill: int, gz: bool = True) -> Path:
    """Four tiny IDX files whose pixel values all equal ``fill`` (to tell copies apart)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, shape in STEMS.items():
        if len(shape) == 3:
            arr = np.full(shape, fill, dtype=np.uint8)
        else:
            arr = np.arange(shape[0], dtype=np.uint8) % 10
        data = idx_bytes(arr)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return directory


@pytest.fixture
def no_default_locations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide the Debian copy, the download cache and $VISLEARN_DATA."""
    monkeypatch.setattr(fmnist_mod, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fmnist_mod, "CACHE_DIR", tmp_path / "no-cache")
    monkeypatch.delenv("VISLEARN_DATA", raising=False)


# ----------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, dtype: type, gz: bool) -> None:
    arr = (np.arange(2 * 3 * 4) * 7 - 20).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        arr = (np.arange(24) * 11 % 256).astype(np.uint8).reshape(2, 3, 4)
    data = idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_bad_files(tmp_path: Path) -> None:
    good = idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))
    cases = {
        "truncated.idx": good[:-3],
        "trailing.idx": good + b"\0",
        "magic.idx": b"\x01\x02" + good[2:],
        "header.idx": good[:9],
        "gzip-truncated.gz": gzip.compress(good)[:-10],
        "garbage.gz": b"\x1f\x8b" + b"not gzip at all",
        "empty.idx": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(VislearnError, match=name.replace(".", r"\.")):
            read_idx(path)
    with pytest.raises(VislearnError, match="not found"):
        read_idx(tmp_path / "missing.idx")


# ------------------------------------------------------------------- Fashion-MNIST search


def test_search_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_default_locations
) -> None:
    explicit = write_fake_fmnist(tmp_path / "explicit", fill=1)
    env = write_fake_fmnist(tmp_path / "env" / "FashionMNIST" / "raw", fill=2, gz=False)
    monkeypatch.setenv("VISLEARN_DATA", str(tmp_path / "env"))
    # data_dir beats the environment variable
    assert find_fashion_mnist(explicit) == explicit
    images, labels = load_fashion_mnist("train", data_dir=explicit)
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8 and (images == 1).all()
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2]
    # the environment variable, with torchvision layout and un-gzipped names
    assert find_fashion_mnist() == env
    images, labels = load_fashion_mnist("test")
    assert images.shape == (2, 28, 28) and (images == 2).all()
    # the Debian location comes after the environment variable
    debian = write_fake_fmnist(tmp_path / "debian", fill=3)
    monkeypatch.setattr(fmnist_mod, "DEBIAN_DIR", debian)
    assert find_fashion_mnist() == env
    monkeypatch.delenv("VISLEARN_DATA")
    assert find_fashion_mnist() == debian


def test_explicit_data_dir_does_not_fall_back(tmp_path: Path, monkeypatch) -> None:
    env = write_fake_fmnist(tmp_path / "env", fill=2)
    monkeypatch.setenv("VISLEARN_DATA", str(env))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VislearnError, match="not found in data_dir") as err:
        find_fashion_mnist(empty)
    assert "train-images-idx3-ubyte" in str(err.value)
    with pytest.raises(VislearnError, match="does not exist"):
        find_fashion_mnist(tmp_path / "nowhere")


def test_not_found_lists_places(tmp_path: Path, monkeypatch, no_default_locations) -> None:
    monkeypatch.setenv("VISLEARN_DATA", str(tmp_path / "envdir"))
    with pytest.raises(VislearnError) as err:
        load_fashion_mnist("train")
    msg = str(err.value)
    for expected in (
        str(tmp_path / "envdir"),
        str(tmp_path / "no-debian"),
        str(tmp_path / "no-cache"),
        "apt-get install dataset-fashion-mnist",
        "VISLEARN_DATA",
        "download=True",
    ):
        assert expected in msg
    assert "\n" not in msg


def test_download_failure_is_clean(tmp_path: Path, monkeypatch, no_default_locations) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(VislearnError, match="downloading Fashion-MNIST .* failed"):
        load_fashion_mnist("train", download=True)


def test_bad_split() -> None:
    with pytest.raises(VislearnError, match="split"):
        load_fashion_mnist("validation")
    with pytest.raises(VislearnError, match="split"):
        load_embedded_fmnist("val")


@pytest.mark.skipif(not (DEBIAN / "t10k-labels-idx1-ubyte.gz").exists(), reason="no Debian copy")
def test_real_fashion_mnist_test_split() -> None:
    images, labels = load_fashion_mnist("test", data_dir=DEBIAN)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [1000] * 10
    # the embedded subset is a real sample of it
    sub_images, sub_labels = load_embedded_fmnist("test")
    with np.load(
        importlib.resources.files("vislearn.data") / "assets" / "fmnist_subset.npz"
    ) as npz:
        src = npz["test_source_index"]
    np.testing.assert_array_equal(images[src], sub_images)
    np.testing.assert_array_equal(labels[src], sub_labels)


# ------------------------------------------------------------------------ embedded subset


@pytest.mark.parametrize(("split", "per_class"), [("train", 500), ("test", 100)])
def test_embedded_subset(split: str, per_class: int) -> None:
    images, labels = load_embedded_fmnist(split)
    assert images.dtype == np.uint8 and images.shape == (10 * per_class, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (10 * per_class,)
    assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
    assert images.std() > 20  # real images, not blanks
    assert len(FMNIST_CLASSES) == 10 and FMNIST_CLASSES[9] == "Ankle boot"


# ----------------------------------------------------------------------- array data set


def test_array_dataset() -> None:
    gray = np.arange(4 * 5 * 5, dtype=np.uint8).reshape(4, 5, 5)
    ds = ArrayImageDataset(gray, [0, 1, 2, 1], classes=["a", "b", "c"])
    image, label = ds[1]
    assert image.dtype == torch.uint8 and image.shape == (1, 5, 5) and label == 1
    assert ds.labels is not None and ds.labels.dtype == np.int64
    assert (ds.num_classes, ds.channels, ds.image_size, len(ds)) == (3, 1, 5, 4)
    rgb = torch.zeros(2, 3, 6, 6, dtype=torch.uint8)
    ds = ArrayImageDataset(rgb)
    assert ds[0][1] == -1 and ds.labels is None and ds.num_classes == 0 and ds.channels == 3
    with pytest.raises(VislearnError, match="uint8"):
        ArrayImageDataset(np.zeros((2, 5, 5), dtype=np.float32))
    with pytest.raises(VislearnError, match="labels"):
        ArrayImageDataset(gray, [0, 1])


# ---------------------------------------------------------------------- image folders


def save_png(path: Path, size: tuple[int, int], mode: str = "RGB", value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


def test_image_folder_labelled(tmp_path: Path) -> None:
    save_png(tmp_path / "dog" / "a.png", (40, 30))
    save_png(tmp_path / "dog" / "nested" / "b.PNG", (20, 50), mode="L")
    save_png(tmp_path / "cat" / "c.png", (16, 16))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, image_size=12, channels=3)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert ds.labels is not None and ds.labels.tolist() == [0, 1, 1]
    assert (len(ds), ds.channels, ds.image_size, ds.skipped) == (3, 3, 12, [])
    for i in range(3):
        image, label = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 12, 12)
        assert label == ds.labels[i]
    # a solid grayscale image stays solid and equal across RGB channels
    gray_rgb, _ = ds[2]
    assert (gray_rgb == 128).all()
    # RGB -> one channel
    ds1 = ImageFolderDataset(tmp_path, image_size=8, channels=1)
    image, _ = ds1[1]
    assert image.shape == (1, 8, 8)
    expected = round(0.299 * 128 + 0.587 * 127 + 0.114 * 7)  # ITU-R 601-2 luma
    assert abs(int(image[0, 0, 0]) - expected) <= 1


def test_image_folder_unlabelled_resize_crop(tmp_path: Path) -> None:
    # left half black, right half white, 60x20: shorter side -> 10, width 30, centre crop
    img = np.zeros((20, 60), dtype=np.uint8)
    img[:, 30:] = 255
    Image.fromarray(img).save(tmp_path / "half.png")
    save_png(tmp_path / "b.jpg", (10, 10))
    ds = ImageFolderDataset(tmp_path, image_size=10, channels=1)
    assert ds.labels is None and ds.num_classes == 0 and ds.classes == []
    image, label = ds[1]
    assert label == -1 and image.shape == (1, 10, 10)
    assert (image[0, :, :4] == 0).all() and (image[0, :, 6:] == 255).all()


def test_image_folder_corrupt_files(tmp_path: Path) -> None:
    for i in range(3):
        save_png(tmp_path / f"ok{i}.png", (8, 8))
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg" * 10)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable .*broken\.jpg"):
        ds = ImageFolderDataset(tmp_path, image_size=8)
    assert len(ds) == 3 and [Path(p).name for p in ds.skipped] == ["broken.jpg"]
    # a file that breaks after the scan is replaced by another sample, with one warning
    (tmp_path / "ok0.png").write_bytes(b"gone bad")
    with pytest.warns(UserWarning, match="cannot read .*ok0.png"):
        image, label = ds[0]
    assert image.shape == (3, 8, 8) and label == -1 and ds.failed == 1
    assert len([ds[i] for i in range(len(ds))]) == 3


def test_image_folder_progress_bar_and_16_bit(tmp_path: Path, monkeypatch) -> None:
    from vislearn.data import datasets as datasets_mod

    monkeypatch.setattr(datasets_mod, "_VERIFY_PROGRESS_THRESHOLD", 1)  # bar path, 2 files
    Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    save_png(tmp_path / "rgb.bmp", (6, 6))
    ds = ImageFolderDataset(tmp_path, image_size=4, channels=1)
    image, _ = ds[0]
    assert image.shape == (1, 4, 4) and (image == round(40000 / 257)).all()


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(VislearnError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing", image_size=8)
    with pytest.raises(VislearnError, match="no images found"):
        ImageFolderDataset(tmp_path, image_size=8)
    (tmp_path / "only.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(VislearnError, match="no images found"):
        ImageFolderDataset(tmp_path, image_size=8)


# ------------------------------------------------------------------------ get_dataset


def test_get_dataset_fmnist_mini() -> None:
    ds = get_dataset("fmnist-mini", "test")
    assert len(ds) == 1000 and ds.num_classes == 10 and ds.classes == list(FMNIST_CLASSES)
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and 0 <= label < 10
    big = get_dataset("fmnist-mini", "test", image_size=32, channels=3)
    image, _ = big[0]
    assert image.shape == (3, 32, 32) and big.image_size == 32 and big.channels == 3
    assert torch.equal(image[0], image[2])


def test_get_dataset_folder_splits(tmp_path: Path) -> None:
    for split, classes in (("train", ("a", "b", "c")), ("test", ("b", "c"))):
        for cls in classes:
            save_png(tmp_path / split / cls / "x.png", (9, 9))
    train = get_dataset(str(tmp_path), "train", image_size=8)
    test = get_dataset(str(tmp_path), "test", image_size=8)
    assert train.classes == ["a", "b", "c"] and len(train) == 3
    # the test split keeps the train split's class indices even with a class missing
    assert test.classes == ["a", "b", "c"] and test.labels.tolist() == [1, 2]
    flat = tmp_path / "flat"
    save_png(flat / "one.png", (9, 9))
    assert len(get_dataset(str(flat), image_size=8)) == 1
    with pytest.raises(VislearnError, match="split='test'"):
        get_dataset(str(flat), "test", image_size=8)


def test_get_dataset_unknown_name() -> None:
    with pytest.raises(VislearnError, match="fmnist-mini"):
        get_dataset("cifar10")
    with pytest.raises(VislearnError, match="split"):
        get_dataset("fmnist-mini", "dev")


# ----------------------------------------------------------------------------- subsets


@pytest.fixture(scope="module")
def fmnist_labels() -> np.ndarray:
    return load_embedded_fmnist("train")[1]


@pytest.mark.parametrize(("fraction", "expected"), [(0.01, 5), (0.1, 50), (1.0, 500)])
def test_balanced_subset_fraction(fmnist_labels, fraction: float, expected: int) -> None:
    idx = balanced_subset(fmnist_labels, fraction=fraction)
    assert idx.dtype == np.int64 and (np.diff(idx) > 0).all()
    assert np.bincount(fmnist_labels[idx], minlength=10).tolist() == [expected] * 10


def test_balanced_subset_small_and_uneven() -> None:
    labels = np.array([0] * 30 + [1] * 10 + [2] * 3)
    idx = balanced_subset(labels, fraction=0.05)  # 1.5 -> 2, 0.5 -> 1, 0.15 -> at least 1
    assert np.bincount(labels[idx]).tolist() == [2, 1, 1]
    idx = balanced_subset(labels, per_class=3)
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3]


def test_balanced_subset_seeds(fmnist_labels) -> None:
    a = balanced_subset(fmnist_labels, per_class=4, seed=0)
    assert np.array_equal(a, balanced_subset(fmnist_labels, per_class=4, seed=0))
    assert not np.array_equal(a, balanced_subset(fmnist_labels, per_class=4, seed=1))
    # nested for a fixed seed
    assert set(a) <= set(balanced_subset(fmnist_labels, per_class=40, seed=0))


def test_balanced_subset_errors() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    with pytest.raises(VislearnError, match="exactly one"):
        balanced_subset(labels)
    with pytest.raises(VislearnError, match="exactly one"):
        balanced_subset(labels, fraction=0.5, per_class=1)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(VislearnError, match="fraction"):
            balanced_subset(labels, fraction=bad)
    with pytest.raises(VislearnError, match="smallest class"):
        balanced_subset(labels, per_class=3)
    with pytest.raises(VislearnError, match="at least 1"):
        balanced_subset(labels, per_class=0)
    with pytest.raises(VislearnError, match="negative"):
        balanced_subset(np.array([0, -1, 1]), per_class=1)


def test_split_labelled_unlabelled(fmnist_labels) -> None:
    lab, unl = split_labelled_unlabelled(fmnist_labels, fraction=0.1, seed=3)
    assert len(lab) == 500 and len(unl) == 4500
    assert np.array_equal(np.sort(np.concatenate([lab, unl])), np.arange(5000))
    assert np.array_equal(lab, balanced_subset(fmnist_labels, fraction=0.1, seed=3))
