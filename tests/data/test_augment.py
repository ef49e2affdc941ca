"""Batched multi-view augmentation: presets, determinism, RNG state, exact special cases."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vislearn.core.errors import VislearnError
from vislearn.data.augment import (
    PRESETS,
    AugmentConfig,
    MultiViewAugment,
    Normalize,
    ViewConfig,
    _rotate_hue,
    gaussian_blur,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# Every random operation switched off, crop = the whole image.
IDENTITY = ViewConfig(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    hflip_p=0.0,
    jitter=(0.0, 0.0, 0.0, 0.0),
    jitter_p=0.0,
    gray_p=0.0,
    blur_p=0.0,
    solarize_p=0.0,
)


def _images(n: int = 6, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


def _pixels(view: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to [0, 1] pixel values (float64)."""
    norm = Normalize(view.shape[1])
    return view.double() * norm.std.double() + norm.mean.double()


def _assert_view_equals(view: torch.Tensor, images: torch.Tensor) -> None:
    """``view`` is ``Normalize(images)`` up to 1e-5 of the [0, 1] pixel range."""
    torch.testing.assert_close(_pixels(view), images.double() / 255, rtol=0, atol=1e-5)


def _one_view(cfg: ViewConfig, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    aug = MultiViewAugment(AugmentConfig((cfg,)), images.shape[-1], images.shape[1], seed)
    (view,) = aug(images)
    return view


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 72)])  # 72 px: blur is active
def test_presets_views_shapes_dtype(preset, channels, size):
    images = _images(4, channels, size)
    aug = MultiViewAugment(preset, size, channels, seed=0)
    views = aug(images)
    assert len(views) == len(PRESETS[preset].views)
    for v in views:
        assert v.shape == (4, channels, size, size)
        assert v.dtype == torch.float32
        assert torch.isfinite(v).all()
    if len(views) == 2:
        assert not torch.equal(views[0], views[1])


def test_output_size_differs_from_input():
    aug = MultiViewAugment("moco_v2", 20, 1, seed=0)
    assert aug(_images(3, 1, 28))[0].shape == (3, 1, 20, 20)


def test_unknown_preset():
    with pytest.raises(VislearnError, match="unknown augmentation"):
        MultiViewAugment("nope", 28, 1)


def test_same_seed_same_views_other_seed_different():
    images = _images()
    a = MultiViewAugment("simclr", 28, 1, seed=3)(images)
    b = MultiViewAugment("simclr", 28, 1, seed=3)(images)
    c = MultiViewAugment("simclr", 28, 1, seed=4)(images)
    for x, y, z in zip(a, b, c, strict=True):
        assert torch.equal(x, y)
        assert not torch.allclose(x, z)


def test_generator_state_round_trip():
    images = _images()
    aug = MultiViewAugment("byol", 28, 1, seed=0)
    aug(images)  # advance the stream
    state = aug.generator.get_state()
    expected = aug(images)
    other = MultiViewAugment("byol", 28, 1, seed=123)
    other.generator.set_state(state)
    for x, y in zip(expected, other(images), strict=True):
        assert torch.equal(x, y)
    aug.generator.set_state(state)
    for x, y in zip(expected, aug(images), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("channels", [1, 3])
def test_identity_crop_is_exact(channels):
    images = _images(5, channels)
    view = _one_view(IDENTITY, images)
    _assert_view_equals(view, images)


def test_hflip_with_identity_crop():
    images = _images()
    view = _one_view(replace(IDENTITY, hflip_p=1.0), images)
    _assert_view_equals(view, images.flip(-1))


def test_solarize_inverts_exactly_the_bright_pixels():
    images = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(2, 1, 1, 1)
    view = _one_view(replace(IDENTITY, solarize_p=1.0), images)
    x = images.double() / 255
    expected = torch.where(x >= 0.5, 1 - x, x)
    back = _pixels(view)
    torch.testing.assert_close(back, expected, rtol=0, atol=1e-5)
    # 127/255 < 0.5 stays, 128/255 >= 0.5 flips
    flat = back.flatten()
    assert abs(flat[127].item() - 127 / 255) < 1e-5
    assert abs(flat[128].item() - (1 - 128 / 255)) < 1e-5


def test_hue_rotation_by_zero_and_full_turn_is_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 5, 5, generator=g)
    torch.testing.assert_close(_rotate_hue(x, torch.zeros(3)), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(_rotate_hue(x, torch.ones(3)), x, rtol=0, atol=1e-5)
    turns = torch.tensor([0.1, -0.3, 0.45])
    back = _rotate_hue(_rotate_hue(x, turns), -turns)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)


def test_hue_rotation_preserves_gray_and_luma():
    g = torch.Generator().manual_seed(1)
    gray = torch.rand(4, 1, 6, 6, generator=g).expand(-1, 3, -1, -1)
    turns = torch.tensor([0.1, 0.25, -0.4, 0.5])
    torch.testing.assert_close(_rotate_hue(gray, turns), gray, rtol=0, atol=1e-5)
    # luma Y = 0.299 R + 0.587 G + 0.114 B is invariant under a hue rotation
    x = torch.rand(4, 3, 6, 6, generator=g)
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close(
        (_rotate_hue(x, turns) * w).sum(1), (x * w).sum(1), rtol=0, atol=1e-5
    )


def test_hue_only_jitter_keeps_gray_rgb_images():
    """Through the public path: jitter with only hue on, always applied, on R=G=B images."""
    images = _images(4, 1).expand(-1, 3, -1, -1).contiguous()
    cfg = replace(IDENTITY, jitter=(0.0, 0.0, 0.0, 0.5), jitter_p=1.0)
    view = _one_view(cfg, images)
    _assert_view_equals(view, images)


def test_blur_keeps_constant_images_constant():
    const = torch.full((3, 3, 72, 72), 0.37)
    out = gaussian_blur(const, torch.tensor([0.1, 1.0, 2.0]))
    torch.testing.assert_close(out, const, rtol=0, atol=1e-6)
    # and it does smooth a non-constant image
    x = torch.rand(1, 1, 72, 72, generator=torch.Generator().manual_seed(0))
    assert gaussian_blur(x, torch.tensor([2.0])).std() < 0.5 * x.std()
    # public path: an always-blurred view of a constant 72 px image equals the image
    images = torch.full((2, 3, 72, 72), 90, dtype=torch.uint8)
    view = _one_view(replace(IDENTITY, blur_p=1.0), images)
    _assert_view_equals(view, images)


def test_blur_is_off_for_small_images():
    aug = MultiViewAugment("byol", 28, 1)
    assert not any(v.use_blur for v in aug.views)
    assert MultiViewAugment("byol", 72, 3).views[0].use_blur


def test_normalize_constants():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2)
    torch.testing.assert_close(
        Normalize(1)(x).flatten(), torch.tensor([-0.2860 / 0.3530, 0.7140 / 0.3530])
    )
    rgb = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    expected = torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    torch.testing.assert_close(Normalize(3)(rgb).flatten(), expected)
    # float input is taken as already scaled to [0, 1]
    torch.testing.assert_close(Normalize(1)(x.float() / 255), Normalize(1)(x))
