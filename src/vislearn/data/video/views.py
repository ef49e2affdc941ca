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

``fame_masks="gt"`` replaces FAME's estimated mask by the ground truth: the batch then carries
one extra channel, the true foreground (0/255, e.g. ``MotionClipDataset(mask_channel=True)``),
which goes through the same crop and flip as the pixels; the mask of a clip is where the
cropped foreground reaches 0.5 in any frame (the area the object sweeps, static like FAME's
mask), and the channel is dropped from every view. The random draws are those of
``"estimated"``, so both variants see the same crops, donors and jitters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.data.augment import ViewConfig
from vislearn.data.video.augment import ClipAugment
from vislearn.data.video.fame import fame_mask, fame_merge, sample_donors

__all__ = ["FAME_MASKS", "ClipNormalize", "ClipViews"]

#: where FAME's foreground mask comes from: estimated (the method) or the ground truth
FAME_MASKS = ("estimated", "gt")


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
        fame_masks: str = "estimated",
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
        if fame_masks not in FAME_MASKS:
            raise VislearnError(f"fame_masks must be one of {FAME_MASKS}, got {fame_masks!r}")
        self.fame_masks = fame_masks
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
        gt = self.fame_masks == "gt"
        if images.shape[3] != self.channels + gt:
            extra = " plus the ground-truth mask channel" if gt else ""
            raise VislearnError(
                f"clips have {images.shape[3]} channels, the model expects {self.channels}{extra}"
            )
        g = self.generator
        views = [self.clip.spatial(images[:, k], g) for k in range(images.shape[1])]
        true_mask = None
        if gt:
            true_mask = views[0][:, self.channels].amax(1) >= 0.5  # B, S, S
            views = [v[:, : self.channels] for v in views]
        donors = sample_donors(images.shape[0], g, self.fame_avoid_self)
        if self.fame and true_mask is not None:
            self.last_fame_mask = true_mask
            views[0] = fame_merge(views[0], true_mask, donors)
        elif self.fame:
            views[0] = self.merge(views[0], donors)
        return [self.clip.normalize(self.clip.photometric(v, g)) for v in views]

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, channels={self.channels}, fame={self.fame}, "
            f"fame_masks={self.fame_masks}"
        )
