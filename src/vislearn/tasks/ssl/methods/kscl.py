"""KSCL (Xu, Xiong & Qi, TPAMI 2022): K augmented keys span an instance subspace; a query is
scored by the length of its projection onto it (K = 1 scores |q·k|: MoCo's logit
up to its sign)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.augment import PRESETS, AugmentConfig, MultiViewAugment
from vislearn.engine.momentum import momentum_copy
from vislearn.engine.ssl import SSLMethod
from vislearn.engine.subspace_queue import SubspaceQueue
from vislearn.losses.subspace import kscl_logits, subspace_basis
from vislearn.models import MLPHead
from vislearn.tasks.ssl.methods.registry import register_method

SUBSPACE_ENCODERS = ("momentum", "online")


@register_method("kscl")
class KSCL(SSLMethod):
    """K-shot contrastive learning on a MoCo v2 base (momentum encoder, queue, MLP head).

    Per step: one query view ``q = f_q(t_0(x))`` and ``K`` key views ``t_1..t_K`` (the
    augmentation has ``1 + K`` views: the preset's first view config for the query, its second
    for every key). The keys span the instance subspace (``losses/subspace.py``); the loss is
    InfoNCE over subspace scores, the positive instance's subspace against the queued
    subspaces of earlier batches::

        L = -log exp(s_+(q)/τ) / (exp(s_+(q)/τ) + Σ_n exp(s_n(q)/τ)),   s(q) = ‖P q‖

    Only the abstract and introduction of the paper were available, so everything below the
    concept is a documented reconstruction [UNVERIFIED] of Xu, Xiong & Qi, TPAMI 2022
    (arXiv:2007.13310):

    * ``num_keys`` ``K`` and ``subspace_rank`` ``L ≤ K`` (default ``L = K``: the full span of the
      keys; no truncation, and the gradient through the eigendecomposition has no gap terms).
    * ``score="norm"`` uses ``s = ‖P q‖`` (``K = L = 1`` gives ``|q·k|``, MoCo's logit up to its
      sign); ``"squared"`` uses ``s²``.
    * ``eps`` floors the Gram eigenvalues at ``ε`` (``1/max(λ, ε)``), so duplicate augmentations
      (rank-deficient key sets) give finite scores and gradients.
    * ``subspace_encoder="momentum"``: the positive subspace comes from the EMA encoder's keys
      (no gradient through the eigendecomposition; MoCo-style). ``"online"``: the positive
      subspace is built from the online encoder's embeddings of the K key views, with the
      gradient through the (custom, degeneracy-safe) eigendecomposition backward -- the
      paper's "differentiable subspace configuration". In both variants the *queue* receives
      the EMA encoder's bases (as MoCo's queue holds momentum keys).
    * The queue stores each negative's basis ``V_n ∈ R^{L×d}``, not its raw keys
      (:class:`~vislearn.engine.subspace_queue.SubspaceQueue`), one entry per instance.
    * The loss is one-directional (query view 0 only), as in the MoCo v2 paper; ``τ`` default
      0.2 as MoCo v2. Shuffle-BN is not implemented (use ``--sync-batchnorm`` on several GPUs).

    Cost per step: ``K`` momentum-encoder forwards (plus ``K`` online forward/backward passes
    with ``subspace_encoder="online"``) against MoCo's one (two for symmetric MoCo).
    """

    default_augment = "moco_v2"

    def __init__(
        self,
        num_keys: int = 2,
        subspace_rank: int | None = None,
        eps: float = 1e-3,
        score: str = "norm",
        subspace_encoder: str = "momentum",
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        ema_base: float = 0.99,
        **kwargs,
    ) -> None:
        super().__init__(ema_base=ema_base, **kwargs)
        self.save_hyperparameters()
        rank = subspace_rank or num_keys
        if num_keys < 1 or not 1 <= rank <= num_keys:
            raise VislearnError(
                f"kscl needs num_keys >= 1 and 1 <= subspace_rank <= num_keys, got "
                f"num_keys={num_keys}, subspace_rank={subspace_rank}"
            )
        if score not in ("norm", "squared"):
            raise VislearnError(f"kscl score must be 'norm' or 'squared', got {score!r}")
        if subspace_encoder not in SUBSPACE_ENCODERS:
            raise VislearnError(
                f"kscl subspace_encoder must be one of {SUBSPACE_ENCODERS}, got "
                f"{subspace_encoder!r}"
            )
        if not eps > 0:
            raise VislearnError(f"kscl eps must be > 0, got {eps}")
        self.subspace_dim = rank
        preset = PRESETS[self.augment_name]
        query_view, key_view = preset.views[0], preset.views[min(1, len(preset.views) - 1)]
        self.augment = MultiViewAugment(
            AugmentConfig((query_view,) + (key_view,) * num_keys),
            self.hparams.image_size,
            self.hparams.in_chans,
            self.hparams.seed,
        )
        self.projector = MLPHead(
            self.backbone.num_features, proj_hidden_dim, proj_dim, batch_norm=False
        )
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.queue = SubspaceQueue(queue_size, rank, proj_dim)

    @property
    def augment_name(self) -> str:
        return self.hparams.augment or self.default_augment

    def momentum_pairs(self):
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        h = self.hparams
        n, k = views[0].shape[0], h.num_keys
        if len(views) != 1 + k:
            raise VislearnError(f"kscl with num_keys={k} needs {1 + k} views, got {len(views)}")
        online = h.subspace_encoder == "online"

        def encode(x: Tensor) -> tuple[Tensor, Tensor]:
            feats = self.backbone(x)
            return feats, self.projector(feats)

        outs = self.forward_views(encode, views if online else views[:1])
        feats, q = outs[0]
        with torch.no_grad():
            keys_m = torch.stack(
                self.forward_views(
                    lambda x: self.momentum_projector(self.momentum_backbone(x)), views[1:]
                ),
                dim=1,
            )  # [n, K, d]
        keys = torch.stack([z for _, z in outs[1:]], dim=1) if online else keys_m
        logits = kscl_logits(
            q, keys, self.queue.bases, h.temperature, self.subspace_dim, h.eps, h.score == "squared"
        )
        loss = F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=q.device))
        self.queue.enqueue(subspace_basis(keys_m, self.subspace_dim, h.eps))
        s = logits.detach() * h.temperature
        return {
            "loss": loss,
            "feats": feats,
            "pos_score": s[:, 0].mean(),
            "neg_score": s[:, 1:].mean(),
        }
