"""Training the SSL-UVOS spatio-temporal block on unlabelled videos (Ding et al., ECCV 2024,
arXiv:2311.17893).

Pieces, each usable alone:

* :func:`uvos_clip_indices` / :class:`UVOSClipDataset`: 3-frame clips ``[c - g, c, c + g]``
  from a folder of videos (video files or frame folders, found recursively) or an in-memory
  uint8 tensor ``[N, T, C, H, W]`` (the synthetic set), resized to ``resolution``;
  :class:`EpochSampler` makes every epoch's clips a function of ``(seed, epoch)``.
* :class:`UVOSAugment`: colour-only augmentation, the same on every frame of a clip.
* :class:`UVOSModule`: a frozen :class:`~vislearn.tasks.vos.features.ViTKeyFeatures` and a
  trainable :class:`~vislearn.tasks.vos.block.SpatioTemporalBlock`, trained with
  :func:`~vislearn.losses.uvos.semantic_consistency_loss` +
  :func:`~vislearn.losses.uvos.motion_consistency_loss`.
* :func:`train_uvos`: the whole run on a Lightning trainer (``checkpoints/last.ckpt`` every
  epoch, resumable) ending in ``uvos_block.safetensors`` (:func:`save_block`,
  :func:`load_block`).

Defaults follow the released training script: clips of 3 frames with gap 4 at 192 x 384,
8 query points per step, AdamW at 1e-5 with cosine decay to 1e-6 per step and no warm-up,
weight decay 0.1 on weight matrices and 0 on biases and norms. The release trains 60k steps at
8 x 1 clips; here ``epochs=48`` of ``samples_per_epoch=10000`` clips at ``batch_size=8``
(per device) is the same schedule on one device.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch import Tensor

from vislearn.core.artifacts import read_safetensors_metadata
from vislearn.core.errors import VislearnError
from vislearn.models.io import load_network, register_network, save_network
from vislearn.models.vit import VisionTransformer
from vislearn.tasks.vos.block import SpatioTemporalBlock
from vislearn.tasks.vos.data import (
    DEFAULT_RESOLUTION,
    UVOSClipDataset,
    UVOSDataModule,
    check_resolution,
)
from vislearn.tasks.vos.features import ViTKeyFeatures
from vislearn.tasks.vos.module import UVOSModule

#: File name of the trained block inside a run folder.
BLOCK_FILE = "uvos_block.safetensors"
#: ``format`` metadata entry of a block file.
BLOCK_FORMAT = "vislearn.uvos_block"


# ----------------------------------------------------------------------------- block files


def block_config(block: SpatioTemporalBlock) -> dict[str, Any]:
    """The constructor arguments of ``block`` (read from its layers)."""
    return {
        "dim": block.dim,
        "num_heads": block.num_heads,
        "mlp_ratio": block.mlp[0].out_features / block.dim,
        "qkv_bias": block.qkv.bias is not None,
        "drop": block.proj_drop.p,
        "attn_drop": block.attn_drop.p,
    }


def save_block(
    block: SpatioTemporalBlock,
    path: str | os.PathLike,
    vit_spec: dict | None = None,
    info: dict | None = None,
) -> Path:
    """Write ``block``'s weights as safetensors, atomically, with metadata ``format``
    (:data:`BLOCK_FORMAT`), ``block`` (:func:`block_config`), ``vit`` (``vit_spec``: the
    frozen ViT it was trained on) and ``info``; the file rebuilds alone
    (:func:`~vislearn.models.io.load_network`)."""
    cfg = block_config(block)
    extra = {"format": BLOCK_FORMAT, "block": cfg, "vit": vit_spec or {}, "info": info or {}}
    return save_network(block, path, "uvos_block", cfg, extra)


def read_block_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``{"block": {...}, "vit": {...}, "info": {...}}`` of a :func:`save_block` file; any
    other file is a :class:`VislearnError`."""
    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"SSL-UVOS block file not found: {path}")
    meta = read_safetensors_metadata(path)
    if meta.get("format") != BLOCK_FORMAT:
        raise VislearnError(
            f"{path} is not an SSL-UVOS block file (no format={BLOCK_FORMAT!r} metadata; "
            "write one with `vislearn train-uvos`)"
        )
    out = {k: meta.get(k) or {} for k in ("block", "vit", "info")}
    if not all(isinstance(v, dict) for v in out.values()):
        raise VislearnError(f"{path}: corrupt block metadata")
    return out


def load_block(path: str | os.PathLike) -> SpatioTemporalBlock:
    """Rebuild the :class:`SpatioTemporalBlock` saved by :func:`save_block` (eval mode, CPU).
    A file of another kind, or weights that do not fit the recorded shape, is a
    :class:`VislearnError`."""
    cfg = read_block_metadata(path)["block"]
    try:
        block = load_network(path, "uvos_block", arch="uvos_block", arch_kwargs=cfg)
    except VislearnError as exc:
        raise VislearnError(f"{path}: weights do not fit the recorded block {cfg}: {exc}") from None
    return block.eval()


register_network("uvos_block", home=__name__)(SpatioTemporalBlock)


# ----------------------------------------------------------------------------- the run


def _vit_spec(features: ViTKeyFeatures, given: dict | None) -> dict[str, Any]:
    spec = {
        "embed_dim": features.dim,
        "patch_size": features.patch_size,
        "depth": len(features.vit.blocks),
        "num_heads": features.num_heads,
    }
    spec.update(given or {})
    return spec


