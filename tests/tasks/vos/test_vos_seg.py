"""SSL-UVOS inference: symmetric-KL clustering, the segmentation pipeline, the object rule,
mask/overlay output and the ``video-seg`` command, on tiny random models."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.core.errors import VislearnError
from vislearn.data.video.davis import davis_palette
from vislearn.models.vit import VisionTransformer
from vislearn.tasks.vos.block import SpatioTemporalBlock, attention_descriptors
from vislearn.tasks.vos.cluster import (
    agglomerative_cluster,
    assign,
    hierarchical_cluster,
    leader_cluster,
    smooth,
    symmetric_kl,
)
from vislearn.tasks.vos.features import ViTKeyFeatures
from vislearn.tasks.vos.objects import ObjectRule, cluster_statistics, select_objects
from vislearn.tasks.vos.output import overlay_strip, write_masks
from vislearn.tasks.vos.segment import segment_video

pytestmark = pytest.mark.usefixtures("single_thread")


def _probs(rows: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(rows, width, generator=g), -1)


def _planted(per_group: int, seed: int = 0, width: int = 30, groups: int = 3):
    """Descriptors around ``groups`` distributions peaked on disjoint supports, shuffled."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.arange(groups).repeat_interleave(per_group)
    truth = truth[torch.randperm(len(truth), generator=g)]
    support = torch.zeros(len(truth), width)
    span = width // groups
    for i, c in enumerate(truth.tolist()):
        support[i, c * span : (c + 1) * span] = 6.0
    desc = torch.softmax(support + 0.2 * torch.randn(len(truth), width, generator=g), -1)
    return desc, truth


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])).all())


# ----------------------------------------------------------------------------- distances


def test_symmetric_kl_matches_numpy_reference():
    a, b = _probs(7, 12, 0), _probs(5, 12, 1)
    a[0, :3] = 0.0  # zero probabilities: finite thanks to eps
    a = a / a.sum(-1, keepdim=True)
    eps = 1e-8
    an, bn = a.double().numpy(), b.double().numpy()
    ref = np.zeros((7, 5))
    for i, j in itertools.product(range(7), range(5)):
        la, lb = np.log(an[i] + eps), np.log(bn[j] + eps)
        ref[i, j] = np.sum(an[i] * (la - lb)) + np.sum(bn[j] * (lb - la))
    got = symmetric_kl(a, b, eps=eps, chunk=3)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(symmetric_kl(b, a).numpy(), got.T.numpy(), rtol=1e-5, atol=1e-5)
    self_d = symmetric_kl(a, chunk=2)
    assert (torch.diagonal(self_d) == 0).all()
    torch.testing.assert_close(self_d, self_d.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        torch.diagonal(symmetric_kl(a, a.clone())), torch.zeros(7), atol=1e-5, rtol=0
    )


def test_chunked_descriptors_equal_unchunked():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(4, 50, 8, generator=g), torch.randn(4, 30, 8, generator=g)
    full = attention_descriptors(q, k, chunk=10**6)
    torch.testing.assert_close(attention_descriptors(q, k, chunk=7), full)
    torch.testing.assert_close(full.sum(-1), torch.ones(50))
    d = _probs(40, 16, 3)
    torch.testing.assert_close(smooth(d, 0.5, chunk=6), smooth(d, 0.5, chunk=1000))
    c = _probs(5, 16, 4)
    assert torch.equal(assign(d, c, chunk=7), symmetric_kl(d, c).argmin(1))


# ----------------------------------------------------------------------------- clustering


def test_leader_cluster_recovers_planted_groups():
    desc, truth = _planted(20)
    centroids, assignment = leader_cluster(desc, tau=1.0, chunk=16)
    assert centroids.shape == (3, 30)
    torch.testing.assert_close(centroids.sum(-1), torch.ones(3))
    assert _same_partition(assignment, truth)
    # the first token leads group 0, the greedy pass follows token order
    assert assignment[0] == 0
    # smoothing pulls members together but keeps groups apart
    sm = smooth(desc, 1.0)
    assert _same_partition(leader_cluster(sm, 1.0)[1], truth)


