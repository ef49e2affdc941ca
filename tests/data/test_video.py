"""Video data layer: synthetic motion videos, clip sampling and readers, clip augmentation,
and FAME (foreground-background merging)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.core.errors import VislearnError
from vislearn.data.augment import ViewConfig
from vislearn.data.synthetic.backgrounds import (
    DEFAULT_PHOTO_DIR,
    generated_background,
    list_background_photos,
    load_backgrounds,
)
from vislearn.data.synthetic.clips import MotionClipDataset, write_video_folders
from vislearn.data.synthetic.motion import motion_splits, moving_sprite_videos
from vislearn.data.synthetic.sprites import composite
from vislearn.data.video.augment import ClipAugment
from vislearn.data.video.dataset import VideoFolderDataset, clip_indices
from vislearn.data.video.fame import (
    FAME,
    color_ids,
    fame,
    fame_kernel_size,
    fame_mask,
    motion_map,
    rgb_to_hsv,
    sample_donors,
)
from vislearn.data.video.io import count_frames, list_frames, read_clip, read_video, write_video

pytestmark = pytest.mark.usefixtures("single_thread")

GEN = {"background_source": "generated"}  # machine-independent backgrounds


def _bcthw(clips: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, C, H, W] -> float [B, C, T, H, W] in [0, 1]."""
    return clips.permute(0, 2, 1, 3, 4).float() / 255.0


def _centroids(masks: torch.Tensor) -> torch.Tensor:
    """[T, H, W] bool -> [T, 2] (x, y) centroids in pixel-centre coordinates + 0.5."""
    ys, xs = torch.meshgrid(
        torch.arange(masks.shape[-2]) + 0.5, torch.arange(masks.shape[-1]) + 0.5, indexing="ij"
    )
    m = masks.float()
    area = m.sum((1, 2)).clamp_min(1)
    return torch.stack([(m * xs).sum((1, 2)) / area, (m * ys).sum((1, 2)) / area], 1)


# ----------------------------------------------------------------------------- FAME


def test_fame_kernel_rule():
    assert [fame_kernel_size(s) for s in (10, 19, 20, 64, 112, 224)] == [1, 1, 3, 7, 11, 23]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("beta", [0.5, 0.3])
