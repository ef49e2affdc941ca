"""Video MoCo (clip-level MoCo) and FAME (Ding et al., CVPR 2022) on top of it.

Algorithm (one step, batch of ``B`` videos, two clips each):

1. EMA update of the momentum encoder and head (the engine, ``momentum_pairs``);
2. views ``v0, v1`` = ClipViews(clips): crop/flip, **FAME on v0 only** (``fame=True``), colour
   jitter, grayscale, blur, normalisation (:class:`~vislearn.data.video.views.ClipViews`);
3. ``q_i = g(f(v_i))``, ``k_i = g_m(f_m(v_i))`` (128-d, L2-normalised in the loss; the head
   ``g`` is Linear(d, d) -> ReLU -> Linear(d, 128), R(2+1)D's ``mlp=True`` head);
4. ``L = 1/2 [l(q0, k1) + l(q1, k0)]`` with MoCo's InfoNCE ``l`` at temperature 0.1 over the
   queue, which receives **both** key sets (``2B`` keys per step).

Choices where the method notes leave room (all parameters):

* ``queue_order="release"`` (default) reproduces the release's two sequential MoCo calls:
  ``l(q0, k1)`` uses the queue, then ``k1`` is enqueued, then ``l(q1, k0)`` uses the updated
  queue (which now holds ``k1``, the momentum key of the query's own clip, as a negative),
  then ``k0`` is enqueued. ``"shared"`` computes both terms on the queue of the start of the
  step (the image MoCo's symmetric variant) and then enqueues ``k1, k0``.
* **Shuffle-BN** needs several devices (keys are computed on a batch shuffled across GPUs);
  on one device the momentum encoder instead sees each view's batch in its own forward
  call, so BatchNorm statistics are per view group (as in the image MoCo; ``joint_views``
  switches to one concatenated batch). Under DDP use ``trainer.sync_batchnorm`` if needed.
* ``fame_masks="gt"`` uses the ground-truth foreground instead of FAME's estimated mask
  (the data must carry it as an extra channel, ``data.mask_channel: true``; synthetic data).
* The online probe (engine) is trained on the features of the **un-merged** clip ``v1``, so
  FAME and plain runs monitor the same kind of input.
* Defaults follow FAME's UCF101 recipe where one exists: tau 0.1, queue 2048, m 0.999,
  SGD lr 0.01, wd 1e-4; CPU recipes override them (``configs/video_synth/``).

``fame`` is registered as ``moco_video`` with ``fame=True``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.engine.video import VideoSSLMethod
from vislearn.losses import info_nce
from vislearn.tasks.ssl.methods.moco_v2 import MoCoV2
from vislearn.tasks.ssl.methods.registry import register_method

QUEUE_ORDERS = ("release", "shared")


@register_method("moco_video")
class VideoMoCo(VideoSSLMethod, MoCoV2):
    """Clip-level MoCo on videos (two clips per video, symmetric loss, queue)."""

    def __init__(
        self,
        fame: bool = False,
        fame_beta: float = 0.5,
        fame_avoid_self: bool = False,
        fame_hue_quirk: bool = False,
        fame_kernel_size: int | None = None,
        fame_tie_break: str = "scatter",
        fame_masks: str = "estimated",
        queue_order: str = "release",
        proj_hidden_dim: int | None = None,
        proj_dim: int = 128,
        temperature: float = 0.1,
        queue_size: int = 2048,
        ema_base: float = 0.999,
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        **kwargs,
    ) -> None:
        if queue_order not in QUEUE_ORDERS:
            raise VislearnError(f"queue_order must be one of {QUEUE_ORDERS}, got {queue_order!r}")
        super().__init__(
            proj_hidden_dim=proj_hidden_dim,
            proj_dim=proj_dim,
            temperature=temperature,
            queue_size=queue_size,
            ema_base=ema_base,
            lr=lr,
            weight_decay=weight_decay,
            **kwargs,
        )
        self.save_hyperparameters()
        self.augment = self.clip_views(
            fame=fame,
            fame_beta=fame_beta,
            fame_avoid_self=fame_avoid_self,
            fame_hue_quirk=fame_hue_quirk,
            fame_kernel_size=fame_kernel_size,
            fame_tie_break=fame_tie_break,
            fame_masks=fame_masks,
        )

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        if len(views) < 2:
            raise VislearnError("video MoCo needs two clips per video (data two_clips)")
        (f0, q0), (f1, q1) = self.forward_views(self._online, views[:2])
        with torch.no_grad():
            k0, k1 = self.forward_views(self._momentum, views[:2])
        h = self.hparams
        t = h.temperature
        if not h.symmetric:
            loss = info_nce(q0, k1, self.queue.negatives, t)
            self.queue.enqueue(k1)
            return {"loss": loss, "feats": f1}
        if h.queue_order == "release":
            loss_0 = info_nce(q0, k1, self.queue.negatives, t)
            self.queue.enqueue(k1)
            loss_1 = info_nce(q1, k0, self.queue.negatives, t)
            self.queue.enqueue(k0)
        else:
            negatives = self.queue.negatives
            loss_0 = info_nce(q0, k1, negatives, t)
            loss_1 = info_nce(q1, k0, negatives, t)
            self.queue.enqueue(k1)
            self.queue.enqueue(k0)
        return {"loss": (loss_0 + loss_1) / 2, "feats": f1, "loss_q0": loss_0, "loss_q1": loss_1}


@register_method("fame")
class FAMEMoCo(VideoMoCo):
    """FAME: video MoCo with foreground-background merging of the first clip."""

    def __init__(self, fame: bool = True, **kwargs) -> None:
        super().__init__(fame=fame, **kwargs)
