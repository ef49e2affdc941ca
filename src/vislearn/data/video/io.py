"""Video data: clip sampling from frame folders and video files, class-folder data sets, and
clip-consistent batched augmentation.

Layouts (as for UCF101 / HMDB51 once extracted)::

    root/<class>/<video>/00001.jpg ...   a video is a folder of frames (jpg/png/...), or
    root/<class>/<video>.avi             a video file (avi, mp4, mkv, ...)
    root/<video>/... or root/<video>.mp4 unlabelled (no class level)

Frames are sorted by natural order (``frame_2`` before ``frame_10``). Video files are
decoded with PyAV (``av`` on PyPI): torchvision 0.29 no longer decodes video, and PyAV is
FFmpeg with its own wheels (no system FFmpeg), decodes and encodes (tests write their own
videos), and hands frames to NumPy without an extra image stack. It is imported lazily, so
frame folders work without it. A file is decoded from its first frame up to the last frame
a clip needs; for long videos extract frames to folders (faster random access).

A clip is a uint8 tensor ``[T, C, H, W]``. Clip sampling (:func:`clip_indices`): ``T``
frames ``stride`` apart; ``"random"`` start (training), ``"center"`` (single-clip test) or
``"uniform"`` (``num_clips`` evenly spaced clips, the multi-clip test protocol). A video
shorter than a clip repeats its last frame. ``two_clips`` gives two clips of the same video
at different start frames (contrastive training); a video with only one possible start
gives the same clip twice, as FAME's two-clip sampler reuses a clip.

:class:`ClipAugment` applies the image augmentations of :mod:`vislearn.data.augment` to a
batch of clips on the device, with one set of random parameters per clip (the same crop,
flip, colour jitter, grayscale and blur on every frame). Its two stages,
:meth:`ClipAugment.spatial` (uint8 ``[B, T, C, H, W]`` -> float ``[B, C, T, S, S]`` in [0, 1])
and :meth:`ClipAugment.photometric`, leave room for FAME between them
(:mod:`vislearn.data.video.fame`).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor, nn
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError
from vislearn.data.augment import (
    ViewConfig,
    _bernoulli,
    _blur,
    _uniform,
    color_jitter,
    crop_flip_theta,
    random_grayscale,
)
from vislearn.data.datasets import IMAGE_EXTENSIONS, _to_mode, serve_readable

__all__ = [
    "CLIP_MODES",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "VIDEO_EXTENSIONS",
    "ClipAugment",
    "VideoFolderDataset",
    "clip_indices",
    "count_frames",
    "find_videos",
    "list_frames",
    "read_clip",
    "read_video",
    "resize_clip",
    "write_video",
]

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".ogv", ".flv", ".wmv"}
)
CLIP_MODES: tuple[str, ...] = ("random", "center", "uniform")
_CONTAINERS = {".mkv": "matroska", ".m4v": "mp4", ".mpg": "mpeg", ".mpeg": "mpeg", ".ogv": "ogg"}
#: Kinetics-400 statistics, as used by FAME's and torchvision's video models.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


# ----------------------------------------------------------------------------- sampling


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


# ----------------------------------------------------------------------------- reading


def _natural_key(path: Path) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


def _is_image(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in (IMAGE_EXTENSIONS)
    )


def _is_video_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in (VIDEO_EXTENSIONS)
    )


def list_frames(directory: str | os.PathLike) -> list[Path]:
    """Image files directly in ``directory`` (hidden ones skipped), in natural order."""
    folder = Path(directory)
    if not folder.is_dir():
        raise VislearnError(f"frame folder does not exist: {folder}")
    return sorted((p for p in folder.iterdir() if _is_image(p)), key=_natural_key)


def _av() -> Any:
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise VislearnError(
            "reading video files needs PyAV: pip install av (or extract frames to folders)"
        ) from None
    return av


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames of a video file or frame folder.

    For files, the container's frame count when it has one, otherwise the number of video
    packets (no decoding). A file that FFmpeg cannot open or that has no video stream is a
    :class:`VislearnError`.
    """
    path = Path(path)
    if path.is_dir():
        return len(list_frames(path))
    if not path.is_file():
        raise VislearnError(f"video does not exist: {path}")
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VislearnError(f"no video stream in {path}")
            stream = container.streams.video[0]
            if stream.frames and stream.frames > 0:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except VislearnError:
        raise
    except Exception as exc:  # av.error.FFmpegError and friends
        raise VislearnError(f"cannot read video {path}: {exc}") from None


