"""Video decoding, reading and writing: frame listing in natural order, frame folders and video
files (PyAV), resizing.

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

A clip is a uint8 tensor ``[T, C, H, W]``. Clip sampling and the class-folder data set are in
:mod:`vislearn.data.video.dataset`, clip-consistent batched augmentation in
:mod:`vislearn.data.video.augment`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.datasets import IMAGE_EXTENSIONS, to_mode

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "VIDEO_EXTENSIONS",
    "count_frames",
    "is_image_file",
    "is_video_file",
    "list_frames",
    "natural_key",
    "read_clip",
    "read_video",
    "resize_clip",
    "write_video",
]

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".ogv", ".flv", ".wmv"}
)


_CONTAINERS = {".mkv": "matroska", ".m4v": "mp4", ".mpg": "mpeg", ".mpeg": "mpeg", ".ogv": "ogg"}


#: Kinetics-400 statistics, as used by FAME's and torchvision's video models.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)


KINETICS_STD = (0.22803, 0.22145, 0.216989)


def natural_key(path: Path) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


def is_image_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in (IMAGE_EXTENSIONS)
    )


def is_video_file(path: Path) -> bool:
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
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=natural_key)


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
    arr = np.asarray(to_mode(img, "L" if channels == 1 else "RGB"), dtype=np.uint8)
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
