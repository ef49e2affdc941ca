"""MRA: mask-reconstruct augmentation (Xu, Ding, Zhao, Jiang, arXiv 2206.04846, 2022).

A frozen masked autoencoder rewrites the *background* of an image: the encoder sees all patches,
each patch gets a foreground score, the ``k`` best-scoring patches stay visible, the others are
masked and filled in by the MAE decoder, and the visible patches are pasted back. The object
stays sharp; the rest becomes a plausible, blurry re-synthesis.

No official code exists; the masking logic is our reconstruction from the paper's figure
(Xu et al., arXiv:2206.04846). Every uncertain choice is a
parameter (default first):

* ``score``: ``"token_dot"`` -- dot product of the final class token with each final patch
  token, as drawn in the figure; ``"attention"`` -- the last block's class-token attention,
  averaged over heads (DINO / AttMask style); ``"oracle"`` -- not a selector the paper has but
  its upper bound: each patch's share of ground-truth foreground pixels (the images' mask,
  cropped with them; ties broken at random), so the ``k`` kept patches hold as much of the
  object as any ``k`` patches can (on black-background Fashion-MNIST this is the "intensity
  oracle": intensity is the foreground there). It needs the mask (``foreground=``, below).
* ``mask_ratio`` (default 0.5; the paper's value is unknown, the notes suggest sweeping
  0.25-0.75): ``k = max(1, round((1 - mask_ratio) L))`` patches stay visible; ``0`` is the
  identity.
* ``paste_back`` (default on, as the figure suggests): visible patches are copied from the input
  bit for bit; off: the whole decoder output is used (visible patches are then re-synthesised
  too).
* ``prob`` (default 0.5): each image is replaced by its MRA version with this probability (the
  batch size and labels are unchanged; MRA never adds images).
* ``gumbel_tau`` (default ``None``: deterministic top-k, as in the figure): with a temperature,
  the visible set is a Gumbel-top-k sample from ``softmax(score / tau)``, so one crop gives
  different masks -- an extension, not from the paper.
* The reconstruction is clamped to the valid pixel range before it is used.

Input formats (``forward`` keeps shape and dtype):

* ``uint8`` ``[B, C, H, W]`` (or ``[C, H, W]``, or a PIL image): pixels / 255 are normalised with
  the MAE's statistics; the reconstruction is rounded back to ``uint8``.
* float ``[B, C, H, W]``: **normalised** images, ``(x / 255 - input_mean) / input_std``; the
  statistics default to the MAE's own (vislearn's :class:`~vislearn.data.augment.Normalize`
  for that channel count: the classifier's and the MAE's normalisation are then the same and
  no conversion is done). Pass ``input_mean=(0,), input_std=(1,)`` for floats in [0, 1].

``foreground`` (optional, ``[B, 1, H, W]`` in [0, 1], the images' ground-truth object mask;
:class:`~vislearn.data.augment.MultiViewAugment` passes it from a ``data.mask_channel``):
besides feeding the oracle, it measures every selector: ``last_fg_kept`` is the mean over the
rewritten images (with any foreground) of the share of the object's pixels that lie in kept
(hence pasted-back, untouched) patches, and :attr:`MaskReconstruct.mean_fg_kept` its running
mean over the module's life (``fg_kept_sum`` / ``fg_kept_count``; not checkpointed). A kept
patch counts all of its foreground, so 1.0 means no part of the object was re-synthesised.

Images of another size than the MAE's are resized to it (bilinear, antialiased) for the MAE,
and the reconstruction and the patch mask (nearest) are resized back, so pasted pixels are still
the input's own.

The MAE runs batched on the batch's device, in eval mode, under ``torch.no_grad``, with
``requires_grad=False`` on every parameter; :meth:`MaskReconstruct.train` never switches it back
to training mode. Only the images drawn for MRA go through the MAE.

Build one from a file with :func:`vislearn.models.mae.load_mae` (or
:func:`vislearn.engine.augment_ops.build_mra`)::

    mra = MaskReconstruct(load_mae("runs/mae/mae.safetensors"), mask_ratio=0.5, prob=0.5)
    batch = mra(batch)        # inside a training loop (uint8 or normalised float)
    image = mra(pil_image)    # a single image (applied with probability prob)
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.data.masking import (
    MRA_SCORES,
    check_mask_ratio,
    keep_top,
    num_visible,
    patch_mask_to_pixels,
)


class MAELike(Protocol):
    """What MRA needs from a masked autoencoder (:class:`vislearn.models.mae.MaskedAutoencoder`)."""

    img_size: int
    patch_size: int
    grid: int
    norm_pix_loss: bool
    mean: Tensor
    std: Tensor

    def patch_scores(self, x: Tensor, score: str) -> Tensor: ...

    def reconstruct(self, x: Tensor, keep: Tensor) -> Tensor: ...


class MaskReconstruct(nn.Module):
    """The MRA augmentation around a frozen MAE (see the module docstring for every choice).

    Args:
        mae: a trained MAE with raw-pixel targets (``norm_pix_loss=False``).
        mask_ratio: fraction of patches masked and re-synthesised, in ``[0, 1)``.
        prob: per-image probability of applying MRA, in ``[0, 1]``.
        score: ``"token_dot"``, ``"attention"`` or ``"oracle"`` (needs ``foreground``).
        paste_back: copy the visible patches from the input.
        gumbel_tau: ``None`` (top-k) or a temperature for Gumbel-top-k sampling.
        input_mean, input_std: normalisation of float inputs (default: the MAE's).
        seed: seed of the module's own generator (used when ``forward`` gets none).
    """

    def __init__(
        self,
        mae: nn.Module,
        mask_ratio: float = 0.5,
        prob: float = 0.5,
        score: str = "token_dot",
        paste_back: bool = True,
        gumbel_tau: float | None = None,
        input_mean: tuple[float, ...] | None = None,
        input_std: tuple[float, ...] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.mask_ratio = check_mask_ratio(mask_ratio)
        if not 0.0 <= float(prob) <= 1.0:
            raise VislearnError(f"MRA prob must be in [0, 1], got {prob!r}")
        if score not in MRA_SCORES:
            raise VislearnError(f"MRA score must be one of {MRA_SCORES}, got {score!r}")
        if gumbel_tau is not None and not float(gumbel_tau) > 0:
            raise VislearnError(f"MRA gumbel_tau must be null or > 0, got {gumbel_tau!r}")
        if getattr(mae, "norm_pix_loss", False):
            raise VislearnError(
                "MRA needs an MAE trained with raw-pixel targets (norm_pix_loss=False): "
                "per-patch normalised predictions cannot be turned back into pixels"
            )
        self.prob, self.score, self.paste_back = float(prob), score, bool(paste_back)
        self.gumbel_tau = None if gumbel_tau is None else float(gumbel_tau)
        self.mae = mae
        for p in self.mae.parameters():
            p.requires_grad_(False)
        self.mae.eval()
        mean = mae.mean if input_mean is None else torch.tensor(input_mean).view(1, -1, 1, 1)
        std = mae.std if input_std is None else torch.tensor(input_std).view(1, -1, 1, 1)
        self.same_space = input_mean is None and input_std is None
        self.register_buffer("in_mean", mean.clone().float(), persistent=False)
        self.register_buffer("in_std", std.clone().float(), persistent=False)
        self.generator = torch.Generator().manual_seed(seed)
        self.last_fg_kept: float | None = None
        self.fg_kept_sum, self.fg_kept_count = 0.0, 0

    #: :class:`~vislearn.data.augment.MultiViewAugment` passes the foreground mask when it has one
    uses_foreground = True

    @property
    def mean_fg_kept(self) -> float | None:
        """Mean share of the object kept visible over every rewritten image with a mask so far."""
        return self.fg_kept_sum / self.fg_kept_count if self.fg_kept_count else None

    def train(self, mode: bool = True) -> MaskReconstruct:
        super().train(mode)
        self.mae.eval()  # frozen, always
        return self

    @property
    def visible_patches(self) -> int:
        """Patches kept visible per image: ``max(1, round((1 - mask_ratio) L))``."""
        return num_visible(self.mae.grid**2, self.mask_ratio)

    # ---- pixel spaces --------------------------------------------------------------------
    def _to_mae(self, x: Tensor) -> Tensor:
        """Input batch -> the MAE's normalised space, at the MAE's size."""
        if x.dtype == torch.uint8:
            x = (x.float() / 255.0 - self.mae.mean) / self.mae.std
        elif not self.same_space:
            x = ((x.float() * self.in_std + self.in_mean) - self.mae.mean) / self.mae.std
        s = self.mae.img_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return x

    def _from_mae(self, y: Tensor, like: Tensor) -> Tensor:
        """MAE space -> the input's space, size and dtype (clamped to the valid range)."""
        if y.shape[-2:] != like.shape[-2:]:
            y = F.interpolate(y, size=like.shape[-2:], mode="bilinear", align_corners=False)
        unit = (y * self.mae.std + self.mae.mean).clamp(0.0, 1.0)
        if like.dtype == torch.uint8:
            return (unit * 255.0).round().to(torch.uint8)
        return ((unit - self.in_mean) / self.in_std).to(like.dtype)

    # ---- the augmentation ----------------------------------------------------------------
    def patch_foreground(self, foreground: Tensor) -> Tensor:
        """Each patch's share of foreground pixels ``[B, L]`` from a mask ``[B, 1, H, W]``."""
        g = self.mae.grid
        return F.adaptive_avg_pool2d(foreground.float(), (g, g)).flatten(1)

    @torch.no_grad()
    def select(
        self,
        x_mae: Tensor,
        generator: torch.Generator | None = None,
        fg_patches: Tensor | None = None,
    ) -> Tensor:
        """Visible patches ``[B, L]`` (True = kept) of images already in the MAE's space;
        ``fg_patches`` (:meth:`patch_foreground`) is the oracle's score."""
        g = generator or self.generator
        if self.score == "oracle":
            if fg_patches is None:
                raise VislearnError(
                    "MRA score 'oracle' needs the ground-truth foreground: data.mask_channel: "
                    "true on a data set with masks (photo-fmnist)"
                )
            scores = fg_patches.float()
            order = torch.argsort(torch.rand(scores.shape, generator=g), dim=1).to(scores.device)
            kept = keep_top(scores.gather(1, order), self.visible_patches)  # ties: random
            keep = torch.zeros_like(kept).scatter_(1, order, kept)
        else:
            scores = self.mae.patch_scores(x_mae, self.score).float()
            if self.gumbel_tau is not None:
                u = torch.rand(scores.shape, generator=g)
                gumbel = -torch.log(-torch.log(u.clamp(1e-9, 1 - 1e-9)))
                scores = scores / self.gumbel_tau + gumbel.to(scores.device)
            keep = keep_top(scores, self.visible_patches)
        return keep

    @torch.no_grad()
    def details(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        foreground: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """MRA applied to *every* image of ``x`` (no probability), with its parts:
        ``keep`` (``[B, L]`` visible patches), ``mask`` (``[B, 1, H, W]`` visible pixels),
        ``reconstruction`` (decoder output, input space) and ``output`` (the augmented images);
        with ``foreground``, ``fg_kept`` (``[B]``: the share of each image's foreground pixels in
        kept patches, NaN without foreground)."""
        x_mae = self._to_mae(x)
        fg = None if foreground is None else self.patch_foreground(foreground.to(x.device))
        keep = self.select(x_mae, generator, fg)
        recon = self._from_mae(self.mae.reconstruct(x_mae, keep), x)
        mask = patch_mask_to_pixels(keep, self.mae.grid, tuple(x.shape[-2:]))
        out = torch.where(mask, x, recon) if self.paste_back else recon
        res = {"keep": keep, "mask": mask, "reconstruction": recon, "output": out}
        if fg is not None:
            total = fg.sum(1)
            res["fg_kept"] = torch.where(total > 0, (fg * keep).sum(1) / total, torch.nan)
        return res

    @torch.no_grad()
    def forward(
        self, x: Any, generator: torch.Generator | None = None, foreground: Tensor | None = None
    ) -> Any:
        """MRA with probability ``prob`` per image of a batch ``[B, C, H, W]``, one image
        ``[C, H, W]`` or a PIL image; shape, dtype (and type) are kept. ``foreground``: the
        batch's object masks ``[B, 1, H, W]`` in [0, 1] (the oracle's score; ``fg_kept``)."""
        self.last_fg_kept = None
        if not isinstance(x, Tensor):
            return self._pil(x, generator)
        if x.dim() == 3:
            fg = None if foreground is None else foreground[None]
            return self.forward(x[None], generator, fg)[0]
        if x.dim() != 4:
            raise VislearnError(f"MRA expects [B, C, H, W] or [C, H, W], got {tuple(x.shape)}")
        if x.shape[1] != self.mae.mean.shape[1]:
            raise VislearnError(
                f"MRA: the MAE takes {self.mae.mean.shape[1]}-channel images, got {x.shape[1]}"
            )
        if foreground is not None and (
            foreground.dim() != 4 or foreground.shape[1] != 1 or foreground.shape[0] != x.shape[0]
        ):
            raise VislearnError(
                f"MRA foreground must be [B, 1, H, W] for {tuple(x.shape)}, got "
                f"{tuple(foreground.shape)}"
            )
        g = generator or self.generator
        apply = torch.rand(x.shape[0], generator=g) < self.prob
        if self.mask_ratio == 0.0 or not bool(apply.any()):
            return x
        if next(self.mae.parameters()).device != x.device:
            self.mae.to(x.device)
            self.in_mean, self.in_std = self.in_mean.to(x.device), self.in_std.to(x.device)
        idx = apply.nonzero().flatten().to(x.device)
        out = x.clone()
        fg = None if foreground is None else foreground[idx.to(foreground.device)]
        d = self.details(x[idx], g, fg)
        out[idx] = d["output"]
        if "fg_kept" in d:
            kept = d["fg_kept"][~torch.isnan(d["fg_kept"])]
            if len(kept):
                self.last_fg_kept = float(kept.mean())
                self.fg_kept_sum += float(kept.sum())
                self.fg_kept_count += len(kept)
        return out

    def _pil(self, image: Any, generator: torch.Generator | None) -> Any:
        from PIL import Image
        from torchvision.transforms.v2 import functional as TF

        if not isinstance(image, Image.Image):
            raise VislearnError(f"MRA takes a tensor or a PIL image, got {type(image).__name__}")
        mode = image.mode
        channels = int(self.mae.mean.shape[1])
        tensor = TF.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
        out = self.forward(tensor, generator)
        return TF.to_pil_image(out).convert(mode)


@torch.no_grad()
def mra_grid(
    mra: MaskReconstruct,
    images: Tensor,
    generator: torch.Generator | None = None,
    foreground: Tensor | None = None,
):
    """A visual check of MRA on ``images`` (``uint8`` ``[N, C, H, W]``): rows original / mask
    (masked patches gray) / reconstruction (the decoder's output for every patch) / augmented
    (MRA's output, applied to every image), as one ``[C, H', W']`` float image in [0, 1].
    ``foreground`` (``[N, 1, H, W]`` in [0, 1]): the masks the oracle selector needs."""
    from torchvision.utils import make_grid

    if images.dtype != torch.uint8 or images.dim() != 4:
        raise VislearnError("mra_grid takes a uint8 batch [N, C, H, W]")
    d = mra.details(images.to(next(mra.mae.parameters()).device), generator, foreground)
    x = images.to(d["output"].device)
    masked = torch.where(d["mask"], x, torch.full_like(x, 128))
    rows = torch.cat([x, masked, d["reconstruction"], d["output"]]).float() / 255.0
    return make_grid(rows.cpu(), nrow=images.shape[0], padding=1, pad_value=1.0)
