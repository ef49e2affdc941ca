"""SaGe ("Semantic-aware Generation", Tian et al., arXiv 2111.13163): BYOL plus a decoder that
rebuilds each view from the online encoder's last feature map, judged in the feature space of a
frozen label-free evaluator."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path
from vislearn.losses import byol_loss
from vislearn.models.decoder import SaGeDecoder
from vislearn.models.frozen import BN_MODES, HEAD_PREFIXES, FrozenNetwork, load_frozen
from vislearn.models.state_dict import read_state_file, unwrap_state_dict
from vislearn.ops.optim import param_groups, step_scheduler
from vislearn.tasks.ssl.methods.byol import BYOL
from vislearn.tasks.ssl.methods.registry import register_method

DECODER_OPTIMIZERS = ("adam", "sgd")
VIEW_REDUCTIONS = ("mean", "sum")


def to_signed(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Normalised images ``(x01 - mean) / std`` -> pixel space [-1, 1] (``2 * x01 - 1``)."""
    return (x * std + mean) * 2 - 1


def from_signed(s: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Inverse of :func:`to_signed`: [-1, 1] pixels -> ``(x01 - mean) / std``."""
    return ((s + 1) / 2 - mean) / std


@register_method("sage")
class SaGe(BYOL):
    """SaGe: BYOL + semantic-aware generation (decoder, frozen evaluator, feature-space MSE).

    Sources: the paper (Tian et al., arXiv:2111.13163) and its release
    (github.com/sunsmarterjie/SaGe at ``1bc5873``), its config and pipeline figure; the paper
    body was not available. [VERIFIED] marks what the release fixes, [CHOICE] what we decided.

    **Networks.** BYOL exactly as :class:`~vislearn.tasks.ssl.methods.byol.BYOL` (online backbone,
    projector, predictor; EMA target). The decoder :class:`~vislearn.models.decoder.SaGeDecoder`
    reads the online backbone's *last stage map* of view ``i`` and outputs ``x̃_i`` in [-1, 1]
    (tanh) [VERIFIED layout for 224 px / 7x7; the size rule for other inputs is ours, see the
    decoder module]. The evaluator ``h`` is a frozen, label-free network with its projection
    head, loaded from ``evaluator`` (a vislearn ``.ckpt`` of e.g. BYOL or MoCo v2, or an
    exported ``backbone.safetensors``) by :func:`~vislearn.models.frozen.load_frozen`; without a
    ``projector`` head in the file (exported backbones) the projection term uses the pooled
    features instead, with a warning [CHOICE]. A checkpoint with ``classifier.`` weights (trained
    with labels) is accepted with a warning: the method is only label-free if ``h`` is.

    **Loss** (per step, views ``x_1, x_2``; MSE = mean over elements) [VERIFIED terms and
    weights]: ``L = L_BYOL + r * Σ_i [w_pix·MSE(x_i, x̃_i) + w_proj·MSE(h^p(x_i), h^p(x̃_i))
    + w_feat·Σ_s MSE(h^s(x_i), h^s(x̃_i))]`` with the released ``w_pix = w_proj = 1/10``,
    ``w_feat = 1/30`` on the evaluator's last three stages (``evaluator_stages``; the release
    uses ResNet-50's C5, C4, C3). ``L_BYOL`` is vislearn's BYOL loss, the *mean* of the two
    directions; the release *sums* them. ``view_reduction="mean"`` (``r = 1/2``, default) keeps
    the release's ratio of the generative to the discriminative loss -- the whole released loss
    halved -- so BYOL's own gradient scale (and lr) is untouched [CHOICE];
    ``"sum"`` (``r = 1``) doubles the generative terms' relative weight. The target of
    ``x̃_i`` is the augmented view itself (colour jitter, blur, solarisation included:
    the "view-specific" information) [VERIFIED]. ``h(x_i)`` runs under ``no_grad``;
    ``h(x̃_i)`` with grad, so ``L_G`` reaches the decoder *and* the online encoder through the
    frozen evaluator, whose parameters get no gradient [VERIFIED]. Terms whose weight is 0 are
    still computed and logged, except the evaluator passes when ``w_proj = w_feat = 0``
    (then no evaluator is needed: ``evaluator=None`` is allowed). Ablations: ``w_proj = w_feat
    = 0`` (BYOL + pixel MSE), ``w_pix = 0`` (BYOL + evaluator losses); all three 0 is BYOL.

    **The released forward is broken** (``recon_img1/2`` are never assigned: NameError). We
    reconstruct it as ``x̃_i = decoder(C5_i)`` -- each view from its own online map -- as the
    decoder signature and the figure imply [CHOICE, near-certain].

    **Normalisation** [CHOICE]. The release normalises with mean = std = 0.5 so that views,
    tanh outputs and the evaluator's inputs share [-1, 1]. vislearn views are normalised with
    the data set's mean/std (:class:`~vislearn.data.augment.Normalize`), as is a vislearn
    evaluator. So: the pixel MSE compares ``to_signed(x_i) = 2·(x_i·std + mean) − 1`` with
    ``x̃_i`` (both in [-1, 1], the release's scale), and the evaluator sees
    ``from_signed(x̃_i)`` -- the reconstruction in the normalisation it was trained on -- and
    ``x_i`` unchanged. The feature terms' magnitudes still depend on the evaluator (pitfall 6
    of the notes): the 1/10, 1/30 weights were tuned for a ResNet-50 evaluator.

    **Evaluator BatchNorm** (``evaluator_bn_mode``) [CHOICE]. ``"eval"`` (default): running
    statistics, the evaluator is a fixed function. ``"train"`` is the release's behaviour (the
    frozen evaluator sits in a model in train mode): batch statistics, running statistics drift;
    real and generated batches are normalised separately (one call each). Weights are frozen in
    both; the evaluator is part of the checkpoint (so a "train"-mode run resumes with its drifted
    statistics) but never in an optimiser. In "eval" mode Lightning warns at the start of
    training that modules are in eval mode: those are the evaluator's, as intended.

    **Optimisation.** The main optimiser and schedule are BYOL's (``optimizer``, ``lr``,
    ``warmup_epochs``, ...), over everything but the decoder. The decoder has its own
    ``decoder_optimizer`` [VERIFIED: Adam, lr 0.048, betas (0.9, 0.999), no weight decay, BN and
    biases excluded from decay] with the same linear warm-up + cosine schedule. It is stepped in
    :meth:`on_before_optimizer_step`, i.e. after the shared backward and before the main step,
    under Lightning's automatic optimisation (Lightning 2 has no automatic multi-optimiser mode
    and manual optimisation would count two steps per batch in ``global_step``). With fp16 AMP
    it goes through the same ``GradScaler``. Its state (and its scheduler's) is saved in the
    checkpoint under ``sage_decoder``.

    **BatchNorm elsewhere.** The decoder uses plain BN (the release: SyncBN); on several GPUs
    ``trainer.sync_batchnorm=true`` converts it -- and the evaluator's BN, which matters only in
    "train" mode, as in the release's SyncBN evaluator.

    **Effective batch** [UNCLEAR in the release]: 8 GPUs x 64 with accumulation 2 (1024) vs. a
    config name and LARS lr 4.8 implying 4096. We do not emulate either: the batch is
    ``data.batch_size`` and the lr is given for it (no hidden scaling), the decoder's Adam lr is
    not scaled (the release's value is kept).

    **Outputs.** ``train/loss_byol``, ``loss_pix``, ``loss_proj``, ``loss_feat`` (per-view
    averages when ``view_reduction="mean"``, so ``loss = loss_byol + w_pix·loss_pix +
    w_proj·loss_proj + w_feat·loss_feat``; unweighted) and ``decoder_lr``. Each epoch rank 0
    writes ``<default_root_dir>/reconstructions/epoch_EEEE.png``: the last batch's first
    ``recon_grid_images`` first views on top, their reconstructions below (0 disables).

    Args:
        evaluator: path of the frozen evaluator (required unless ``w_proj = w_feat = 0``).
        evaluator_bn_mode: ``"eval"`` | ``"train"`` (see above).
        evaluator_stages: stage indices of the evaluator's feature maps for the feature term.
        w_pix, w_proj, w_feat: loss weights; ``view_reduction``: ``"mean"`` | ``"sum"``.
        decoder_code_dim, decoder_stem_channels, decoder_up_channels: decoder widths.
        decoder_optimizer: ``"adam"`` | ``"sgd"`` (SGD uses ``sgd_momentum``);
        decoder_lr, decoder_betas, decoder_weight_decay: its settings.
        recon_grid_images: images in the per-epoch reconstruction grid.
        **kwargs: :class:`~vislearn.tasks.ssl.methods.byol.BYOL` / :class:`SSLMethod` arguments.
    """

    own_optimizer_children = ("decoder",)

    def __init__(
        self,
        evaluator: str | None = None,
        evaluator_bn_mode: str = "eval",
        evaluator_stages: tuple[int, ...] | list[int] = (-1, -2, -3),
        w_pix: float = 0.1,
        w_proj: float = 0.1,
        w_feat: float = 1 / 30,
        view_reduction: str = "mean",
        decoder_code_dim: int = 512,
        decoder_stem_channels: int = 256,
        decoder_up_channels: list[int] | None = None,
        decoder_optimizer: str = "adam",
        decoder_lr: float = 0.048,
        decoder_betas: tuple[float, float] | list[float] = (0.9, 0.999),
        decoder_weight_decay: float = 0.0,
        recon_grid_images: int = 16,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if evaluator_bn_mode not in BN_MODES:
            raise VislearnError(f"evaluator_bn_mode must be one of {BN_MODES}")
        if decoder_optimizer not in DECODER_OPTIMIZERS:
            raise VislearnError(f"decoder_optimizer must be one of {DECODER_OPTIMIZERS}")
        if view_reduction not in VIEW_REDUCTIONS:
            raise VislearnError(f"view_reduction must be one of {VIEW_REDUCTIONS}")
        if min(w_pix, w_proj, w_feat) < 0:
            raise VislearnError("SaGe loss weights must be >= 0")
        h = self.hparams
        channels, map_size = self._last_map_shape()
        self.decoder = SaGeDecoder(
            channels,
            map_size,
            h.image_size,
            h.in_chans,
            code_dim=decoder_code_dim,
            stem_channels=decoder_stem_channels,
            up_channels=decoder_up_channels,
        )
        self.evaluator: FrozenNetwork | None = None
        if w_proj > 0 or w_feat > 0:
            self.evaluator = self._load_evaluator(evaluator, evaluator_bn_mode, evaluator_stages)
        self._decoder_opt: torch.optim.Optimizer | None = None
        self._decoder_sched: torch.optim.lr_scheduler.LRScheduler | None = None
        self._pending_decoder_state: dict | None = None
        self._grid: tuple[Tensor, Tensor] | None = None

    # ---- construction ---------------------------------------------------------------------
    @torch.no_grad()
    def _last_map_shape(self) -> tuple[int, int]:
        """Channels and side of the online backbone's last stage map at ``image_size``."""
        h = self.hparams
        was = self.backbone.training
        self.backbone.eval()
        try:
            x = torch.zeros(1, h.in_chans, h.image_size, h.image_size)
            _, maps = self.backbone.forward_features(x, return_stages=True)
        finally:
            self.backbone.train(was)
        c, hh, ww = maps[-1].shape[1:]
        if hh != ww:
            raise VislearnError(f"SaGe needs a square last feature map, got {hh}x{ww}")
        return c, hh

    def _load_evaluator(
        self, path: str | None, bn_mode: str, stage_idx: tuple[int, ...] | list[int]
    ) -> FrozenNetwork:
        h = self.hparams
        if path is None or not Path(path).is_file():
            raise VislearnError(
                f"SaGe needs a frozen label-free evaluator checkpoint (model.evaluator=PATH: "
                f"a vislearn .ckpt or backbone.safetensors of e.g. BYOL / MoCo v2); "
                f"got {path!r}" + ("" if path is None else " (file not found)")
            )
        state = unwrap_state_dict(read_state_file(path))
        has_head = any(k.startswith(p + "net.") for p in HEAD_PREFIXES["projector"] for k in state)
        if any(k.startswith("classifier.") for k in state):
            warnings.warn(
                f"SaGe evaluator {path} has classifier weights (trained with labels?); the "
                "method is label-free only if its evaluator is",
                stacklevel=3,
            )
        if not has_head:
            warnings.warn(
                f"SaGe evaluator {path} has no projector head; the projection term uses its "
                "pooled backbone features",
                stacklevel=3,
            )
        net = load_frozen(path, head="projector" if has_head else None, bn_mode=bn_mode)
        first_conv = next((m for m in net.backbone.modules() if isinstance(m, nn.Conv2d)), None)
        if first_conv is not None and first_conv.in_channels != h.in_chans:
            raise VislearnError(
                f"SaGe evaluator {path} takes {first_conv.in_channels}-channel images, the "
                f"data has {h.in_chans}"
            )
        nn.Module.train(net, False)  # probe without touching running statistics
        try:
            with torch.no_grad():
                x = torch.zeros(2, h.in_chans, h.image_size, h.image_size)
                _, maps = net.stages(x)
        except (RuntimeError, ValueError) as exc:
            raise VislearnError(
                f"SaGe evaluator {path} fails on {h.image_size} px inputs: {exc}"
            ) from None
        finally:
            net.train()
        stage_idx = list(stage_idx)
        if not stage_idx and h.w_feat > 0:
            raise VislearnError("evaluator_stages is empty but w_feat > 0")
        bad = [i for i in stage_idx if not -len(maps) <= i < len(maps)]
        if bad:
            raise VislearnError(
                f"SaGe evaluator {path} has {len(maps)} stages; evaluator_stages {stage_idx} "
                f"asks for {bad}"
            )
        return net

    # ---- pixel spaces -----------------------------------------------------------------------
    def to_signed(self, x: Tensor) -> Tensor:
        """Normalised views -> [-1, 1] pixels (the decoder's output space)."""
        return to_signed(x, self.normalize.mean, self.normalize.std)

    def from_signed(self, s: Tensor) -> Tensor:
        """[-1, 1] pixels -> the normalised space of the views and the evaluator."""
        return from_signed(s, self.normalize.mean, self.normalize.std)

    # ---- step -------------------------------------------------------------------------------
    @property
    def generative(self) -> bool:
        h = self.hparams
        return h.w_pix > 0 or h.w_proj > 0 or h.w_feat > 0

    def _online_with_map(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pooled, maps = self.backbone.forward_features(x, return_stages=True)
        return pooled, self.predictor(self.projector(pooled)), maps[-1]

    def _evaluate(self, x: Tensor) -> tuple[Tensor, ...]:
        """Evaluator outputs compared by the loss: projection, then the selected stage maps."""
        pooled, maps = self.evaluator.stages(x)
        proj = pooled if self.evaluator.head is None else self.evaluator.head(pooled)
        return (proj, *(maps[i] for i in self.hparams.evaluator_stages))

    def generative_loss(
        self, views: list[Tensor], recons: list[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``r * Σ_i [w_pix·pix_i + w_proj·proj_i + w_feat·feat_i]`` and its (detached,
        unweighted, ``r``-scaled) parts ``loss_pix``, ``loss_proj``, ``loss_feat``."""
        h = self.hparams
        r = 1.0 / len(views) if h.view_reduction == "mean" else 1.0
        pix = sum(F.mse_loss(xr, self.to_signed(x)) for x, xr in zip(views, recons, strict=True))
        parts = {"loss_pix": pix * r}
        total = h.w_pix * pix
        if self.evaluator is not None:
            with torch.no_grad():
                real = self.forward_views(self._evaluate, views)
            fake = self.forward_views(self._evaluate, [self.from_signed(xr) for xr in recons])
            proj = sum(F.mse_loss(b[0], a[0]) for a, b in zip(real, fake, strict=True))
            feat = sum(
                F.mse_loss(b[k], a[k])
                for a, b in zip(real, fake, strict=True)
                for k in range(1, len(a))
            )
            parts["loss_proj"] = proj * r
            parts["loss_feat"] = feat * r
            total = total + h.w_proj * proj + h.w_feat * feat
        return total * r, {k: v.detach() for k, v in parts.items()}

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        views = views[:2]
        (f1, p1, m1), (_, p2, m2) = self.forward_views(self._online_with_map, views)
        with torch.no_grad():
            z1, z2 = self.forward_views(self._target, views)
        loss_byol = (byol_loss(p1, z2) + byol_loss(p2, z1)) / 2
        out = {"loss_byol": loss_byol.detach(), "feats": f1}
        loss = loss_byol
        if self.generative:
            recons = self.forward_views(self.decoder, [m1, m2])
            gen, parts = self.generative_loss(views, recons)
            loss = loss + gen
            out.update(parts)
            self._keep_grid(views[0], recons[0])
        if self._decoder_opt is not None:
            out["decoder_lr"] = torch.tensor(self._decoder_opt.param_groups[0]["lr"])
        out["loss"] = loss
        return out

    # ---- decoder optimiser --------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        config = super().configure_optimizers()  # BYOL's, without the decoder
        h = self.hparams
        groups = param_groups([self.decoder], h.decoder_weight_decay)
        for g in groups:
            g.pop("lars_exclude", None)
        if h.decoder_optimizer == "adam":
            opt = torch.optim.Adam(groups, lr=h.decoder_lr, betas=tuple(h.decoder_betas))
        else:
            opt = torch.optim.SGD(groups, lr=h.decoder_lr, momentum=h.sgd_momentum)
        warmup = self.warmup_steps_of(epochs=h.warmup_epochs)
        sched = step_scheduler(opt, "cosine", self.total_steps, warmup)
        if self._pending_decoder_state is not None:  # resuming: on_load_checkpoint ran first
            opt.load_state_dict(self._pending_decoder_state["optimizer"])
            sched.load_state_dict(self._pending_decoder_state["scheduler"])
            self._pending_decoder_state = None
        self._decoder_opt, self._decoder_sched = opt, sched
        return config

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step the decoder on the gradients of the shared backward, before the main step."""
        opt = self._decoder_opt
        if opt is None:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:  # fp16 AMP: same scale as the main optimiser, one update()
            scaler.unscale_(opt)
            scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        self._decoder_sched.step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._decoder_opt is not None:
            checkpoint["sage_decoder"] = {
                "optimizer": self._decoder_opt.state_dict(),
                "scheduler": self._decoder_sched.state_dict(),
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("sage_decoder")
        if state is None:
            return
        if self._decoder_opt is not None:
            self._decoder_opt.load_state_dict(state["optimizer"])
            self._decoder_sched.load_state_dict(state["scheduler"])
        else:
            self._pending_decoder_state = state

    # ---- reconstruction grid --------------------------------------------------------------------
    def _keep_grid(self, views: Tensor, recons: Tensor) -> None:
        k = min(self.hparams.recon_grid_images, views.shape[0])
        if k > 8:
            k -= k % 8
        if k <= 0:
            return
        self._grid = (views[:k].detach().clone(), recons[:k].detach().clone())

    def reconstruction_grid(self) -> Tensor | None:
        """The kept views (top) and reconstructions (bottom) as one image in [0, 1]."""
        from torchvision.utils import make_grid

        if self._grid is None:
            return None
        views, recons = self._grid
        images = torch.cat([(self.to_signed(views) + 1) / 2, (recons + 1) / 2]).clamp(0, 1)
        nrow = min(8, views.shape[0])
        return make_grid(images.float().cpu(), nrow=nrow, padding=2, pad_value=1.0)

    def on_train_epoch_end(self) -> None:
        grid = self.reconstruction_grid()
        self._grid = None
        if grid is None or not self.trainer.is_global_zero:
            return
        from torchvision.utils import save_image

        path = Path(self.trainer.default_root_dir) / "reconstructions"
        path = path / f"epoch_{self.current_epoch:04d}.png"
        with atomic_path(path) as tmp:
            save_image(grid, tmp, format="png")
