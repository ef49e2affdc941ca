"""DINO (Caron et al., 2021): self-distillation with no labels.

A student (backbone + DINO head) is trained to match, on every other view, the centred and
sharpened output distribution of a teacher that is an exponential moving average of it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.augment import DINO_LOCAL_VIEW, PRESETS, AugmentConfig, MultiViewAugment
from vislearn.engine.momentum import cosine_momentum, momentum_copy
from vislearn.engine.ssl import SSLMethod
from vislearn.losses import DINOLoss, teacher_temperature
from vislearn.models import DINOHead
from vislearn.tasks.ssl.methods.registry import register_method

GLOBAL_VIEWS = 2


@register_method("dino")
class DINO(SSLMethod):
    """DINO on any registered backbone (ViTs as in the paper, ResNets, the CPU-sized nets).

    Per step, with views ``x_1, x_2`` (global) and ``x_3..x_{2+L}`` (local crops)::

        s_j = head(backbone(x_j))                for every view (student)
        t_i = head_ema(backbone_ema(x_i))        for the two global views (teacher, no grad)
        L   = mean_{i != j} CE(softmax((t_i - c) / τ_t), log_softmax(s_j / τ_s))
        c  <- 0.9 c + 0.1 mean(t)                (vislearn.losses.dino)

    The teacher is the engine's momentum copy of backbone and head (EMA before every step,
    coefficient ``ema_base -> ema_final`` on BYOL's cosine schedule; the paper's 0.996 -> 1).
    Online kNN / probe features and ``backbone.safetensors`` are the *student* backbone's, as
    for every vislearn method (the paper evaluates the teacher).

    Multi-crop: the augmentation has 2 global views (the preset's first two, ``dino`` by
    default: crop scale 0.4-1, flip, colour jitter p 0.8, grayscale p 0.2, blur p 1.0 / 0.1,
    solarize p 0.2 on the second) and ``local_crops`` local views (crop scale
    ``local_crops_scale``, side ``local_crops_size`` of the image's -- 96/224, i.e. 12 px on
    28 px Fashion-MNIST -- blur p 0.5; blur is off for views <= 64 px, as in every preset).
    Views of one size go through a network together when ``joint_views=True``, as in the
    paper's multi-crop wrapper; ViTs interpolate their position embeddings for the smaller
    local crops. All of it is supported, ``local_crops=0`` (two views) included.

    Optimisation (paper defaults; ``lr`` is for the whole batch, the paper's 5e-4 at 256):

    * AdamW with linear warm-up (``warmup_epochs``) and cosine decay of the learning rate to 0
      (the paper decays to ``min_lr`` 1e-6; the engine's schedule ends at 0).
    * weight decay of weights (not biases / norms) from ``weight_decay`` to
      ``weight_decay_end`` on a cosine schedule over the run, set before every step
      (``None``: constant ``weight_decay``).
    * ``clip_grad``: every student parameter tensor's gradient is clipped to this norm on its
      own (the paper's per-tensor clipping, not a global norm); ``None`` or 0 disables it.
    * ``freeze_last_layer``: during the first ``freeze_last_layer`` epochs (may be fractional)
      the gradients of the head's last (weight-normalised) layer are dropped (set to ``None``,
      so AdamW neither moves nor decays it).

    Head: ``DINOHead(d, out_dim, proj_hidden_dim, bottleneck_dim)`` (``vislearn.models.heads``),
    ``norm_last_layer`` freezes its weight-norm gain at 1, ``head_batch_norm`` adds BN to the
    MLP (the paper's ``use_bn_in_head``, off by default).

    Temperatures: student ``student_temp``; teacher ``warmup_teacher_temp`` ramping linearly
    to ``teacher_temp`` over ``warmup_teacher_temp_epochs`` (continuous in the epoch fraction;
    see ``vislearn.losses.dino`` for the difference from the paper's per-epoch ``linspace``).

    Differences from the paper's code, by design of the shared engine: the EMA runs before
    each step on the weights of the previous one (the paper: right after each step -- the
    same sequence shifted by one step); no stochastic depth (``drop_path_rate``) in vislearn's
    ViT; the augmentation is the device-side batched one (bilinear crops, fixed colour-jitter
    order, no blur on views <= 64 px). Mixed precision and DDP are Lightning's; the centre is
    averaged over ranks, and the loss is computed in float32.
    """

    default_augment = "dino"

    def __init__(
        self,
        out_dim: int = 65536,
        proj_hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        head_layers: int = 3,
        head_batch_norm: bool = False,
        norm_last_layer: bool = True,
        local_crops: int = 0,
        local_crops_scale: tuple[float, float] | list[float] = (0.05, 0.4),
        local_crops_size: float = 96 / 224,
        global_crops_scale: tuple[float, float] | list[float] | None = None,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: float = 0.0,
        center_momentum: float = 0.9,
        weight_decay_end: float | None = 0.4,
        clip_grad: float | None = 3.0,
        freeze_last_layer: float = 1.0,
        optimizer: str = "adamw",
        lr: float = 5e-4,
        weight_decay: float = 0.04,
        warmup_epochs: float = 10.0,
        ema_base: float = 0.996,
        ema_final: float | None = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            ema_base=ema_base,
            ema_final=ema_final,
            **kwargs,
        )
        self.save_hyperparameters()
        if local_crops < 0:
            raise VislearnError(f"dino local_crops must be >= 0, got {local_crops}")
        if not (student_temp > 0 and teacher_temp > 0 and warmup_teacher_temp > 0):
            raise VislearnError("dino temperatures must be > 0")
        if weight_decay_end is not None and not weight_decay > 0:
            raise VislearnError(
                f"dino weight_decay_end={weight_decay_end} needs weight_decay > 0 to know which "
                f"parameters are decayed, got weight_decay={weight_decay}"
            )
        self.augment = MultiViewAugment(
            self.multi_crop_config(),
            self.hparams.image_size,
            self.hparams.in_chans,
            self.hparams.seed,
        )
        self.head = DINOHead(
            self.backbone.num_features,
            out_dim,
            proj_hidden_dim,
            bottleneck_dim,
            head_layers,
            head_batch_norm,
            norm_last_layer,
        )
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_head = momentum_copy(self.head)
        self.criterion = DINOLoss(out_dim, student_temp, center_momentum)

    def multi_crop_config(self) -> AugmentConfig:
        """The preset's two global views, then ``local_crops`` local views."""
        h = self.hparams
        name = h.augment or self.default_augment
        if name not in PRESETS:
            raise VislearnError(f"unknown augmentation {name!r}; choose from {sorted(PRESETS)}")
        views = PRESETS[name].views
        if len(views) < GLOBAL_VIEWS:
            raise VislearnError(f"dino needs a preset with 2 views; {name!r} has {len(views)}")
        glob = views[:GLOBAL_VIEWS]
        if h.global_crops_scale is not None:
            glob = tuple(replace(v, crop_scale=tuple(h.global_crops_scale)) for v in glob)
        local = replace(
            DINO_LOCAL_VIEW, crop_scale=tuple(h.local_crops_scale), size=h.local_crops_size
        )
        return AugmentConfig(glob + (local,) * h.local_crops)

    def momentum_pairs(self):
        return [(self.backbone, self.momentum_backbone), (self.head, self.momentum_head)]

    # ---- schedules (in epochs, fractional) -------------------------------------------------
    def epoch_progress(self) -> float:
        """Epochs done before the current step (``global_step / steps per epoch``)."""
        if self._trainer is None:
            return 0.0
        epochs = max(1, self.trainer.max_epochs or 1)
        return self.global_step * epochs / max(1, self.total_steps)

    def current_teacher_temp(self) -> float:
        h = self.hparams
        return teacher_temperature(
            self.epoch_progress(),
            h.warmup_teacher_temp,
            h.teacher_temp,
            h.warmup_teacher_temp_epochs,
        )

    def current_weight_decay(self) -> float:
        h = self.hparams
        if h.weight_decay_end is None:
            return h.weight_decay
        return cosine_momentum(
            self.global_step, self.total_steps, h.weight_decay, h.weight_decay_end
        )

    # ---- the step ---------------------------------------------------------------------------
    def _student(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone(x)
        return feats, self.head(feats)

    def _teacher(self, x: Tensor) -> Tensor:
        return self.momentum_head(self.momentum_backbone(x))

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        h = self.hparams
        if len(views) != GLOBAL_VIEWS + h.local_crops:
            raise VislearnError(
                f"dino with local_crops={h.local_crops} needs {GLOBAL_VIEWS + h.local_crops} "
                f"views, got {len(views)}"
            )
        glob, local = views[:GLOBAL_VIEWS], views[GLOBAL_VIEWS:]
        student = self.forward_views(self._student, glob)
        if local:  # one (joint) pass per resolution
            student += self.forward_views(self._student, local)
        with torch.no_grad():
            teacher = self.forward_views(self._teacher, glob)
        temp = self.current_teacher_temp()
        loss = self.criterion([s for _, s in student], teacher, temp)
        return {"loss": loss, "feats": student[0][0], "teacher_temp": torch.tensor(temp)}

    # ---- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        config = super().configure_optimizers()
        for group in config["optimizer"].param_groups:  # the decayed group(s): scheduled
            group["dino_wd_schedule"] = group["weight_decay"] > 0
        return config

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        wd = self.current_weight_decay()
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                if group.get("dino_wd_schedule"):
                    group["weight_decay"] = wd

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Per-tensor gradient clipping of the student, then the last-layer freeze."""
        h = self.hparams
        if h.clip_grad:
            grads = [
                p.grad
                for m in (self.backbone, self.head)
                for p in m.parameters()
                if p.grad is not None
            ]
            if grads:
                norms = torch._foreach_norm(grads)
                scale = [(h.clip_grad / (n + 1e-6)).clamp(max=1.0) for n in norms]
                torch._foreach_mul_(grads, scale)
        if self.epoch_progress() < h.freeze_last_layer:
            for p in self.head.last_layer.parameters():
                p.grad = None
