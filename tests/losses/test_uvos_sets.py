"""SSL-UVOS loss set sizes: fractions of the token grid, disjoint sets that exclude the query."""

from __future__ import annotations

import pytest
import torch

from vislearn.core.errors import VislearnError
from vislearn.losses.uvos import (
    RELEASE_FRACTIONS,
    loss_set_sizes,
    motion_consistency_loss,
    semantic_consistency_loss,
)


def test_release_fractions_give_release_counts_and_scale_with_the_grid():
    f = RELEASE_FRACTIONS
    assert loss_set_sizes(1152, f["sem_pos"], f["sem_neg"]) == (30, 200)
    assert loss_set_sizes(1152, f["mot_pos"], f["mot_neg"]) == (10, 50)
    assert loss_set_sizes(144, f["sem_pos"], f["sem_neg"]) == (4, 25)  # 48 px / 4 px patches
    assert loss_set_sizes(144, f["mot_pos"], f["mot_neg"]) == (1, 6)
    assert loss_set_sizes(16, f["mot_pos"], f["mot_neg"]) == (1, 1)  # floor of 1
    with pytest.raises(VislearnError, match="fraction"):
        loss_set_sizes(144, 0.0, 0.1)
    with pytest.raises(VislearnError, match="disjointly"):
        loss_set_sizes(10, 0.5, 0.5)  # 5 + 5 > 9 tokens besides the query


def test_sets_that_cannot_be_disjoint_are_rejected():
    attn, feats, points = torch.rand(1, 32, 32), torch.rand(1, 2, 16, 4), torch.tensor([3])
    with pytest.raises(VislearnError, match="disjointly"):
        semantic_consistency_loss(attn, feats, points, 8, 8)  # 16 > 15
    with pytest.raises(VislearnError, match="disjointly"):
        motion_consistency_loss(attn, points, 30, 200, num_frames=2)
    semantic_consistency_loss(attn, feats, points, 8, 7)  # 15 fits


def test_query_is_neither_positive_nor_negative():
    """One frame; the query attends most to itself and least to... itself in the negative
    ranking once its own score is lowest: either way it must not be picked. With the query's
    features orthogonal to everyone else's, picking it would change the loss."""
    n = 6
    feats = torch.zeros(1, 1, n, 2)
    feats[..., 0] = 1.0
    feats[0, 0, 2] = torch.tensor([0.0, 1.0])  # the query: orthogonal to the rest
    for own in (10.0, -10.0):  # the query's attention to itself highest, then lowest
        attn = torch.rand(1, n, n) * 0.1
        attn[0, 2, 2] = own
        sem = semantic_consistency_loss(attn, feats, torch.tensor([2]), 1, 1, 0.9, 0.1)
        # every other token has cos 0 with the query: pos hinge 0.9, neg hinge 0
        assert sem.item() == pytest.approx(0.9)
