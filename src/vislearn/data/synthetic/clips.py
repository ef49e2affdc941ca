"""Serving and writing motion clips: :class:`MotionClipDataset` and
:func:`write_video_folders` (UCF101-style class folders of frame folders or video files)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError
from vislearn.core.utils import write_json
from vislearn.data.synthetic.motion import MotionVideos
from vislearn.data.video.dataset import clip_indices
from vislearn.data.video.io import write_video

__all__ = ["MotionClipDataset", "write_video_folders"]


class MotionClipDataset(Dataset):
    """Serves a :class:`MotionVideos` set.

    Items are ``(clip, label)`` with ``clip`` uint8 ``[T, C, H, W]`` (after ``transform``),
    or ``(clip, label, masks)`` with ``return_masks=True`` (masks uint8 ``[T, H, W]``).
    ``target="background"`` makes the label the background identity (for a background-only
    probe) instead of the motion class.

    With ``frames`` set, each item is a sub-clip of ``frames`` frames ``stride`` apart,
    sampled as in :func:`vislearn.data.video.dataset.clip_indices` (``mode``, ``num_clips``);
    ``two_clips=True`` gives two sub-clips at different starts (``[2, frames, C, H, W]``, as
    for contrastive training; the masks follow the same frames). Every motion class moves
    the same way throughout a clip, so a sub-clip keeps its label.
    """

    def __init__(
        self,
        videos: MotionVideos,
        transform: Callable[[Tensor], Any] | None = None,
        return_masks: bool = False,
        target: str = "motion",
        frames: int | None = None,
        stride: int = 1,
        mode: str = "random",
        num_clips: int = 1,
        two_clips: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if target not in ("motion", "background"):
            raise VislearnError(f"unknown target {target!r}; use 'motion' or 'background'")
        self.videos = videos
        self.transform = transform
        self.return_masks = return_masks
        self.target = target
        source = videos.labels if target == "motion" else videos.backgrounds
        self.labels = source.numpy().astype(np.int64)
        self.classes = list(videos.classes) if target == "motion" else list(videos.background_names)
        self.num_classes = len(self.classes)
        self.channels = int(videos.clips.shape[2])
        self.image_size = int(videos.clips.shape[-1])
        self.sampled = frames is not None or two_clips or num_clips > 1
        self.frames = int(videos.clips.shape[1]) if frames is None else frames
        self.stride, self.mode, self.generator = stride, mode, generator
        self.two_clips = two_clips
        self.num_clips = 2 if two_clips else num_clips
        if self.sampled:
            clip_indices(int(videos.clips.shape[1]), self.frames, stride, mode, self.num_clips)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        clip = self.videos.clips[index]
        masks = self.videos.masks[index]
        if self.sampled:
            mode = "random" if self.two_clips else self.mode
            idx = clip_indices(
                clip.shape[0],
                self.frames,
                self.stride,
                mode,
                self.num_clips,
                self.two_clips,
                self.generator,
            )
            clip, masks = clip[idx], masks[idx]
            if self.num_clips == 1:
                clip, masks = clip[0], masks[0]
        else:
            clip, masks = clip.clone(), masks.clone()
        if self.transform is not None:
            clip = self.transform(clip)
        label = int(self.labels[index])
        if self.return_masks:
            return clip, label, masks
        return clip, label


def write_video_folders(
    videos: MotionVideos,
    root: str | os.PathLike,
    format: str = "frames",
    ext: str = ".png",
    mask_root: str | os.PathLike | None = None,
    fps: int = 25,
) -> list[Path]:
    """Write a set as UCF101-style class folders: ``root/<class>/<video>`` .

    Args:
        videos: the set.
        root: output folder (created; existing videos of the same name are overwritten).
        format: ``"frames"`` (``<video>/00000.png``...; PNG is lossless so the readers of
            :mod:`vislearn.data.video.io` give back the exact clips) or ``"video"``
            (``<video>.avi``, lossless FFV1 through PyAV).
        ext: frame file extension for ``"frames"`` (``.png`` lossless, ``.jpg`` smaller).
        mask_root: if given, masks go to ``mask_root/<class>/<video>/00000.png`` (pixel value
            = object id).
        fps: frame rate of video files.

    Also writes ``root/videos.json`` (classes, and per video its label, background and path).

    Returns:
        The path of every video, in set order.
    """
    if format not in ("frames", "video"):
        raise VislearnError(f"unknown format {format!r}; use 'frames' or 'video'")
    root = Path(root)
    width = max(5, len(str(len(videos) - 1)))
    paths: list[Path] = []
    records = []
    for i in range(len(videos)):
        cls = videos.classes[int(videos.labels[i])]
        name = f"v{i:0{width}d}"
        clip = videos.clips[i].permute(0, 2, 3, 1).numpy()  # T, H, W, C
        if format == "frames":
            target = root / cls / name
            target.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(clip):
                img = Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)
                img.save(target / f"{t:05d}{ext}")
        else:
            target = root / cls / f"{name}.avi"
            write_video(target, videos.clips[i], fps=fps)
        if mask_root is not None:
            mdir = Path(mask_root) / cls / name
            mdir.mkdir(parents=True, exist_ok=True)
            for t, m in enumerate(videos.masks[i].numpy()):
                Image.fromarray(m).save(mdir / f"{t:05d}.png")
        paths.append(target)
        records.append(
            {
                "path": str(target.relative_to(root)),
                "label": int(videos.labels[i]),
                "class": cls,
                "background": int(videos.backgrounds[i]),
            }
        )
    write_json(
        root / "videos.json",
        {
            "classes": list(videos.classes),
            "background_names": videos.background_names,
            "settings": videos.settings,
            "videos": records,
        },
    )
    return paths