def test_leader_cluster_threshold_zero_gives_singletons():
    desc = _probs(6, 10, 5)
    centroids, assignment = leader_cluster(desc, tau=0.0)
    assert assignment.tolist() == list(range(6))
    torch.testing.assert_close(centroids, desc)


def test_hierarchical_cluster_merges_windows():
    desc, truth = _planted(25, seed=1)  # 75 tokens = 5 frames x 15 tokens
    per_frame = desc.view(5, 15, -1)  # 5 frames, window 3: windows of 3 and 2 frames
    centroids = hierarchical_cluster(per_frame, tau=1.0, window=3, chunk=8)
    assert centroids.shape[0] == 3
    assert _same_partition(assign(desc, centroids), truth)
    # one window per frame gives the same partition after merging
    assert _same_partition(assign(desc, hierarchical_cluster(per_frame, window=1)), truth)


@pytest.mark.parametrize("max_tokens", [1000, 40])
def test_agglomerative_recovers_planted_groups(max_tokens):
    desc, truth = _planted(30, seed=2)
    centroids, assignment = agglomerative_cluster(desc, num_clusters=3, max_tokens=max_tokens)
    assert centroids.shape[0] == 3
    assert _same_partition(assignment, truth)
    _, by_distance = agglomerative_cluster(desc, threshold=1.0, max_tokens=max_tokens)
    assert _same_partition(by_distance, truth)
    with pytest.raises(VislearnError):
        agglomerative_cluster(desc, linkage="ward")


# ----------------------------------------------------------------------------- pipeline


def _tiny_models(seed: int = 0):
    torch.manual_seed(seed)
    vit = VisionTransformer(
        img_size=32, patch_size=4, in_chans=3, embed_dim=64, depth=2, num_heads=4
    )
    block = SpatioTemporalBlock(64, num_heads=8).eval()
    return ViTKeyFeatures(vit), block


def _video(t: int, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), generator=g, dtype=torch.uint8)


def test_segment_video_end_to_end_contract():
    features, block = _tiny_models()
    frames = _video(3, 30, 37)  # native size floored to 28 x 36 for the ViT
    seg = segment_video(frames, features, block, key_stride=10, objects="all")
    assert seg.labels.shape == (3, 30, 37) and seg.labels.dtype == torch.uint8
    assert seg.clusters.shape == (3, 7, 9) and seg.grid == (7, 9)
    assert seg.resolution == (28, 36)
    assert seg.key_frames == [0] and any("key_stride" in n for n in seg.notes)
    assert seg.num_clusters == int(seg.clusters.max()) + 1 == len(seg.sizes)
    assert torch.isclose(seg.sizes.sum(), torch.tensor(1.0))
    # "all": every cluster is an object, largest first
    assert sorted(seg.object_ids) == list(range(seg.num_clusters))
    assert seg.sizes[seg.object_ids[0]] == seg.sizes.max()
    assert int(seg.labels.min()) >= 1 and int(seg.labels.max()) == seg.num_clusters
    # float input, explicit resolution, agglomerative, motion rule
    seg2 = segment_video(
        frames.float() / 255,
        features,
        block,
        resolution=(16, 24),
        method="agglomerative",
        num_clusters=3,
    )
    assert seg2.labels.shape == (3, 30, 37) and seg2.grid == (4, 6)
    assert seg2.num_clusters <= 3 and seg2.num_objects >= 1
    with pytest.raises(VislearnError):
        segment_video(frames, features, block, resolution=(30, 30))
    with pytest.raises(VislearnError):
        segment_video(frames, features, SpatioTemporalBlock(32, num_heads=4))


