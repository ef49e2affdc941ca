"""``vislearn train-uvos`` and ``vislearn video-seg``: train the SSL-UVOS spatio-temporal block
on unlabelled videos, and segment videos with it.

vislearn train-uvos VIDEOS --weights dino_deitsmall8_pretrain.pth --arch dino_vits8 --out DIR
vislearn train-uvos synthetic --weights vit.pth --arch vit_mini --patch-size 8 --img-size 32 \\
    --resolution 64 64 --out DIR --epochs 2 --samples-per-epoch 64

vislearn video-seg VIDEO_OR_FRAMES --weights dino_deitsmall8_pretrain.pth \\
    --block DIR/uvos_block.safetensors --arch dino_vits8 --out SEG [--resolution 320 480] \\
    [--overlay]   (writes SEG/<name>/<frame>.png DAVIS palette PNGs and SEG/<name>_overlay.png)

This module imports nothing heavy at import time (the main CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
import math
import operator
from pathlib import Path
from typing import Any

from vislearn.core.config import add_config_args, lightning_count

__all__ = [
    "add_train_uvos_parser",
    "add_video_seg_parser",
    "build_vit",
    "run_train_uvos",
    "run_video_seg",
    "train_uvos_config",
    "video_seg_config",
]

_DESCRIPTION = """\
Train the single spatio-temporal transformer block of SSL-UVOS ("Betrayed by Attention",
ECCV 2024) on unlabelled videos. A frozen ViT (DINO ViT-S/8 in the paper, loaded from a
local file: nothing is downloaded) gives every frame's last-block patch keys; the block
attends jointly over 3-frame clips and is trained with the semantic- and motion-consistency
losses. Only colour augmentation; 8 query points per step.

VIDEOS is a folder searched recursively for video files (avi, mp4, mkv, ...; read with
PyAV) and frame folders (jpg/png files; e.g. YouTube-VOS train/JPEGImages), or the word
`synthetic` for the seeded moving-sprite set (a smoke test). Videos with fewer frames than
a clip are skipped with a warning.

OUT receives uvos_config.json, TensorBoard/CSV logs, checkpoints/last.ckpt (every epoch; a
killed run resumes from it when rerun with the same command) and uvos_block.safetensors,
the trained block with its settings, used for segmentation.

Defaults follow the released recipe: 48 epochs of 10,000 clips at 8 clips per step
(= 60k steps at batch 8), 192x384 frames, gap 4, AdamW lr 1e-5 cosine to 1e-6, weight
decay 0.1. Example:
  vislearn train-uvos ytvos/train/JPEGImages --weights dino_deitsmall8_pretrain.pth \\
      --arch dino_vits8 --out runs/uvos --devices 8 --batch-size 1 --strategy ddp
