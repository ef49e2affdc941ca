"""Reference segmenters of vislearn.tasks.vos.baselines: the no-block attention, k-means labels,
patch colours, frame differencing and the token oracle, on hand-made inputs."""

from __future__ import annotations

import pytest
import torch

from vislearn.core.errors import VislearnError
from vislearn.tasks.vos.baselines import (
    RawKeyAttention,
    block_descriptors,
    frame_difference_labels,
    kmeans_labels,
    patch_mean_rgb,
    token_oracle_labels,
)
from vislearn.tasks.vos.block import SpatioTemporalBlock


def test_raw_key_attention_is_the_keys_own_multihead_attention():
    keys = torch.randn(10, 16)
    q, k = RawKeyAttention(16, 4).query_key(keys)
    assert q.shape == k.shape == (4, 10, 4)
    attn = torch.softmax(q @ k.transpose(1, 2), -1).mean(0)
    ref = torch.stack(
        [torch.softmax(keys[:, h * 4 : h * 4 + 4] @ keys[:, h * 4 : h * 4 + 4].T / 2, -1)
         for h in range(4)]
    ).mean(0)  # fmt: skip
    torch.testing.assert_close(attn, ref)
    with pytest.raises(VislearnError):
        RawKeyAttention(10, 4)


def test_block_descriptors_rows_are_distributions_over_key_frame_tokens():
    keys = torch.randn(5, 6, 16)  # 5 frames of 6 tokens
    d = block_descriptors(keys, SpatioTemporalBlock(16, 4).eval(), key_stride=2)
    assert d.shape == (5, 6, 3 * 6)  # key frames 0, 2, 4
    torch.testing.assert_close(d.sum(-1), torch.ones(5, 6))


def test_kmeans_labels_separate_two_feature_groups_and_rank_by_size():
    feats = torch.zeros(2, 4, 2)
    feats[..., 0] = 1.0
    feats[:, 0] = torch.tensor([0.0, 1.0])  # token 0 of each frame: another direction
    labels = kmeans_labels(feats, (2, 2), (4, 4), k=2)
    assert labels.shape == (2, 4, 4)
    assert (labels[:, :2, :2] == 2).all() and (labels[:, 2:] == 1).all()  # small group is 2
    with pytest.raises(VislearnError, match="grid"):
        kmeans_labels(feats, (3, 2), (4, 4), k=2)


def test_patch_colours_frame_difference_and_token_oracle():
    frames = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    frames[:, 0, :4, :4] = 255
    rgb = patch_mean_rgb(frames, 4)
    assert rgb.shape == (3, 4, 3) and torch.allclose(rgb.mean((0, 1)), torch.zeros(3), atol=1e-6)
    assert rgb[0, 0, 0] > 0 > rgb[0, 1, 0]  # the red cell against the others
    moving = torch.zeros(3, 1, 8, 8)
    moving[1, :, 2:5, 2:5] = 1.0  # appears in frame 1 only
    diff = frame_difference_labels(moving, 0.5)
    assert diff[0, 3, 3] == 1 and diff[2, 3, 3] == 1 and diff[0, 7, 7] == 0
    masks = torch.zeros(1, 8, 8, dtype=torch.long)
    masks[0, :3, :3] = 1  # 9 of the top-left cell's 16 pixels: majority object
    masks[0, 4:6, 4:8] = 2  # 8 of 16 in the bottom-right cell: a tie goes to background
    oracle = token_oracle_labels(masks, 4)
    assert (oracle[0, :4, :4] == 1).all() and (oracle[0, 4:, 4:] == 0).all()
    with pytest.raises(VislearnError):
        token_oracle_labels(masks[:, :7], 4)