def test_segment_video_labels_are_nearest_upsampled_clusters():
    features, block = _tiny_models(1)
    frames = _video(4, 32, 32, seed=1)
    seg = segment_video(frames, features, block, key_stride=2, objects="all")
    id_of = torch.zeros(seg.num_clusters, dtype=torch.uint8)
    for j, c in enumerate(seg.object_ids):
        id_of[c] = j + 1
    expected = id_of[seg.clusters].repeat_interleave(4, 1).repeat_interleave(4, 2)
    assert torch.equal(seg.labels, expected)
    # chunking (descriptor blocks, assignment blocks) does not change the result
    small = segment_video(frames, features, block, key_stride=2, objects="all", chunk=5)
    assert torch.equal(small.clusters, seg.clusters)


def test_segment_video_key_frames_every_stride():
    features, block = _tiny_models(2)
    seen = []
    query_key = block.query_key

    def spy(keys):
        seen.append(keys.shape[0])
        return query_key(keys)

    block.query_key = spy
    seg = segment_video(_video(25, 16, 16, seed=2), features, block, key_stride=10)
    assert seg.key_frames == [0, 10, 20]
    assert seen == [25 * 16, 3 * 16]  # queries of every frame, keys of 3 key frames
    assert seg.labels.shape == (25, 16, 16)  # every frame predicted, the last included
    assert not any("key_stride" in n for n in seg.notes)


# ----------------------------------------------------------------------------- object rule


def _rule_scene(t: int = 6, size: int = 16):
    """Cluster 0: static textured background (on the border); 1: a 3x3 square moving right
    2 px per frame; 2: a static 5x5 textured square away from the border."""
    g = torch.Generator().manual_seed(0)
    bg = torch.rand(3, size, size, generator=g) * 0.5
    still = torch.rand(3, 5, 5, generator=g)
    frames = bg.repeat(t, 1, 1, 1)
    labels = torch.zeros(t, size, size, dtype=torch.long)
    for i in range(t):
        labels[i, 9:14, 9:14] = 2
        frames[i, :, 9:14, 9:14] = still
        x = 2 + 2 * i
        labels[i, 2:5, x : x + 3] = 1
        frames[i, :, 2:5, x : x + 3] = 1.0
    return frames, labels


def test_object_rule_motion_picks_the_moving_cluster():
    frames, labels = _rule_scene()
    stats = cluster_statistics(labels, frames)
    assert stats["border"][0] == 1.0 and stats["border"][1] == 0 and stats["border"][2] == 0
    assert stats["motion"][1] > 1.5 > stats["motion"][0]
    assert stats["motion"][2] == 0
    assert select_objects(stats, "motion")[0] == [1]
    assert select_objects(stats, "salient")[0] == [2]  # largest non-border cluster
    assert select_objects(stats, "all")[0] == [0, 2, 1]  # by size
    # over the cap, the border-bound background cluster 0 is left out first, not the small
    # object 1; the kept ones stay in size order
    ids, notes = select_objects(stats, ObjectRule(mode="all", max_objects=2))
    assert ids == [2, 1] and "left out the 1" in notes[0]
    assert select_objects(stats, ObjectRule(mode="all", max_objects=None))[0] == [0, 2, 1]
    assert ObjectRule().max_objects == 20
    ids, notes = select_objects(stats, ObjectRule(motion_threshold=1e9))
    assert ids == [1] and notes  # fallback: the most moving non-background cluster
    assert select_objects(stats, ObjectRule(motion_threshold=1e9, fallback=False))[0] == []
    # one frame: no motion, the salient rule
    one = cluster_statistics(labels[:1], frames[:1])
    ids, notes = select_objects(one, "motion")
    assert ids == [2] and notes
    with pytest.raises(VislearnError):
        ObjectRule(mode="biggest")


# ----------------------------------------------------------------------------- output