"""


def add_train_uvos_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``vislearn train-uvos`` on the main CLI's sub-parsers."""
    p = subparsers.add_parser(
        "train-uvos",
        help="train the SSL-UVOS spatio-temporal block on unlabelled videos",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("videos", metavar="VIDEOS", help="video folder (recursive) or `synthetic`")
    p.add_argument(
        "--weights",
        required=True,
        help="local ViT weights (.pth/.safetensors; plain, DINO full checkpoints, prefixed keys)",
    )
    p.add_argument(
        "--arch",
        help="ViT architecture: dino_vits8 (default), dino_vits16, dino_vitb8, dino_vitb16, or a "
        "vislearn ViT backbone (vit_small, vit_base, vit_tiny, vit_mini)",
    )
    p.add_argument("--patch-size", type=int, help="ViT patch size (default: 8 for dino_vits8, ...)")
    p.add_argument(
        "--img-size",
        type=int,
        help="image size the ViT was pretrained at, i.e. its position grid times the patch "
        "size (default: read from the weights file's pos_embed)",
    )
    p.add_argument("--nested", help="checkpoint entry holding the weights (e.g. teacher)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--epochs", type=int, help="epochs (default 48)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, help="clips per device and step (default 8)")
    p.add_argument(
        "--samples-per-epoch",
        type=int,
        help="clips per epoch, each from a random video (default 10000; 0 = one per video)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="frame size, multiples of the patch size (default 192 384)",
    )
    p.add_argument("--num-frames", type=int, help="frames per clip (default 3)")
    p.add_argument("--gap", type=int, help="largest frame gap in a clip (default 4)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-5)")
    p.add_argument("--min-lr", type=float, help="final cosine lr (default 1e-6)")
    p.add_argument("--weight-decay", type=float, help="on weights (default 0.1)")
    p.add_argument("--num-heads", type=int, help="block heads (default 8)")
    p.add_argument("--num-points", type=int, help="query points per step (8)")
    p.add_argument("--sem-weight", type=float, help="semantic loss weight (1)")
    p.add_argument("--mot-weight", type=float, help="motion loss weight (1)")
    p.add_argument("--no-augment", action="store_true", default=None, help="no colour augmentation")
    p.add_argument("--synthetic-videos", type=int, help="videos of `synthetic` (default 64)")
    p.add_argument("--workers", type=int, help="data loader workers (default 4)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--no-resume", action="store_true", default=None, help="ignore OUT/checkpoints/last.ckpt"
    )
    p.add_argument("--accelerator", help="cpu, gpu, ... (Lightning)")
    p.add_argument("--devices", help="devices per node (Lightning)")
    p.add_argument("--strategy", help="auto, ddp, ... (Lightning)")
    p.add_argument("--precision", help="32-true, bf16-mixed, ...")
    p.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    add_config_args(p, "see vislearn.tasks.vos.config")
    return p


def _pos_grid(path: str | Path, nested: str | None = None) -> int | None:
    """Side of the square positional-embedding grid stored in a weights file, if any."""
    from vislearn.models.state_dict import read_state_file, unwrap_state_dict

    sd = unwrap_state_dict(read_state_file(path), nested)
    for key, value in sd.items():
        if key.endswith("pos_embed") and value.dim() == 3:
            g = math.isqrt(value.shape[1] - 1)
            if g * g == value.shape[1] - 1:
                return g
    return None


def build_vit(
    arch: str,
    weights: str | Path,
    patch_size: int | None = None,
    img_size: int | None = None,
    nested: str | None = None,
):
    """``(vit, spec)``: the registered ViT backbone ``arch`` (``dino_vits8``, ``dino_vits16``,
    ``dino_vitb8``, ``dino_vitb16``, ``vit_small``, ...; ``patch_size`` for the generic names)
    with the local ``weights`` loaded strictly (:func:`~vislearn.models.io.load_network` with
    ``exact=True``: every key present, none left over -- a partial load is an error).
    ``img_size`` (the positional-embedding grid times the patch size) defaults to the file's
    grid."""
    from vislearn.core.errors import VislearnError
    from vislearn.models import create_backbone, list_backbones
    from vislearn.models.io import load_network
    from vislearn.models.vit import VisionTransformer

    if arch not in list_backbones():
        raise VislearnError(f"unknown ViT {arch!r}; e.g. dino_vits8, dino_vitb16, vit_small")
    kwargs: dict[str, Any] = {"in_chans": 3}
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    probe = create_backbone(arch, **kwargs)
    if not isinstance(probe, VisionTransformer):
        raise VislearnError(f"{arch} is not a ViT; SSL-UVOS needs one (e.g. dino_vits8)")
    if img_size is None:
        grid = _pos_grid(weights, nested)
        img_size = grid * probe.patch_size if grid is not None else None
    if img_size is not None:
        kwargs["img_size"] = img_size
    vit = load_network(
        weights, "backbone", arch=arch, arch_kwargs=kwargs, nested=nested, exact=True
    )
    spec = {
        "arch": arch,
        "patch_size": vit.patch_size,
        "img_size": img_size,
        "embed_dim": vit.num_features,
        "weights": str(weights),
    }
    return vit, spec


#: flag -> config key (or (key, convert)) of ``vislearn train-uvos``
UVOS_FLAGS: dict[str, Any] = {
    "videos": "videos",
    "arch": "vit.arch",
    "weights": "vit.weights",
    "patch_size": "vit.patch_size",
    "img_size": "vit.img_size",
    "nested": "vit.nested",
    "resolution": "data.resolution",
    "num_frames": "data.num_frames",
    "gap": "data.gap",
    "samples_per_epoch": "data.samples_per_epoch",
    "batch_size": "data.batch_size",
    "workers": "data.num_workers",
    "no_augment": ("data.augment", operator.not_),
    "synthetic_videos": "data.synthetic_videos",
    "num_heads": "block.num_heads",
    "num_points": "block.num_points",
    "lr": "block.lr",
    "min_lr": "block.min_lr",
    "weight_decay": "block.weight_decay",
    "sem_weight": "block.sem_weight",
    "mot_weight": "block.mot_weight",
    "epochs": "trainer.max_epochs",
    "max_steps": "trainer.max_steps",
    "accelerator": "trainer.accelerator",
    "devices": ("trainer.devices", lightning_count),
    "strategy": "trainer.strategy",
    "precision": "trainer.precision",
    "no_progress": ("trainer.progress", operator.not_),
    "seed": "seed",
    "out": "out",
}


def _resolve(a: argparse.Namespace, defaults: dict, flags: dict) -> dict:
    from vislearn.core.config import flag_updates, load_config

    overrides = list(getattr(a, "overrides", [])) + list(getattr(a, "set_overrides", []))
    return load_config(
        getattr(a, "config", None), overrides, defaults=defaults, **flag_updates(a, flags)
    )


def train_uvos_config(a: argparse.Namespace) -> dict:
    """The resolved config of ``vislearn train-uvos``: :data:`UVOS_DEFAULTS` <- --config <-
    flags (:data:`UVOS_FLAGS`) <- ``section.key=value`` overrides (positional or --set)."""
    from vislearn.tasks.vos.config import UVOS_DEFAULTS

    return _resolve(a, UVOS_DEFAULTS, UVOS_FLAGS)


def run_train_uvos(args: argparse.Namespace) -> str:
    """Run ``vislearn train-uvos``; returns the path of the written block file."""
    from vislearn.core.config import save_config
    from vislearn.core.errors import VislearnError
    from vislearn.tasks.vos.checks import check_train_uvos
    from vislearn.tasks.vos.run import BLOCK_FILE, train_uvos

    cfg = check_train_uvos(train_uvos_config(args))
    v, d, b, t = cfg["vit"], cfg["data"], cfg["block"], cfg["trainer"]
    vit, spec = build_vit(v["arch"], v["weights"], v["patch_size"], v["img_size"], v["nested"])
    videos: Any = cfg["videos"]
    if str(videos).strip().lower() == "synthetic":
        from vislearn.data.synthetic import moving_sprite_videos

        if d["synthetic_videos"] < 1:
            raise VislearnError("--synthetic-videos must be >= 1")
        videos = moving_sprite_videos(
            d["synthetic_videos"], frames=16, size=64, seed=cfg["seed"], distractors=2
        ).clips
    elif not Path(videos).expanduser().exists():
        raise VislearnError(f"video folder does not exist: {videos}")
    Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
    save_config(cfg, Path(cfg["out"]) / "config.yaml")
    train_uvos(
        videos,
        vit,
        cfg["out"],
        epochs=t["max_epochs"],
        batch_size=d["batch_size"],
        resolution=tuple(d["resolution"]),
        num_frames=d["num_frames"],
        gap=d["gap"],
        samples_per_epoch=d["samples_per_epoch"] or None,
        num_workers=d["num_workers"],
        seed=cfg["seed"],
        lr=b["lr"],
        min_lr=b["min_lr"],
        weight_decay=b["weight_decay"],
        num_heads=b["num_heads"],
        num_points=b["num_points"],
        sem_weight=b["sem_weight"],
        mot_weight=b["mot_weight"],
        augment=d["augment"],
        vit_spec=spec,
        module_kwargs={k: b[k] for k in b if k.endswith("_fraction")},
        resume=not args.no_resume,
        max_steps=t["max_steps"],
        progress=t["progress"],
        trainer_kwargs={
            "accelerator": t["accelerator"],
            "devices": lightning_count(t["devices"]),
            "strategy": t["strategy"],
            "precision": t["precision"],
        },
    )
    path = Path(cfg["out"]) / BLOCK_FILE
    print(f"vislearn: wrote {path}")
    return str(path)


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
        help="ViT: dino_vits8 (default), dino_vits16, dino_vitb8, dino_vitb16, or a vislearn "
        "backbone name such as vit_small (with --patch-size)",
    )
    p.add_argument("--patch-size", type=int, help="patch size for a vislearn backbone name")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--resolution",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="ViT input size, multiples of the patch size (default: native size floored to "
        "them; the official evaluation uses 320 480)",
    )
    p.add_argument("--key-stride", type=int, help="every r-th frame is a key frame")
    p.add_argument("--tau", type=float, help="symmetric-KL threshold (default 1)")
    p.add_argument("--window", type=int, help="frames per level-1 window (leader)")
    p.add_argument("--clusters", choices=["leader", "agglomerative"])
    p.add_argument("--num-clusters", type=int, help="agglomerative: number of clusters")
    p.add_argument("--objects", choices=["motion", "all", "salient"])
    p.add_argument(
        "--max-objects", type=int, help="at most this many object IDs (default 20, the DAVIS limit)"
    )
    p.add_argument("--motion-threshold", type=float, help="motion rule: score to keep")
    p.add_argument(
        "--overlay", action="store_true", default=None, help="also write DIR/<name>_overlay.png"
    )
    p.add_argument(
        "--overlay-video",
        action="store_true",
        default=None,
        help="also write DIR/<name>_overlay.mp4",
    )
    p.add_argument("--chunk", type=int, help="tokens per descriptor block")
    p.add_argument("--batch-size", type=int, help="frames per ViT forward")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    add_config_args(p, "see vislearn.tasks.vos.config")
    return p


def _read_input(path: Path):
    """Frames uint8 ``[T, C, H, W]``, output frame names (or ``None``) and the video name."""
    from vislearn.core.errors import VislearnError
    from vislearn.data.video.io import is_video_file, list_frames, read_clip, read_video

    if path.is_dir():
        files = list_frames(path)
        if not files:
            raise VislearnError(f"no frames (image files) in {path}")
        return read_clip(path, range(len(files)), 3, frame_files=files), [f.stem for f in files]
    if not path.exists():
        raise VislearnError(f"input does not exist: {path}")
    if not is_video_file(path):
        raise VislearnError(f"{path} is neither a video file nor a folder of frames")
    return read_video(path, 3), None


#: flag -> config key of ``vislearn video-seg``
VIDEO_SEG_FLAGS: dict[str, str] = {
    "input": "input",
    "weights": "vit.weights",
    "arch": "vit.arch",
    "patch_size": "vit.patch_size",
    "block": "block",
    "out": "out",
    "device": "device",
    **{
        k: f"segment.{k}"
        for k in (
            "resolution", "key_stride", "tau", "window", "clusters", "num_clusters", "objects",
            "max_objects", "motion_threshold", "chunk", "batch_size", "overlay", "overlay_video",
        )
    },
}  # fmt: skip


def video_seg_config(a: argparse.Namespace) -> dict:
    """The resolved config of ``vislearn video-seg``: :data:`VIDEO_SEG_DEFAULTS` <- --config
    <- flags (:data:`VIDEO_SEG_FLAGS`) <- ``section.key=value`` overrides."""
    from vislearn.tasks.vos.config import VIDEO_SEG_DEFAULTS

    return _resolve(a, VIDEO_SEG_DEFAULTS, VIDEO_SEG_FLAGS)


def run_video_seg(a: argparse.Namespace) -> None:
    import torch

    from vislearn.core.errors import VislearnError
    from vislearn.tasks.vos.checks import check_video_seg
    from vislearn.tasks.vos.objects import ObjectRule
    from vislearn.tasks.vos.output import overlay_strip, save_overlay_video, write_masks
    from vislearn.tasks.vos.segment import segment_video

    cfg = check_video_seg(video_seg_config(a))
    v, g = cfg["vit"], cfg["segment"]
    src = Path(cfg["input"]).expanduser()
    name = src.name if src.is_dir() else src.stem
    frames, names = _read_input(src)
    from vislearn.tasks.vos.features import ViTKeyFeatures
    from vislearn.tasks.vos.run import load_block

    features = ViTKeyFeatures(
        build_vit(v["arch"], Path(v["weights"]).expanduser(), v["patch_size"])[0]
    )
    block = load_block(Path(cfg["block"]).expanduser())
    if block.dim != features.dim:
        raise VislearnError(
            f"block {cfg['block']} is {block.dim} wide but the {v['arch']} ViT is "
            f"{features.dim} wide"
        )
    device = cfg["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    rule = ObjectRule(
        mode=g["objects"], motion_threshold=g["motion_threshold"], max_objects=g["max_objects"]
    )
    block.eval()
    seg = segment_video(
        frames,
        features,
        block,
        resolution=g["resolution"],
        key_stride=g["key_stride"],
        tau=g["tau"],
        window=g["window"],
        method=g["clusters"],
        num_clusters=g["num_clusters"],
        objects=rule,
        chunk=g["chunk"],
        device=device,
        batch_size=g["batch_size"],
    )
    out = Path(cfg["out"]).expanduser()
    if seg.num_objects > 255:
        raise VislearnError(
            f"{seg.num_objects} objects do not fit palette PNGs: use --max-objects 255 or less"
        )
    write_masks(out / name, seg.labels, names)
    extra = []
    if g["overlay"]:
        from PIL import Image

        from vislearn.core.utils import atomic_path

        strip = overlay_strip(frames, seg.labels)
        target = out / f"{name}_overlay.png"
        with atomic_path(target) as tmp:
            Image.fromarray(strip.numpy()).save(tmp, format="PNG")
        extra.append(str(target))
    if g["overlay_video"]:
        extra.append(str(save_overlay_video(out / f"{name}_overlay.mp4", frames, seg.labels)))
    notes = f"; {'; '.join(seg.notes)}" if seg.notes else ""
    print(
        f"vislearn: {name}: {frames.shape[0]} frames, {len(seg.key_frames)} key frames, "
        f"{seg.num_clusters} clusters, {seg.num_objects} objects ({g['objects']}) -> "
        f"{out / name}" + (f" + {', '.join(extra)}" if extra else "") + notes
    )
