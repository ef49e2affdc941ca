"""Lightning modules of ``vislearn seg``: segmentation pretraining on several data sets
(MDP, naive multi-dataset, single data set) and fine-tuning on one target data set.

**MDP** (Shi et al., "Multi-dataset Pretraining: A Unified Model for Semantic Segmentation",
arXiv 2106.04121). No code was published and the paper body was not readable here; the
method below is our reconstruction from the abstract and the authors' draft rebuttal, and
every choice the sources leave open is an
argument of :class:`SegPretrainModule` (defaults in brackets):

* label space: the plain concatenation of the data sets' label spaces, no merging;
* pixel embeddings: a per-pixel projection MLP (:class:`~vislearn.models.segmentation.
  PixelProjection`, ``embed_dim`` [64; the paper's is unknown, 128-256 on GPUs]) on the
  decoder features at the output stride, L2-normalised;
* prototypes: one per class of every data set, updated after each step by the two-step
  moving average of :mod:`vislearn.engine.prototypes` (per-image class means, then their mean
  over the global batch, then ``p <- normalize(m p + (1 - m) pbar)``; ``proto_momentum``
  [0.99], ``proto_average`` [two_step], ``proto_init`` [first_mean]) from the *detached*
  online embeddings (no momentum encoder: the sources do not mention one); a step's losses
  use the prototypes as they were before its own update, and no gradient reaches them;
* loss: pixel-to-prototype InfoNCE over all classes of all data sets
  (``temperature`` [0.1], ``contrast_over`` [all; "own_dataset" restricts the denominator to
  the pixel's data set as an ablation of the "interactive" contrast; "background_own" does so
  for background pixels only (local class 0 of each set): a set's background may hold objects
  another set labels, which the full contrast would push away from their own prototypes), at
  the feature
  resolution with labels reduced by block majority (``label_downsample`` [majority] with
  ``label_purity`` [0.5]: mixed boundary cells are ignored) or at the input resolution with
  upsampled embeddings (``loss_resolution`` [feature]);
* cross-dataset region mixing: with probability ``region_mix_prob`` [0.5] a batch is
  CutMixed with partners from other data sets (one box per batch, ``lam ~ Beta(a, a)``,
  ``region_mix_alpha`` [1.0]); the box carries the partner's labels;
* pixel-level mixing, weight ``pixel_mix_weight`` [0.5] (``pixel_mix``):
  ``"embedding"`` [default] mixes ``pixel_mix_pairs`` [1024] pairs of pixel embeddings of
  different data sets, ``normalize(lam v_i + (1 - lam) v_j)``, against the soft target
  ``{y_i: lam, y_j: 1 - lam}`` (no extra forward pass); ``"input"`` mixes whole images with
  cross-dataset partners (Mixup, one extra forward pass) with the loss
  ``lam L_pp(y_a) + (1 - lam) L_pp(y_b)``; ``"none"`` switches it off;
* pixel-to-class sparse coding, weight ``sparse_weight`` [0.1, "low" in the rebuttal]:
  pull each pixel towards its ``sparse_k`` [3] most similar prototypes among
  ``sparse_candidates`` ["other_datasets": classes of other taxonomies, the cross-dataset
  similarity the abstract names; "all": every class but the pixel's own], weighted by a
  softmax of the similarities (``sparse_weighting``, ``sparse_temperature`` [= temperature]).

``L = L_pp + pixel_mix_weight * L_mix + sparse_weight * L_sc``.

**naive_multi**: the same network and data without prototypes: ``naive_mode``
``"separate_heads"`` [default; one classifier per data set, each image trained with its own
head: the "multi-head co-training" baseline] or ``"merged"`` (one classifier over the
concatenated label space). **single**: one data set, plain cross-entropy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.mixing import (
    cross_dataset_partners,
    mix_pixel_embeddings,
    pixel_mix,
    region_mix,
)
from vislearn.data.segmentation import downsample_labels
from vislearn.engine.prototypes import PrototypeBank
from vislearn.losses.segmentation import (
    pixel_class_sparse_coding,
    pixel_prototype_contrastive,
    soft_prototype_contrastive,
    two_hot,
)
from vislearn.models.io import save_network
from vislearn.models.segmentation import (
    PixelProjection,
    SegmentationNet,
)
from vislearn.tasks.seg.base import SegModule, check_choice, export_safetensors
from vislearn.tasks.seg.finetune import FREEZE_CHOICES, SegFinetuneModule

__all__ = [
    "CONTRAST_OVER",
    "FREEZE_CHOICES",
    "PRETRAIN_METHODS",
    "SegFinetuneModule",
    "SegPretrainModule",
    "export_safetensors",
]

PRETRAIN_METHODS = ("mdp", "naive_multi", "single")
#: denominators of MDP's pixel-to-prototype contrast (see the module docstring)
CONTRAST_OVER = ("all", "own_dataset", "background_own")


class SegPretrainModule(SegModule):
    """Segmentation pretraining on one or several data sets: ``method`` = ``"mdp"``,
    ``"naive_multi"`` or ``"single"`` (see the module docstring for every MDP option).

    Batches are ``(images uint8 [B, C, H, W], labels int64 [B, H, W], dataset_ids [B])`` with
    labels in the concatenated label space (:class:`~vislearn.data.segmentation.
    MultiDatasetSegmentation`); ``num_classes`` lists the classes of each data set in order.
    """

    def __init__(
        self,
        method: str = "mdp",
        num_classes: Sequence[int] = (11,),
        dataset_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        in_chans: int = 3,
        backbone: str = "resnet_tiny",
        backbone_kwargs: dict | None = None,
        head: str = "deeplabv3",
        output_stride: int | None = 8,
        head_channels: int = 64,
        atrous_rates: Sequence[int] | None = None,
        # MDP
        embed_dim: int = 64,
        proj_hidden: int | None = None,
        temperature: float = 0.1,
        proto_momentum: float = 0.99,
        proto_average: str = "two_step",
        proto_init: str = "first_mean",
        contrast_over: str = "all",
        loss_resolution: str = "feature",
        label_downsample: str = "majority",
        label_purity: float = 0.5,
        region_mix_prob: float = 0.5,
        region_mix_alpha: float = 1.0,
        pixel_mix: str = "embedding",
        pixel_mix_weight: float = 0.5,
        pixel_mix_alpha: float = 1.0,
        pixel_mix_pairs: int = 1024,
        sparse_weight: float = 0.1,
        sparse_k: int = 3,
        sparse_candidates: str = "other_datasets",
        sparse_weighting: str = "softmax",
        sparse_temperature: float | None = None,
        # naive multi-dataset
        naive_mode: str = "separate_heads",
        # optimisation and augmentation
        optimizer: str = "sgd",
        lr: float = 0.02,
        weight_decay: float = 1e-4,
        sgd_momentum: float = 0.9,
        lr_schedule: str = "poly",
        poly_power: float = 0.9,
        warmup_steps: int = 0,
        augment_scale: Sequence[float] = (0.75, 1.5),
        hflip_p: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_choice("method", method, PRETRAIN_METHODS)
        check_choice("naive_mode", naive_mode, ("separate_heads", "merged"))
        check_choice("contrast_over", contrast_over, CONTRAST_OVER)
        check_choice("loss_resolution", loss_resolution, ("feature", "input"))
        check_choice("pixel_mix", pixel_mix, ("embedding", "input", "none"))
        check_choice("sparse_candidates", sparse_candidates, ("other_datasets", "all"))
        check_choice("sparse_weighting", sparse_weighting, ("softmax", "uniform"))
        counts = [int(n) for n in num_classes]
        if not counts:
            raise VislearnError("no data sets (num_classes is empty)")
        if method == "single" and len(counts) != 1:
            raise VislearnError(f"method 'single' trains on one data set, got {len(counts)}")
        if not 0.0 <= region_mix_prob <= 1.0:
            raise VislearnError(f"region_mix_prob must be in [0, 1], got {region_mix_prob}")
        if temperature <= 0:
            raise VislearnError(f"temperature must be > 0, got {temperature}")
        self.counts = counts
        self.total_classes = sum(counts)
        self.offsets = [sum(counts[:i]) for i in range(len(counts))]
        self.register_buffer(
            "class_dataset",
            torch.tensor([d for d, n in enumerate(counts) for _ in range(n)]),
            persistent=False,
        )
        # global ids of each set's class 0 ("background" in the synthetic and VOC sets)
        is_background = torch.zeros(self.total_classes, dtype=torch.bool)
        is_background[torch.tensor(self.offsets)] = True
        self.register_buffer("is_background", is_background, persistent=False)
        if method == "mdp":
            heads: list[int] = []
        elif method == "naive_multi" and naive_mode == "separate_heads":
            heads = counts
        else:
            heads = [self.total_classes]
        self.net = SegmentationNet(heads, **self._net_kwargs())
        if method == "mdp":
            self.projector = PixelProjection(self.net.out_channels, embed_dim, proj_hidden)
            self.bank = PrototypeBank(
                self.total_classes, embed_dim, proto_momentum, proto_average, proto_init, seed
            )
        self._init_common()

    # ---- shared pieces -------------------------------------------------------------------
    def embed(self, x: Tensor, size: Sequence[int] | None = None) -> Tensor:
        """L2-normalised pixel embeddings ``[B, d, h, w]`` (resized to ``size`` if given)."""
        z = self.projector(self.net.features(x))
        if size is not None:
            z = F.interpolate(z, size=tuple(size), mode="bilinear", align_corners=False)
        return F.normalize(z, dim=1)

    def _flatten(self, z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        h = self.hparams
        lab = downsample_labels(
            labels, z.shape[-2:], h.ignore_index, h.label_downsample, h.label_purity
        )
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), lab.reshape(-1)

    def _class_dataset_of(self, y: Tensor) -> Tensor:
        return self.class_dataset[y.clamp(0, self.total_classes - 1)]

    def contrast_mask(self, y: Tensor, own: Tensor | None = None) -> Tensor | None:
        """Which prototypes enter each pixel's InfoNCE denominator, bool ``[P, total_classes]``
        (``None``: all of them), by ``contrast_over``: ``own_dataset`` keeps the classes of the
        pixel's data set, ``background_own`` does so for background pixels only. ``own``: the
        data set of each pixel's class, when the caller has it already."""
        over = self.hparams.contrast_over
        if over == "all":
            return None
        y_safe = y.clamp(0, self.total_classes - 1)
        own = self.class_dataset[y_safe] if own is None else own
        mask = self.class_dataset[None, :] == own[:, None]
        if over == "background_own":
            is_bg = self.is_background[y_safe] & (y != self.hparams.ignore_index)
            mask = mask | ~is_bg[:, None]
        return mask

    # ---- steps -----------------------------------------------------------------------------
    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        images, labels, ds = batch
        x, labels = self._prepare(images, labels)
        h = self.hparams
        if h.method == "mdp":
            loss, logs = self._mdp_step(x, labels, ds)
        elif h.method == "naive_multi" and h.naive_mode == "separate_heads":
            loss, logs = self._separate_heads_step(x, labels, ds)
        else:
            logits = self.net(x, 0)
            loss = F.cross_entropy(logits, labels, ignore_index=h.ignore_index)
            logs = {"ce": loss.detach()}
        self.check_finite(loss)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, on_step=True, on_epoch=False)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _separate_heads_step(
        self, x: Tensor, labels: Tensor, ds: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy of each image under its own data set's head, averaged over all
        labelled pixels of the batch (every head stays in the graph for DDP)."""
        ign = self.hparams.ignore_index
        feats = self.net.features(x)
        total = (labels != ign).sum().clamp_min(1)
        loss = feats.sum() * 0.0
        for d, offset in enumerate(self.offsets):
            pick = ds == d
            if not bool(pick.any()):
                loss = loss + 0.0 * sum(p.sum() for p in self.net.classifiers[d].parameters())
                continue
            lab = labels[pick]
            local = torch.where(lab == ign, lab, lab - offset)
            logits = self.net.classify(feats[pick], d, lab.shape[-2:])
            loss = loss + F.cross_entropy(logits, local, ignore_index=ign, reduction="sum") / total
        return loss, {"ce": loss.detach()}

    def _mdp_step(self, x: Tensor, labels: Tensor, ds: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        h = self.hparams
        g = self.mix_generator
        ign, tau = h.ignore_index, h.temperature
        logs: dict[str, Tensor] = {}
        if h.region_mix_prob > 0 and float(torch.rand(1, generator=g)) < h.region_mix_prob:
            partners = cross_dataset_partners(ds, g)
            x, labels, _ = region_mix(x, labels, partners, h.region_mix_alpha, g)
        size = labels.shape[-2:] if h.loss_resolution == "input" else None
        z = self.embed(x, size)
        v, y = self._flatten(z, labels)
        # a copy: the update below must not touch tensors saved for the backward pass
        protos = self.bank.prototypes.clone()
        own = self._class_dataset_of(y)
        l_pp = pixel_prototype_contrastive(v, protos, y, tau, ign, self.contrast_mask(y, own))
        loss = l_pp
        logs["l_pp"] = l_pp.detach()
        if h.sparse_weight > 0:
            cand = None
            if h.sparse_candidates == "other_datasets":
                cand = self.class_dataset[None, :] != own[:, None]
            l_sc = pixel_class_sparse_coding(
                v, protos, y, h.sparse_k, tau, h.sparse_temperature, cand, ign, h.sparse_weighting
            )
            loss = loss + h.sparse_weight * l_sc
            logs["l_sc"] = l_sc.detach()
        if h.pixel_mix != "none" and h.pixel_mix_weight > 0:
            if h.pixel_mix == "embedding":
                vm, ya, yb, lam = mix_pixel_embeddings(
                    v, y, self.class_dataset, h.pixel_mix_pairs, h.pixel_mix_alpha, g, ign
                )
                targets = two_hot(ya, yb, lam, self.total_classes).to(v.dtype)
                l_mix = soft_prototype_contrastive(vm, protos, targets, tau)
            else:
                partners = cross_dataset_partners(ds, g)
                xm, la, lb, lam = pixel_mix(x, labels, partners, h.pixel_mix_alpha, g)
                zm = self.embed(xm, size)
                vm, ya = self._flatten(zm, la)
                _, yb = self._flatten(zm, lb)
                l_mix = lam * pixel_prototype_contrastive(vm, protos, ya, tau, ign) + (
                    1 - lam
                ) * pixel_prototype_contrastive(vm, protos, yb, tau, ign)
            loss = loss + h.pixel_mix_weight * l_mix
            logs["l_mix"] = l_mix.detach()
        with torch.no_grad():
            valid = y != ign
            if bool(valid.any()):  # nearest prototype among the pixel's own data set's classes
                sim = (v[valid].detach() @ protos.t()).masked_fill(
                    self.class_dataset[None, :] != own[valid][:, None], float("-inf")
                )
                logs["proto_acc"] = (sim.argmax(1) == y[valid]).float().mean()
            b = z.shape[0]
            image_ids = torch.arange(b, device=v.device).repeat_interleave(v.shape[0] // b)
            self.bank.update(v.detach(), y, image_ids, b, ign)
            logs["protos_seen"] = self.bank.initialized.float().mean()
        return loss, logs

    # ---- export ------------------------------------------------------------------------------
    def export(self, path: str | os.PathLike) -> None:
        """Write the pretrained network as ``.safetensors``: ``backbone.*``, ``decoder.*``
        (what fine-tuning transfers), plus ``classifiers.*`` or ``projector.*`` and
        ``prototypes``, with the architecture and label spaces as metadata."""
        tensors = dict(self.net.state_dict())
        if self.hparams.method == "mdp":
            tensors |= {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
            tensors["prototypes"] = self.bank.prototypes
        h = self.hparams
        arch = self.net.arch_kwargs()
        save_network(
            tensors,
            path,
            "segmentation_net",
            arch,
            {
                "format": "vislearn-seg-pretrained",
                "method": h.method,
                "arch": arch,
                "datasets": list(h.dataset_names or []),
                "num_classes": self.counts,
            },
        )
