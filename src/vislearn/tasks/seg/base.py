"""Shared pieces of the ``vislearn seg`` Lightning modules: input normalisation, joint
augmentation on the device, optimiser groups (backbone learning-rate multiplier) and
schedules, safetensors export."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from vislearn.core.artifacts import write_safetensors
from vislearn.core.errors import VislearnError
from vislearn.data.augment import Normalize
from vislearn.data.segmentation import SegmentationAugment
from vislearn.engine.module import TrainModule
from vislearn.models.segmentation import SegmentationNet
from vislearn.ops.optim import build_optimizer, param_groups

__all__ = ["SegModule", "check_choice", "export_safetensors"]


def export_safetensors(
    tensors: dict[str, Tensor], path: str | os.PathLike, metadata: dict[str, Any]
) -> None:
    """Write tensors with JSON-encoded metadata as ``.safetensors``, atomically
    (:func:`vislearn.core.artifacts.write_safetensors`)."""
    write_safetensors(path, tensors, metadata)


class SegModule(TrainModule):
    """Shared by both modules: uint8 -> normalised input, joint augmentation on the device
    (its generator checkpointed), SGD/AdamW with poly, cosine or constant LR per step."""

    loss_hint = "lower the learning rate or check the data"

    net: SegmentationNet

    def _init_common(self) -> None:
        h = self.hparams
        self.normalize = Normalize(h.in_chans)
        self.augment = SegmentationAugment(h.augment_scale, h.hflip_p, h.ignore_index, h.seed)
        self.mix_generator = torch.Generator().manual_seed(int(h.seed) + 1)

    def _net_kwargs(self) -> dict[str, Any]:
        h = self.hparams
        return {
            "backbone": h.backbone,
            "backbone_kwargs": h.backbone_kwargs,
            "in_chans": h.in_chans,
            "head": h.head,
            "output_stride": h.output_stride,
            "head_channels": h.head_channels,
            "atrous_rates": h.atrous_rates,
        }

    def _prepare(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return self.augment(self.normalize(images), labels.long())

    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        mult = float(getattr(h, "backbone_lr_mult", 1.0))
        backbone = [self.net.backbone]
        rest = [m for n, m in self.named_children() if n != "net"] + [
            m for n, m in self.net.named_children() if n != "backbone"
        ]
        groups = param_groups(backbone, h.weight_decay, lr=h.lr * mult)
        groups += param_groups(rest, h.weight_decay, lr=h.lr)
        groups = [g for g in groups if g["params"]]
        opt = build_optimizer(h.optimizer, groups, h.lr, momentum=h.sgd_momentum)
        warmup = self.warmup_steps_of(steps=h.warmup_steps)
        return self.schedule(opt, h.lr_schedule, warmup, power=h.poly_power)

    def rng_generators(self) -> dict[str, torch.Generator]:
        return {"augment_rng": self.augment.generator, "mix_rng": self.mix_generator}


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise VislearnError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
