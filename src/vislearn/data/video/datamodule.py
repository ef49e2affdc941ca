"""LightningDataModule of uint8 clips for video methods, and the labelled splits of the
offline video evaluation.

Two sources:

* ``"synthetic-motion"``: :func:`~vislearn.data.synthetic.motion_splits` -- Fashion-MNIST
  sprites moving over photos, 8 motion classes; the train split can be background-biased
  (``background_bias``), the test split never is. Generated once per process for a given
  setting (seeded by ``synthetic_seed``, independent of the training seed, so every run and
  every evaluation sees the same videos).
* a folder of videos (:class:`~vislearn.data.video.dataset.VideoFolderDataset`, UCF101/HMDB51-style
  class folders of video files or frame folders): ``root/train`` + ``root/test`` (or
  ``root/val``), or ``root`` alone as an unlabelled/labelled training set without online
  evaluation.

Training batches are ``[B, K, T, C, H, W]`` with ``K = clips_per_video`` clips at different
random starts of each video (``K = 2``: FAME's two-clip sampler), or ``[B, T, C, H, W]`` for
``K = 1``. Online validation (as in :class:`~vislearn.data.datamodule.ImageDataModule`,
whose loaders and seeded samplers are reused): loader 0 is the kNN bank (training videos,
centre clip), loader 1 the query set (test videos, centre clip).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError
from vislearn.data.datamodule import ImageDataModule
from vislearn.data.synthetic import (
    MotionClipDataset,
    MotionVideos,
    appearance_swap_videos,
    motion_splits,
)
from vislearn.data.video.dataset import VideoFolderDataset, find_videos

__all__ = ["MOTION_DESIGNS", "SYNTHETIC_MOTION", "VideoDataModule", "synthetic_motion_splits"]

SYNTHETIC_MOTION = "synthetic-motion"

#: ``"classes"``: :func:`~vislearn.data.synthetic.moving_sprite_videos` (8 motion classes at
#: one speed); ``"appearance_swap"``: :func:`~vislearn.data.synthetic.appearance_swap_videos`
#: (continuous motion, two halves with different sprites, clip pairs across the halves).
MOTION_DESIGNS = ("classes", "appearance_swap")


@functools.lru_cache(maxsize=3)
def _cached_splits(settings: tuple[tuple[str, Any], ...]) -> tuple[MotionVideos, MotionVideos]:
    kw = dict(settings)
    n_train, n_test = kw.pop("num_train"), kw.pop("num_test")
    if kw.pop("design") == "classes":
        return motion_splits(n_train, n_test, **kw)
    if kw["frames"] % 2:
        raise VislearnError(f"appearance_swap videos have two halves: video_frames must be even, "
                            f"got {kw['frames']}")  # fmt: skip
    common = {
        "half_frames": kw["frames"] // 2,
        "size": kw["size"],
        "seed": kw["seed"],
        "channels": kw["channels"],
        "num_backgrounds": kw["num_backgrounds"],
        "background_bias": kw["background_bias"],
        "speed": (kw["speed"] / 2, kw["speed"]),
    }
    return (
        appearance_swap_videos(n_train, split="train", **common),
        appearance_swap_videos(n_test, split="test", **common),
    )


def synthetic_motion_splits(
    num_train: int = 2000,
    num_test: int = 800,
    video_frames: int = 16,
    size: int = 32,
    channels: int = 3,
    background_bias: float = 0.0,
    num_backgrounds: int = 16,
    distractors: int = 0,
    speed: float = 2.0,
    seed: int = 0,
    design: str = "classes",
) -> tuple[MotionVideos, MotionVideos]:
    """Train and test :class:`MotionVideos` (cached: the last three settings stay in memory);
    ``design`` from :data:`MOTION_DESIGNS` (``appearance_swap`` ignores ``distractors`` and
    draws each video's speed uniformly in ``[speed / 2, speed]``)."""
    if design not in MOTION_DESIGNS:
        raise VislearnError(f"unknown motion design {design!r}; choose from {MOTION_DESIGNS}")
    settings = {
        "design": design,
        "num_train": num_train,
        "num_test": num_test,
        "frames": video_frames,
        "size": size,
        "channels": channels,
        "background_bias": float(background_bias),
        "num_backgrounds": num_backgrounds,
        "distractors": distractors,
        "speed": float(speed),
        "seed": seed,
    }
    return _cached_splits(tuple(sorted(settings.items())))


class VideoDataModule(ImageDataModule):
    """Clips for training video methods and for their online evaluation.

    Args:
        dataset: ``"synthetic-motion"`` or a video folder (see the module docstring); a
            relative folder is also looked for under ``data_dir``.
        image_size: frame side (synthetic: generated at this size, default 32; folders: the
            shorter side resized and centre-cropped, default 112).
        channels: 1 or 3 (default 3).
        batch_size, num_workers, knn_bank_size, seed, online_eval: as for images.
        clips_per_video: clips of each video in a training item (2 for contrastive methods).
        frames, frame_stride: clip length ``T`` and step between its frames.
        video_frames, num_train, num_test, background_bias, num_backgrounds, distractors,
            motion_speed, synthetic_seed, motion_design: the synthetic set (see
            :func:`~vislearn.data.synthetic.moving_sprite_videos`, :data:`MOTION_DESIGNS`).
        mask_channel: serve training clips with the ground-truth foreground as an extra
            channel (synthetic only; FAME with ground-truth masks).

    Attributes besides the loaders: ``channels``, ``image_size``, ``num_classes``,
    ``flip_changes_label`` (True for the synthetic set, whose left/right and
    clockwise/anticlockwise classes swap under a horizontal flip).
    """

    def __init__(
        self,
        dataset: str = SYNTHETIC_MOTION,
        data_dir: str | os.PathLike | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        knn_bank_size: int = 10_000,
        seed: int = 0,
        online_eval: bool = True,
        clips_per_video: int = 2,
        frames: int = 8,
        frame_stride: int = 1,
        video_frames: int = 16,
        num_train: int = 2000,
        num_test: int = 800,
        background_bias: float = 0.0,
        num_backgrounds: int = 16,
        distractors: int = 0,
        motion_speed: float = 2.0,
        synthetic_seed: int = 0,
        motion_design: str = "classes",
        mask_channel: bool = False,
    ) -> None:
        L.LightningDataModule.__init__(self)
        if clips_per_video not in (1, 2):
            raise VislearnError(f"clips_per_video must be 1 or 2, got {clips_per_video}")
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.knn_bank_size, self.seed = knn_bank_size, seed
        self.label_fraction, self.labelled_batch_size = None, None  # ImageDataModule's loaders
        self.clips_per_video, self.frames, self.frame_stride = clips_per_video, frames, frame_stride
        self.channels = 3 if channels is None else channels
        self.is_synthetic = str(dataset).strip().lower() == SYNTHETIC_MOTION
        self.flip_changes_label = self.is_synthetic
        if self.is_synthetic:
            self.image_size = 32 if image_size is None else image_size
            self.videos = synthetic_motion_splits(
                num_train,
                num_test,
                video_frames,
                self.image_size,
                self.channels,
                background_bias,
                num_backgrounds,
                distractors,
                motion_speed,
                synthetic_seed,
                motion_design,
            )
            self.root: Path | None = None
        else:
            self.image_size = 112 if image_size is None else image_size
            self.root = _find_root(dataset, data_dir)
            self.videos = None
        if mask_channel and not self.is_synthetic:
            raise VislearnError("mask_channel needs the synthetic motion set (ground-truth masks)")
        two = clips_per_video == 2
        self.mask_channel = mask_channel
        self.train_set: Dataset = self.split("train", "random", two_clips=two)
        self.bank_source = self.split("train", "center")
        if len(self.train_set) < batch_size:
            raise VislearnError(
                f"dataset {dataset!r} has {len(self.train_set)} training videos, fewer than "
                f"one batch ({batch_size}); lower --batch-size"
            )
        labels = getattr(self.train_set, "labels", None)
        self.test_set: Dataset | None = None
        if online_eval and labels is not None and self.has_test_split:
            self.test_set = self.split("test", "center")
        self.num_classes = int(getattr(self.train_set, "num_classes", 0) or 0)

    @property
    def has_test_split(self) -> bool:
        return self.is_synthetic or _test_dir(self.root) is not None

    def split(
        self,
        split: str,
        mode: str = "center",
        num_clips: int = 1,
        two_clips: bool = False,
        target: str = "motion",
    ) -> Dataset:
        """A split of the data as a data set of clips ``(uint8 [T, C, H, W] or
        [K, T, C, H, W], label)``; ``mode``/``num_clips`` as in
        :func:`~vislearn.data.video.dataset.clip_indices`, ``target="background"`` (synthetic only)
        labels each video with its background identity."""
        if split not in ("train", "test"):
            raise VislearnError(f"unknown split {split!r}; expected 'train' or 'test'")
        kw = {"frames": self.frames, "stride": self.frame_stride, "mode": mode}
        kw |= {"num_clips": num_clips, "two_clips": two_clips}
        if self.videos is not None:
            videos = self.videos[0 if split == "train" else 1]
            masks = self.mask_channel and split == "train" and mode == "random"
            return MotionClipDataset(videos, target=target, mask_channel=masks, **kw)
        if target != "motion":
            raise VislearnError(f"target {target!r} needs the synthetic motion set")
        root = self.root if split == "train" else _test_dir(self.root)
        if split == "train" and _test_dir(self.root) is not None:
            root = self.root / "train"
        if root is None:
            raise VislearnError(f"{self.root} has no test/ or val/ sub-folder")
        classes = find_videos(self.root / "train")[2] if split == "test" else None
        return VideoFolderDataset(
            root, size=self.image_size, channels=self.channels, classes=classes or None, **kw
        )


def _find_root(name: str, data_dir: str | os.PathLike | None) -> Path:
    candidates = [Path(name).expanduser()]
    if data_dir is not None and not Path(name).is_absolute():
        candidates.append(Path(data_dir).expanduser() / name)
    for path in candidates:
        if path.is_dir():
            return path
    raise VislearnError(
        f"unknown video data set {name!r}: not {SYNTHETIC_MOTION!r} and not an existing folder"
    )


def _test_dir(root: Path | None) -> Path | None:
    if root is None or not (root / "train").is_dir():
        return None
    for name in ("test", "val"):
        if (root / name).is_dir():
            return root / name
    return None
