"""The appearance-swap motion design (vislearn.data.synthetic.swap) and the pieces that serve
it: halves with the same trajectory and background but different sprites, training pairs from
different halves without a shared frame, ground-truth masks as an extra channel, and FAME
with ground-truth masks (ClipViews(fame_masks="gt"))."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vislearn.core.errors import VislearnError
from vislearn.data.augment import ViewConfig
from vislearn.data.synthetic import (
    DIRECTION_CLASSES,
    MotionClipDataset,
    appearance_swap_videos,
    direction_bin,
)
from vislearn.data.video.datamodule import VideoDataModule
from vislearn.data.video.views import ClipViews

pytestmark = pytest.mark.usefixtures("single_thread")
HALF = 6


@pytest.fixture(scope="module")
def videos():
    return appearance_swap_videos(
        12, half_frames=HALF, size=32, seed=3, background_source="generated", num_backgrounds=8
    )


def test_halves_share_trajectory_and_background_not_appearance(videos):
    assert videos.clips.shape == (12, 2 * HALF, 3, 32, 32)
    a, b = slice(0, HALF), slice(HALF, 2 * HALF)
    assert torch.equal(videos.centers[:, a], videos.centers[:, b])
    assert torch.equal(videos.angles[:, a], videos.angles[:, b])
    assert torch.equal(videos.sides[:, a], videos.sides[:, b])
    fg = videos.masks > 0
    near = torch.nn.functional.max_pool2d(fg.float(), 5, 1, 2) > 0  # sprite + soft edges
    for i in range(len(videos)):
        far = ~(near[i, a] | near[i, b])  # background in both halves: the same pixels
        diff = (videos.clips[i, a].int() - videos.clips[i, b].int()).abs().amax(1)
        assert (diff[far] == 0).float().mean() > 0.99
    both = fg[:, a] & fg[:, b]  # sprite in both halves: another item and tint
    diff = (videos.clips[:, a].int() - videos.clips[:, b].int()).abs().amax(2)
    assert diff[both].float().mean() > 10
    colour_a = (videos.clips[:, a].float() * fg[:, a, None]).sum((1, 3, 4))
    colour_b = (videos.clips[:, b].float() * fg[:, b, None]).sum((1, 3, 4))
    assert not torch.allclose(colour_a / fg[:, a].sum((1, 2, 3))[:, None],
                              colour_b / fg[:, b].sum((1, 2, 3))[:, None], atol=5)  # fmt: skip


def test_labels_are_direction_bins_and_the_sprite_moves_that_way(videos):
    theta, speed = videos.motion[:, 0].numpy(), videos.motion[:, 1].numpy()
    assert np.array_equal(direction_bin(theta), videos.labels.numpy())
    assert len(DIRECTION_CLASSES) == 8 and videos.classes == DIRECTION_CLASSES
    step = (videos.centers[:, 1, 0] - videos.centers[:, 0, 0]).numpy()
    np.testing.assert_allclose(step[:, 0], speed * np.cos(theta), atol=1e-4)
    np.testing.assert_allclose(step[:, 1], speed * np.sin(theta), atol=1e-4)
    assert direction_bin(0.0) == 0 and direction_bin(math.pi / 2) == 2  # right, down (y down)
    assert direction_bin(-0.1) == 0 and direction_bin(2 * math.pi - 0.5) == 7


def test_background_bias_ties_photos_to_classes_in_train_only():
    kw = {"half_frames": 2, "size": 16, "background_source": "generated", "num_backgrounds": 8}
    train = appearance_swap_videos(64, background_bias=1.0, **kw)
    assert torch.equal(train.backgrounds % 8, train.labels)
    test = appearance_swap_videos(64, background_bias=1.0, split="test", **kw)
    assert not torch.equal(test.backgrounds % 8, test.labels)


def test_pairs_come_from_different_halves_without_shared_frames(videos):
    ds = MotionClipDataset(videos, frames=4, two_clips=True, return_masks=True,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    halves = set()
    for _ in range(40):
        clips, _, masks = ds[0]
        idx = ds.last_indices
        assert clips.shape == (2, 4, 3, 32, 32) and masks.shape == (2, 4, 32, 32)
        h = (idx // HALF).tolist()
        assert h[0][0] == h[0][-1] != h[1][0] == h[1][-1]  # each clip inside one half
        assert not set(idx[0].tolist()) & set(idx[1].tolist())
        halves.add(h[0][0])
    assert halves == {0, 1}  # either half may be the first (FAME's) clip
    test = MotionClipDataset(videos, frames=4, mode="uniform", num_clips=3)
    assert [int(i[0]) // HALF for i in test.indices(2 * HALF)] == [0, 1, 0]
    center = MotionClipDataset(videos, frames=4, mode="center").indices(2 * HALF)
    assert int(center.max()) < HALF
    with pytest.raises(VislearnError, match="do not fit in a half"):
        MotionClipDataset(videos, frames=HALF + 1, two_clips=True)


def test_mask_channel_is_the_true_foreground_of_the_same_frames(videos):
    ds = MotionClipDataset(videos, frames=4, two_clips=True, mask_channel=True, return_masks=True)
    clips, _, masks = ds[3]
    assert clips.shape == (2, 4, 4, 32, 32)
    assert torch.equal(clips[:, :, 3], (masks > 0).to(torch.uint8) * 255)
    idx = ds.last_indices
    assert torch.equal(clips[:, :, :3], videos.clips[3][idx])


def test_fame_with_gt_masks_same_draws_true_mask_and_channel_dropped(videos):
    ds = MotionClipDataset(videos, frames=4, two_clips=True, mask_channel=True)
    batch = torch.stack([ds[i][0] for i in range(8)])
    cfg = ViewConfig(jitter_p=0.0, gray_p=0.0, blur_p=0.0)
    kw = {"size": 32, "channels": 3, "seed": 1}
    plain = ClipViews(cfg, **kw)(batch[:, :, :, :3])
    gt_off = ClipViews(cfg, fame=False, fame_masks="gt", **kw)(batch)
    for p, q in zip(plain, gt_off, strict=True):
        assert torch.equal(p, q)  # the mask channel changes no random draw
    views = ClipViews(cfg, fame=True, fame_masks="gt", **kw)
    out = views(batch)
    mask = views.last_fame_mask
    assert out[0].shape == (8, 3, 4, 32, 32) and torch.equal(out[1], plain[1])
    assert 0 < mask.float().mean() < 0.6
    keep = mask[:, None, None].expand_as(out[0])
    assert torch.equal(out[0][keep], plain[0][keep])  # the true foreground stays
    full = batch.clone()
    full[:, :, :, 3] = 255  # everything foreground: nothing replaced
    assert torch.equal(ClipViews(cfg, fame=True, fame_masks="gt", **kw)(full)[0], plain[0])
    with pytest.raises(VislearnError, match="mask channel"):
        ClipViews(cfg, fame=True, fame_masks="gt", **kw)(batch[:, :, :, :3])
    with pytest.raises(VislearnError, match="fame_masks"):
        ClipViews(cfg, fame_masks="oracle", **kw)


def test_datamodule_serves_the_design_and_masks_to_training_only():
    dm = VideoDataModule(num_train=16, num_test=8, batch_size=4, video_frames=16,
                         motion_design="appearance_swap", mask_channel=True, knn_bank_size=16,
                         num_backgrounds=8)  # fmt: skip
    x, y = dm.train_set[0]
    assert x.shape == (2, 8, 4, 32, 32) and 0 <= y < 8
    assert dm.bank_source[0][0].shape == (8, 3, 32, 32)
    assert dm.split("test", "uniform", 2)[0][0].shape == (2, 8, 3, 32, 32)
    assert dm.videos[0].settings["halves"] == 2
    with pytest.raises(VislearnError, match="even"):
        VideoDataModule(num_train=16, num_test=8, batch_size=4, video_frames=11,
                        motion_design="appearance_swap")  # fmt: skip
    with pytest.raises(VislearnError, match="motion design"):
        VideoDataModule(num_train=16, num_test=8, batch_size=4, motion_design="swirl")