def _frame_array(img: Image.Image, channels: int) -> np.ndarray:
    arr = np.asarray(_to_mode(img, "L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _read_frame_files(files: Sequence[Path], indices: Sequence[int], channels: int) -> Tensor:
    cache: dict[int, np.ndarray] = {}
    out = []
    for i in indices:
        if i not in cache:
            try:
                with Image.open(files[i]) as opened:
                    cache[i] = _frame_array(ImageOps.exif_transpose(opened), channels)
            except Exception as exc:  # PIL raises many types for bad files
                raise VislearnError(f"cannot read frame {files[i]}: {exc}") from None
        out.append(cache[i])
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise VislearnError(f"frames of {files[0].parent} differ in size: {sorted(shapes)}")
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _read_file_frames(path: Path, indices: Sequence[int], channels: int) -> Tensor:
    av = _av()
    wanted = set(int(i) for i in indices)
    last = max(wanted)
    frames: dict[int, np.ndarray] = {}
    fmt = "gray" if channels == 1 else "rgb24"
    decoded = -1
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VislearnError(f"no video stream in {path}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            previous = None
            for decoded, frame in enumerate(container.decode(stream)):  # noqa: B007
                if decoded in wanted:
                    frames[decoded] = frame.to_ndarray(format=fmt)
                previous = frame
                if decoded >= last:
                    break
            if decoded >= 0 and decoded < last and previous is not None:
                frames.setdefault(decoded, previous.to_ndarray(format=fmt))
    except VislearnError:
        raise
    except Exception as exc:  # av.error.FFmpegError and friends
        raise VislearnError(f"cannot decode video {path}: {exc}") from None
    if decoded < 0:
        raise VislearnError(f"no frame could be decoded from {path}")
    # a file shorter than its header says: indices past the end repeat the last frame
    out = [frames[min(int(i), decoded)] for i in indices]
    arr = np.stack(out)
    if arr.ndim == 3:
        arr = arr[..., None]
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def read_clip(
    path: str | os.PathLike,
    indices: Sequence[int] | Tensor,
    channels: int = 3,
    frame_files: Sequence[Path] | None = None,
) -> Tensor:
    """Frames ``indices`` of a video file or frame folder, uint8 ``[len(indices), C, H, W]``.

    ``frame_files``: the folder's sorted frame list, if already known (saves a listing).
    """
    if channels not in (1, 3):
        raise VislearnError(f"channels must be 1 or 3, got {channels}")
    idx = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
    if not idx:
        raise VislearnError("read_clip needs at least one frame index")
    path = Path(path)
    if path.is_dir():
        files = list(frame_files) if frame_files is not None else list_frames(path)
        if not files:
            raise VislearnError(f"no frames in {path}")
        if min(idx) < 0 or max(idx) >= len(files):
            raise VislearnError(f"frame index out of range for {path} ({len(files)} frames)")
        return _read_frame_files(files, idx, channels)
    if not path.is_file():
        raise VislearnError(f"video does not exist: {path}")
    if min(idx) < 0:
        raise VislearnError("frame indices must be >= 0")
    return _read_file_frames(path, idx, channels)


def read_video(path: str | os.PathLike, channels: int = 3) -> Tensor:
    """Every frame of a video file or frame folder, uint8 ``[T, C, H, W]``."""
    return read_clip(path, range(count_frames(path)), channels)


def write_video(
    path: str | os.PathLike, frames: Tensor, fps: int = 25, codec: str | None = None
) -> Path:
    """Encode uint8 ``[T, C, H, W]`` frames (C = 1 or 3) to a video file with PyAV.

    ``codec=None`` picks lossless FFV1 for ``.avi``/``.mkv`` (exact round trip) and H.264
    (``libx264``, lossy) for ``.mp4``/``.mov``/``.m4v``. Sides are padded to even sizes for
    H.264. The file is written to a temporary name and renamed when complete.
    """
    from vislearn.core.utils import atomic_path

    av = _av()
    path = Path(path)
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise VislearnError(
            f"write_video needs uint8 [T, C, H, W] frames with C in (1, 3), got "
            f"{tuple(frames.shape)} {frames.dtype}"
        )
    if codec is None:
        codec = "libx264" if path.suffix.lower() in (".mp4", ".mov", ".m4v") else "ffv1"
    arr = frames.expand(-1, 3, -1, -1) if frames.shape[1] == 1 else frames
    arr = arr.permute(0, 2, 3, 1).contiguous().numpy()
    if codec != "ffv1":
        h, w = arr.shape[1:3]
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    suffix = path.suffix.lower()
    fmt = _CONTAINERS.get(suffix, suffix.lstrip(".")) or None
    try:
        with atomic_path(path) as tmp, av.open(str(tmp), "w", format=fmt) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.height, stream.width = arr.shape[1:3]
            stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
            for frame in arr:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    except Exception as exc:  # av.error.FFmpegError, ValueError for unknown formats/codecs
        raise VislearnError(f"cannot write video {path} with codec {codec}: {exc}") from None
    return path


def resize_frames(clip: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 ``[T, C, H, W]`` -> uint8 ``[T, C, *size]`` (bilinear, antialiased; the aspect
    ratio is not kept)."""
    if tuple(clip.shape[-2:]) == tuple(size):
        return clip.contiguous()
    x = F.interpolate(clip.float(), size=tuple(size), mode="bilinear", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def resize_clip(clip: Tensor, size: int) -> Tensor:
    """Resize a uint8 clip ``[T, C, H, W]`` so its shorter side is ``size`` (bilinear,
    antialiased) and centre-crop a ``size`` square."""
    t, c, h, w = clip.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = resize_frames(clip, (nh, nw))
    top, left = round((nh - size) / 2), round((nw - size) / 2)
    return x[:, :, top : top + size, left : left + size].contiguous()


# ----------------------------------------------------------------------------- data set


def _video_entry(path: Path) -> bool:
    """A video: a video file, or a folder with image files directly inside."""
    if _is_video_file(path):
        return True
    return (
        path.is_dir()
        and not path.name.startswith(".")
        and any(_is_image(p) for p in path.iterdir())
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
    for child in sorted(root.iterdir(), key=_natural_key):
        if child.name.startswith("."):
            continue
        if _video_entry(child):
            loose.append(child)
        elif child.is_dir():
            vids = sorted((p for p in child.iterdir() if _video_entry(p)), key=_natural_key)
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


# ----------------------------------------------------------------------------- augmentation


class ClipAugment(nn.Module):
    """Batched clip augmentation with one set of random parameters per clip.

    ``forward(clips, g)`` = ``normalize(photometric(spatial(clips, g), g))``; call the stages
    yourself to insert FAME after :meth:`spatial` (FAME needs un-normalised [0, 1] clips).

    Args:
        cfg: the image :class:`~vislearn.data.augment.ViewConfig` (crop scale/ratio, flip,
            colour jitter, grayscale, blur; solarisation is applied too if set). FAME's
            recipe is the default ``ViewConfig()`` (crop 0.2-1, jitter 0.4/0.4/0.4/0.1 with
            p 0.8, grayscale 0.2, blur 0.5 with sigma 0.1-2).
        size: output side ``S``; the blur kernel is ``2 * floor(0.1 * S / 2) + 1`` (at least 3).
        channels: 1 or 3.
        mean, std: normalisation (default :data:`KINETICS_MEAN`/:data:`KINETICS_STD` for 3
            channels, 0.5/0.25 for 1).
    """

    def __init__(
        self,
        cfg: ViewConfig | None = None,
        size: int = 112,
        channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = ViewConfig() if cfg is None else cfg
        self.size, self.channels = size, channels
        if mean is None:
            mean = KINETICS_MEAN if channels == 3 else (0.5,)
        if std is None:
            std = KINETICS_STD if channels == 3 else (0.25,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1, 1), persistent=False)

    def spatial(self, clips: Tensor, g: torch.Generator) -> Tensor:
        """uint8 (or [0, 1] float) ``[B, T, C, H, W]`` -> float ``[B, C, T, S, S]`` in [0, 1]:
        random resized crop + horizontal flip, identical for every frame of a clip."""
        if clips.ndim != 5:
            raise VislearnError(f"clips must be [B, T, C, H, W], got {tuple(clips.shape)}")
        b, t, c = clips.shape[:3]
        x = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips.float()
        cfg = self.cfg
        theta = crop_flip_theta(b, cfg.crop_scale, cfg.crop_ratio, cfg.hflip_p, g)
        theta = theta.repeat_interleave(t, 0).to(x)
        frames = x.reshape(b * t, c, *x.shape[-2:])
        grid = F.affine_grid(theta, [b * t, c, self.size, self.size], align_corners=False)
        out = F.grid_sample(
            frames, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        return out.view(b, t, c, self.size, self.size).transpose(1, 2).clamp(0, 1)

    def photometric(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Colour jitter, grayscale, blur (and solarisation) of float ``[B, C, T, H, W]`` in
        [0, 1], with the same parameters for all frames of a clip (contrast uses the clip's
        mean gray)."""
        b, c, t, h, w = x.shape
        cfg = self.cfg
        y = x.reshape(b, c, t * h, w)  # fold time into height: per-pixel ops see one image
        y = color_jitter(y, cfg.jitter, cfg.jitter_p, g)
        y = random_grayscale(y, cfg.gray_p, g)
        y = y.view(b, c, t, h, w)
        if cfg.blur_p > 0:
            on = _bernoulli(b, cfg.blur_p, g).to(x.device).view(-1, 1, 1, 1, 1)
            sigma = _uniform(b, *cfg.blur_sigma, g).repeat_interleave(t)
            frames = y.transpose(1, 2).reshape(b * t, c, h, w)
            blurred = _blur(frames, sigma).view(b, t, c, h, w).transpose(1, 2)
            y = torch.where(on, blurred, y)
        if cfg.solarize_p > 0:
            on = _bernoulli(b, cfg.solarize_p, g).to(x.device).view(-1, 1, 1, 1, 1)
            y = torch.where(on & (y >= 0.5), 1.0 - y, y)
        return y

    def normalize(self, x: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` in [0, 1] -> normalised."""
        return (x - self.mean) / self.std

    def forward(self, clips: Tensor, g: torch.Generator) -> Tensor:
        return self.normalize(self.photometric(self.spatial(clips, g), g))
