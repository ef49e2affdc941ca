"""``vislearn train-uvos``: train the SSL-UVOS spatio-temporal block on unlabelled videos.

vislearn train-uvos VIDEOS --weights dino_deitsmall8_pretrain.pth --arch dino_vits8 --out DIR
vislearn train-uvos synthetic --weights vit.pth --arch vit_mini --patch-size 8 --img-size 32 \\
    --resolution 64 64 --out DIR --epochs 2 --samples-per-epoch 64

This module imports nothing heavy at import time (the main CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["DINO_ARCHS", "add_train_uvos_parser", "build_vit", "run_train_uvos"]

#: DINO model names -> (vislearn backbone, patch size).
DINO_ARCHS: dict[str, tuple[str, int]] = {
    "dino_vits8": ("vit_small", 8),
    "dino_vits16": ("vit_small", 16),
    "dino_vitb8": ("vit_base", 8),
    "dino_vitb16": ("vit_base", 16),
}

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
        default="dino_vits8",
        help="ViT architecture: dino_vits8 (default), dino_vits16, dino_vitb8, dino_vitb16, or a "
        "vislearn ViT backbone (vit_small, vit_base, vit_tiny, vit_mini)",
    )
    p.add_argument("--patch-size", type=int, help="ViT patch size (default: 8 for dino_vits8, ...)")
    p.add_argument(
        "--img-size",
        type=int,
        default=224,
        help="image size the ViT was pretrained at; sets its position grid (default 224)",
    )
    p.add_argument("--nested", help="checkpoint entry holding the weights (e.g. teacher)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--epochs", type=int, default=48, help="epochs (default 48)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    p.add_argument(
        "--batch-size", type=int, default=8, help="clips per device and step (default 8)"
    )
    p.add_argument(
        "--samples-per-epoch",
        type=int,
        default=10_000,
        help="clips per epoch, each from a random video (default 10000; 0 = one per video)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        nargs=2,
        default=[192, 384],
        metavar=("H", "W"),
        help="frame size, multiples of the patch size (default 192 384)",
    )
    p.add_argument("--num-frames", type=int, default=3, help="frames per clip (default 3)")
    p.add_argument("--gap", type=int, default=4, help="largest frame gap in a clip (default 4)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (default 1e-5)")
    p.add_argument("--min-lr", type=float, default=1e-6, help="final cosine lr (default 1e-6)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="on weights (default 0.1)")
    p.add_argument("--num-heads", type=int, default=8, help="block heads (default 8)")
    p.add_argument("--num-points", type=int, default=8, help="query points per step (8)")
    p.add_argument("--sem-weight", type=float, default=1.0, help="semantic loss weight (1)")
    p.add_argument("--mot-weight", type=float, default=1.0, help="motion loss weight (1)")
    p.add_argument("--no-augment", action="store_true", help="no colour augmentation")
    p.add_argument(
        "--synthetic-videos", type=int, default=64, help="videos of `synthetic` (default 64)"
    )
    p.add_argument("--workers", type=int, default=4, help="data loader workers (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="ignore OUT/checkpoints/last.ckpt")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, ... (Lightning)")
    p.add_argument("--devices", default="auto", help="devices per node (Lightning)")
    p.add_argument("--strategy", default="auto", help="auto, ddp, ... (Lightning)")
    p.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def build_vit(arch: str, weights: str, patch_size: int | None, img_size: int, nested=None):
    """``(vit, spec)``: the ViT ``arch`` (a DINO name of :data:`DINO_ARCHS` or a registered
    vislearn ViT backbone) with the local ``weights`` loaded strictly."""
    from vislearn.errors import VislearnError
    from vislearn.models import create_backbone, list_backbones, load_weights
    from vislearn.models.vit import VisionTransformer

    name, default_patch = arch, None
    if arch not in list_backbones() and arch in DINO_ARCHS:
        name, default_patch = DINO_ARCHS[arch]
        if patch_size is not None and patch_size != default_patch:
            raise VislearnError(f"--arch {arch} has patch size {default_patch}, not {patch_size}")
    patch = patch_size if patch_size is not None else default_patch
    kwargs: dict[str, Any] = {"img_size": img_size, "in_chans": 3}
    if patch is not None:
        kwargs["patch_size"] = patch
    vit = create_backbone(name, **kwargs)
    if not isinstance(vit, VisionTransformer):
        raise VislearnError(
            f"--arch {arch} is not a ViT; SSL-UVOS needs one (e.g. dino_vits8, vit_small)"
        )
    load_weights(vit, weights, nested=nested)
    spec = {
        "arch": arch,
        "backbone": name,
        "patch_size": vit.patch_size,
        "img_size": img_size,
        "embed_dim": vit.num_features,
        "weights": str(weights),
    }
    return vit, spec


def run_train_uvos(args: argparse.Namespace) -> str:
    """Run ``vislearn train-uvos``; returns the path of the written block file."""
    from pathlib import Path

    from vislearn.errors import VislearnError
    from vislearn.vos.train import BLOCK_FILE, train_uvos

    if args.samples_per_epoch < 0:
        raise VislearnError("--samples-per-epoch must be >= 0 (0 = one clip per video)")
    vit, spec = build_vit(args.arch, args.weights, args.patch_size, args.img_size, args.nested)
    videos: Any = args.videos
    if str(videos).strip().lower() == "synthetic":
        from vislearn.data.synthetic import moving_sprite_videos

        if args.synthetic_videos < 1:
            raise VislearnError("--synthetic-videos must be >= 1")
        videos = moving_sprite_videos(
            args.synthetic_videos, frames=16, size=64, seed=args.seed, distractors=2
        ).clips
    elif not Path(videos).expanduser().exists():
        raise VislearnError(f"video folder does not exist: {videos}")
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    train_uvos(
        videos,
        vit,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        resolution=tuple(args.resolution),
        num_frames=args.num_frames,
        gap=args.gap,
        samples_per_epoch=args.samples_per_epoch or None,
        num_workers=args.workers,
        seed=args.seed,
        lr=args.lr,
        min_lr=args.min_lr,
        weight_decay=args.weight_decay,
        num_heads=args.num_heads,
        num_points=args.num_points,
        sem_weight=args.sem_weight,
        mot_weight=args.mot_weight,
        augment=not args.no_augment,
        vit_spec=spec,
        resume=not args.no_resume,
        max_steps=args.max_steps,
        progress=not args.no_progress,
        trainer_kwargs={
            "accelerator": args.accelerator,
            "devices": devices,
            "strategy": args.strategy,
            "precision": args.precision,
        },
    )
    path = Path(args.out) / BLOCK_FILE
    print(f"vislearn: wrote {path}")
    return str(path)