def train_uvos(
    videos: str | os.PathLike | Sequence[str | os.PathLike] | Tensor | UVOSClipDataset,
    vit: VisionTransformer | ViTKeyFeatures,
    out_dir: str | os.PathLike,
    epochs: int = 48,
    batch_size: int = 8,
    resolution: Sequence[int] = DEFAULT_RESOLUTION,
    num_frames: int = 3,
    gap: int = 4,
    samples_per_epoch: int | None = 10_000,
    num_workers: int = 4,
    seed: int = 0,
    lr: float = 1e-5,
    min_lr: float = 1e-6,
    weight_decay: float = 0.1,
    num_heads: int = 8,
    num_points: int = 8,
    sem_weight: float = 1.0,
    mot_weight: float = 1.0,
    augment: bool = True,
    vit_spec: dict | None = None,
    resume: bool = True,
    max_steps: int = -1,
    progress: bool = True,
    trainer_kwargs: dict | None = None,
    module_kwargs: dict | None = None,
) -> SpatioTemporalBlock:
    """Train the SSL-UVOS block on unlabelled ``videos`` and return it (CPU, eval mode).

    ``out_dir`` receives ``uvos_config.json`` (the resolved settings), TensorBoard and CSV
    logs, ``checkpoints/last.ckpt`` (every epoch, atomically; the block, optimiser and
    schedule -- not the frozen ViT) and, at the end, ``uvos_block.safetensors``
    (:func:`save_block`, atomically). With ``resume=True`` an existing ``last.ckpt`` is
    continued (pass the same ViT and settings; a mismatched checkpoint is an error).

    Args:
        videos: a folder / list of videos, a uint8 tensor ``[N, T, C, H, W]``, the ViT's
            cached tokens ``[N, T, 1 + n, D]`` (:func:`~vislearn.tasks.vos.features.cache_tokens`;
            needs ``augment=False``), or a ready
            :class:`UVOSClipDataset` (then ``resolution``, ``num_frames``, ``gap``,
            ``samples_per_epoch`` are its own).
        vit: the frozen ViT (e.g. DINO ViT-S/8 loaded from a local file).
        epochs, batch_size: epochs of ``samples_per_epoch`` clips; ``batch_size`` clips per
            device and step.
        resolution: ``(H, W)``, multiples of the patch size.
        num_workers: DataLoader worker processes.
        max_steps: stop after this many optimiser steps (``-1``: run all epochs).
        trainer_kwargs: extra :func:`~vislearn.engine.trainer.build_trainer` arguments
            (``accelerator``, ``devices``, ``strategy``, ``precision``, ...).
        module_kwargs: extra :class:`UVOSModule` arguments (block dropout, loss settings...).
        Everything else: see :class:`UVOSModule` and :class:`UVOSClipDataset`.
    """
    from vislearn.core.utils import write_json
    from vislearn.engine.run import fit
    from vislearn.engine.trainer import build_trainer

    features = vit if isinstance(vit, ViTKeyFeatures) else ViTKeyFeatures(vit)
    if isinstance(videos, UVOSClipDataset):
        dataset = videos
        check_resolution(dataset.resolution, features.patch_size)
    else:
        res = check_resolution(resolution, features.patch_size)
        dataset = UVOSClipDataset(videos, res, num_frames, gap, samples_per_epoch, seed)
    if dataset.cached_tokens and dataset.tensor.shape[-1] != features.dim:
        raise VislearnError(
            f"cached tokens are {dataset.tensor.shape[-1]} wide but the ViT's keys are "
            f"{features.dim} wide: they were cached with another ViT"
        )
    if dataset.cached_tokens and augment:
        raise VislearnError("cached ViT tokens cannot be colour-augmented: pass augment=False")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise VislearnError(f"epochs must be a positive integer, got {epochs!r}")
    spec = _vit_spec(features, vit_spec)
    L.seed_everything(seed, verbose=False)
    module = UVOSModule(
        features,
        num_heads=num_heads,
        num_points=num_points,
        sem_weight=sem_weight,
        mot_weight=mot_weight,
        lr=lr,
        min_lr=min_lr,
        weight_decay=weight_decay,
        augment=augment,
        seed=seed,
        vit_spec=spec,
        **(module_kwargs or {}),
    )
    datamodule = UVOSDataModule(dataset, batch_size, num_workers, seed)
    out = Path(out_dir)
    trainer = build_trainer(
        out, max_epochs=epochs, max_steps=max_steps, progress=progress, **(trainer_kwargs or {})
    )
    settings = {
        "videos": dataset.source,
        "num_videos": dataset.num_videos,
        "skipped_videos": len(dataset.skipped),
        "resolution": list(dataset.resolution),
        "num_frames": dataset.num_frames,
        "gap": dataset.gap,
        "samples_per_epoch": dataset.samples_per_epoch,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size_per_device": batch_size,
        "world_size": trainer.world_size,
        "vit": spec,
        "module": {k: v for k, v in module.hparams.items() if k != "vit_spec"},
        "trainer": {k: str(v) for k, v in (trainer_kwargs or {}).items()},
    }
    if trainer.is_global_zero:
        write_json(out / "uvos_config.json", settings)
    fit(module, datamodule, out, trainer, resume=resume)
    block = module.block.to("cpu").eval()
    if trainer.is_global_zero:
        info = {"epochs": epochs, "global_step": trainer.global_step, "videos": dataset.source}
        save_block(block, out / BLOCK_FILE, vit_spec=spec, info=info)
    return block
