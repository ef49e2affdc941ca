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

    **Two-half videos** (``videos.settings["halves"] == 2``, the appearance-swap design of
    :func:`~vislearn.data.synthetic.swap.appearance_swap_videos`): every clip lies inside one
    half (a clip never spans the cut). ``two_clips`` takes one clip from each half (random
    starts within the halves, the halves' order random), so the two clips share trajectory and
    background, not appearance, and never a frame; ``"random"`` picks a random half,
    ``"center"`` the centre of the first half, ``"uniform"`` alternates halves (uniform starts
    within each). ``last_indices`` keeps the frame indices of the latest item.

    ``mask_channel=True`` appends the item's foreground (mask > 0, as 0/255) to the clip as an
    extra channel (``[..., C + 1, H, W]``): ground-truth masks that travel through the same
    crops as the pixels (FAME with ground-truth masks).
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
        mask_channel: bool = False,
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
        self.mask_channel = mask_channel
        self.halves = int(videos.settings.get("halves", 1))
        self.last_indices: Tensor | None = None
        length = int(videos.clips.shape[1]) // self.halves
        if self.halves > 1 and (self.frames - 1) * stride + 1 > length:
            raise VislearnError(
                f"clips of {self.frames} frames (stride {stride}) do not fit in a half of "
                f"{length} frames"
            )
        if self.sampled:
            clip_indices(length, self.frames, stride, mode, self.num_clips)

    def indices(self, num_frames: int) -> Tensor:
        """Frame indices ``[K, T]`` of one draw (see the class docstring)."""
        if self.halves == 1:
            mode = "random" if self.two_clips else self.mode
            return clip_indices(
                num_frames, self.frames, self.stride, mode, self.num_clips, self.two_clips,
                self.generator,
            )  # fmt: skip
        length = num_frames // self.halves
        g, t, s = self.generator, self.frames, self.stride
        if self.two_clips:
            order = torch.randperm(self.halves, generator=g)[:2]
            starts = [clip_indices(length, t, s, "random", 1, False, g) for _ in order]
            return torch.cat([i + int(h) * length for i, h in zip(starts, order, strict=True)])
        if self.mode == "random":
            h = int(torch.randint(0, self.halves, (1,), generator=g))
            return clip_indices(length, t, s, "random", self.num_clips, False, g) + h * length
        if self.mode == "center":
            return clip_indices(length, t, s, "center", self.num_clips)
        per_half = -(-self.num_clips // self.halves)
        base = clip_indices(length, t, s, "uniform", per_half)
        idx = [base[j // self.halves] + (j % self.halves) * length for j in range(self.num_clips)]
        return torch.stack(idx)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        clip = self.videos.clips[index]
        masks = self.videos.masks[index]
        if self.sampled:
            idx = self.indices(int(clip.shape[0]))
            self.last_indices = idx
            clip, masks = clip[idx], masks[idx]
            if self.num_clips == 1:
                clip, masks = clip[0], masks[0]
        else:
            clip, masks = clip.clone(), masks.clone()
        if self.mask_channel:
            fg = (masks > 0).to(torch.uint8).mul(255).unsqueeze(-3)
            clip = torch.cat([clip, fg], -3)
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
