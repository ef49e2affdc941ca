"""Training the SSL-UVOS spatio-temporal block on unlabelled videos (``research/uvos.md`` §2).

Pieces, each usable alone:

* :func:`uvos_clip_indices` / :class:`UVOSClipDataset`: 3-frame clips ``[c - g, c, c + g]``
  from a folder of videos (video files or frame folders, found recursively) or an in-memory
  uint8 tensor ``[N, T, C, H, W]`` (the synthetic set), resized to ``resolution``;
  :class:`EpochSampler` makes every epoch's clips a function of ``(seed, epoch)``.
* :class:`UVOSAugment`: colour-only augmentation, the same on every frame of a clip.
* :class:`UVOSModule`: a frozen :class:`~vislearn.vos.features.ViTKeyFeatures` and a
  trainable :class:`~vislearn.vos.block.SpatioTemporalBlock`, trained with
  :func:`~vislearn.vos.losses.semantic_consistency_loss` +
  :func:`~vislearn.vos.losses.motion_consistency_loss`.
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

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from vislearn.data.augment import ViewConfig
from vislearn.data.video import (
    ClipAugment,
    _is_image,
    _is_video_file,
    _natural_key,
    count_frames,
    list_frames,
    read_clip,
    resize_frames,
)
from vislearn.engine.optim import param_groups, warmup_cosine
from vislearn.errors import VislearnError
from vislearn.models.vit import VisionTransformer
from vislearn.vos.block import SpatioTemporalBlock
from vislearn.vos.features import ViTKeyFeatures
from vislearn.vos.losses import motion_consistency_loss, semantic_consistency_loss

__all__ = [
    "BLOCK_FILE",
    "BLOCK_FORMAT",
    "DEFAULT_RESOLUTION",
    "EpochSampler",
    "UVOSAugment",
    "UVOSClipDataset",
    "UVOSDataModule",
    "UVOSModule",
    "block_config",
    "find_uvos_videos",
    "load_block",
    "read_block_metadata",
    "save_block",
    "step_generator",
    "train_uvos",
    "uvos_clip_indices",
]

#: The official training resolution (H, W): a 24 x 48 grid for ViT-S/8.
DEFAULT_RESOLUTION: tuple[int, int] = (192, 384)
#: File name of the trained block inside a run folder.
BLOCK_FILE = "uvos_block.safetensors"
#: ``format`` metadata entry of a block file.
BLOCK_FORMAT = "vislearn.uvos_block"


# ----------------------------------------------------------------------------- clips


def uvos_clip_indices(
    length: int, num_frames: int = 3, gap: int = 4, rng: np.random.Generator | None = None
) -> list[int]:
    """Frame indices ``[c - h g, ..., c, ..., c + (T - 1 - h) g]`` (``h = T // 2``; for
    ``T = 3``: ``[c - g, c, c + g]``) of one training clip of a ``length``-frame video.

    As in the released loader, the gap is fixed by the video's length first -- the largest
    ``g <= gap`` whose clip fits, ``g = min(gap, (length - 1) // (T - 1))`` -- and the centre
    ``c`` is then drawn uniformly among the positions where that clip fits, so a clip never
    repeats a frame. (The release's loop also reduces ``g`` when the clip would exactly fill
    the video; here a clip may span the whole video.) A video shorter than ``num_frames`` is
    an error.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise VislearnError(f"num_frames must be a positive integer, got {num_frames!r}")
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
        raise VislearnError(f"gap must be a positive integer, got {gap!r}")
    if length < num_frames:
        raise VislearnError(f"a video of {length} frames is shorter than a {num_frames}-frame clip")
    rng = np.random.default_rng() if rng is None else rng
    if num_frames == 1:
        return [int(rng.integers(length))]
    g = min(gap, (length - 1) // (num_frames - 1))
    before = g * (num_frames // 2)
    after = g * (num_frames - 1 - num_frames // 2)
    c = int(rng.integers(before, length - after))
    return [c + g * (i - num_frames // 2) for i in range(num_frames)]


def find_uvos_videos(root: str | os.PathLike) -> list[Path]:
    """Every video under ``root``, recursively, in natural order: a video file
    (:data:`~vislearn.data.video.VIDEO_EXTENSIONS`) or a folder holding image files directly
    (a frame folder; not searched further). ``root`` itself may be one video file or frame
    folder. Hidden files and folders are skipped. For YouTube-VOS point at
    ``train/JPEGImages`` (``train/Annotations`` holds PNG masks that would count as videos).
    """
    root = Path(root).expanduser()
    if _is_video_file(root):
        return [root]
    if not root.is_dir():
        raise VislearnError(f"video folder does not exist: {root}")
    found: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        children = sorted(
            (c for c in folder.iterdir() if not c.name.startswith(".")), key=_natural_key
        )
        if any(_is_image(c) for c in children):
            found.append(folder)
            continue
        found.extend(c for c in children if _is_video_file(c))
        pending.extend(reversed([c for c in children if c.is_dir()]))
    return sorted(found, key=lambda p: [_natural_key(Path(q)) for q in p.relative_to(root).parts])


def _check_resolution(resolution: Sequence[int], patch_size: int | None = None) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in resolution)
    except (TypeError, ValueError):
        raise VislearnError(f"resolution must be (H, W), got {resolution!r}") from None
    if h < 1 or w < 1:
        raise VislearnError(f"resolution must be positive, got {h}x{w}")
    if patch_size and (h % patch_size or w % patch_size):
        raise VislearnError(
            f"resolution {h}x{w} is not a multiple of the ViT patch size {patch_size}"
        )
    return h, w


class UVOSClipDataset(Dataset):
    """Unlabelled training clips for SSL-UVOS: uint8 ``[num_frames, 3, H, W]`` per item.

    Args:
        videos: a folder searched recursively by :func:`find_uvos_videos` (video files read
            with PyAV, frame folders with PIL), a list of such videos, or an in-memory uint8
            tensor ``[N, T, C, H, W]`` (``C`` = 1 or 3; the synthetic set).
        resolution: ``(H, W)`` every frame is resized to (bilinear, antialiased, aspect ratio
            not kept, as in the release); a multiple of the ViT's patch size.
        num_frames, gap: clip length and largest frame gap (:func:`uvos_clip_indices`).
        samples_per_epoch: items per epoch, each from a *random* video (the release reports
            10,000 and draws a video per access); ``None``: one clip of every video per epoch.
        seed: item ``k`` is drawn from ``np.random.default_rng([seed, k])`` alone, so a clip is
            reproducible and independent of workers; :class:`EpochSampler` feeds indices
            ``epoch * len(self) + i`` so every epoch sees new clips.

    Videos shorter than ``num_frames`` and files that cannot be opened are **skipped with one
    warning** (their names listed in ``skipped``); no usable video at all is an error. A video
    that fails to decode later is warned about once and replaced by another one.
    """

    def __init__(
        self,
        videos: str | os.PathLike | Sequence[str | os.PathLike] | Tensor,
        resolution: Sequence[int] = DEFAULT_RESOLUTION,
        num_frames: int = 3,
        gap: int = 4,
        samples_per_epoch: int | None = 10_000,
        seed: int = 0,
    ) -> None:
        self.resolution = _check_resolution(resolution)
        uvos_clip_indices(num_frames, num_frames, gap, np.random.default_rng(0))  # validates
        if samples_per_epoch is not None and (
            isinstance(samples_per_epoch, bool)
            or not isinstance(samples_per_epoch, int)
            or samples_per_epoch < 1
        ):
            raise VislearnError(
                f"samples_per_epoch must be a positive integer or None, got {samples_per_epoch!r}"
            )
        self.num_frames, self.gap = num_frames, gap
        self.samples_per_epoch, self.seed = samples_per_epoch, int(seed)
        self.tensor: Tensor | None = None
        self.paths: list[Path] = []
        self.lengths: list[int] = []
        self.skipped: list[str] = []
        self._frame_files: dict[int, list[Path]] = {}
        self._bad: set[int] = set()
        self.failed = 0
        if isinstance(videos, Tensor):
            self._from_tensor(videos)
            self.source = f"tensor {list(videos.shape)}"
        else:
            self._from_files(videos)

    def _from_tensor(self, videos: Tensor) -> None:
        if videos.dtype != torch.uint8 or videos.dim() != 5 or videos.shape[2] not in (1, 3):
            raise VislearnError(
                f"in-memory videos must be uint8 [N, T, C, H, W] with C in (1, 3), got "
                f"{videos.dtype} {tuple(videos.shape)}"
            )
        n, t = videos.shape[:2]
        if n == 0:
            raise VislearnError("the in-memory video tensor holds no videos")
        if t < self.num_frames:
            raise VislearnError(
                f"in-memory videos have {t} frames, fewer than a {self.num_frames}-frame clip"
            )
        self.tensor = videos
        self.lengths = [int(t)] * int(n)

    def _from_files(self, videos: str | os.PathLike | Sequence[str | os.PathLike]) -> None:
        if isinstance(videos, str | os.PathLike):
            self.source = str(videos)
            candidates = find_uvos_videos(videos)
        else:
            self.source = f"{len(videos)} listed videos"
            candidates = [Path(v).expanduser() for v in videos]
        reasons: list[str] = []
        for path in candidates:
            try:
                if path.is_dir():
                    files = list_frames(path)
                    self._frame_files[len(self.paths)] = files
                    n = len(files)
                else:
                    n = count_frames(path)
            except VislearnError as exc:
                self._frame_files.pop(len(self.paths), None)
                self.skipped.append(str(path))
                reasons.append(f"{path.name} ({exc})")
                continue
            if n < self.num_frames:
                self._frame_files.pop(len(self.paths), None)
                self.skipped.append(str(path))
                reasons.append(f"{path.name} ({n} frames)")
                continue
            self.paths.append(path)
            self.lengths.append(n)
        if self.skipped:
            more = " ..." if len(reasons) > 5 else ""
            warnings.warn(
                f"skipped {len(self.skipped)} video(s) in {self.source} that are unreadable or "
                f"shorter than {self.num_frames} frames: {', '.join(reasons[:5])}{more}",
                stacklevel=3,
            )
        if not self.paths:
            raise VislearnError(
                f"no usable video in {self.source} (video files or folders of frames with at "
                f"least {self.num_frames} frames)"
                + (f"; {len(self.skipped)} skipped" if self.skipped else "")
            )

    @property
    def num_videos(self) -> int:
        return len(self.lengths)

    def __len__(self) -> int:
        return self.num_videos if self.samples_per_epoch is None else self.samples_per_epoch

    def name(self, video: int) -> str:
        return f"video {video}" if self.tensor is not None else str(self.paths[video])

    def read(self, video: int, indices: Sequence[int]) -> Tensor:
        """Frames ``indices`` of video ``video``, uint8 ``[len(indices), 3, H, W]`` at
        ``resolution``."""
        if self.tensor is not None:
            clip = self.tensor[video, list(indices)]
            if clip.shape[1] == 1:
                clip = clip.expand(-1, 3, -1, -1)
        else:
            clip = read_clip(
                self.paths[video], indices, 3, frame_files=self._frame_files.get(video)
            )
        return resize_frames(clip, self.resolution)

    def __getitem__(self, index: int) -> Tensor:
        rng = np.random.default_rng([self.seed, int(index)])
        n = self.num_videos
        first = int(index) % n if self.samples_per_epoch is None else int(rng.integers(n))
        for attempt in range(n):
            video = (first + attempt) % n
            if video in self._bad:
                continue
            idx = uvos_clip_indices(self.lengths[video], self.num_frames, self.gap, rng)
            try:
                return self.read(video, idx)
            except VislearnError as exc:
                self._bad.add(video)
                self.failed += 1
                if self.failed == 1:
                    warnings.warn(
                        f"cannot read {self.name(video)} ({exc}); using another video instead "
                        "(further failures are counted in .failed, not reported)",
                        stacklevel=2,
                    )
        raise VislearnError(f"no readable video left in {self.source}")


class EpochSampler(Sampler[int]):
    """Item indices ``epoch * length + i`` for a shuffled ``i in range(length)`` (seeded by
    ``(seed, epoch)``), this rank's share of them (``length // num_replicas`` each).

    With :class:`UVOSClipDataset`, whose item ``k`` is a pure function of ``(seed, k)``, every
    epoch draws new clips, the same ones on a rerun or after a resume (Lightning calls
    :meth:`set_epoch`), and no two ranks draw the same item.
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        if length < 1 or not 0 <= rank < num_replicas:
            raise VislearnError(f"bad sampler setting: length {length}, rank {rank}/{num_replicas}")
        self.length, self.num_replicas, self.rank = length, num_replicas, rank
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length // self.num_replicas

    def __iter__(self):
        g = torch.Generator().manual_seed(step_seed(self.seed, self.epoch))
        perm = torch.randperm(self.length, generator=g)[: len(self) * self.num_replicas]
        offset = self.epoch * self.length
        return iter((offset + perm[self.rank :: self.num_replicas]).tolist())


class UVOSDataModule(L.LightningDataModule):
    """Serves a :class:`UVOSClipDataset` through an :class:`EpochSampler` sharded over the
    trainer's ranks (``batch_size`` clips per device, last partial batch dropped)."""

    def __init__(
        self, dataset: UVOSClipDataset, batch_size: int = 8, num_workers: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise VislearnError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dataset, self.batch_size = dataset, batch_size
        self.num_workers, self.seed = num_workers, seed

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = EpochSampler(len(self.dataset), world, rank, self.seed)
        if len(sampler) < self.batch_size:
            raise VislearnError(
                f"{len(self.dataset)} clips per epoch over {world} device(s) is less than one "
                f"batch of {self.batch_size}; raise samples_per_epoch or lower the batch size"
            )
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


# ----------------------------------------------------------------------------- augmentation


class UVOSAugment(nn.Module):
    """Colour-only clip augmentation with one draw per clip, the same on all of its frames:
    colour jitter ``(0.4, 0.4, 0.4, 0.1)`` with p 0.8, grayscale with p 0.2, Gaussian blur
    with p 0.5 and sigma ~ U(0.1, 2) drawn per clip (kernel ~10% of the shorter side). No
    spatial augmentation.

    This is :meth:`vislearn.data.video.ClipAugment.photometric` (contrast around the clip's
    mean gray). It applies jitter before grayscale; the release's kornia pipeline applies
    grayscale first, draws the blur sigma once when the pipeline is built, and uses a
    ``(0.1 H, 0.1 W)`` kernel -- small differences kept for one shared clip augmentation.

    ``forward(clips [B, T, C, H, W] float in [0, 1], generator) -> same shape``.
    """

    def __init__(
        self,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        super().__init__()
        cfg = ViewConfig(
            jitter=tuple(jitter),
            jitter_p=jitter_p,
            gray_p=gray_p,
            blur_p=blur_p,
            blur_sigma=tuple(blur_sigma),
            solarize_p=0.0,
        )
        self.clip = ClipAugment(cfg, size=1, channels=3)

    def forward(self, clips: Tensor, generator: torch.Generator) -> Tensor:
        if clips.dim() != 5:
            raise VislearnError(f"clips must be [B, T, C, H, W], got {tuple(clips.shape)}")
        return self.clip.photometric(clips.transpose(1, 2), generator).transpose(1, 2)


# ----------------------------------------------------------------------------- module


def step_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (NumPy ``SeedSequence``: independent streams)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def step_generator(seed: int, step: int, batch_idx: int = 0, rank: int = 0) -> torch.Generator:
    """The CPU generator of one training step: a function of ``(seed, step, batch, rank)``
    only, so a resumed run draws exactly the points and augmentations it would have."""
    return torch.Generator().manual_seed(step_seed(seed, step, batch_idx, rank))


def _drop_frozen_vit(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "features.")]:
        del state_dict[key]


def _ignore_frozen_vit(module: nn.Module, incompatible_keys) -> None:
    missing = incompatible_keys.missing_keys
    frozen = [k for k in missing if k.startswith("features.") or ".features.vit." in k]
    for key in frozen:
        missing.remove(key)


class UVOSModule(L.LightningModule):
    """SSL-UVOS training: frozen ViT keys -> one spatio-temporal block -> two losses.

    Each step takes uint8 clips ``[B, T, C, H, W]``, applies :class:`UVOSAugment` (colour
    only), runs the frozen ViT on every frame (keys ``[N, D]`` + class token), feeds
    ``[CLS_t, keys_t]`` of the ``T`` frames jointly to the block, draws ``num_points`` query
    indices and minimises ``sem_weight * L_sem + mot_weight * L_mot``
    (:mod:`vislearn.vos.losses`). Query points and augmentation come from
    :func:`step_generator` (a function of ``seed``, the global step, the batch index and the
    rank), so a resumed run continues exactly; block dropout uses torch's global RNG.

    **The frozen ViT is not part of the state**: it is a registered sub-module (it moves with
    the module and stays in eval mode without gradients), but ``state_dict`` drops its
    ``features.*`` entries and ``load_state_dict`` does not ask for them, so Lightning
    checkpoints hold only the block (plus optimiser and scheduler state) and resuming needs the
    same ViT to be passed in again.

    Args:
        features: the frozen :class:`ViTKeyFeatures`, or a ViT to wrap in one.
        num_heads: heads of the block (must divide the ViT width; 8 as released).
        mlp_ratio, qkv_bias, drop, attn_drop: the block (:class:`SpatioTemporalBlock`).
        num_points: query points per step (clamped to ``N``).
        sem_weight, mot_weight: loss weights.
        sem_num_pos, sem_num_neg, sem_pos_margin, sem_neg_margin: semantic loss settings.
        mot_num_pos, mot_num_neg, mot_margin, mot_eps: motion loss settings.
        lr, min_lr: AdamW learning rate, cosine-decayed per step to ``min_lr`` (no warm-up).
        weight_decay: on weight matrices; biases and norm scales get 0.
        augment: apply :class:`UVOSAugment`.
        seed: seed of the per-step generators.
        vit_spec: description of the ViT (architecture, weights file...) kept in the
            hyper-parameters and in the block file.
    """

    def __init__(
        self,
        features: ViTKeyFeatures | VisionTransformer,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.1,
        attn_drop: float = 0.4,
        num_points: int = 8,
        sem_weight: float = 1.0,
        mot_weight: float = 1.0,
        sem_num_pos: int = 30,
        sem_num_neg: int = 200,
        sem_pos_margin: float = 0.9,
        sem_neg_margin: float = 0.1,
        mot_num_pos: int = 10,
        mot_num_neg: int = 50,
        mot_margin: float = 1.0,
        mot_eps: float = 1e-10,
        lr: float = 1e-5,
        min_lr: float = 1e-6,
        weight_decay: float = 0.1,
        augment: bool = True,
        seed: int = 0,
        vit_spec: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["features"])
        if isinstance(features, VisionTransformer):
            features = ViTKeyFeatures(features)
        if not isinstance(features, ViTKeyFeatures):
            raise VislearnError(
                f"UVOSModule needs a ViT or ViTKeyFeatures, got {type(features).__name__}"
            )
        if num_points < 1:
            raise VislearnError(f"num_points must be >= 1, got {num_points}")
        if lr <= 0 or min_lr < 0 or min_lr > lr:
            raise VislearnError(f"need 0 <= min_lr <= lr and lr > 0, got lr {lr}, min {min_lr}")
        self.features = features
        self.block = SpatioTemporalBlock(
            features.dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop
        )
        self.augment = UVOSAugment() if augment else None
        self.register_state_dict_post_hook(_drop_frozen_vit)
        self.register_load_state_dict_post_hook(_ignore_frozen_vit)

    @property
    def num_heads(self) -> int:
        return self.block.num_heads

    def forward(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        """``clips`` ``[B, T, C, H, W]`` (uint8, or float in [0, 1]) -> block features of the
        patch tokens ``[B, T, N, D]`` and the block attention ``[B, T N, T N]``."""
        if clips.dim() != 5:
            raise VislearnError(f"clips must be [B, T, C, H, W], got {tuple(clips.shape)}")
        x = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips
        b, t = x.shape[:2]
        keys, cls, _ = self.features(x.flatten(0, 1))
        tokens = torch.cat([cls[:, None], keys], 1).view(b, t, keys.shape[1] + 1, -1)
        out, attn = self.block(tokens)
        return out[:, :, 1:], attn

    def losses(self, clips: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """``{"loss", "loss_sem", "loss_mot"}`` of a batch of uint8 clips; ``generator``
        draws the augmentation and the query points."""
        h = self.hparams
        x = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips.float()
        if self.augment is not None:
            x = self.augment(x, generator)
        feats, attn = self(x)
        t, n = feats.shape[1], feats.shape[2]
        points = torch.randperm(n, generator=generator)[: h.num_points].to(attn.device)
        feats, attn = feats.float(), attn.float()
        sem = semantic_consistency_loss(
            attn, feats, points, h.sem_num_pos, h.sem_num_neg, h.sem_pos_margin, h.sem_neg_margin
        )
        mot = motion_consistency_loss(
            attn, points, h.mot_num_pos, h.mot_num_neg, h.mot_margin, h.mot_eps, num_frames=t
        )
        return {"loss": h.sem_weight * sem + h.mot_weight * mot, "loss_sem": sem, "loss_mot": mot}

    def training_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        clips = batch[0] if isinstance(batch, list | tuple) else batch
        g = step_generator(self.hparams.seed, self.global_step, batch_idx, self.global_rank)
        out = self.losses(clips, g)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise VislearnError(
                f"SSL-UVOS loss is {loss.item()} at step {self.global_step}; lower the learning "
                "rate or check the input videos"
            )
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in out.items()}, on_step=True, on_epoch=False
        )
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def configure_optimizers(self):
        h = self.hparams
        groups = param_groups([self.block], h.weight_decay)
        for group in groups:
            group.pop("lars_exclude", None)
        opt = torch.optim.AdamW(groups, lr=h.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer else 1
        final = h.min_lr / h.lr

        def factor(step: int) -> float:
            return warmup_cosine(step, total, 0, final)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


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
    """Write ``block``'s weights as safetensors, atomically, with string metadata ``format``
    (:data:`BLOCK_FORMAT`), ``block`` (:func:`block_config` as JSON), ``vit`` (``vit_spec``
    as JSON: the frozen ViT it was trained on) and ``info`` (JSON)."""
    from safetensors.torch import save_file

    from vislearn.utils import atomic_path

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in block.state_dict().items()}
    meta = {
        "format": BLOCK_FORMAT,
        "block": json.dumps(block_config(block)),
        "vit": json.dumps(vit_spec or {}),
        "info": json.dumps(info or {}),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def read_block_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``{"block": {...}, "vit": {...}, "info": {...}}`` of a :func:`save_block` file; any
    other file is a :class:`VislearnError`."""
    from vislearn.models.weights import safetensors_metadata

    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"SSL-UVOS block file not found: {path}")
    meta = safetensors_metadata(path)
    if meta.get("format") != BLOCK_FORMAT:
        raise VislearnError(
            f"{path} is not an SSL-UVOS block file (no format={BLOCK_FORMAT!r} metadata; "
            "write one with `vislearn train-uvos`)"
        )
    try:
        return {k: json.loads(meta.get(k) or "{}") for k in ("block", "vit", "info")}
    except json.JSONDecodeError as exc:
        raise VislearnError(f"{path}: corrupt block metadata ({exc})") from None


def load_block(path: str | os.PathLike) -> SpatioTemporalBlock:
    """Rebuild the :class:`SpatioTemporalBlock` saved by :func:`save_block` (eval mode, CPU).
    A file of another kind, or weights that do not fit the recorded shape, is a
    :class:`VislearnError`."""
    from vislearn.models.weights import read_state_file

    meta = read_block_metadata(path)
    cfg = meta["block"]
    try:
        block = SpatioTemporalBlock(**cfg)
    except TypeError as exc:
        raise VislearnError(f"{path}: bad block settings {cfg}: {exc}") from None
    state = read_state_file(path)
    try:
        block.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())[:300]
        raise VislearnError(f"{path}: weights do not fit the recorded block {cfg}: {msg}") from None
    return block.eval()


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
        videos: a folder / list of videos, a uint8 tensor ``[N, T, C, H, W]``, or a ready
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
    from vislearn.engine.trainer import build_trainer
    from vislearn.utils import write_json

    features = vit if isinstance(vit, ViTKeyFeatures) else ViTKeyFeatures(vit)
    if isinstance(videos, UVOSClipDataset):
        dataset = videos
        _check_resolution(dataset.resolution, features.patch_size)
    else:
        res = _check_resolution(resolution, features.patch_size)
        dataset = UVOSClipDataset(videos, res, num_frames, gap, samples_per_epoch, seed)
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
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except RuntimeError as exc:
        if ckpt_path and "state_dict" in str(exc):
            raise VislearnError(
                f"{last} does not match this model ({str(exc).splitlines()[0][:200]}); use "
                "another output folder or resume=False"
            ) from None
        raise
    block = module.block.to("cpu").eval()
    if trainer.is_global_zero:
        info = {"epochs": epochs, "global_step": trainer.global_step, "videos": dataset.source}
        save_block(block, out / BLOCK_FILE, vit_spec=spec, info=info)
    return block
