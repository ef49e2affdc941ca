"""The SSL-UVOS Lightning module: a frozen :class:`~vislearn.tasks.vos.features.ViTKeyFeatures`
and a trainable :class:`~vislearn.tasks.vos.block.SpatioTemporalBlock`, trained with
:func:`~vislearn.losses.uvos.semantic_consistency_loss` +
:func:`~vislearn.losses.uvos.motion_consistency_loss` (Ding et al., ECCV 2024,
arXiv:2311.17893).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.engine.module import TrainModule
from vislearn.losses.uvos import (
    RELEASE_FRACTIONS,
    loss_set_sizes,
    motion_consistency_loss,
    semantic_consistency_loss,
)
from vislearn.models.vit import VisionTransformer
from vislearn.ops.optim import param_groups
from vislearn.tasks.vos.block import SpatioTemporalBlock
from vislearn.tasks.vos.data import UVOSAugment, step_generator
from vislearn.tasks.vos.features import ViTKeyFeatures


def _drop_frozen_vit(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "features.")]:
        del state_dict[key]


def _ignore_frozen_vit(module: nn.Module, incompatible_keys) -> None:
    missing = incompatible_keys.missing_keys
    frozen = [k for k in missing if k.startswith("features.") or ".features.vit." in k]
    for key in frozen:
        missing.remove(key)


class UVOSModule(TrainModule):
    """SSL-UVOS training: frozen ViT keys -> one spatio-temporal block -> two losses.

    Each step takes uint8 clips ``[B, T, C, H, W]``, applies :class:`UVOSAugment` (colour
    only), runs the frozen ViT on every frame (keys ``[N, D]`` + class token), feeds
    ``[CLS_t, keys_t]`` of the ``T`` frames jointly to the block, draws ``num_points`` query
    indices and minimises ``sem_weight * L_sem + mot_weight * L_mot``
    (:mod:`vislearn.losses.uvos`). Query points and augmentation come from
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
        sem_pos_fraction, sem_neg_fraction, sem_pos_margin, sem_neg_margin: semantic loss
            settings; the set sizes are fractions of the ``N`` tokens of a frame
            (:func:`~vislearn.losses.uvos.loss_set_sizes`), by default the release's
            30 / 200 of 1152.
        mot_pos_fraction, mot_neg_fraction, mot_margin, mot_eps: motion loss settings (the
            release's 10 / 50 of 1152 by default).
        lr, min_lr: AdamW learning rate, cosine-decayed per step to ``min_lr`` (no warm-up).
        weight_decay: on weight matrices; biases and norm scales get 0.
        augment: apply :class:`UVOSAugment`.
        seed: seed of the per-step generators.
        vit_spec: description of the ViT (architecture, weights file...) kept in the
            hyper-parameters and in the block file.
    """

    loss_name = "SSL-UVOS loss"
    loss_hint = "lower the learning rate or check the input videos"

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
        sem_pos_fraction: float = RELEASE_FRACTIONS["sem_pos"],
        sem_neg_fraction: float = RELEASE_FRACTIONS["sem_neg"],
        sem_pos_margin: float = 0.9,
        sem_neg_margin: float = 0.1,
        mot_pos_fraction: float = RELEASE_FRACTIONS["mot_pos"],
        mot_neg_fraction: float = RELEASE_FRACTIONS["mot_neg"],
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
        """``clips`` ``[B, T, C, H, W]`` (uint8, or float in [0, 1]) or the frozen ViT's
        cached tokens ``[B, T, 1 + N, D]`` (:func:`~vislearn.tasks.vos.features.cache_tokens`)
        -> block features of the patch tokens ``[B, T, N, D]`` and the block attention
        ``[B, T N, T N]``."""
        if clips.dim() == 4 and clips.is_floating_point():
            tokens = clips
        elif clips.dim() == 5:
            x = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips
            tokens = self.features.block_tokens(x.flatten(0, 1))
            tokens = tokens.view(*x.shape[:2], *tokens.shape[1:])
        else:
            raise VislearnError(
                f"clips must be [B, T, C, H, W] or cached tokens [B, T, 1 + N, D], got "
                f"{clips.dtype} {tuple(clips.shape)}"
            )
        out, attn = self.block(tokens)
        return out[:, :, 1:], attn

    def losses(self, clips: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """``{"loss", "loss_sem", "loss_mot"}`` of a batch of uint8 clips; ``generator``
        draws the augmentation and the query points."""
        h = self.hparams
        x = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips.float()
        if self.augment is not None:
            if x.dim() != 5:
                raise VislearnError(
                    "cached ViT tokens cannot be colour-augmented: train with augment=False"
                )
            x = self.augment(x, generator)
        feats, attn = self(x)
        t, n = feats.shape[1], feats.shape[2]
        points = torch.randperm(n, generator=generator)[: h.num_points].to(attn.device)
        feats, attn = feats.float(), attn.float()
        sem_sizes = loss_set_sizes(n, h.sem_pos_fraction, h.sem_neg_fraction)
        mot_sizes = loss_set_sizes(n, h.mot_pos_fraction, h.mot_neg_fraction)
        sem = semantic_consistency_loss(
            attn, feats, points, *sem_sizes, h.sem_pos_margin, h.sem_neg_margin
        )
        mot = motion_consistency_loss(
            attn, points, *mot_sizes, h.mot_margin, h.mot_eps, num_frames=t
        )
        return {"loss": h.sem_weight * sem + h.mot_weight * mot, "loss_sem": sem, "loss_mot": mot}

    def training_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        clips = batch[0] if isinstance(batch, list | tuple) else batch
        g = step_generator(self.hparams.seed, self.global_step, batch_idx, self.global_rank)
        out = self.losses(clips, g)
        loss = self.check_finite(out["loss"])
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
        return self.schedule(opt, "cosine", final_ratio=h.min_lr / h.lr)
