"""photo-fmnist (vislearn.data.synthetic.photo_items): Fashion-MNIST items on photo crops with
their masks -- determinism, labels, masks, the train/test photo split, the registered names,
the mask channel through the data module and the views, and the on-disk cache.

Everything uses the embedded 5k / 1k subset's test split (1,000 images, well under a second).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.core.errors import VislearnError
from vislearn.data import get_dataset, load_embedded_fmnist, split_labelled_unlabelled
from vislearn.data.augment import MultiViewAugment
from vislearn.data.datamodule import ImageDataModule
from vislearn.data.synthetic import photo_items as pi
from vislearn.data.synthetic.backgrounds import DEFAULT_PHOTO_DIR, DEFAULT_PHOTOS, HELDOUT_PHOTOS

pytestmark = pytest.mark.usefixtures("single_thread")
needs_photos = pytest.mark.skipif(
    not (DEFAULT_PHOTO_DIR / DEFAULT_PHOTOS[0]).is_file(), reason="opencv-doc photos missing"
)


@pytest.fixture(scope="module")
def black_photos(tmp_path_factory):
    """A photo folder where every photo of both pools is plain black."""
    folder = tmp_path_factory.mktemp("photos")
    for name in (*DEFAULT_PHOTOS, *HELDOUT_PHOTOS):
        Image.new("RGB", (40, 30)).save(folder / name, format="PNG")  # PIL reads by content
    return str(folder)


def test_rendering_is_a_function_of_the_seed(black_photos):
    kw = {"image_size": 32, "channels": 3, "photo_dir": black_photos}
    a = pi.render_photo_items("fmnist-mini", "test", seed=0, **kw)
    b = pi.render_photo_items("fmnist-mini", "test", seed=0, **kw)
    c = pi.render_photo_items("fmnist-mini", "test", seed=1, **kw)
    assert a["images"].shape == (1000, 3, 32, 32) and a["images"].dtype == torch.uint8
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["masks"], b["masks"])
    assert not torch.equal(a["images"], c["images"])


def test_labels_are_the_items_classes_and_masks_cover_the_item(black_photos):
    d = pi.render_photo_items("fmnist-mini", "test", photo_dir=black_photos)
    assert np.array_equal(d["labels"], load_embedded_fmnist("test")[1])
    images, masks = d["images"].float(), d["masks"].bool()
    assert set(torch.unique(d["masks"]).tolist()) == {0, 1}
    # on a black photo every non-black pixel is the item's: the mask holds most of its ink (all
    # but the faint edges; less for the few very dark items, which stay partly see-through),
    # every mask pixel is inked (alpha >= 0.5 of a colour with value >= 0.75 x floor 0.35),
    # and what is black is outside the mask
    ink = images.amax(1)
    inside = (ink * masks).sum((1, 2)) / ink.sum((1, 2))
    assert inside.median() > 0.95 and (inside > 0.8).float().mean() > 0.97
    assert (ink[masks] >= 30).all()
    assert not masks[ink == 0].any()
    # the item is 0.6-0.85 of the 32 px canvas: it covers a minority of the pixels
    share = masks.float().mean((1, 2))
    assert share.min() > 0.02 and share.max() < 0.6 and 0.1 < share.mean() < 0.35


@needs_photos
def test_registered_names_and_the_train_test_photo_split():
    test = get_dataset("photo-fmnist-mini", "test")
    assert isinstance(test, pi.PhotoItemsDataset) and len(test) == 1000
    image, label = test[3]
    assert image.shape == (3, 32, 32) and label == int(test.labels[3])
    assert test.num_classes == 10 and test.channels == 3 and test.image_size == 32
    assert set(test.photos) == set(HELDOUT_PHOTOS)
    assert set(np.unique(test.photo_index)) == set(range(len(test.photos)))
    train = get_dataset("photo-fmnist-mini", "train")
    assert len(train) == 5000 and set(train.photos) == set(DEFAULT_PHOTOS)
    assert set(train.photos).isdisjoint(test.photos)
    gray = get_dataset("photo-fmnist-mini", "test", image_size=28, channels=1)
    assert gray[0][0].shape == (1, 28, 28) and gray.masks.shape == (1000, 28, 28)


@needs_photos
def test_mask_channel_through_the_data_module_and_the_views():
    ds = get_dataset("photo-fmnist-mini", "test")
    with_mask = ds.with_mask_channel()
    assert with_mask.images.data_ptr() == ds.images.data_ptr()  # shared, not copied
    image, _ = with_mask[5]
    assert torch.equal(image[:3], ds[5][0]) and torch.equal(image[3], ds.masks[5] * 255)

    # a label fraction and a validation split carved from the training images
    labels = get_dataset("photo-fmnist-mini", "train").labels
    _, unlabelled = split_labelled_unlabelled(labels, fraction=0.1, seed=0)
    kw = {"label_fraction": 0.1, "labelled_batch_size": 64, "exclude": unlabelled[:500]}
    dm = ImageDataModule("photo-fmnist-mini", batch_size=64, mask_channel=True, **kw)
    assert (dm.channels, dm.image_size, dm.num_classes) == (3, 32, 10)
    assert len(dm.train_set.labelled) == 500 and len(dm.unlabelled_idx) == 4000
    assert dm.train_set[int(dm.train_set.labelled[0])][0].shape == (4, 32, 32)
    assert dm.bank_set()[0][0].shape == (3, 32, 32)  # the kNN bank and test: no mask
    with pytest.raises(VislearnError, match="mask_channel"):
        ImageDataModule("fmnist-mini", mask_channel=True)

    # the views crop and flip the mask with the pixels, with the draws of a batch without it
    batch = torch.stack([with_mask[i][0] for i in range(16)])
    aug = MultiViewAugment("supervised", 32, 3, seed=4)
    seen = {}
    aug.add_op(0, _Spy(seen), "normalized")
    got = aug(batch)[0]
    plain = MultiViewAugment("supervised", 32, 3, seed=4)(batch[:, :3])[0]
    assert torch.equal(got, plain)
    view = MultiViewAugment("supervised", 32, 3, seed=4).views[0]
    g = torch.Generator().manual_seed(4)
    expected = view.crop_flip(batch[:, 3:].float() / 255.0, g)
    assert torch.allclose(seen["foreground"], expected)


class _Spy(torch.nn.Module):
    uses_foreground = True

    def __init__(self, seen: dict) -> None:
        super().__init__()
        self.seen = seen

    def forward(self, x, generator, foreground=None):
        self.seen["foreground"] = foreground
        return x


@needs_photos
def test_the_disk_cache_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv(pi.CACHE_ENV, str(tmp_path))
    first = pi.load_photo_items.__wrapped__("fmnist-mini", "test", 16, 1)  # not the memory cache
    files = list(tmp_path.glob("photo_items_fmnist-mini_test_*.pt"))
    assert len(files) == 1
    again = pi.load_photo_items.__wrapped__("fmnist-mini", "test", 16, 1)
    assert torch.equal(first["images"], again["images"])
    assert np.array_equal(first["labels"], again["labels"]) and first["photos"] == again["photos"]
    assert isinstance(again["photo_index"], np.ndarray)
