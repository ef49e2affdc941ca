"""Clip views for video methods: the video counterpart of :class:`~vislearn.data.augment.
MultiViewAugment`, with FAME between the spatial and the photometric stage.

``ClipViews(images)`` takes the loader's uint8 batch -- ``[B, K, T, C, H, W]`` (``K`` clips of
each video, e.g. the two clips of contrastive training) or ``[B, T, C, H, W]`` (one clip) --
and returns one normalised float view ``[B, C, T, S, S]`` per clip, in this order of random
draws (one ``torch.Generator``, checkpointed by the engine):

1. :meth:`ClipAugment.spatial` of every clip (random resized crop + flip, the same for all
   frames of a clip);
2. the FAME donor permutation (:func:`~vislearn.data.video.fame.sample_donors`), drawn **every
   step even when FAME is off**, so a run with and one without FAME see exactly the same
   crops, flips and colour jitters -- a controlled comparison;
3. FAME on the **first clip only** (as released: ``video[0] = aug(FAME(video[0]))``, the
   other clip untouched), on [0, 1] clips before colour jitter;
4. :meth:`ClipAugment.photometric` (colour jitter, grayscale, blur) of every clip;
5. normalisation (Kinetics mean/std for RGB, 0.5/0.25 for gray).

The last FAME mask is kept in ``last_fame_mask`` (``[B, H, W]`` bool) for inspection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.data.augment import ViewConfig
from vislearn.data.video.augment import ClipAugment
from vislearn.data.video.fame import fame_mask, fame_merge, sample_donors

__all__ = ["ClipNormalize", "ClipViews"]


class ClipNormalize(nn.Module):
    """uint8 clips ``[B, T, C, H, W]`` -> normalised float ``[B, C, T, H, W]`` (the evaluation
    transform; the statistics of :class:`~vislearn.data.video.augment.ClipAugment`)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.aug = ClipAugment(size=1, channels=channels)

    def forward(self, clips: Tensor) -> Tensor:
        if clips.ndim != 5:
            raise VislearnError(f"clips must be [B, T, C, H, W], got {tuple(clips.shape)}")
        x = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips.float()
        return self.aug.normalize(x.transpose(1, 2))


class ClipViews(nn.Module):
    """Augmented views of a batch of clips (see the module docstring).

    Args:
        cfg: per-clip augmentation (:class:`~vislearn.data.augment.ViewConfig`); FAME's
            recipe is the default ``ViewConfig()``.
        size: output side ``S``.
        channels: 1 or 3.
        seed: seed of the random stream.
        fame: merge the first clip's foreground onto another clip's background.
        fame_beta, fame_avoid_self, fame_hue_quirk, fame_kernel_size, fame_tie_break: the
            options of :func:`vislearn.data.video.fame.fame` (defaults: beta 0.5, donors a plain
            permutation as released, intended hue binning, kernel from the crop size,
            scattered tie-breaking).
    """

    def __init__(
        self,
        cfg: ViewConfig | None = None,
        size: int = 112,
        channels: int = 3,
        seed: int = 0,
        fame: bool = False,
        fame_beta: float = 0.5,
        fame_avoid_self: bool = False,
        fame_hue_quirk: bool = False,
        fame_kernel_size: int | None = None,
        fame_tie_break: str = "scatter",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= fame_beta <= 1.0:
            raise VislearnError(f"fame_beta must be in [0, 1], got {fame_beta}")
        if fame_tie_break not in ("scatter", "index"):
            raise VislearnError(
                f"fame_tie_break must be 'scatter' or 'index', got {fame_tie_break!r}"
            )
        self.clip = ClipAugment(cfg, size, channels, mean, std)
        self.size, self.channels = size, channels
        self.fame = fame
        self.fame_beta, self.fame_avoid_self, self.fame_hue_quirk = (
            fame_beta,
            fame_avoid_self,
            fame_hue_quirk,
        )
        self.fame_kernel_size, self.fame_tie_break = fame_kernel_size, fame_tie_break
        self.generator = torch.Generator().manual_seed(seed)
        self.last_fame_mask: Tensor | None = None

    def merge(self, clips: Tensor, donors: Tensor) -> Tensor:
        """FAME of float ``[B, C, T, S, S]`` clips in [0, 1] with the given donors."""
        mask = fame_mask(
            clips,
            self.fame_beta,
            kernel_size=self.fame_kernel_size,
            hue_quirk=self.fame_hue_quirk,
            tie_break=self.fame_tie_break,
        )
        self.last_fame_mask = mask
        return fame_merge(clips, mask, donors)

    def forward(self, images: Tensor) -> list[Tensor]:
        if images.ndim == 5:
            images = images.unsqueeze(1)
        if images.ndim != 6:
            raise VislearnError(
                f"a video batch must be [B, K, T, C, H, W] or [B, T, C, H, W], got "
                f"{tuple(images.shape)}"
            )
        if images.shape[3] != self.channels:
            raise VislearnError(
                f"clips have {images.shape[3]} channels, the model expects {self.channels}"
            )
        g = self.generator
        views = [self.clip.spatial(images[:, k], g) for k in range(images.shape[1])]
        donors = sample_donors(images.shape[0], g, self.fame_avoid_self)
        if self.fame:
            views[0] = self.merge(views[0], donors)
        return [self.clip.normalize(self.clip.photometric(v, g)) for v in views]

    def extra_repr(self) -> str:
        return f"size={self.size}, channels={self.channels}, fame={self.fame}"