def test_write_masks_palette_pngs(tmp_path):
    labels = torch.zeros(2, 6, 8, dtype=torch.uint8)
    labels[0, 1:3, 2:5] = 1
    labels[1, 4:, :3] = 2
    paths = write_masks(tmp_path / "seq", labels)
    assert [p.name for p in paths] == ["00000.png", "00001.png"]
    for i, p in enumerate(paths):
        with Image.open(p) as img:
            assert img.mode == "P"
            assert np.array_equal(np.array(img), labels[i].numpy())
            assert img.getpalette()[3:6] == [128, 0, 0]
    named = write_masks(tmp_path / "named", labels, ["frame_a.jpg", "frame_b"])
    assert [p.name for p in named] == ["frame_a.png", "frame_b.png"]
    assert not list((tmp_path / "seq").glob(".*"))  # no temporary files left
    with pytest.raises(VislearnError):
        write_masks(tmp_path / "x", torch.full((1, 2, 2), 300))
    with pytest.raises(VislearnError):
        write_masks(tmp_path / "x", labels, ["only_one"])


def test_overlay_strip_shape_and_colours():
    frames = torch.zeros(10, 3, 12, 16, dtype=torch.uint8)
    labels = torch.zeros(10, 12, 16, dtype=torch.long)
    labels[:, 3:9, 4:12] = 1
    strip = overlay_strip(frames, labels, max_frames=4)
    assert strip.shape == (12, 4 * 16 + 3 * 2, 3) and strip.dtype == torch.uint8
    red = torch.from_numpy(davis_palette()[1])
    assert torch.equal(strip[3, 4], red)  # contour: full colour
    assert torch.equal(strip[5, 6], (red.float() * 0.5).round().to(torch.uint8))  # interior
    assert torch.equal(strip[0, 0], torch.zeros(3, dtype=torch.uint8))  # background untouched
    assert overlay_strip(frames, labels, every=3, gap=0).shape == (12, 4 * 16, 3)
    with pytest.raises(VislearnError):
        overlay_strip(frames, labels[:, :5])


# ----------------------------------------------------------------------------- CLI


def _cli_args(argv):
    from vislearn.tasks.vos.cli import add_video_seg_parser

    parser = argparse.ArgumentParser()
    add_video_seg_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["video-seg", *argv])


@pytest.fixture
def cli_files(tmp_path):
    from safetensors.torch import save_file

    from vislearn.models import create_backbone
    from vislearn.tasks.vos.run import save_block

    torch.manual_seed(0)
    vit = create_backbone("vit_mini", in_chans=3, img_size=32, patch_size=4)
    save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    save_block(SpatioTemporalBlock(128), tmp_path / "block.safetensors")
    save_block(SpatioTemporalBlock(64), tmp_path / "narrow.safetensors")
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, frame in enumerate(_video(4, 24, 28, seed=3)):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(clip / f"f{i}.png")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_cli_video_seg_writes_masks(cli_files, capsys):
    from vislearn.tasks.vos.cli import run_video_seg

    out = cli_files / "out"
    common = ["--weights", str(cli_files / "vit.safetensors"), "--arch", "vit_mini"]
    common += ["--patch-size", "4", "--out", str(out), "--device", "cpu"]
    args = _cli_args(
        [
            str(cli_files / "clip"),
            *common,
            "--block",
            str(cli_files / "block.safetensors"),
            "--key-stride",
            "2",
            "--overlay",
        ]
    )
    run_video_seg(args)
    pngs = sorted((out / "clip").glob("*.png"))
    assert [p.name for p in pngs] == ["f0.png", "f1.png", "f2.png", "f3.png"]
    with Image.open(pngs[0]) as img:
        assert img.mode == "P" and img.size == (28, 24)
    assert (out / "clip_overlay.png").is_file()
    assert "vislearn: clip: 4 frames" in capsys.readouterr().out

    block = ["--block", str(cli_files / "block.safetensors")]
    for bad in (cli_files / "missing", cli_files / "empty"):
        with pytest.raises(VislearnError):
            run_video_seg(_cli_args([str(bad), *common, *block]))
    with pytest.raises(VislearnError, match="wide"):
        run_video_seg(
            _cli_args(
                [str(cli_files / "clip"), *common, "--block", str(cli_files / "narrow.safetensors")]
            )
        )
    with pytest.raises(SystemExit):  # --block is required
        _cli_args([str(cli_files / "clip"), *common])
