"""Clip sampling and class-folder video data sets.

Clip sampling (:func:`clip_indices`): ``T`` frames ``stride`` apart; ``"random"`` start
(training), ``"center"`` (single-clip test) or ``"uniform"`` (``num_clips`` evenly spaced
clips, the multi-clip test protocol). A video shorter than a clip repeats its last frame.
``two_clips`` gives two clips of the same video at different start frames (contrastive
training); a video with only one possible start gives the same clip twice, as FAME's two-clip
sampler reuses a clip. :func:`find_videos` scans a root of class folders (layouts in
:mod:`vislearn.data.video.io`); :class:`VideoFolderDataset` serves clips from it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError
from vislearn.data.datasets import IMAGE_EXTENSIONS, serve_readable
from vislearn.data.video.io import (
    VIDEO_EXTENSIONS,
    count_frames,
    is_image_file,
    is_video_file,
    list_frames,
    natural_key,
    read_clip,
    resize_clip,
)

__all__ = ["CLIP_MODES", "VideoFolderDataset", "clip_indices", "find_videos"]

CLIP_MODES: tuple[str, ...] = ("random", "center", "uniform")


def clip_indices(
    num_frames: int,
    frames: int,
    stride: int = 1,
    mode: str = "random",
    num_clips: int = 1,
    distinct: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Frame indices of clips, int64 ``[num_clips, frames]``.

    A clip spans ``(frames - 1) * stride + 1`` frames; its start is one of the
    ``max(num_frames - span + 1, 1)`` positions that fit.

    Args:
        num_frames: frames in the video (>= 1).
        frames: frames per clip ``T``.
        stride: step between sampled frames.
        mode: ``"random"`` (starts uniform), ``"center"`` (the middle position, ``num_clips``
            copies) or ``"uniform"`` (``num_clips`` evenly spaced from first to last).
        num_clips: clips to return.
        distinct: ``"random"`` only: draw starts without replacement when enough positions
            exist (otherwise with replacement, e.g. the same clip twice for a short video).
        generator: random source; ``None`` uses torch's global one (seeded per DataLoader
            worker).

    Indices past the end (video shorter than a span) repeat the last frame.
    """
    if num_frames < 1:
        raise VislearnError("cannot sample a clip from a video with no frames")
    for name, value in (("frames", frames), ("stride", stride), ("num_clips", num_clips)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VislearnError(f"{name} must be a positive integer, got {value!r}")
    if mode not in CLIP_MODES:
        raise VislearnError(f"unknown clip mode {mode!r}; choose from {list(CLIP_MODES)}")
    span = (frames - 1) * stride + 1
    positions = max(num_frames - span + 1, 1)
    if mode == "random":
        if distinct and positions >= num_clips:
            starts = torch.randperm(positions, generator=generator)[:num_clips]
        else:
            starts = torch.randint(0, positions, (num_clips,), generator=generator)
    elif mode == "center":
        starts = torch.full((num_clips,), (positions - 1) // 2)
    else:
        starts = torch.linspace(0, positions - 1, num_clips).round().long()
    idx = starts.view(-1, 1) + stride * torch.arange(frames).view(1, -1)
    return idx.clamp(max=num_frames - 1).long()


def _video_entry(path: Path) -> bool:
    """A video: a video file, or a folder with image files directly inside."""
    if is_video_file(path):
        return True
    return (
        path.is_dir()
        and not path.name.startswith(".")
        and any(is_image_file(p) for p in path.iterdir())
    )


def find_videos(root: str | os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """Scan a video root: ``(videos, labels, classes)``.

    A child of ``root`` that is a video (file, or folder holding frames) makes the set
    unlabelled (labels ``-1``, no classes); a child folder holding videos is a class. When
    both exist, class folders win and the loose videos are ignored with a warning.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise VislearnError(f"video folder does not exist: {root}")
    if not root.is_dir():
        raise VislearnError(f"not a folder: {root}")
    loose: list[Path] = []
    per_class: dict[str, list[Path]] = {}
    for child in sorted(root.iterdir(), key=natural_key):
        if child.name.startswith("."):
            continue
        if _video_entry(child):
            loose.append(child)
        elif child.is_dir():
            vids = sorted((p for p in child.iterdir() if _video_entry(p)), key=natural_key)
            if vids:
                per_class[child.name] = vids
    if not per_class:
        return loose, [-1] * len(loose), []
    if loose:
        warnings.warn(
            f"{root} has class folders; ignoring {len(loose)} video(s) directly inside it",
            stacklevel=3,
        )
    classes = sorted(per_class)
    videos: list[Path] = []
    labels: list[int] = []
    for i, name in enumerate(classes):
        videos.extend(per_class[name])
        labels.extend([i] * len(per_class[name]))
    return videos, labels, classes


class VideoFolderDataset(Dataset):
    """Clips from a folder of videos (class folders -> labelled; see the module docstring).

    Items are ``(clip, label)``: ``clip`` uint8 ``[T, C, H, W]``; with ``num_clips > 1``
    (``"uniform"`` test clips, or several random ones) or ``two_clips=True`` it is
    ``[K, T, C, H, W]`` (``K = 2`` for two clips); ``label`` is ``-1`` when unlabelled.

    Each video is probed once at construction (frame count; an unreadable or empty video is
    skipped with a warning, and an error is raised if none is left). A video that fails
    later is reported once, counted in ``failed`` and replaced by the next one, so an epoch
    does not crash on one bad file.

    Args:
        root: the folder.
        frames, stride: clip length and frame step.
        mode: ``"random"``, ``"center"`` or ``"uniform"`` (see :func:`clip_indices`).
        num_clips: clips per item.
        two_clips: two random clips of the same video at different starts (reused when the
            video has a single start position); overrides ``mode``/``num_clips``.
        size: shorter side resized to ``size`` and centre-cropped (``None``: native size).
        channels: 1 or 3.
        classes: a fixed class list (e.g. the train split's) so that labels agree across
            splits; a class folder outside it is an error.
        transform: applied to the uint8 clip (or stack of clips).
        generator: random source for clip starts (``None``: torch's global RNG, which
            DataLoader seeds per worker).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        frames: int = 16,
        stride: int = 1,
        mode: str = "random",
        num_clips: int = 1,
        two_clips: bool = False,
        size: int | None = None,
        channels: int = 3,
        classes: Sequence[str] | None = None,
        transform: Callable[[Tensor], Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if channels not in (1, 3):
            raise VislearnError(f"channels must be 1 or 3, got {channels}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise VislearnError(f"size must be a positive integer, got {size!r}")
        clip_indices(1, frames, stride, mode, num_clips)  # validates the clip settings
        self.frames, self.stride, self.mode = frames, stride, mode
        self.num_clips = 2 if two_clips else num_clips
        self.two_clips = two_clips
        self.size, self.channels = size, channels
        self.transform, self.generator = transform, generator

        videos, labels, found = find_videos(self.root)
        if classes is not None and found:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise VislearnError(
                    f"{self.root} has class folder(s) {unknown} not among the expected "
                    f"classes {list(classes)}"
                )
            index = {name: i for i, name in enumerate(classes)}
            labels = [index[found[y]] for y in labels]
            found = list(classes)
        self.classes: list[str] = found
        self.samples: list[tuple[Path, int, int]] = []  # path, label, frame count
        self._frame_files: dict[int, list[Path]] = {}
        self.skipped: list[str] = []
        for path, label in zip(videos, labels, strict=True):
            try:
                n = count_frames(path)
            except VislearnError:
                n = 0
            if n < 1:
                self.skipped.append(str(path))
                continue
            self.samples.append((path, label, n))
        if self.skipped:
            names = ", ".join(Path(s).name for s in self.skipped[:5])
            more = " ..." if len(self.skipped) > 5 else ""
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable or empty video(s) in {self.root}: "
                f"{names}{more}",
                stacklevel=2,
            )
        if not self.samples:
            raise VislearnError(
                f"no videos found in {self.root} (frame folders of "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))} or files of "
                f"{', '.join(sorted(VIDEO_EXTENSIONS))})"
                + (f"; {len(self.skipped)} unreadable or empty skipped" if self.skipped else "")
            )
        self.num_classes = len(self.classes)
        self.labels: np.ndarray | None = (
            np.array([y for _, y, _ in self.samples], dtype=np.int64) if self.classes else None
        )
        self.failed = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def indices(self, index: int) -> Tensor:
        """Frame indices ``[K, T]`` for one draw of video ``index``'s clip(s)."""
        n = self.samples[index][2]
        if self.two_clips:
            return clip_indices(n, self.frames, self.stride, "random", 2, True, self.generator)
        return clip_indices(
            n, self.frames, self.stride, self.mode, self.num_clips, False, self.generator
        )

    def _load(self, i: int) -> Tensor:
        path, _, _ = self.samples[i]
        idx = self.indices(i)
        files = None
        if path.is_dir():
            files = self._frame_files.get(i)
            if files is None:
                files = self._frame_files.setdefault(i, list_frames(path))
        flat = read_clip(path, idx.flatten(), self.channels, frame_files=files)
        if self.size is not None:
            flat = resize_clip(flat, self.size)
        clips = flat.view(idx.shape[0], idx.shape[1], *flat.shape[1:])
        return clips if self.num_clips > 1 else clips[0]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return serve_readable(self, index)
