"""SSL-UVOS training clips: 3-frame clips ``[c - g, c, c + g]`` from a folder of videos (video
files or frame folders, found recursively) or an in-memory uint8 tensor ``[N, T, C, H, W]``
(the synthetic set), resized to ``resolution`` (:func:`uvos_clip_indices`,
:class:`UVOSClipDataset`); :class:`EpochSampler` makes every epoch's clips a function of
``(seed, epoch)``; :class:`UVOSAugment` is the colour-only augmentation, the same on every
frame of a clip. Ding et al., ECCV 2024 (arXiv:2311.17893).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from vislearn.core.errors import VislearnError
from vislearn.data.augment import ViewConfig
from vislearn.data.video.augment import ClipAugment
from vislearn.data.video.io import (
    count_frames,
    is_image_file,
    is_video_file,
    list_frames,
    natural_key,
    read_clip,
    resize_frames,
)

#: The official training resolution (H, W): a 24 x 48 grid for ViT-S/8.
DEFAULT_RESOLUTION: tuple[int, int] = (192, 384)


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
    (:data:`~vislearn.data.video.io.VIDEO_EXTENSIONS`) or a folder holding image files directly
    (a frame folder; not searched further). ``root`` itself may be one video file or frame
    folder. Hidden files and folders are skipped. For YouTube-VOS point at
    ``train/JPEGImages`` (``train/Annotations`` holds PNG masks that would count as videos).
    """
    root = Path(root).expanduser()
    if is_video_file(root):
        return [root]
    if not root.is_dir():
        raise VislearnError(f"video folder does not exist: {root}")
    found: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        children = sorted(
            (c for c in folder.iterdir() if not c.name.startswith(".")), key=natural_key
        )
        if any(is_image_file(c) for c in children):
            found.append(folder)
            continue
        found.extend(c for c in children if is_video_file(c))
        pending.extend(reversed([c for c in children if c.is_dir()]))
    return sorted(found, key=lambda p: [natural_key(Path(q)) for q in p.relative_to(root).parts])


def check_resolution(resolution: Sequence[int], patch_size: int | None = None) -> tuple[int, int]:
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
            with PyAV, frame folders with PIL), a list of such videos, an in-memory uint8
            tensor ``[N, T, C, H, W]`` (``C`` = 1 or 3; the synthetic set), or the frozen
            ViT's cached tokens, float ``[N, T, 1 + n, D]`` (class token first;
            :func:`~vislearn.tasks.vos.features.cache_tokens`): items are then token clips
            ``[num_frames, 1 + n, D]`` and ``resolution`` is not used.
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
        self.resolution = check_resolution(resolution)
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
        self.cached_tokens = False
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
        self.cached_tokens = videos.is_floating_point() and videos.dim() == 4
        pixels = videos.dtype == torch.uint8 and videos.dim() == 5 and videos.shape[2] in (1, 3)
        if not (pixels or self.cached_tokens):
            raise VislearnError(
                f"in-memory videos must be uint8 [N, T, C, H, W] with C in (1, 3), or cached "
                f"float tokens [N, T, 1 + n, D], got {videos.dtype} {tuple(videos.shape)}"
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
            if self.cached_tokens:
                return clip
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

    This is :meth:`vislearn.data.video.augment.ClipAugment.photometric` (contrast around the clip's
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


def step_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (NumPy ``SeedSequence``: independent streams)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def step_generator(seed: int, step: int, batch_idx: int = 0, rank: int = 0) -> torch.Generator:
    """The CPU generator of one training step: a function of ``(seed, step, batch, rank)``
    only, so a resumed run draws exactly the points and augmentations it would have."""
    return torch.Generator().manual_seed(step_seed(seed, step, batch_idx, rank))
