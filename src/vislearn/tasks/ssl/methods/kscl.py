"""KSCL (Xu, Xiong & Qi, TPAMI 2022): K augmented keys span an instance subspace; a query is
scored by the length of its projection onto it. At K = 1 the score is |q·k|, MoCo's logit up
to its sign: KSCL does not reduce exactly to MoCo."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.augment import PRESETS, AugmentConfig, MultiViewAugment
from vislearn.engine.momentum import momentum_copy
from vislearn.engine.ssl import SSLMethod
from vislearn.engine.subspace_queue import SubspaceQueue
from vislearn.losses.subspace import check_subspace_options, kscl_logits, subspace_basis
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
      keys; ``L < K`` keeps the top-``L`` principal directions of the keys' Gram matrix).
    * ``score="norm"`` uses ``s``; ``"squared"`` uses ``s²``. At ``K = L = 1`` ``s = |q·k|``:
      MoCo's logit up to its sign, so KSCL with one key is *not* MoCo (a queued negative with
      a negative cosine scores ``+|q·k|``).
    * ``weighting`` (module docstring of ``losses/subspace.py``): ``"projection"`` (default,
      ``s = ‖P q‖``: every kept direction at full weight) or ``"eigenvalue"`` (direction ``l``
      weighted by ``λ_l / λ_1``, its share of the keys' energy relative to the principal one).
    * ``eps`` and ``eps_mode`` regularise the Gram eigenvalues: ``"floor"`` (default,
      ``1/max(λ, ε)``) keeps the exact projection for every direction with ``λ ≥ ε`` -- a
      near-degenerate direction such as the difference of two keys at cosine 0.99
      (``λ = 0.01``) gets **full weight** -- and shrinks only ``λ < ε`` (duplicate
      augmentations give finite scores and gradients); ``"ridge"`` (``1/(λ + ε)``) shrinks
      every direction by ``λ/(λ + ε)``.
    * ``subspace_encoder="momentum"``: the positive subspace comes from the EMA encoder's keys
      (no gradient through the eigendecomposition; MoCo-style). ``"online"``: the positive
      subspace is built from the online encoder's embeddings of the K key views, with the
      gradient through the (custom, degeneracy-safe) eigendecomposition backward -- the
      paper's "differentiable subspace configuration". In both variants the *queue* receives
      the EMA encoder's bases (as MoCo's queue holds momentum keys).
    * The queue stores each negative's basis ``V_n ∈ R^{L×d}``, not its raw keys
      (:class:`~vislearn.engine.subspace_queue.SubspaceQueue`), one entry per instance.
    * ``symmetric=False`` (default): the loss is one-directional (query view 0 only), as in
      the MoCo v2 paper. ``symmetric=True`` mirrors symmetric MoCo v2 (``moco_v2.py``): views
      0 and 1 are both queries, each scored against the subspace of the *other* ``K`` views
      (view 0 against views ``1..K``, view 1 against views ``0, 2..K``), and the loss is the
      mean of the two InfoNCE terms. At ``K = 1`` this is symmetric MoCo v2's pairing (with
      ``|q·k|``). The queue still receives **one** entry per instance per step, the momentum
      basis of views ``1..K`` (the asymmetric variant's entry), so the queue holds the same
      number of instances (``queue_size``) and means the same thing in both variants;
      symmetric MoCo v2 instead enqueues both of its keys (two entries per instance).
    * ``τ`` default 0.2 as MoCo v2. Shuffle-BN is not implemented (use ``--sync-batchnorm``
      on several GPUs).

    Cost per step: one online forward/backward pass (two with ``symmetric``) and ``K``
    momentum-encoder forwards (``K + 1`` with ``symmetric``; every view's online pass with
    ``subspace_encoder="online"``) against one of each for one-directional MoCo v2 and two of
    each for symmetric MoCo v2.
    """

    default_augment = "moco_v2"

    def __init__(
        self,
        num_keys: int = 2,
        subspace_rank: int | None = None,
        eps: float = 1e-3,
        score: str = "norm",
        subspace_encoder: str = "momentum",
        symmetric: bool = False,
        weighting: str = "projection",
        eps_mode: str = "floor",
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
        try:
            check_subspace_options(eps, weighting, eps_mode)
        except ValueError as exc:
            raise VislearnError(f"kscl {exc}") from None
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

    def _logits(self, q: Tensor, keys: Tensor) -> Tensor:
        h = self.hparams
        return kscl_logits(
            q,
            keys,
            self.queue.bases,
            h.temperature,
            self.subspace_dim,
            h.eps,
            h.score == "squared",
            h.weighting,
            h.eps_mode,
        )

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        h = self.hparams
        n, k = views[0].shape[0], h.num_keys
        if len(views) != 1 + k:
            raise VislearnError(f"kscl with num_keys={k} needs {1 + k} views, got {len(views)}")
        online = h.subspace_encoder == "online"
        num_queries = 2 if h.symmetric else 1

        def encode(x: Tensor) -> tuple[Tensor, Tensor]:
            feats = self.backbone(x)
            return feats, self.projector(feats)

        outs = self.forward_views(encode, views if online else views[:num_queries])
        feats = outs[0][0]
        first_key = 0 if h.symmetric else 1  # view 0 is a key of query 1 when symmetric
        with torch.no_grad():
            momentum = self.forward_views(
                lambda x: self.momentum_projector(self.momentum_backbone(x)), views[first_key:]
            )
        z_m = dict(enumerate(momentum, start=first_key))
        z = {i: out[1] for i, out in enumerate(outs)} if online else z_m

        def keys_of(query: int, source: dict[int, Tensor]) -> Tensor:
            """[n, K, d]: the views other than ``query`` (view 1..K for query 0)."""
            others = [0] + list(range(2, k + 1)) if query == 1 else list(range(1, k + 1))
            return torch.stack([source[i] for i in others], dim=1)

        target = torch.zeros(n, dtype=torch.long, device=views[0].device)
        logits = [self._logits(outs[i][1], keys_of(i, z)) for i in range(num_queries)]
        loss = sum(F.cross_entropy(lg, target) for lg in logits) / num_queries
        # one entry per instance and step: the momentum basis of views 1..K (module docstring)
        self.queue.enqueue(
            subspace_basis(keys_of(0, z_m), self.subspace_dim, h.eps, h.weighting, h.eps_mode)
        )
        s = torch.cat(logits).detach() * h.temperature
        return {
            "loss": loss,
            "feats": feats,
            "pos_score": s[:, 0].mean(),
            "neg_score": s[:, 1:].mean(),
        }
