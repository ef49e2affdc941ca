"""CsMl ("Seed the Views", Xu et al., arXiv 2012.02733 / TPAMI 2022): MoCo v2 with kNN
cross-sample positives, CutMix seeding and multi-level (intermediate-layer) losses."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.data.mixing import cutmix
from vislearn.engine.bag_pairs import BagPairs
from vislearn.engine.momentum import momentum_copy
from vislearn.engine.queue import MemoryQueue
from vislearn.losses.cross_sample import cross_sample_info_nce
from vislearn.models import MLPHead
from vislearn.tasks.ssl.methods.moco_v2 import MoCoV2
from vislearn.tasks.ssl.methods.registry import register_method


@register_method("csml")
class CsMl(BagPairs, MoCoV2):
    """CsMl: MoCo v2 + kNN cross-sample positives + CutMix seeding + multi-level heads.

    **Bags** (``bag_*``). At every epoch ``e`` with ``e % bag_refresh_epochs == 0`` (epoch 0
    included, i.e. a random-init encoder, as released) the momentum encoder's pooled backbone
    features (before the head) of the whole un-augmented training set give each sample its
    ``bag_k`` nearest other samples (cosine on L2-normalised features = the release's faiss L2
    ranking; exact blocked search on the training device, sharded over ranks:
    :func:`~vislearn.ops.neighbours.dataset_knn_bags`). The encoder runs in eval mode
    (running BN statistics) -- the release's mode is not recorded; this is our choice. Bags are
    cached under ``<default_root_dir>/bags/bags_epochEEEE.pt`` (:class:`~vislearn.engine.bags.
    BagCache`), so a resumed run reloads instead of recomputing. Each epoch every sample is
    paired with one bag member drawn uniformly (seeded by ``(seed, epoch)``); batches are
    ``(anchor, neighbour, label)`` (:class:`~vislearn.engine.bag_pairs.BagPairs`).

    **Views.** The 2-view augmentation runs on ``cat([anchor, neighbour])``, giving four
    independent views: query/key of the anchor and of the neighbour.

    **Loss** (:func:`~vislearn.losses.cross_sample.cross_sample_info_nce`, the released
    weighting): one softmax per positive over the shared queue negatives, ``1/3`` normalisation,
    cross terms ``ℓ(q, k_nb)``, ``ℓ(q_nb, k)`` on only when ``current_epoch >
    cross_warmup_epochs`` (the release's ``epoch > 10``: 0-based epochs, so ``10`` gates the
    first 11 epochs and ``-1`` never gates), weights ``cross_weights = (w1, w2)``; only the
    anchor key is enqueued. The released loss is one-directional (``symmetric`` MoCo is off).

    **Seeding** (``use_mix``). CutMix of the anchor's and the neighbour's query views, one box
    per batch, ``λ0 ~ Beta(mix_alpha, mix_alpha)``, ``λ`` = anchor pixels kept after clipping
    (:func:`~vislearn.data.mixing.cutmix`); its query has positives ``k`` (weight ``λ``) and
    ``k_nb`` (``1 − λ``), active from epoch 0 as released; ``gate_mix=True`` also holds it
    back during the cross warm-up (a deviation suggested for ablation, off by default).

    **Multi-level** (``use_multilevel``) [UNVERIFIED: not in the released code]. For each index
    in ``multilevel_stages`` (default ``-2``: the stage before the last, ResNet ``layer3``) the
    stage map is globally average-pooled and fed to its own MLP head (hidden
    ``multilevel_hidden_dim``, default ``proj_hidden_dim``), with its own momentum copy and its
    own queue; the same loss with the same positives, bags and ``λ`` is applied there, and
    ``L = L_top + beta * Σ_levels L_level``.

    **Ablation switches**: ``use_cross_sample`` (neighbour query group and cross terms),
    ``use_mix``, ``use_multilevel``; the divisor ``3`` becomes the number of query groups in
    use, so all three off is exactly asymmetric MoCo v2. Other choices: each view group
    (anchor, neighbour, mixed query; anchor, neighbour key) is its own backbone batch, i.e.
    its own BN statistics as in MoCo v2 (``joint_views=True`` batches them); ``ema_base``
    0.99 as vislearn's MoCo v2 (the release: 0.999); no shuffle-BN (use ``--sync-batchnorm``
    on several GPUs).
    """

    def __init__(
        self,
        bag_k: int = 5,
        bag_refresh_epochs: int = 5,
        bag_batch_size: int = 512,
        bag_num_workers: int = 0,
        bag_cache: bool = True,
        use_cross_sample: bool = True,
        use_mix: bool = True,
        use_multilevel: bool = True,
        cross_warmup_epochs: int = 10,
        cross_weights: tuple[float, float] = (0.5, 0.5),
        gate_mix: bool = False,
        mix_alpha: float = 2.0,
        multilevel_stages: tuple[int, ...] = (-2,),
        multilevel_hidden_dim: int | None = None,
        beta: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(symmetric=False, **kwargs)
        self.save_hyperparameters()
        h = self.hparams
        if bag_k < 1 or bag_refresh_epochs < 1:
            raise VislearnError(
                f"csml needs bag_k >= 1 and bag_refresh_epochs >= 1, got {bag_k}, "
                f"{bag_refresh_epochs}"
            )
        if len(cross_weights) != 2 or min(cross_weights) < 0 or not mix_alpha > 0:
            raise VislearnError(
                "csml needs two non-negative cross_weights and mix_alpha > 0, got "
                f"{list(cross_weights)}, {mix_alpha}"
            )
        self.ml_stages: list[int] = []
        channels = list(self.backbone.stage_channels)
        for s in multilevel_stages if use_multilevel else ():
            if not -len(channels) <= s < len(channels) or s % len(channels) == len(channels) - 1:
                raise VislearnError(
                    f"csml multilevel_stages: {s} is not an intermediate stage of {h.backbone} "
                    f"(0..{len(channels) - 2}, or a negative index, excluding the last stage)"
                )
            self.ml_stages.append(s % len(channels))
        hidden = multilevel_hidden_dim or h.proj_hidden_dim
        self.ml_projectors = nn.ModuleList(
            MLPHead(channels[s], hidden, h.proj_dim, batch_norm=False) for s in self.ml_stages
        )
        self.momentum_ml_projectors = momentum_copy(self.ml_projectors)
        self.ml_queues = nn.ModuleList(
            MemoryQueue(h.queue_size, h.proj_dim) for _ in self.ml_stages
        )
        self._init_bag_pairs()

    @property
    def uses_neighbours(self) -> bool:
        return bool(self.hparams.use_cross_sample or self.hparams.use_mix)

    def momentum_pairs(self):
        pairs = super().momentum_pairs()
        if self.ml_stages:
            pairs.append((self.ml_projectors, self.momentum_ml_projectors))
        return pairs

    @property
    def bag_encoder(self) -> nn.Module:
        return self.momentum_backbone

    def _encoder(self, backbone: nn.Module):
        """``x -> (pooled, *pooled maps of the multi-level stages)`` for ``forward_views``."""

        def encode(x: Tensor) -> tuple[Tensor, ...]:
            if not self.ml_stages:
                return (backbone(x),)
            pooled, maps = backbone.forward_features(x, return_stages=True)
            return (pooled, *(maps[s].mean(dim=(2, 3)) for s in self.ml_stages))

        return encode

    def _encode_groups(self, backbone: nn.Module, groups: list[Tensor]) -> list[Tensor]:
        """Per level (top, then multi-level stages): the features of all ``groups`` stacked
        in order. Each group is one view batch (separate BN statistics unless
        ``joint_views``), like MoCo v2's two views."""
        outs = self.forward_views(self._encoder(backbone), groups)
        return [torch.cat(level) for level in zip(*outs, strict=True)]

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        """``views[i]`` is ``[anchors; neighbours]`` (``2N`` rows) or anchors only (``N``)."""
        h = self.hparams
        n = labels.shape[0]
        x_q, x_k = views[0], views[1]
        with_nb = x_q.shape[0] == 2 * n
        if self.uses_neighbours and not with_nb:
            raise VislearnError("csml: views must hold the anchors and then their neighbours")
        epoch = self.current_epoch
        cross = bool(h.use_cross_sample) and epoch > h.cross_warmup_epochs
        mix = bool(h.use_mix) and (not h.gate_mix or epoch > h.cross_warmup_epochs)
        online = [x_q[:n]] + ([x_q[n:]] if h.use_cross_sample else [])
        lam = None
        if mix:
            mixed, lam = cutmix(x_q[:n], x_q[n:], h.mix_alpha, self.augment.generator)
            online.append(mixed)
        feats, *ml_feats = self._encode_groups(self.backbone, online)
        with torch.no_grad():
            key_groups = [x_k[:n], x_k[n:]] if with_nb else [x_k]
            key_feats, *key_ml_feats = self._encode_groups(self.momentum_backbone, key_groups)
            keys = [self.momentum_projector(key_feats)]
            heads = self.momentum_ml_projectors
            keys += [head(f) for head, f in zip(heads, key_ml_feats, strict=True)]
        queries = [self.projector(feats)]
        queries += [head(f) for head, f in zip(self.ml_projectors, ml_feats, strict=True)]
        queues = [self.queue, *self.ml_queues]
        losses = []
        for z, zk, queue in zip(queries, keys, queues, strict=True):
            parts = list(z.split(n))
            q = parts.pop(0)
            q_nb = parts.pop(0) if h.use_cross_sample else None
            q_mix = parts.pop(0) if mix else None
            loss_level = cross_sample_info_nce(
                q,
                zk[:n],
                queue.negatives,
                h.temperature,
                q_nb=q_nb,
                k_nb=zk[n:] if with_nb else None,
                q_mix=q_mix,
                lam=lam,
                cross=cross,
                weights=h.cross_weights,
            )
            losses.append(loss_level)
        for zk, queue in zip(keys, queues, strict=True):
            queue.enqueue(zk[:n])  # only the anchor keys
        loss = losses[0] + h.beta * sum(losses[1:])
        out = {"loss": loss, "feats": feats[:n], "loss_top": losses[0].detach()}
        if len(losses) > 1:
            out["loss_multilevel"] = sum(losses[1:]).detach()
        out["cross_terms"] = torch.tensor(float(cross))
        if lam is not None:
            out["mix_lam"] = torch.tensor(lam)
        return out
