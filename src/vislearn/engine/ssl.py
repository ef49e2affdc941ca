"""The base LightningModule every SSL method derives from.

It gives each method, for free: the backbone from the registry, device-side multi-view
augmentation, parameter groups without weight decay on norms/biases, SGD/LARS/AdamW with
warm-up + cosine, momentum encoders with a (cosine) EMA schedule, an online linear probe
trained on detached features, online weighted kNN on held-out data, NaN detection, and
checkpointing of every random stream. A method only builds its heads and defines
:meth:`ssl_step`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from vislearn.data.augment import MultiViewAugment, Normalize
from vislearn.engine.module import TrainModule
from vislearn.engine.momentum import cosine_momentum, ema_update
from vislearn.models import create_backbone
from vislearn.ops.knn import knn_predict
from vislearn.ops.optim import build_optimizer, param_groups


class SSLMethod(TrainModule):
    """Base of all representation-learning methods.

    Args:
        backbone: registered backbone name (see ``vislearn.models.list_backbones()``).
        backbone_kwargs: extra keyword arguments of the backbone constructor.
        in_chans, image_size: input format (1 x 28 for Fashion-MNIST).
        num_classes: classes of the online probe / kNN; 0 disables online evaluation.
        augment: augmentation preset name (default: the method's own recipe).
        optimizer: ``sgd`` | ``lars`` | ``adamw``; ``lr`` is the peak learning rate for the
            whole (global) batch -- no hidden scaling rule is applied. ``adam_betas``: AdamW's
            betas.
        warmup_epochs: linear warm-up length (may be fractional), then cosine to 0.
        ema_base, ema_final: momentum-encoder coefficient; ``ema_final=None`` keeps it
            constant (MoCo), otherwise it follows BYOL's cosine schedule to ``ema_final``.
        probe_lr: learning rate of the online linear probe (its own no-decay group).
        knn_k, knn_t: online kNN neighbours and temperature. A method with a linear
            ``classifier`` head over the backbone features (supervised, semi-supervised) also
            reports its top-1 on the query set, ``val/classifier_top1``.
        seed: seed of the augmentation random stream.
        joint_views: run all views through a network in one concatenated batch (BatchNorm
            statistics shared across views, fewer kernel launches) instead of one call per
            view (the default: per-view statistics as in the reference implementations; on
            CPU also ~15-20 % faster, as two half batches fit the caches better).
        channels_last: train with the convolution weights in channels-last memory format
            (image methods; 1.23x faster MoCo v2 and 1.29x faster CsMl steps of resnet_tiny
            on 1 CPU thread, see docs/RESULTS.md "Where a training step spends its time").
            Equal to float rounding, not bitwise; off by default until its accuracy is shown
            equal within seed noise (``benchmarks/fmnist_ssl_pipeline.py accuracy
            --contiguous``).
        compile: ``torch.compile`` the backbone and every head (each child module with
            parameters except the online probe) when the fit starts; state-dict keys are
            unchanged. ``compile_backend``: its backend (``inductor``).
    """

    default_augment: ClassVar[str] = "moco_v2"
    #: input kind: "image" batches [B, C, H, W] or "video" clips (see engine/video.py)
    modality: ClassVar[str] = "image"
    # children (attribute names) a method optimises itself; the main optimiser skips them
    own_optimizer_children: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        backbone: str = "resnet_tiny",
        backbone_kwargs: dict | None = None,
        in_chans: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        augment: str | None = None,
        optimizer: str = "sgd",
        lr: float = 0.06,
        weight_decay: float = 5e-4,
        sgd_momentum: float = 0.9,
        adam_betas: tuple[float, float] | list[float] = (0.9, 0.999),
        warmup_epochs: float = 0.0,
        ema_base: float = 0.99,
        ema_final: float | None = None,
        probe_lr: float = 0.1,
        knn_k: int = 200,
        knn_t: float = 0.07,
        seed: int = 0,
        joint_views: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = create_backbone(backbone, in_chans=in_chans, **(backbone_kwargs or {}))
        self.augment = MultiViewAugment(augment or self.default_augment, image_size, in_chans, seed)
        self.normalize = Normalize(in_chans)
        self.probe = nn.Linear(self.backbone.num_features, num_classes) if num_classes else None
        self._val_feats: dict[int, list[Tensor]] = {0: [], 1: []}
        self._val_labels: dict[int, list[Tensor]] = {0: [], 1: []}
        self.channels_last = bool(channels_last) and self.modality == "image"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.hparams.compile and not getattr(self, "_compiled", False):
            for name, child in self.named_children():
                if name != "probe" and any(True for _ in child.parameters()):
                    child.compile(backend=self.hparams.compile_backend)
            self._compiled = True

    # ---- what a method defines -------------------------------------------------------
    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        """Compute the method's loss on augmented views (``labels`` are -1 where unknown;
        self-supervised methods ignore them).

        Returns a dict with ``loss`` and ``feats`` (online pooled backbone features of the
        first view, used by the online probe); other entries are logged as ``train/<key>``.
        """
        raise NotImplementedError

    def forward_views(self, fn: Callable[[Tensor], Any], views: list[Tensor]) -> list[Any]:
        """``[fn(v) for v in views]``, or one batched call when ``joint_views=True``.
        Tuple outputs are split element-wise, so ``fn`` may return ``(feats, z)``."""
        if not self.hparams.joint_views:
            return [fn(v) for v in views]
        out = fn(torch.cat(views))
        n = views[0].shape[0]
        if isinstance(out, tuple):
            return list(zip(*(o.split(n) for o in out), strict=True))
        return list(out.split(n))

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum) module pairs updated by EMA before every step."""
        return []

    # ---- training ----------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Pooled backbone features of (uint8 or normalised float) images."""
        return self.backbone(self.normalize(x) if x.dtype == torch.uint8 else x)

    def current_momentum(self) -> float:
        h = self.hparams
        if h.ema_final is None:
            return h.ema_base
        return cosine_momentum(self.global_step, self.total_steps, h.ema_base, h.ema_final)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        m = self.current_momentum()
        with record_function("ema"):
            for online, target in self.momentum_pairs():
                ema_update(online, target, m)
        with record_function("augmentation"):
            views = self.augment(images)
        with record_function("forward"):
            out = self.ssl_step(views, labels)
        loss = self.check_finite(out.pop("loss"))
        feats = out.pop("feats").detach()
        logs = {"train/loss": loss, **{f"train/{k}": v for k, v in out.items()}}
        if self.probe is not None and (labels >= 0).any():
            with record_function("online_probe"):
                keep = labels >= 0
                logits = self.probe(feats[keep])
                probe_loss = F.cross_entropy(logits, labels[keep])
                logs["train/probe_loss"] = probe_loss
                logs["train/probe_top1"] = (logits.argmax(1) == labels[keep]).float().mean()
                loss = loss + probe_loss
        with record_function("logging"):
            if self.momentum_pairs():
                logs["train/ema"] = torch.tensor(m)
            self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False)
            self.log("loss", logs["train/loss"], prog_bar=True, logger=False)
        return loss

    # ---- online evaluation --------------------------------------------------------------
    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        images, labels = batch
        self._val_feats[dataloader_idx].append(self(images).float())
        self._val_labels[dataloader_idx].append(labels)

    def on_validation_epoch_end(self) -> None:
        if not self._val_feats[1]:
            return
        bank, query = (self.all_gather(torch.cat(self._val_feats[i])) for i in (0, 1))
        bank_y, query_y = (self.all_gather(torch.cat(self._val_labels[i])) for i in (0, 1))
        bank, query = bank.flatten(0, -2), query.flatten(0, -2)
        bank_y, query_y = bank_y.flatten(), query_y.flatten()
        h = self.hparams
        num_classes = h.num_classes or int(bank_y.max()) + 1
        pred = knn_predict(query, bank, bank_y, num_classes, h.knn_k, h.knn_t).argmax(1)
        metrics = {"val/knn_top1": (pred == query_y).float().mean()}
        if self.probe is not None:
            metrics["val/probe_top1"] = (self.probe(query).argmax(1) == query_y).float().mean()
        classifier = getattr(self, "classifier", None)  # methods trained with labels
        if isinstance(classifier, nn.Linear) and classifier.out_features == num_classes:
            top1 = (classifier(query).argmax(1) == query_y).float().mean()
            metrics["val/classifier_top1"] = top1
        self.log_dict(metrics, prog_bar=True, sync_dist=True)  # equal on all ranks
        for d in (self._val_feats, self._val_labels):
            d[0].clear()
            d[1].clear()

    # ---- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        skip = {"probe", *self.own_optimizer_children}
        trainable = [m for n, m in self.named_children() if n not in skip]
        groups = param_groups(trainable, h.weight_decay)
        if self.probe is not None:
            groups += [
                {
                    "params": list(self.probe.parameters()),
                    "weight_decay": 0.0,
                    "lr": h.probe_lr,
                    "lars_exclude": True,
                }
            ]
        opt = build_optimizer(
            h.optimizer, groups, h.lr, momentum=h.sgd_momentum, betas=tuple(h.adam_betas)
        )
        return self.schedule(opt, "cosine", self.warmup_steps_of(epochs=h.warmup_epochs))

    def rng_generators(self) -> dict[str, torch.Generator]:
        return {"augment_rng": self.augment.generator}
