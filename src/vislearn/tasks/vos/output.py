"""Writing and drawing SSL-UVOS results: DAVIS-layout palette PNGs (:func:`write_masks`),
overlay strips (:func:`overlay_strip`) and overlay videos (:func:`save_overlay_video`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.video.davis import davis_palette, write_label_png

__all__ = ["overlay_strip", "save_overlay_video", "write_masks"]


def write_masks(
    out_dir: str | os.PathLike, labels: Tensor, names: Sequence[str] | None = None
) -> list[Path]:
    """One palette PNG per frame in ``out_dir`` (DAVIS layout: index = object ID, DAVIS
    colours), each written atomically. ``labels``: integer ``[T, H, W]`` with IDs 0..255;
    ``names``: one per frame (a file name or stem; the suffix becomes ``.png``), default
    ``00000.png``, ``00001.png``, ... Returns the paths."""
    lab = torch.as_tensor(labels)
    if lab.dim() != 3:
        raise VislearnError(f"labels must be [T, H, W], got {tuple(lab.shape)}")
    if lab.is_floating_point() or lab.dtype == torch.bool:
        raise VislearnError(f"labels must hold integer IDs, got {lab.dtype}")
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) > 255):
        raise VislearnError(
            f"label IDs {int(lab.min())}..{int(lab.max())} do not fit a palette PNG (0..255)"
        )
    t = lab.shape[0]
    if names is None:
        files = [f"{i:05d}.png" for i in range(t)]
    else:
        if len(names) != t:
            raise VislearnError(f"{len(names)} names for {t} frames")
        files = [Path(str(nm)).stem + ".png" for nm in names]
        if len(set(files)) != t:
            raise VislearnError("frame names are not unique")
    out = Path(out_dir)
    arr = lab.cpu().to(torch.uint8).numpy()
    paths = []
    for i, name in enumerate(files):
        path = out / name
        write_label_png(path, arr[i])
        paths.append(path)
    return paths


def _rgb_uint8(frames: Tensor) -> Tensor:
    """``[T, C, H, W]`` uint8 or [0, 1] floats -> uint8 ``[T, H, W, 3]``."""
    if frames.dim() != 4 or frames.shape[1] not in (1, 3):
        raise VislearnError(f"frames must be [T, C, H, W] with C in (1, 3), got {frames.shape}")
    if frames.dtype != torch.uint8:
        frames = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).cpu()


def _blend(image: Tensor, labels: Tensor, alpha: float) -> Tensor:
    """uint8 ``[H, W, 3]`` with every labelled region tinted by its DAVIS colour (``alpha``)
    and outlined in it (pixels with a 4-neighbour of another label)."""
    lab = labels.long().cpu()
    pal = torch.from_numpy(davis_palette(max(256, int(lab.max()) + 1)))
    colour = pal[lab].float()
    img = image.float()
    fg = (lab > 0)[..., None]
    out = torch.where(fg, (1 - alpha) * img + alpha * colour, img)
    edge = torch.zeros_like(lab, dtype=torch.bool)
    dv, dh = lab[1:] != lab[:-1], lab[:, 1:] != lab[:, :-1]
    edge[1:] |= dv
    edge[:-1] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    contour = (edge & (lab > 0))[..., None]
    out = torch.where(contour, colour, out)
    return out.round().clamp(0, 255).to(torch.uint8)


def _check_pair(frames: Tensor, labels: Tensor) -> Tensor:
    rgb = _rgb_uint8(frames)
    lab = torch.as_tensor(labels)
    if lab.shape != rgb.shape[:3]:
        raise VislearnError(
            f"labels {tuple(lab.shape)} do not match frames {tuple(rgb.shape[:3])} ([T, H, W])"
        )
    return rgb


def overlay_strip(
    frames: Tensor,
    labels: Tensor,
    every: int | None = None,
    max_frames: int = 8,
    alpha: float = 0.5,
    gap: int = 2,
) -> Tensor:
    """Frames side by side with their masks blended (``alpha``) and outlined, uint8
    ``[H, n W + (n - 1) gap, 3]`` (white gaps). Frames ``0, every, 2 every, ...`` or, with
    ``every=None``, ``max_frames`` evenly spaced ones; at most ``max_frames``."""
    rgb = _check_pair(frames, labels)
    t = rgb.shape[0]
    if max_frames < 1:
        raise VislearnError(f"max_frames must be >= 1, got {max_frames}")
    if every is None:
        idx = sorted(set(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int).tolist()))
    else:
        if every < 1:
            raise VislearnError(f"every must be >= 1, got {every}")
        idx = list(range(0, t, every))[:max_frames]
    tiles = []
    for j, i in enumerate(idx):
        if j and gap:
            tiles.append(torch.full((rgb.shape[1], gap, 3), 255, dtype=torch.uint8))
        tiles.append(_blend(rgb[i], labels[i], alpha))
    return torch.cat(tiles, dim=1)


def save_overlay_video(
    path: str | os.PathLike, frames: Tensor, labels: Tensor, fps: int = 10, alpha: float = 0.5
) -> Path:
    """Write every frame with its blended, outlined masks as a video file
    (:func:`vislearn.data.video.io.write_video`; ``.mp4`` H.264, ``.avi``/``.mkv`` FFV1)."""
    from vislearn.data.video.io import write_video

    rgb = _check_pair(frames, labels)
    out = torch.stack([_blend(rgb[i], labels[i], alpha) for i in range(rgb.shape[0])])
    return write_video(path, out.permute(0, 3, 1, 2).contiguous(), fps=fps)
