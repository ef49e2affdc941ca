"""``vislearn video-seg``: unsupervised video object segmentation with a trained SSL-UVOS
block (:func:`vislearn.vos.segment.segment_video`).

vislearn video-seg VIDEO_OR_FRAMES --weights dino_deitsmall8_pretrain.pth \\
    --block block.safetensors --arch dino_vits8 --out DIR [--resolution 320 480] [--overlay]

writes ``DIR/<name>/<frame>.png`` (DAVIS palette PNGs; frame-folder inputs keep their frame
names, video files get ``00000.png`` ...) and, with ``--overlay``, ``DIR/<name>_overlay.png``.

This module imports nothing heavy at import time (the main CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
import inspect
import math
from pathlib import Path
from typing import Any

__all__ = ["DINO_ARCHS", "add_video_seg_parser", "build_vit", "run_video_seg"]

#: DINO model names -> (vislearn backbone, patch size).
DINO_ARCHS: dict[str, tuple[str, int]] = {
    "dino_vits8": ("vit_small", 8),
    "dino_vits16": ("vit_small", 16),
    "dino_vitb8": ("vit_base", 8),
    "dino_vitb16": ("vit_base", 16),
}


def add_video_seg_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``vislearn video-seg`` on the main CLI's sub-parsers."""
    p = sub.add_parser(
        "video-seg",
        help="segment a video with a trained SSL-UVOS block (DAVIS-style mask PNGs)",
        description="Cluster the spatio-temporal attention of a trained SSL-UVOS block over a "
        "whole video into temporally consistent segments and write one mask PNG per frame.",
    )
    p.add_argument("input", metavar="VIDEO_OR_FRAMES", help="a video file or a folder of frames")
    p.add_argument("--weights", required=True, help="the frozen ViT's weights (local file)")
    p.add_argument("--block", required=True, help="the trained spatio-temporal block's weights")
    p.add_argument(
        "--arch",
        default="dino_vits8",
        help="ViT: dino_vits8 (default), dino_vits16, dino_vitb8, dino_vitb16, or a vislearn "
        "backbone name such as vit_small (with --patch-size)",
    )
    p.add_argument("--patch-size", type=int, help="patch size for a vislearn backbone name")
    p.add_argument("--block-heads", type=int, help="the block's heads, if its file does not say")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--resolution",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="ViT input size, multiples of the patch size (default: native size floored to "
        "them; the official evaluation uses 320 480)",
    )
    p.add_argument("--key-stride", type=int, default=10, help="every r-th frame is a key frame")
    p.add_argument("--tau", type=float, default=1.0, help="symmetric-KL threshold (default 1)")
    p.add_argument("--window", type=int, default=3, help="frames per level-1 window (leader)")
    p.add_argument("--clusters", choices=["leader", "agglomerative"], default="leader")
    p.add_argument("--num-clusters", type=int, help="agglomerative: number of clusters")
    p.add_argument("--objects", choices=["motion", "all", "salient"], default="motion")
    p.add_argument("--max-objects", type=int, help="at most this many object IDs")
    p.add_argument("--motion-threshold", type=float, default=1.5, help="motion rule: score to keep")
    p.add_argument("--overlay", action="store_true", help="also write DIR/<name>_overlay.png")
    p.add_argument("--overlay-video", action="store_true", help="also write DIR/<name>_overlay.mp4")
    p.add_argument("--chunk", type=int, default=4096, help="tokens per descriptor block")
    p.add_argument("--batch-size", type=int, default=8, help="frames per ViT forward")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    return p


def _pos_grid(path: Path) -> int | None:
    """Side of the square positional-embedding grid stored in a weights file, if any."""
    from vislearn.models.weights import read_state_file, unwrap_state_dict

    sd = unwrap_state_dict(read_state_file(path))
    for key, value in sd.items():
        if key.endswith("pos_embed") and value.dim() == 3:
            g = math.isqrt(value.shape[1] - 1)
            if g * g == value.shape[1] - 1:
                return g
    return None


def build_vit(arch: str, weights: str | Path, patch_size: int | None = None):
    """The frozen ViT key extractor: ``arch`` built with ``vislearn.models.create_backbone``
    (its training size taken from the file's positional embedding) and loaded strictly."""
    from vislearn.errors import VislearnError
    from vislearn.models import create_backbone
    from vislearn.models.weights import load_weights
    from vislearn.vos.features import ViTKeyFeatures

    weights = Path(weights)
    if not weights.is_file():
        raise VislearnError(f"ViT weights file not found: {weights}")
    name, patch = DINO_ARCHS.get(arch, (arch, patch_size))
    if arch in DINO_ARCHS and patch_size not in (None, patch):
        raise VislearnError(f"{arch} has patch size {patch}, not {patch_size}")
    kwargs: dict[str, Any] = {"in_chans": 3}
    if patch is not None:
        kwargs["patch_size"] = patch
    vit = create_backbone(name, **kwargs)
    grid = _pos_grid(weights)
    if grid is not None and grid != getattr(vit, "grid", grid):
        vit = create_backbone(name, img_size=grid * vit.patch_size, **kwargs)
    load_weights(vit, weights)
    return ViTKeyFeatures(vit)


