"""SsCL (Zhang et al., "Semi-supervised Contrastive Learning with Similarity Co-calibration",
IEEE TMM 2022, arXiv:2105.07387), and its classifier branch alone as the FixMatch-style
``pseudolabel`` baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.engine.augment_ops import attach_view_augment
from vislearn.engine.momentum import momentum_copy
from vislearn.engine.queue import LabelledMemoryQueue
from vislearn.engine.ssl import SSLMethod
from vislearn.losses.contrastive import class_positive_info_nce
from vislearn.losses.semi import (
    CALIBRATION_MODES,
    DistributionAlignment,
    calibrate,
    masked_pseudo_label_ce,
    memory_class_distribution,
    pseudo_labels,
)
from vislearn.models import MLPHead
from vislearn.tasks.ssl.methods.registry import register_method

CALIBRATION_MEMORIES = ("all", "labelled")


@register_method("sscl")
class SsCL(SSLMethod):
    """SsCL: a contrastive and a cross-entropy branch on one backbone, calibrating each other.

    Only the abstract and the first paragraph of the paper were available, so the algorithm is
    our reconstruction of Zhang et al., IEEE TMM 2022 (arXiv:2105.07387) [UNVERIFIED], with
    every open choice a parameter. Train it with a label fraction (``data.label_fraction``):
    batches then hold labelled rows and unlabelled rows whose labels are hidden (``-1``).

    **Networks.** Backbone ``f``, classifier ``h`` (linear), MoCo v2 projector ``g`` (embedding
    ``z``, ℓ2-normalised), and an EMA ("momentum", ``ema_base``) copy of all three, the teacher.
    Views: weak ``w(x)`` (crop 0.5-1 + flip) and strong ``s(x)`` (MoCo v2's augmentation): the
    ``"semi"`` augmentation preset.

    **Per step**, with ``p_u = softmax(h_m(f_m(w(u))))`` and ``k_u = g_m(f_m(w(u)))`` from the
    teacher on the weak view:

    1. Labelled CE ``L_x = CE(h(f(w(x_l))), y_l)``.
    2. Contrastive → CE calibration of the pseudo-labels (``calib_*``) [UNVERIFIED]: optional
       distribution alignment ``p_u ← Normalize(p_u / p̄)`` (``dist_align``, over the last
       ``dist_align_history`` batches), then the class distribution of ``k_u``'s neighbours in the
       queue (the memory of teacher keys with their classes) ``a_uj = softmax_j(k_u·k_j/τ_s)``,
       ``q_u^c = Σ_j a_uj 1[y_j = c]`` over entries with a class (``τ_s = calib_temperature``;
       ``calib_memory="all"``: true labels and confident pseudo-labels, ``"labelled"``: true
       labels only), and ``p̃_u ∝ p_u ⊙ q_u^w`` (``calib_mode="product"``, ``w = calib_weight``;
       the notes' default with ``w = 1``) or ``p̃_u = (1 - w) p_u + w q_u`` (``"mix"``, CoMatch's
       form) or ``p̃_u = p_u`` (``"none"``).
    3. Unlabelled CE on the strong view, FixMatch-style: ``ŷ_u = argmax p̃_u``, mask
       ``m_u = 1[max p̃_u ≥ T]`` (``threshold``), ``L_u = (1/|U|) Σ_u m_u CE(h(f(s(u))), ŷ_u)``
       (``hard_labels=False``: soft targets ``p̃_u``).
    4. CE → contrastive positives: every row gets a class ``c_i``: its label if labelled, ``ŷ_u``
       if ``m_u``, else none. The query ``z_i = g(f(s(x_i)))`` is contrasted with its own key and
       the queue; its positives are the own key and every queue entry of class ``c_i`` (agreeing
       predictions; a row without a class has only its own key, i.e. MoCo):
       ``L_c = -(1/N) Σ_i Σ_{j∈P_i} w_ij log softmax_j([z_i·k_i, z_i·Q]/τ)``
       (:func:`~vislearn.losses.contrastive.class_positive_info_nce`; ``w`` uniform over ``P_i``,
       or ``instance_weight`` on the own key and the rest shared by the class positives).
    5. ``L = L_x + λ_u L_u + λ_c L_c``; the keys enter the queue with their classes
       (:class:`~vislearn.engine.queue.LabelledMemoryQueue`; the ground-truth flag separates
       labels from pseudo-labels). Hidden labels never reach the method: unlabelled rows arrive
       as ``-1``.

    **Warm-up** (``pseudo_warmup_epochs``): before it the branches train side by side
    (``L_x`` + MoCo) without pseudo-labels, calibration or class positives (CoMatch waits one
    epoch); the classes still enter the queue.

    **Strong view extras** (``strong_augment``): ``"mra"`` adds MRA
    (:class:`~vislearn.data.mra.MaskReconstruct`, the frozen MAE in file ``mae``, options
    ``mra``) on top of the strong view, after its crop and colour jitter, each image with
    probability ``mra["prob"]``; ``"randaugment"`` adds RandAugment (options ``randaugment``) on
    the ``uint8`` images before the strong view's crop. ``None``: the preset alone.

    Other choices [UNVERIFIED]: the teacher (not the online network, as in FixMatch) makes
    the pseudo-labels, as the notes suggest, and its keys both fill the queue and serve the
    calibration; the unlabelled stream excludes the labelled images; defaults follow FixMatch
    (``T = 0.95``, ``λ_u = 1``, hard labels) and CoMatch (``τ_s = 0.1``), ``λ_c = 1``. Each
    online forward is one backbone call (strong view of all rows, weak view of the labelled
    rows), so ``joint_views`` is ignored. Ablations: ``calib_mode="none"`` switches off the
    contrastive → CE direction, ``instance_weight=1`` the CE → contrastive one, and
    ``use_contrastive=False`` the whole contrastive branch (the ``pseudolabel`` method).
    """

    default_augment = "semi"

    def __init__(
        self,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        ema_base: float = 0.99,
        use_contrastive: bool = True,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        lambda_c: float = 1.0,
        hard_labels: bool = True,
        calib_mode: str = "product",
        calib_weight: float = 1.0,
        calib_temperature: float = 0.1,
        calib_memory: str = "all",
        instance_weight: float | None = None,
        dist_align: bool = False,
        dist_align_history: int = 128,
        pseudo_warmup_epochs: int = 0,
        strong_augment: str | None = None,
        mae: str | None = None,
        mra: dict | None = None,
        randaugment: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(ema_base=ema_base, **kwargs)
        self.save_hyperparameters()
        name = getattr(self, "method_name", "sscl")
        num_classes = self.hparams.num_classes
        if not num_classes:
            raise VislearnError(f"{name} needs a labelled dataset (num_classes > 0)")
        if not 0.0 <= threshold <= 1.0 or min(lambda_u, lambda_c) < 0:
            raise VislearnError(
                f"{name} needs threshold in [0, 1] and lambda_u, lambda_c >= 0, got "
                f"{threshold}, {lambda_u}, {lambda_c}"
            )
        if calib_mode not in CALIBRATION_MODES or calib_memory not in CALIBRATION_MEMORIES:
            raise VislearnError(
                f"{name}: calib_mode must be one of {CALIBRATION_MODES} and calib_memory one "
                f"of {CALIBRATION_MEMORIES}, got {calib_mode!r}, {calib_memory!r}"
            )
        if calib_weight < 0 or (calib_mode == "mix" and calib_weight > 1):
            raise VislearnError(f"{name}: calib_weight must be >= 0 (<= 1 for 'mix')")
        if instance_weight is not None and not 0.0 <= instance_weight <= 1.0:
            raise VislearnError(f"{name}: instance_weight must be null or in [0, 1]")
        if strong_augment is not None:
            attach_view_augment(self.augment, 1, strong_augment, mae, mra, randaugment)
        self.classifier = nn.Linear(self.backbone.num_features, num_classes)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_classifier = momentum_copy(self.classifier)
        if use_contrastive:
            self.projector = MLPHead(
                self.backbone.num_features, proj_hidden_dim, proj_dim, batch_norm=False
            )
            self.momentum_projector = momentum_copy(self.projector)
            self.queue = LabelledMemoryQueue(queue_size, proj_dim)
        self.align = DistributionAlignment(num_classes, dist_align_history) if dist_align else None

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [
            (self.backbone, self.momentum_backbone),
            (self.classifier, self.momentum_classifier),
        ]
        if self.hparams.use_contrastive:
            pairs.append((self.projector, self.momentum_projector))
        return pairs

    @property
    def coupled(self) -> bool:
        """After the warm-up: pseudo-labels, calibration and class positives are on."""
        return self.current_epoch >= self.hparams.pseudo_warmup_epochs

    @torch.no_grad()
    def teacher(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """EMA network on (weak) views: class probabilities ``[N, C]`` and keys ``[N, D]``."""
        feats = self.momentum_backbone(x)
        probs = self.momentum_classifier(feats).softmax(dim=1)
        keys = self.momentum_projector(feats) if self.hparams.use_contrastive else None
        return probs, keys

    @torch.no_grad()
    def pseudo_targets(self, probs: Tensor, keys: Tensor | None) -> Tensor:
        """Distribution alignment, then calibration by the queue's similarity distribution."""
        h = self.hparams
        if self.align is not None:
            probs = self.align(probs)
        if keys is None or h.calib_mode == "none":
            return probs
        memory_classes = self.queue.labels
        if h.calib_memory == "labelled":
            memory_classes = torch.where(self.queue.is_labelled, memory_classes, -1)
        similarity = memory_class_distribution(
            keys, self.queue.queue, memory_classes, h.num_classes, h.calib_temperature
        )
        return calibrate(probs, similarity, h.calib_mode, h.calib_weight)

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        h = self.hparams
        weak, strong = views[0], views[1]
        labelled = labels >= 0
        probs, keys = self.teacher(weak)
        feats = self.backbone(strong)

        if labelled.any():
            logits_l = self.classifier(self.backbone(weak[labelled]))
            loss_x = F.cross_entropy(logits_l, labels[labelled])
        else:
            loss_x = feats.sum() * 0.0

        unl = ~labelled
        coupled = self.coupled
        targets = self.pseudo_targets(probs[unl], keys[unl] if keys is not None else None)
        pseudo, confident = pseudo_labels(targets, h.threshold)
        confident &= coupled
        loss_u = masked_pseudo_label_ce(
            self.classifier(feats[unl]), targets, confident, h.hard_labels
        )
        loss = loss_x + h.lambda_u * loss_u
        out = {"loss_x": loss_x.detach(), "loss_u": loss_u.detach()}
        if unl.any():
            out["mask_rate"] = confident.float().mean()

        if h.use_contrastive:
            classes = labels.clone()
            classes[unl] = torch.where(confident, pseudo, -1)
            query_classes = classes if coupled else torch.full_like(classes, -1)
            loss_c = class_positive_info_nce(
                self.projector(feats),
                keys,
                self.queue.negatives,
                query_classes,
                self.queue.labels,
                h.temperature,
                h.instance_weight,
            )
            self.queue.enqueue(keys, classes, labelled)
            loss = loss + h.lambda_c * loss_c
            out["loss_c"] = loss_c.detach()
        return {"loss": loss, "feats": feats, **out}


@register_method("pseudolabel")
class PseudoLabel(SsCL):
    """FixMatch-style pseudo-labelling: SsCL's classifier branch alone (the SsCL baseline).

    Exactly :class:`SsCL` with ``use_contrastive=False``: labelled CE on the weak view plus the
    thresholded pseudo-label CE on the strong view, pseudo-labels from the EMA teacher on the
    weak view (optionally distribution-aligned); no projector, queue, calibration or class
    positives. Same defaults (``threshold=0.95``, ``lambda_u=1``, hard labels).
    """

    def __init__(self, **kwargs) -> None:
        if kwargs.pop("use_contrastive", False):  # False: saved hyper-parameters, reloaded
            raise VislearnError("pseudolabel has no contrastive branch; use sscl for one")
        super().__init__(use_contrastive=False, **kwargs)
