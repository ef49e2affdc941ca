"""Train a small class-conditional pixel-space DiT (the caching benchmark's asset).

A diffusers ``DiTTransformer2DModel`` predicts the noise of a DDPM forward process (linear betas,
1000 steps, as DiT) on Fashion-MNIST resized to 32x32, one channel, values in [-1, 1]. Class
labels are replaced by the null class (id ``num_classes``) with probability ``p_uncond`` for
classifier-free guidance; diffusers' own per-block label dropout is switched off because each
block of ``DiTTransformer2DModel`` has its own label embedder and would drop labels
independently. An EMA copy of the weights is what gets exported, as a diffusers folder
(``transformer/`` + ``scheduler/``) that ``vislearn dit sample`` / ``bench`` and diffusers load.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from vislearn.engine.module import TrainModule
from vislearn.engine.momentum import ema_update, momentum_copy
from vislearn.tasks.dit.fid import to_signed

__all__ = ["DiTDiffusion", "train_dit"]


def build_dit(
    image_size: int = 32,
    channels: int = 1,
    num_classes: int = 10,
    patch_size: int = 2,
    depth: int = 6,
    heads: int = 4,
    head_dim: int = 32,
):
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=channels,
        out_channels=channels,
        num_layers=depth,
        sample_size=image_size,
        patch_size=patch_size,
        num_embeds_ada_norm=num_classes,
    )
    for block in model.transformer_blocks:
        block.norm1.emb.class_embedder.dropout_prob = 0.0
    return model


class DiTDiffusion(TrainModule):
    """Epsilon-prediction DDPM training of a class-conditional DiT, with an EMA copy."""

    loss_name = "DiT training loss"

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        num_classes: int = 10,
        patch_size: int = 2,
        depth: int = 6,
        heads: int = 4,
        head_dim: int = 32,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 500,
        ema: float = 0.999,
        p_uncond: float = 0.1,
        num_train_timesteps: int = 1000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from diffusers import DDPMScheduler

        self.model = build_dit(
            image_size, channels, num_classes, patch_size, depth, heads, head_dim
        )
        self.ema_model = momentum_copy(self.model)
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps, beta_schedule="linear"
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        h = self.hparams
        images, labels = batch
        x = to_signed(images)
        b = x.shape[0]
        drop = torch.rand(b, device=x.device) < h.p_uncond
        labels = torch.where(drop, torch.full_like(labels, h.num_classes), labels)
        noise = torch.randn_like(x)
        t = torch.randint(0, h.num_train_timesteps, (b,), device=x.device)
        noisy = self.noise_scheduler.add_noise(x, noise, t)
        pred = self.model(noisy, timestep=t, class_labels=labels).sample
        loss = self.check_finite(F.mse_loss(pred, noise))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # EMA warm-up (as diffusers' EMAModel / timm): a constant 0.999 from step 0 would
        # leave 0.999^steps of the random initialisation in the exported weights (20 % after
        # 1,600 steps: a broken model), so the decay ramps up as (1 + s) / (10 + s)
        step = self.global_step
        ema_update(self.model, self.ema_model, min(self.hparams.ema, (1 + step) / (10 + step)))

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.AdamW(self.model.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        return self.schedule(opt, "constant", self.warmup_steps_of(steps=h.warmup_steps))

    def export(self, out: str | Path) -> Path:
        """Write the EMA weights and the noise schedule as a diffusers folder."""
        out = Path(out)
        self.ema_model.save_pretrained(out / "transformer")
        self.noise_scheduler.save_pretrained(out / "scheduler")
        return out


def train_dit(
    out: str | Path,
    dataset: str = "fmnist-mini",
    data_dir: str | None = None,
    epochs: int = 10,
    max_steps: int = -1,
    batch_size: int = 128,
    seed: int = 0,
    trainer_kwargs: dict | None = None,
    **model_kwargs: Any,
) -> tuple[DiTDiffusion, Path]:
    """Train and export to ``out/model``; logs and ``checkpoints/last.ckpt`` go to ``out``
    (an interrupted run resumes from it)."""
    from vislearn.data.datamodule import ImageDataModule
    from vislearn.engine.run import fit

    L.seed_everything(seed, workers=True, verbose=False)
    size = int(model_kwargs.get("image_size", 32))
    channels = int(model_kwargs.get("channels", 1))
    dm = ImageDataModule(
        dataset, data_dir, size, channels, batch_size=batch_size, seed=seed, online_eval=False
    )
    model_kwargs.setdefault("num_classes", max(dm.num_classes, 1))
    module = DiTDiffusion(**model_kwargs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kw = {"max_epochs": epochs, "max_steps": max_steps, **(trainer_kwargs or {})}
    if max_steps > 0:
        kw["max_epochs"] = max(epochs, math.ceil(max_steps * batch_size / len(dm.train_set)))
    fit(module, dm, out, kw, export=lambda out: module.export(out / "model"))
    return module, out / "model"