def _fallback_load_block(path: Path, num_heads: int | None):
    # TODO: remove once vislearn.vos.train.load_block is merged (it owns the block formats).
    from vislearn.errors import VislearnError
    from vislearn.models.weights import (
        load_weights,
        read_state_file,
        safetensors_metadata,
        unwrap_state_dict,
    )
    from vislearn.vos.block import SpatioTemporalBlock

    sd = unwrap_state_dict(read_state_file(path))
    norm = next((v for k, v in sd.items() if k.endswith("norm1.weight")), None)
    fc1 = next((v for k, v in sd.items() if k.endswith("mlp.0.weight")), None)
    if norm is None or fc1 is None:
        raise VislearnError(f"{path} does not hold a spatio-temporal block (no norm1/mlp keys)")
    if num_heads is None and path.suffix == ".safetensors":
        meta = safetensors_metadata(path).get("num_heads")
        num_heads = int(meta) if meta and meta.isdigit() else None
    dim = norm.shape[0]
    block = SpatioTemporalBlock(
        dim,
        num_heads or 8,
        mlp_ratio=fc1.shape[0] / dim,
        qkv_bias=any(k.endswith("qkv.bias") for k in sd),
    )
    return load_weights(block, path)


def load_block_file(path: str | Path, num_heads: int | None = None):
    """The trained block, through ``vislearn.vos.train.load_block`` (a minimal stand-in
    until that module exists)."""
    from vislearn.errors import VislearnError

    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"block weights file not found: {path}")
    try:
        from vislearn.vos.train import load_block
    except ImportError:
        return _fallback_load_block(path, num_heads)
    params = inspect.signature(load_block).parameters
    if num_heads is not None and "num_heads" in params:
        return load_block(path, num_heads=num_heads)
    return load_block(path)


def _read_input(path: Path):
    """Frames uint8 ``[T, C, H, W]``, output frame names (or ``None``) and the video name."""
    from vislearn.data.video import _is_video_file, list_frames, read_clip, read_video
    from vislearn.errors import VislearnError

    if path.is_dir():
        files = list_frames(path)
        if not files:
            raise VislearnError(f"no frames (image files) in {path}")
        return read_clip(path, range(len(files)), 3, frame_files=files), [f.stem for f in files]
    if not path.exists():
        raise VislearnError(f"input does not exist: {path}")
    if not _is_video_file(path):
        raise VislearnError(f"{path} is neither a video file nor a folder of frames")
    return read_video(path, 3), None


def run_video_seg(a: argparse.Namespace) -> None:
    import torch

    from vislearn.errors import VislearnError
    from vislearn.vos.segment import (
        ObjectRule,
        overlay_strip,
        save_overlay_video,
        segment_video,
        write_masks,
    )

    src = Path(a.input).expanduser()
    name = src.name if src.is_dir() else src.stem
    frames, names = _read_input(src)
    features = build_vit(a.arch, Path(a.weights).expanduser(), a.patch_size)
    block = load_block_file(Path(a.block).expanduser(), a.block_heads)
    if block.dim != features.dim:
        raise VislearnError(
            f"block {a.block} is {block.dim} wide but the {a.arch} ViT is {features.dim} wide"
        )
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rule = ObjectRule(
        mode=a.objects, motion_threshold=a.motion_threshold, max_objects=a.max_objects
    )
    block.eval()
    seg = segment_video(
        frames,
        features,
        block,
        resolution=a.resolution,
        key_stride=a.key_stride,
        tau=a.tau,
        window=a.window,
        method=a.clusters,
        num_clusters=a.num_clusters,
        objects=rule,
        chunk=a.chunk,
        device=device,
        batch_size=a.batch_size,
    )
    out = Path(a.out).expanduser()
    if seg.num_objects > 255:
        raise VislearnError(
            f"{seg.num_objects} objects do not fit palette PNGs: use --max-objects 255 or less"
        )
    write_masks(out / name, seg.labels, names)
    extra = []
    if a.overlay:
        from PIL import Image

        from vislearn.utils import atomic_path

        strip = overlay_strip(frames, seg.labels)
        target = out / f"{name}_overlay.png"
        with atomic_path(target) as tmp:
            Image.fromarray(strip.numpy()).save(tmp, format="PNG")
        extra.append(str(target))
    if a.overlay_video:
        extra.append(str(save_overlay_video(out / f"{name}_overlay.mp4", frames, seg.labels)))
    notes = f"; {'; '.join(seg.notes)}" if seg.notes else ""
    print(
        f"vislearn: {name}: {frames.shape[0]} frames, {len(seg.key_frames)} key frames, "
        f"{seg.num_clusters} clusters, {seg.num_objects} objects ({a.objects}) -> "
        f"{out / name}" + (f" + {', '.join(extra)}" if extra else "") + notes
    )
