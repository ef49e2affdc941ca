"""Fine-tuning, linear probing and training from scratch on one segmentation data set
(``vislearn seg finetune``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.distributed import gather_no_grad
from vislearn.core.errors import VislearnError
from vislearn.eval.segmentation import confusion_matrix, segmentation_scores
from vislearn.models.io import save_network
from vislearn.models.segmentation import SegmentationNet, load_segmentation_weights
from vislearn.tasks.seg.base import SegModule, check_choice

__all__ = ["FREEZE_CHOICES", "SegFinetuneModule"]

#: what fine-tuning keeps frozen (``SegFinetuneModule(freeze=...)``)
FREEZE_CHOICES = ("none", "backbone", "backbone+decoder")


class SegFinetuneModule(SegModule):
    """Fine-tuning (or training from scratch) on one data set with its own classifier;
    validation accumulates a confusion matrix (summed over ranks) and logs ``val/miou`` and
    ``val/pixel_acc`` in percent; :attr:`scores` keeps the last full result.

    ``backbone_lr_mult`` scales the backbone's learning rate (1.0: one rate for all, the
    usual MMSeg fine-tuning; < 1 keeps pretrained features closer). ``freeze`` keeps the
    backbone (``"backbone"``) or backbone and decoder (``"backbone+decoder"``: a per-pixel
    linear probe of the pretrained features) fixed: no gradients, batch-norm statistics
    frozen (eval mode), only the rest in the optimiser.

    With ``track_best=True`` every validation that improves ``val/miou`` keeps a copy of the
    network's weights (:attr:`best`: ``state``, ``step``, ``miou``; saved in checkpoints) and
    :attr:`val_curve` lists ``(step, miou)``; :meth:`restore_best` loads the best weights
    (model selection on a validation split, never on the test set).
    """

    def __init__(
        self,
        num_classes: int = 11,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        in_chans: int = 3,
        backbone: str = "resnet_tiny",
        backbone_kwargs: dict | None = None,
        head: str = "deeplabv3",
        output_stride: int | None = 8,
        head_channels: int = 64,
        atrous_rates: Sequence[int] | None = None,
        optimizer: str = "sgd",
        lr: float = 0.02,
        weight_decay: float = 1e-4,
        sgd_momentum: float = 0.9,
        lr_schedule: str = "poly",
        poly_power: float = 0.9,
        warmup_steps: int = 0,
        backbone_lr_mult: float = 1.0,
        freeze: str = "none",
        track_best: bool = False,
        augment_scale: Sequence[float] = (0.75, 1.5),
        hflip_p: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if class_names is not None and len(class_names) != num_classes:
            raise VislearnError(f"{len(class_names)} class names for {num_classes} classes")
        check_choice("freeze", freeze, FREEZE_CHOICES)
        if lr <= 0 or backbone_lr_mult < 0:
            raise VislearnError(
                f"lr must be > 0 and backbone_lr_mult >= 0, got {lr}, {backbone_lr_mult}"
            )
        self.net = SegmentationNet(int(num_classes), **self._net_kwargs())
        for part in self.frozen_parts():
            part.requires_grad_(False)
        self._init_common()
        self._conf: Tensor | None = None
        self.scores: dict[str, Any] = {}
        self.best: dict[str, Any] | None = None
        self.val_curve: list[tuple[int, float]] = []

    def frozen_parts(self) -> list[torch.nn.Module]:
        """The sub-networks ``freeze`` keeps fixed."""
        names = {"none": (), "backbone": ("backbone",), "backbone+decoder": ("backbone", "decoder")}
        return [getattr(self.net, n) for n in names[self.hparams.freeze]]

    def train(self, mode: bool = True) -> SegFinetuneModule:
        super().train(mode)
        for part in self.frozen_parts():  # frozen batch-norm statistics
            part.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, K, H, W]`` of uint8 (or normalised float) images."""
        x = self.normalize(images) if images.dtype == torch.uint8 else images
        return self.net(x)

    def load_pretrained(self, path: str | os.PathLike, transfer: str = "backbone+decoder") -> list:
        """Initialise from pretrained weights: ``transfer`` = ``"backbone"`` or
        ``"backbone+decoder"`` (the classifier always starts fresh)."""
        parts = {"backbone": ("backbone",), "backbone+decoder": ("backbone", "decoder")}
        if transfer not in parts:
            raise VislearnError(f"transfer must be backbone or backbone+decoder, got {transfer!r}")
        return load_segmentation_weights(self.net, path, parts[transfer])

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        images, labels = batch[0], batch[1]
        x, labels = self._prepare(images, labels)
        loss = F.cross_entropy(self.net(x), labels, ignore_index=self.hparams.ignore_index)
        self.check_finite(loss)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        k = self.hparams.num_classes
        self._conf = torch.zeros(k, k, dtype=torch.long, device=self.device)

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        images, labels = batch[0], batch[1]
        pred = self(images).argmax(1)
        h = self.hparams
        self._conf += confusion_matrix(pred, labels, h.num_classes, h.ignore_index)

    def on_validation_epoch_end(self) -> None:
        conf = gather_no_grad(self._conf.unsqueeze(0)).sum(0).cpu()
        self.scores = {
            **segmentation_scores(conf, self.hparams.class_names),
            "confusion": conf.tolist(),
        }
        miou = self.scores["miou"]
        if self.hparams.track_best and not self.trainer.sanity_checking:
            value = 0.0 if math.isnan(miou) else float(miou)
            step = int(self.global_step)
            self.val_curve.append((step, 100.0 * value))
            if self.best is None or value > self.best["miou"]:
                state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
                self.best = {"state": state, "step": step, "miou": value}
        self.log_dict(
            {
                "val/miou": 100.0 * (0.0 if math.isnan(miou) else miou),
                "val/pixel_acc": 100.0 * self.scores["pixel_acc"],
            },
            prog_bar=True,
            sync_dist=False,  # already summed over ranks
        )

    def restore_best(self) -> bool:
        """Load the weights of the best validation (``track_best``); False if there was none."""
        if self.best is None:
            return False
        self.net.load_state_dict(self.best["state"])
        return True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["vislearn_best"] = {"best": self.best, "val_curve": self.val_curve}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("vislearn_best") or {}
        self.best = saved.get("best")
        self.val_curve = [tuple(x) for x in saved.get("val_curve", [])]

    def export(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        """The whole network as ``.safetensors`` with what ``vislearn seg eval/predict`` need
        to rebuild it (architecture, classes, ignore index)."""
        h = self.hparams
        arch = self.net.arch_kwargs()
        save_network(
            self.net,
            path,
            "segmentation_net",
            arch,
            {
                "format": "vislearn-seg-model",
                "arch": arch,
                "classes": list(h.class_names or [str(i) for i in range(h.num_classes)]),
                "ignore_index": int(h.ignore_index),
                **(extra or {}),
            },
        )
