"""MAE (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.core.utils import save_png
from vislearn.data.masking import check_mask_ratio, masking_from_keep, random_keep
from vislearn.engine.ssl import SSLMethod
from vislearn.models.mae import (
    MAEDecoder,
    encode,
    mae_loss,
    patchify,
    save_mae,
    unpatchify,
)
from vislearn.models.vit import VisionTransformer
from vislearn.tasks.ssl.methods.registry import register_method


@register_method("mae")
class MAE(SSLMethod):
    """MAE: a ViT encoder sees a random quarter of the patches; a light decoder predicts the rest.

    Per step, on one view (random resized crop 0.2-1 + flip, the ``"mae"`` preset): draw a
    uniformly random visible set of ``max(1, round((1 - mask_ratio) L))`` patches per image
    (from the checkpointed augmentation generator), encode the class token and the visible
    patches (:func:`~vislearn.models.mae.encode` on the registry ViT, positions added before
    masking), decode all positions with mask tokens (:class:`~vislearn.models.mae.MAEDecoder`:
    width ``decoder_dim``, ``decoder_depth`` blocks, fixed sin-cos positions) and take the mean
    squared error on the hidden patches only (:func:`~vislearn.models.mae.mae_loss`). The
    target is the normalised input pixels (``norm_pix_loss=False``, the default: needed for
    MRA) or each patch standardised (``norm_pix_loss=True``, the paper's choice for features).

    Layouts: 28-32 px, ``vit_mini`` (patch 4, width 128, 4 blocks; 32 px:
    ``backbone_kwargs: {img_size: 32}``) with a 64-wide, 2-block, 4-head decoder (the defaults:
    "lightweight" as in the paper, about 1/8 of an encoder block's cost per token; MRA pays for
    the decoder at every augmented image); 224 px, ``backbone: vit_base`` (patch 16) with the
    paper's ``decoder_dim: 512, decoder_depth: 8, decoder_heads: 16``. Paper optimiser: AdamW,
    betas (0.9, 0.95), weight decay 0.05, lr 1.5e-4 x batch / 256, 40 warm-up epochs, cosine.

    The encoder is ``self.backbone`` (exported as ``backbone.safetensors`` and evaluated like any
    backbone). Its pooled feature is the backbone's ``pool``: the final class token by default
    (``backbone_kwargs: {pool: mean}`` for the mean of the patch tokens; MAE's class token gets
    no direct loss, so mean pooling often probes better). The online probe is trained on the
    pooled feature of the *masked* pass (no extra encoder pass; the online kNN uses full images).

    Each epoch writes ``reconstructions/epoch_XXXX.png`` under the run directory (atomically):
    rows = original, masked input, decoder output, decoder output with the visible patches
    pasted back, for the first ``grid_images`` images of the epoch's first batch (unaugmented)
    with a fixed seeded mask. With ``norm_pix_loss`` the predictions are shown de-normalised
    with each target patch's own mean and std. At the end of training ``mae.safetensors``
    (encoder + decoder + layout, for :func:`~vislearn.models.mae.load_mae` and MRA) is written
    there too.
    """

    default_augment = "mae"

    def __init__(
        self,
        backbone: str = "vit_mini",
        mask_ratio: float = 0.75,
        decoder_dim: int = 64,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix_loss: bool = False,
        grid_images: int = 8,
        optimizer: str = "adamw",
        lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        adam_betas: tuple[float, float] | list[float] = (0.9, 0.95),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            backbone=backbone,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            adam_betas=adam_betas,
            **kwargs,
        )
        self.save_hyperparameters()
        check_mask_ratio(mask_ratio)
        if not isinstance(self.backbone, VisionTransformer):
            raise VislearnError(
                f"mae needs a ViT backbone (vit_mini, vit_base, ...), got {backbone!r}"
            )
        enc = self.backbone
        size = enc.grid * enc.patch_size
        if size != self.hparams.image_size:
            raise VislearnError(
                f"mae: the {backbone} encoder is built for {size} px images but the data is "
                f"{self.hparams.image_size} px; set model.backbone_kwargs.img_size="
                f"{self.hparams.image_size}"
            )
        self.decoder = MAEDecoder(
            enc.grid,
            enc.num_features,
            enc.patch_size,
            self.hparams.in_chans,
            decoder_dim,
            decoder_depth,
            decoder_heads,
        )
        self._grid_batch: Tensor | None = None

    @property
    def num_patches(self) -> int:
        return self.backbone.grid**2

    def masked_forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Random masking, encoder on the visible patches, decoder on all positions.

        Returns ``(latent [B, 1 + k, D], pred [B, L, p*p*C], mask [B, L])``."""
        size = self.backbone.grid * self.backbone.patch_size
        if tuple(x.shape[-2:]) != (size, size):
            raise VislearnError(f"mae was built for {size} px images, got {tuple(x.shape[-2:])}")
        keep = random_keep(
            x.shape[0], self.num_patches, self.hparams.mask_ratio, generator, x.device
        )
        ids_keep, mask, ids_restore = masking_from_keep(keep)
        latent = encode(self.backbone, x, ids_keep)
        return latent, self.decoder(latent, ids_restore), mask

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        x = views[0]
        latent, pred, mask = self.masked_forward(x, self.augment.generator)
        loss = mae_loss(x, pred, mask, self.backbone.patch_size, self.hparams.norm_pix_loss)
        feats = latent[:, 0] if self.backbone.pool == "cls" else latent[:, 1:].mean(1)
        return {"loss": loss, "feats": feats}

    # ---- reconstruction grid --------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0 and self.hparams.grid_images > 0:
            n, c = self.hparams.grid_images, self.hparams.in_chans  # (no mask channel)
            self._grid_batch = batch[0][:n, :c].detach()

    @torch.no_grad()
    def reconstruction_grid(self, images: Tensor) -> Tensor:
        """Rows original / masked / decoder output / output with visible patches pasted back,
        in [0, 1], as one ``[C, H, W]`` image (fixed seeded mask)."""
        from torchvision.utils import make_grid

        was_training = self.training
        self.eval()
        x = self.normalize(images) if images.dtype == torch.uint8 else images
        g = torch.Generator().manual_seed(self.hparams.seed)
        _, pred, mask = self.masked_forward(x, g)
        p, grid, c = self.backbone.patch_size, self.backbone.grid, x.shape[1]
        if self.hparams.norm_pix_loss:
            target = patchify(x, p)
            mu, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            pred = pred * (var + 1e-6) ** 0.5 + mu
        recon = unpatchify(pred, p, (grid, grid), c)
        pix = mask.view(-1, 1, grid, grid).repeat_interleave(p, 2).repeat_interleave(p, 3)
        mean, std = self.normalize.mean, self.normalize.std
        masked = torch.where(pix > 0, ((0.5 - mean) / std).expand_as(x), x)  # hidden: gray
        pasted = torch.where(pix > 0, recon, x)
        rows = [((r * std + mean).clamp(0, 1)) for r in (x, masked, recon, pasted)]
        self.train(was_training)
        return make_grid(torch.cat(rows).float().cpu(), nrow=x.shape[0], padding=1, pad_value=1.0)

    def on_train_epoch_end(self) -> None:
        images, self._grid_batch = self._grid_batch, None
        if images is None or not self.trainer.is_global_zero:
            return
        path = Path(self.trainer.default_root_dir) / "reconstructions"
        save_png(self.reconstruction_grid(images), path / f"epoch_{self.current_epoch:04d}.png")

    # ---- export ------------------------------------------------------------------------------
    def export_mae(self, path: str | Path) -> None:
        """Encoder + decoder weights and layout as safetensors (for :func:`load_mae`)."""
        h = self.hparams
        state = {
            f"{prefix}.{k}": v
            for prefix, module in (("encoder", self.backbone), ("decoder", self.decoder))
            for k, v in module.state_dict().items()
        }
        save_mae(
            state,
            path,
            backbone=h.backbone,
            backbone_kwargs=h.backbone_kwargs,
            in_chans=h.in_chans,
            decoder={"dim": h.decoder_dim, "depth": h.decoder_depth, "num_heads": h.decoder_heads},
            norm_pix=h.norm_pix_loss,
        )

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            self.export_mae(Path(self.trainer.default_root_dir) / "mae.safetensors")