def test_fame_mask_exact_count_same_every_frame_and_merge(channels, beta):
    g = torch.Generator().manual_seed(0)
    clips = torch.rand(5, channels, 4, 24, 20, generator=g)
    donors = torch.tensor([3, 0, 4, 1, 2])
    merged, masks = fame(clips, beta, donors=donors)
    assert merged.shape == clips.shape and merged.dtype == clips.dtype
    assert masks.shape == (5, 1, 4, 24, 20)
    k = math.floor(beta * 24 * 20)
    assert torch.equal(masks.sum((1, 3, 4)), torch.full((5, 4), float(k)))
    assert torch.equal(masks, masks[:, :, :1].expand_as(masks))  # identical across frames
    inside = masks.expand_as(clips).bool()
    assert torch.equal(merged[inside], clips[inside])  # own pixels, bit for bit
    assert torch.equal(merged[~inside], clips[donors][~inside])  # donor's pixels
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_fame_generator_donors_are_sample_donors_and_reproducible():
    clips = torch.rand(6, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(7)
    expected = sample_donors(6, torch.Generator().manual_seed(7))
    merged, masks = fame(clips, 0.5, g)
    keep = masks.expand_as(clips).bool()
    assert torch.equal(merged[~keep], clips[expected][~keep])
    again, _ = fame(clips, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(merged, again)


def test_fame_static_clip_gives_valid_mask_without_nan():
    frame = torch.rand(1, 3, 1, 20, 20, generator=torch.Generator().manual_seed(2))
    for clips in (frame.expand(2, 3, 5, 20, 20).clone(), torch.zeros(2, 3, 5, 20, 20)):
        for tie_break in ("scatter", "index"):
            mask = fame_mask(clips, 0.5, tie_break=tie_break)
            assert mask.sum().item() == 2 * 200
        merged, masks = fame(clips, 0.5, torch.Generator().manual_seed(0))
        assert torch.isfinite(merged).all() and torch.isfinite(masks).all()
        assert torch.equal(motion_map(clips), torch.zeros(2, 20, 20))
    # a single frame (T = 1) and a gray static clip
    assert fame_mask(frame, 0.25).sum().item() == 100
    gray, _ = fame(torch.full((3, 1, 4, 12, 12), 0.5), 0.5, torch.Generator().manual_seed(0))
    assert torch.isfinite(gray).all()


def test_fame_moving_sprite_mask_beats_chance():
    videos = moving_sprite_videos(
        16, frames=8, size=64, seed=3, classes=["right", "left", "down", "up"], **GEN
    )
    clips = _bcthw(videos.clips)
    truth = (videos.masks == 1).any(1)  # the region the sprite sweeps
    area = truth.float().mean((1, 2))
    assert 0.05 < area.mean() < 0.3
    for channels in (3, 1):
        x = clips if channels == 3 else clips.mean(1, keepdim=True)
        mask = fame_mask(x, 0.5)
        recall = ((mask & truth).sum((1, 2)) / truth.sum((1, 2))).mean()
        assert recall > 0.75, recall  # a random half of the pixels gets 0.5
    mask = fame_mask(clips, 0.2)
    iou = ((mask & truth).sum((1, 2)) / (mask | truth).sum((1, 2))).mean()
    chance = (0.2 * area / (0.2 + area - 0.2 * area)).mean()  # IoU of a random 20 % mask
    assert iou > 3 * chance, (iou, chance)


def test_color_ids_range_gray_and_hue_quirk():
    g = torch.Generator().manual_seed(4)
    img = torch.rand(2, 3, 16, 16, generator=g)
    for quirk in (False, True):
        ids = color_ids(img, hue_quirk=quirk)
        assert ids.dtype == torch.int64 and ids.min() >= 0 and ids.max() < 1000
    gray = color_ids(img.mean(1, keepdim=True))
    assert torch.equal(gray // 10, torch.full_like(gray // 10, 55))  # s = 0: middle a, b bins
    rgb_gray = color_ids(img.mean(1, keepdim=True).expand(-1, 3, -1, -1))
    assert torch.equal(rgb_gray, gray)
    # pure red, green, blue: hue 0, 1/3, 2/3 turn; the quirk maps hue 1/3 to 2 pi / 3 turns
    prim = torch.eye(3).view(1, 3, 3, 1)
    hsv = rgb_to_hsv(prim)
    assert torch.allclose(hsv[0, 0, :, 0], torch.tensor([0.0, 1 / 3, 2 / 3]))
    ids = color_ids(prim)[0, :, 0]
    ia, ib = ids // 100, ids // 10 % 10
    assert (ia[0].item(), ib[0].item()) == (9, 5)  # (cos 0, sin 0) = (1, 0)
    assert (ia[1].item(), ib[1].item()) == (2, 9)  # (cos 120deg, sin 120deg) = (-0.5, 0.87)
    quirk = color_ids(prim, hue_quirk=True)[0, :, 0]
    a = math.cos(2 * math.pi * (2 * math.pi / 3))
    assert quirk[1].item() // 100 == min(9, math.floor((a + 1) / 2 * 10))
    assert torch.isfinite(rgb_to_hsv(torch.zeros(1, 3, 2, 2))).all()


def test_sample_donors_and_avoid_self():
    g = torch.Generator().manual_seed(0)
    fixed = 0
    for _ in range(50):
        d = sample_donors(8, g, avoid_self=True)
        assert sorted(d.tolist()) == list(range(8))
        assert not (d == torch.arange(8)).any()
        fixed += int((sample_donors(8, g) == torch.arange(8)).sum())
    assert fixed > 0  # the released sampler has self-donors
    assert sample_donors(1, g, avoid_self=True).tolist() == [0]


def test_fame_module_and_bad_inputs():
    clips = torch.rand(2, 3, 2, 8, 8)
    merged, masks = FAME(beta=0.25, avoid_self=True)(clips, torch.Generator().manual_seed(0))
    assert masks[:, 0, 0].sum().item() == 2 * 16
    keep = masks.expand_as(clips).bool()
    assert torch.equal(merged[~keep], clips.flip(0)[~keep])  # the only derangement of 2
    for bad in (torch.rand(2, 3, 8, 8), torch.zeros(2, 3, 2, 8, 8, dtype=torch.uint8)):
        with pytest.raises(VislearnError):
            fame(bad)
    with pytest.raises(VislearnError):
        fame(torch.rand(2, 2, 2, 8, 8))
    with pytest.raises(VislearnError):
        fame(clips, beta=1.5)
    with pytest.raises(VislearnError):
        fame_mask(clips, tie_break="random")


# ----------------------------------------------------------------------------- synthetic


def test_generation_is_deterministic_and_seed_dependent():
    kw = {"frames": 3, "size": 24, "distractors": 1, **GEN}
    a = moving_sprite_videos(6, seed=5, **kw)
    b = moving_sprite_videos(6, seed=5, **kw)
    c = moving_sprite_videos(6, seed=6, **kw)
    for name in ("clips", "masks", "labels", "backgrounds", "centers"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.clips, c.clips)
    assert a.clips.shape == (6, 3, 3, 24, 24) and a.clips.dtype == torch.uint8
    assert a.masks.shape == (6, 3, 24, 24) and set(a.masks.unique().tolist()) <= {0, 1, 2}
    assert torch.equal(generated_background(16, 3), generated_background(16, 3))
    assert not torch.equal(generated_background(16, 3), generated_background(16, 4))


def test_composite_masks_and_pixels():
    bg = torch.zeros(3, 20, 20, dtype=torch.uint8)
    alpha = torch.ones(4, 4)
    colour = torch.tensor([1.0, 0.5, 0.0]).view(3, 1, 1).expand(3, 4, 4)
    centers = torch.tensor([[[10.0, 10.0]], [[14.0, 6.0]]])  # T=2, K=1
    frames, masks = composite(
        bg, [colour], [alpha], centers, torch.zeros(2, 1), torch.full((2, 1), 6.0)
    )
    # a 6x6 square centred at (10, 10) covers pixels 7..12; then moved to (14, 6)
    assert torch.equal(masks[0].nonzero().amin(0), torch.tensor([7, 7]))
    assert torch.equal(masks[0].nonzero().amax(0), torch.tensor([12, 12]))
    assert torch.equal(_centroids(masks.bool()), torch.tensor([[10.0, 10.0], [14.0, 6.0]]))
    assert frames[0, :, 10, 10].tolist() == [255, 128, 0] and frames[0, :, 0, 0].sum() == 0


@pytest.mark.parametrize("direction", ["right", "left", "down", "up", "up_left", "down_right"])
def test_translation_classes_move_the_sprite(direction):
    videos = moving_sprite_videos(
        3, frames=6, size=48, speed=2.0, seed=1, classes=[direction], **GEN
    )
    unit = {
        "right": (1.0, 0.0),
        "left": (-1.0, 0.0),
        "down": (0.0, 1.0),
        "up": (0.0, -1.0),
        "up_left": (-0.7071, -0.7071),
        "down_right": (0.7071, 0.7071),
    }[direction]
    for masks in videos.masks:
        c = _centroids(masks == 1)
        shift = c[-1] - c[0]
        assert shift.norm() == pytest.approx(2.0 * 5, rel=0.25)
        assert float(shift @ torch.tensor(unit)) / float(shift.norm()) > 0.95


def test_scaling_classes_change_the_area():
    videos = moving_sprite_videos(
        6, frames=6, size=48, speed=1.5, seed=2, classes=["grow", "shrink"], **GEN
    )
    for label, masks in zip(videos.labels, videos.masks, strict=True):
        area = (masks == 1).float().sum((1, 2))
        ratio = float(area[-1] / area[0])
        if videos.classes[label] == "grow":
            assert ratio > 1.8 and (area.diff() >= -2).all()
        else:
            assert ratio < 1 / 1.8 and (area.diff() <= 2).all()
        assert (_centroids(masks == 1)[-1] - _centroids(masks == 1)[0]).norm() < 2.5


def test_rotation_classes_turn_the_right_way():
    videos = moving_sprite_videos(
        12, frames=4, size=48, speed=2.0, seed=3, classes=["rotate_cw", "rotate_ccw"], **GEN
    )
    correct = 0
    for label, masks, centre in zip(videos.labels, videos.masks, videos.centers, strict=True):
        first = Image.fromarray(((masks[0] == 1).numpy() * 255).astype(np.uint8))
        last = (masks[-1] == 1).numpy()
        cx, cy = centre[0, 0].tolist()

        def iou(deg: float, first=first, last=last, cx=cx, cy=cy) -> float:
            # PIL turns counter-clockwise on screen for a positive angle
            rot = np.asarray(first.rotate(deg, resample=Image.BILINEAR, center=(cx, cy))) > 127
            return (rot & last).sum() / max((rot | last).sum(), 1)

        cw = max(iou(-d) for d in range(5, 90, 5))
        ccw = max(iou(d) for d in range(5, 90, 5))
        correct += (cw > ccw) == (videos.classes[label] == "rotate_cw")
        assert (
            _centroids(torch.from_numpy(np.stack([masks[0] == 1, masks[-1] == 1])))
            .diff(dim=0)
            .norm()
            < 3
        )
    assert correct >= 10


def test_background_bias_train_but_not_test():
    kw = {"frames": 1, "size": 16, "num_backgrounds": 16, "background_bias": 0.9, **GEN}
    train, test = motion_splits(240, 240, seed=0, **kw)
    c = len(train.classes)
    assert c == 8 and train.settings["background_bias"] == 0.9

    def own_subset(v) -> float:
        return float((v.backgrounds % c == v.labels).float().mean())

    def majority_accuracy(v) -> float:  # predict the class from the background alone
        table = np.zeros((16, c))
        np.add.at(table, (v.backgrounds.numpy(), v.labels.numpy()), 1)
        return float(table.max(1).sum() / table.sum())

    assert own_subset(train) > 0.85  # expected 0.9 + 0.1 / 8
    assert abs(own_subset(test) - 1 / c) < 0.07
    assert majority_accuracy(train) > 0.85
    assert majority_accuracy(test) < 0.35
    assert torch.bincount(test.labels, minlength=c).tolist() == [30] * c  # balanced
    unbiased = moving_sprite_videos(240, seed=0, **{**kw, "background_bias": 0.0})
    assert abs(own_subset(unbiased) - 1 / c) < 0.07
    with pytest.raises(VislearnError):
        moving_sprite_videos(4, frames=1, size=16, num_backgrounds=4, background_bias=0.5, **GEN)


def test_backgrounds_sources(tmp_path):
    imgs, names = load_backgrounds(3, 16, "generated", seed=1)
    assert imgs.shape == (3, 3, 16, 16) and names[0] == "generated#0"
    gray, _ = load_backgrounds(2, 16, "generated", channels=1)
    assert gray.shape == (2, 1, 16, 16)
    with pytest.raises(VislearnError):
        load_backgrounds(2, 16, "photos", directory=tmp_path)
    fallback, names = load_backgrounds(2, 16, "auto", directory=tmp_path / "absent", seed=1)
    assert names == ["generated#0", "generated#1"]  # no photos installed: generated
    assert torch.equal(fallback, load_backgrounds(2, 16, "generated", seed=1)[0])
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((40, 30, 3), 50, np.uint8)).save(tmp_path / "b.jpg")
    assert [p.name for p in list_background_photos(tmp_path)] == ["a.png", "b.jpg"]
    imgs, names = load_backgrounds(5, 16, "photos", directory=tmp_path, seed=0)
    assert names[:3] == ["a.png", "b.jpg", "a.png#crop1"] and imgs.shape == (5, 3, 16, 16)
    assert imgs[0].float().mean() == pytest.approx(200, abs=1)


@pytest.mark.skipif(not DEFAULT_PHOTO_DIR.is_dir(), reason="opencv-doc photos not installed")
def test_real_photo_backgrounds():
    photos = list_background_photos()
    assert len(photos) >= 10
    videos = moving_sprite_videos(2, frames=2, size=32, num_backgrounds=12, seed=0)
    assert videos.background_names[0] == photos[0].name
    assert videos.settings["background_source"] == "auto"


def test_dataset_items_and_bad_settings():
    videos = moving_sprite_videos(4, frames=3, size=16, seed=0, distractors=2, **GEN)
    ds = MotionClipDataset(videos, return_masks=True)
    clip, label, masks = ds[1]
    assert clip.shape == (3, 3, 16, 16) and masks.shape == (3, 16, 16)
    assert label == int(videos.labels[1]) and ds.num_classes == 8
    bg = MotionClipDataset(videos, target="background")
    assert bg[2][1] == int(videos.backgrounds[2]) and bg.num_classes == 16
    g = torch.Generator().manual_seed(0)
    long = moving_sprite_videos(2, frames=6, size=16, seed=1, **GEN)
    pairs = MotionClipDataset(
        long, return_masks=True, frames=2, stride=2, two_clips=True, generator=g
    )
    for _ in range(5):
        clips, label, masks = pairs[0]
        assert clips.shape == (2, 2, 3, 16, 16) and masks.shape == (2, 2, 16, 16)
        starts = [next(t for t in range(6) if torch.equal(long.clips[0, t], c[0])) for c in clips]
        assert starts[0] != starts[1] and torch.equal(clips[0, 1], long.clips[0, starts[0] + 2])
        assert torch.equal(masks[1, 0], long.masks[0, starts[1]])
    centre = MotionClipDataset(long, frames=4, mode="center")
    assert torch.equal(centre[1][0], long.clips[1, 1:5])
    for bad in (
        {"classes": ["sideways"]},
        {"background_bias": 1.5},
        {"split": "val"},
        {"channels": 2},
        {"frames": 0},
    ):
        with pytest.raises(VislearnError):
            moving_sprite_videos(2, **{"size": 16, **GEN, **bad})


# ----------------------------------------------------------------------------- video IO


def test_clip_indices_modes():
    g = torch.Generator().manual_seed(0)
    idx = clip_indices(100, 8, 2, "random", 3, generator=g)
    assert idx.shape == (3, 8) and torch.equal(idx.diff(dim=1), torch.full((3, 7), 2))
    assert idx.max() <= 99
    assert clip_indices(100, 4, 3, "center").tolist() == [[45, 48, 51, 54]]  # centred on frame 49.5
    uni = clip_indices(40, 4, 1, "uniform", 5)
    assert uni[:, 0].tolist() == [0, 9, 18, 27, 36] and uni[-1, -1] == 39
    short = clip_indices(5, 4, 2, "random", generator=g)  # span 7 > 5 frames
    assert short.tolist() == [[0, 2, 4, 4]]
    for _ in range(20):
        two = clip_indices(10, 4, 2, "random", 2, distinct=True, generator=g)
        assert two[0, 0] != two[1, 0]
    one = clip_indices(7, 4, 2, "random", 2, distinct=True, generator=g)
    assert torch.equal(one[0], one[1])  # only one clip fits: reused
    for bad in ({"mode": "middle"}, {"frames": 0}, {"stride": 0}):
        with pytest.raises(VislearnError):
            clip_indices(10, **{"frames": 2, **bad})
    with pytest.raises(VislearnError):
        clip_indices(0, 2)


@pytest.mark.parametrize("fmt", ["frames", "video"])
def test_folder_round_trip(tmp_path, fmt):
    videos = moving_sprite_videos(
        6, frames=5, size=20, seed=4, classes=["right", "up", "grow"], **GEN
    )
    paths = write_video_folders(videos, tmp_path / "set", format=fmt, mask_root=tmp_path / "m")
    assert (tmp_path / "set" / "videos.json").is_file()
    ds = VideoFolderDataset(tmp_path / "set", frames=5, mode="center", classes=videos.classes)
    assert len(ds) == 6 and ds.classes == list(videos.classes)
    by_path = {p: i for i, p in enumerate(paths)}
    for j, (path, _, n) in enumerate(ds.samples):
        i = by_path[path]
        clip, label = ds[j]
        assert n == 5 and label == int(videos.labels[i])
        assert torch.equal(clip, videos.clips[i])  # lossless PNG / FFV1
    # without a class list the classes are the sorted folder names
    plain = VideoFolderDataset(tmp_path / "set", frames=5, mode="center")
    assert plain.classes == sorted(videos.classes)
    i = by_path[plain.samples[0][0]]
    assert plain.classes[plain[0][1]] == videos.classes[int(videos.labels[i])]
    mask = np.asarray(
        Image.open(
            tmp_path / "m" / paths[0].relative_to(tmp_path / "set").with_suffix("") / "00002.png"
        )
    )
    assert np.array_equal(mask, videos.masks[0, 2].numpy())


def test_dataset_clip_counts_two_clips_and_resize(tmp_path):
    frames = torch.arange(12, dtype=torch.uint8).mul(20).view(12, 1, 1, 1).expand(12, 3, 6, 8)
    vid = tmp_path / "root" / "a" / "v1"
    vid.mkdir(parents=True)
    for t, f in enumerate(frames):
        Image.fromarray(f.permute(1, 2, 0).numpy()).save(vid / f"img_{t + 1}.png")
    short = tmp_path / "root" / "b" / "v2"
    short.mkdir(parents=True)
    for t in range(4):
        Image.fromarray(frames[t].permute(1, 2, 0).numpy()).save(short / f"img_{t}.jpg")
    assert [p.name for p in list_frames(vid)][:3] == ["img_1.png", "img_2.png", "img_3.png"]
    g = torch.Generator().manual_seed(0)
    ds = VideoFolderDataset(tmp_path / "root", frames=3, stride=2, two_clips=True, generator=g)
    assert ds.classes == ["a", "b"]
    for _ in range(10):
        clips, label = ds[0]
        assert clips.shape == (2, 3, 3, 6, 8) and label == 0
        starts = clips[:, 0, 0, 0, 0] // 20
        assert starts[0] != starts[1]  # two different clips of the same video
        assert torch.equal(clips[:, 1:, 0, 0, 0] - clips[:, :-1, 0, 0, 0], torch.full((2, 2), 40))
    clips, label = ds[1]  # 4 frames, span 5: a single clip, reused, last frame repeated
    assert label == 1 and torch.equal(clips[0], clips[1])
    multi = VideoFolderDataset(tmp_path / "root", frames=2, mode="uniform", num_clips=4, size=4)
    clips, _ = multi[0]
    assert clips.shape == (4, 2, 3, 4, 4)
    assert (clips[:, 0, 0, 0, 0] // 20).tolist() == [0, 3, 7, 10]
    gray = VideoFolderDataset(tmp_path / "root", frames=2, channels=1, mode="center")
    assert gray[0][0].shape == (2, 1, 6, 8)
    unlabelled = VideoFolderDataset(tmp_path / "root" / "a", frames=2, mode="center")
    assert unlabelled.classes == [] and unlabelled.labels is None and unlabelled[0][1] == -1


def test_video_file_helpers(tmp_path):
    frames = torch.randint(0, 256, (7, 3, 10, 14), dtype=torch.uint8)
    path = write_video(tmp_path / "x.mkv", frames)  # mkv stores no frame count: packets
    assert count_frames(path) == 7
    assert torch.equal(read_video(path), frames)
    assert torch.equal(read_clip(path, [6, 2, 2]), frames[[6, 2, 2]])
    assert torch.equal(read_clip(path, [9]), frames[[6]])  # past the end: last frame
    gray = read_clip(path, [0], channels=1)
    assert gray.shape == (1, 1, 10, 14)
    lossy = write_video(tmp_path / "y.mp4", frames[:, :, :9, :13].contiguous())
    assert read_video(lossy).shape == (7, 3, 10, 14)  # padded to even sides for H.264


def test_bad_video_inputs(tmp_path):
    with pytest.raises(VislearnError):
        VideoFolderDataset(tmp_path / "missing")
    with pytest.raises(VislearnError):
        VideoFolderDataset(tmp_path)  # empty
    (tmp_path / "c" / "v").mkdir(parents=True)
    (tmp_path / "c" / "v" / "notes.txt").write_text("no frames")
    with pytest.raises(VislearnError):
        VideoFolderDataset(tmp_path)  # a frame folder without frames is no video
    bad = tmp_path / "c" / "broken.avi"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VislearnError):
        count_frames(bad)
    with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(VislearnError):
        VideoFolderDataset(tmp_path)
    write_video(tmp_path / "c" / "ok.avi", torch.zeros(3, 3, 8, 8, dtype=torch.uint8))
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = VideoFolderDataset(tmp_path, frames=2)
    assert len(ds) == 1 and ds[0][0].shape == (2, 3, 8, 8)
    with pytest.raises(VislearnError):
        VideoFolderDataset(tmp_path, frames=2, classes=["other"])
    frame_dir = tmp_path / "frames"
    frame_dir.mkdir()
    (frame_dir / "0.png").write_bytes(b"not a png")
    with pytest.raises(VislearnError):
        read_clip(frame_dir, [0])
    with pytest.raises(VislearnError):
        read_clip(frame_dir, [3])


@pytest.mark.skipif(
    not (DEFAULT_PHOTO_DIR / "Megamind.avi").is_file(), reason="opencv-doc video not installed"
)
def test_real_video_file():
    path = DEFAULT_PHOTO_DIR / "Megamind.avi"
    assert count_frames(path) == 270
    clip = read_clip(path, clip_indices(270, 4, 2, "uniform", 3)[1] // 2)  # frames 66..69
    assert clip.shape == (4, 3, 528, 720) and clip.float().std() > 10
    assert not torch.equal(clip[0], clip[-1])


# ----------------------------------------------------------------------------- augmentation


def test_clip_augment_same_parameters_for_every_frame():
    g = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (4, 1, 3, 40, 40), dtype=torch.uint8, generator=g)
    clips = frame.expand(4, 5, 3, 40, 40)  # static clips: every frame identical
    aug = ClipAugment(ViewConfig(blur_p=1.0, jitter_p=1.0), size=24, channels=3)
    x = aug.spatial(clips, g)
    assert x.shape == (4, 3, 5, 24, 24) and x.min() >= 0 and x.max() <= 1
    y = aug.photometric(x, g)
    out = aug.normalize(y)
    assert out.shape == (4, 3, 5, 24, 24)
    assert torch.allclose(y, y[:, :, :1].expand_as(y), atol=1e-6)  # identical over time
    assert not torch.allclose(y[0], y[1], atol=1e-2)  # but different per clip
    again = ClipAugment(size=24)(clips, torch.Generator().manual_seed(3))
    assert torch.equal(again, ClipAugment(size=24)(clips, torch.Generator().manual_seed(3)))
    assert ClipAugment(size=16, channels=1)(clips[:, :, :1], g).shape == (4, 1, 5, 16, 16)
