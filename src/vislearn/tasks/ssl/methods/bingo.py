"""BINGO ("Bag of Instances Aggregation Boosts Self-supervised Distillation", Xu, Fang et al.,
ICLR 2022, arXiv:2107.01691): distil a frozen pretrained teacher into a small student, with
positives drawn from bags of related instances."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError
from vislearn.data.mixing import cutmix
from vislearn.engine.bag_pairs import BagPairs
from vislearn.engine.bags import module_fingerprint
from vislearn.engine.queue import MemoryQueue
from vislearn.engine.ssl import SSLMethod
from vislearn.losses.contrastive import info_nce
from vislearn.losses.cross_sample import cross_sample_info_nce
from vislearn.models import MLPHead
from vislearn.models.frozen import load_frozen
from vislearn.ops.features import extract_features
from vislearn.ops.neighbours import group_bags, kmeans
from vislearn.tasks.ssl.methods.registry import register_method

BAG_SOURCES = ("knn", "kmeans", "labels")
LOSS_FORMS = ("code", "paper")


@register_method("bingo")
class BINGO(BagPairs, SSLMethod):
    """BINGO: a student (backbone + MLP head) learns to match a frozen teacher's embeddings of
    an image *and of the other members of its bag*.

    **Teacher** (``teacher``: a local file, see :func:`~vislearn.models.frozen.load_frozen`):
    a pretrained backbone plus its projection head (a MoCo v2 teacher's ``d -> 2048 -> 128``
    MLP; the EMA copy when the checkpoint has one), frozen. ``teacher_bn_mode="eval"`` (our
    default) uses its running BatchNorm statistics; ``"train"`` reproduces the release, whose
    teacher is never put in eval mode and so normalises with batch statistics.

    **Bags** (``bag_source``), computed once before the first epoch from the teacher's pooled
    *backbone* features (before its head) of the un-augmented training set, and cached
    (:class:`~vislearn.engine.bag_pairs.BagPairs`): ``"knn"`` (default, the release): the
    ``bag_k`` (5) nearest other samples by cosine; ``"kmeans"``: ``bag_k`` random members of
    the sample's spherical k-means cluster (``bag_clusters`` clusters); ``"labels"``: ``bag_k``
    random members of its class (the paper's upper-bound study; needs labels). Each epoch
    every anchor ``x_a`` gets one member ``x_p`` of its bag, drawn uniformly.

    **Views**: ``t1(x_a), t3(x_p)`` (student), ``t2(x_a), t4(x_p)`` (teacher), independent
    MoCo v2 augmentations; ``s = normalize(student(.))``, ``t = normalize(teacher(.))``.
    ``ℓ(s, t)`` is InfoNCE of ``s`` against the positive ``t`` and a queue of ``queue_size``
    teacher anchor embeddings (temperature ``temperature``, τ = 0.2 as released); only ``t_a``
    is enqueued, bag members are not masked from the negatives (as released).

    **Loss** (``loss_form``):

    * ``"code"`` (default; what the released code optimises,
      :func:`~vislearn.losses.cross_sample.cross_sample_info_nce`, the CsMl template):
      ``1/3 [ℓ(s_a,t_a) + ℓ(s_p,t_p) + λ ℓ(s_m,t_a) + (1−λ) ℓ(s_m,t_p)]`` while
      ``epoch <= cross_warmup_epochs`` (10 released: the first 11 0-based epochs), then the
      own-key terms halve and the cross terms ``½ℓ(s_a,t_p) + ½ℓ(s_p,t_a)`` join. ``s_m`` is the
      student on CutMix of ``t1(x_a)`` and ``t3(x_p)`` (one box per batch, ``λ`` = kept anchor
      area, ``Beta(mix_alpha, mix_alpha)``); ``use_mix=False`` drops that group (divisor 2).
    * ``"paper"``: ``L = ℓ(s_a, t_a) + ℓ(s_p, t_a)`` (intra-sample distillation plus the
      inter-sample term that pulls a bag member towards the anchor's teacher embedding); one
      teacher pass per step.

    Choices [UNVERIFIED where the release is silent]: each student view group is its own
    backbone batch (per-group BN statistics, as MoCo v2 here); no shuffle-BN (the teacher is
    frozen, and in eval mode by default); the student head is MoCo v2's ``d -> proj_hidden_dim
    -> teacher width`` MLP without BN; k-means and label bags are sampled with replacement.
    """

    default_augment = "moco_v2"

    def __init__(
        self,
        teacher: str | None = None,
        teacher_bn_mode: str = "eval",
        bag_source: str = "knn",
        bag_k: int = 5,
        bag_clusters: int = 100,
        bag_batch_size: int = 512,
        bag_num_workers: int = 0,
        bag_cache: bool = True,
        loss_form: str = "code",
        use_mix: bool = True,
        mix_alpha: float = 2.0,
        cross_warmup_epochs: int = 10,
        cross_weights: tuple[float, float] = (0.5, 0.5),
        proj_hidden_dim: int = 2048,
        temperature: float = 0.2,
        queue_size: int = 65536,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if not teacher:
            raise VislearnError(
                "bingo needs a pretrained teacher: --teacher CKPT (a vislearn .ckpt with its "
                "projection head, e.g. runs/moco_v2/checkpoints/last.ckpt)"
            )
        if bag_source not in BAG_SOURCES or loss_form not in LOSS_FORMS:
            raise VislearnError(
                f"bingo: bag_source must be one of {BAG_SOURCES} and loss_form one of "
                f"{LOSS_FORMS}, got {bag_source!r}, {loss_form!r}"
            )
        if bag_k < 1 or bag_clusters < 1 or not mix_alpha > 0:
            raise VislearnError("bingo needs bag_k >= 1, bag_clusters >= 1 and mix_alpha > 0")
        self.teacher = load_frozen(teacher, head="projector", bn_mode=teacher_bn_mode)
        self.teacher.eval()
        dim = self.teacher.out_dim
        self.projector = MLPHead(self.backbone.num_features, proj_hidden_dim, dim, batch_norm=False)
        self.queue = MemoryQueue(queue_size, dim)
        self._teacher_fingerprint = module_fingerprint(self.teacher.backbone)  # before any drift
        self._init_bag_pairs()

    @property
    def bag_refresh_every(self) -> None:
        return None  # static bags

    @property
    def bag_encoder(self) -> nn.Module:
        return self.teacher.backbone

    def bag_fingerprint(self) -> str:
        """The teacher as loaded (train-mode BN statistics drift during training)."""
        return self._teacher_fingerprint

    def compute_bags(self, dataset: Dataset) -> Tensor:
        h = self.hparams
        if h.bag_source == "knn":
            return super().compute_bags(dataset)
        if h.bag_source == "labels":
            labels = getattr(dataset, "labels", None)
            if labels is None:
                raise VislearnError("bingo bag_source='labels' needs a labelled training set")
            return group_bags(labels, h.bag_k, h.seed)
        feats, _ = extract_features(
            self.bag_encoder, dataset, h.bag_batch_size, self.device, h.bag_num_workers
        )
        return group_bags(kmeans(feats, h.bag_clusters, seed=h.seed).cpu(), h.bag_k, h.seed)

    def _student(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone(x)
        return feats, self.projector(feats)

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        """``views[i]`` is ``[anchors; bag members]`` (``2N`` rows)."""
        h = self.hparams
        n = labels.shape[0]
        x_s, x_t = views[0], views[1]
        if x_s.shape[0] != 2 * n:
            raise VislearnError("bingo: views must hold the anchors and then their bag members")
        paper = h.loss_form == "paper"
        groups = [x_s[:n], x_s[n:]]
        lam = None
        if h.use_mix and not paper:
            mixed, lam = cutmix(x_s[:n], x_s[n:], h.mix_alpha, self.augment.generator)
            groups.append(mixed)
        outs = self.forward_views(self._student, groups)
        feats = outs[0][0]
        s_a, s_p = outs[0][1], outs[1][1]
        teacher_groups = [x_t[:n]] if paper else [x_t[:n], x_t[n:]]
        with torch.no_grad():
            t_out = [self.teacher(x) for x in teacher_groups]
        t_a = t_out[0]
        negatives, tau = self.queue.negatives, h.temperature
        if paper:
            loss_intra = info_nce(s_a, t_a, negatives, tau)
            loss_inter = info_nce(s_p, t_a, negatives, tau)
            loss = loss_intra + loss_inter
            extra = {"loss_intra": loss_intra.detach(), "loss_inter": loss_inter.detach()}
        else:
            cross = self.current_epoch > h.cross_warmup_epochs
            loss = cross_sample_info_nce(
                s_a,
                t_a,
                negatives,
                tau,
                q_nb=s_p,
                k_nb=t_out[1],
                q_mix=outs[2][1] if lam is not None else None,
                lam=lam,
                cross=cross,
                weights=h.cross_weights,
            )
            extra = {"cross_terms": loss.new_tensor(float(cross))}
            if lam is not None:
                extra["mix_lam"] = loss.new_tensor(lam)
        self.queue.enqueue(t_a)
        return {"loss": loss, "feats": feats, **extra}
