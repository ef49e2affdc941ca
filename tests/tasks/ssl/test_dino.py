"""DINO: loss against a NumPy transcription and analytic values, centre EMA (one process and
2 gloo ranks), teacher-temperature and weight-decay schedules, the head, last-layer freeze and
per-tensor clipping, training steps on the embedded Fashion-MNIST (teacher = EMA only), the
multi-crop views, and loading DINO / timm ViT files in every layout."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ddp_utils import run_ranks
from vislearn.core.config import load_config
from vislearn.core.errors import VislearnError
from vislearn.data.augment import MultiViewAugment
from vislearn.data.datamodule import ImageDataModule
from vislearn.engine import build_trainer
from vislearn.engine.momentum import momentum_copy
from vislearn.losses import DINOLoss, dino_loss, teacher_temperature
from vislearn.models import DINOHead, create_backbone, list_backbones, load_vit_weights
from vislearn.models.vit import VisionTransformer
from vislearn.tasks.ssl.methods import build_method, list_methods

pytestmark = pytest.mark.usefixtures("single_thread")


# ---- the loss ------------------------------------------------------------------------------
def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_dino_loss(student, teacher, center, tau_s, tau_t) -> float:
    """The paper's formula, term by term: mean over (i, j != i) of the batch-mean CE."""
    terms = []
    for i, t in enumerate(teacher):
        q = _np_softmax((t - center) / tau_t)
        for j, s in enumerate(student):
            if i == j:
                continue
            log_p = np.log(_np_softmax(s / tau_s))
            terms.append(np.mean(-np.sum(q * log_p, axis=1)))
    return float(np.mean(terms))


def test_dino_loss_matches_numpy_transcription():
    g = torch.Generator().manual_seed(0)
    n, k = 5, 7
    student = [torch.randn(n, k, generator=g, dtype=torch.float64) for _ in range(4)]  # 2g + 2l
    teacher = [torch.randn(n, k, generator=g, dtype=torch.float64) for _ in range(2)]
    center = torch.randn(1, k, generator=g, dtype=torch.float64) * 0.3
    for tau_s, tau_t in [(0.1, 0.04), (0.2, 0.07)]:
        got = dino_loss(student, teacher, center, tau_s, tau_t)
        ref = _np_dino_loss(
            [s.numpy() for s in student], [t.numpy() for t in teacher], center.numpy(), tau_s, tau_t
        )
        assert got.dtype == torch.float64
        assert float(got) == pytest.approx(ref, rel=1e-10)
        half = dino_loss([s.half() for s in student], [t.half() for t in teacher], center)
        assert half.dtype == torch.float32  # half-precision logits: the loss in float32
    # 2 global views only: the two cross pairs
    got = dino_loss(student[:2], teacher, center.flatten(), 0.1, 0.04)
    ref = _np_dino_loss([s.numpy() for s in student[:2]], [t.numpy() for t in teacher],
                        center.numpy(), 0.1, 0.04)  # fmt: skip
    assert float(got) == pytest.approx(ref, rel=1e-10)


def test_dino_loss_gradient_reaches_student_only():
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(3, 6, generator=g, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(3, 6, generator=g, requires_grad=True) for _ in range(2)]
    dino_loss(student, teacher, torch.zeros(6)).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def test_dino_loss_analytic_values():
    # equal temperatures and identical logits: the cross-entropy is the entropy of q
    tau = 0.1
    probs = torch.tensor([[0.5, 0.25, 0.25]])
    logits = tau * probs.log()
    views = [logits.clone() for _ in range(2)]
    loss = dino_loss(views, views, torch.zeros(3), student_temp=tau, teacher_temp=tau)
    assert float(loss) == pytest.approx(1.5 * math.log(2), rel=1e-6)  # H(1/2, 1/4, 1/4)

    # one-hot-like logits a * e_y, the paper's temperatures, K classes, centre 0
    k, a, tau_s, tau_t = 5, 1.0, 0.1, 0.04
    onehot = torch.zeros(2, k, dtype=torch.float64)
    onehot[0, 1] = onehot[1, 3] = a
    views = [onehot.clone() for _ in range(2)]
    zt, zs = math.exp(a / tau_t) + k - 1, math.exp(a / tau_s) + k - 1
    q_y, q_o = math.exp(a / tau_t) / zt, 1 / zt
    log_p_y, log_p_o = a / tau_s - math.log(zs), -math.log(zs)
    expected = -(q_y * log_p_y + (k - 1) * q_o * log_p_o)
    loss = dino_loss(views, views, torch.zeros(k), tau_s, tau_t)
    assert float(loss) == pytest.approx(expected, rel=1e-9)
    loss32 = dino_loss([v.float() for v in views], [v.float() for v in views], torch.zeros(k))
    assert float(loss32) == pytest.approx(expected, abs=1e-6)  # float32 rounding of ~10-sized terms
    assert expected == pytest.approx((k - 1) * math.exp(-10), rel=2e-3)  # ~ 1.8e-4


def test_dino_loss_rejects_bad_input():
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="pair"):
        dino_loss([x], [x], torch.zeros(4))
    with pytest.raises(ValueError, match="teacher"):
        dino_loss([x], [x, x], torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        dino_loss([x, torch.zeros(2, 5)], [x], torch.zeros(4))
    with pytest.raises(ValueError, match="center"):
        dino_loss([x, x], [x], torch.zeros(3))


def test_center_ema_update_matches_hand_formula():
    g = torch.Generator().manual_seed(2)
    k = 6
    crit = DINOLoss(k, student_temp=0.1, center_momentum=0.9)
    assert torch.equal(crit.center, torch.zeros(1, k)) and "center" in crit.state_dict()
    c0 = torch.randn(1, k, generator=g)
    crit.center.copy_(c0)
    teacher = [torch.randn(4, k, generator=g) for _ in range(2)]
    student = [torch.randn(4, k, generator=g) for _ in range(3)]
    loss = crit(student, teacher, 0.05)
    # the loss uses the centre *before* the update
    assert float(loss) == pytest.approx(float(dino_loss(student, teacher, c0, 0.1, 0.05)))
    t = np.concatenate([x.numpy() for x in teacher])
    expected = 0.9 * c0.numpy() + 0.1 * t.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(crit.center.numpy(), expected, rtol=1e-6, atol=1e-7)
    crit.eval()  # no update outside training
    before = crit.center.clone()
    crit(student, teacher, 0.05)
    assert torch.equal(crit.center, before)


WORLD, PER_RANK, K = 2, 3, 5


def _center_inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(9)
    return [torch.randn(WORLD * PER_RANK, K, generator=g) for _ in range(2)]


def _center_rank(r: int) -> torch.Tensor:
    crit = DINOLoss(K)
    teacher = [t[r * PER_RANK : (r + 1) * PER_RANK] for t in _center_inputs()]
    crit.update_center(teacher)
    return crit.center


def test_center_is_the_global_batch_mean_on_two_ranks(tmp_path):
    ranks = run_ranks(_center_rank, tmp_path, WORLD, start_method="fork")
    single = DINOLoss(K)
    single.update_center(_center_inputs())
    for center in ranks:
        torch.testing.assert_close(center, single.center, rtol=1e-6, atol=1e-7)


# ---- schedules -------------------------------------------------------------------------------
def test_teacher_temperature_schedule():
    assert teacher_temperature(0, 0.04, 0.07, 30) == pytest.approx(0.04)
    assert teacher_temperature(15, 0.04, 0.07, 30) == pytest.approx(0.055)
    assert teacher_temperature(29.5, 0.04, 0.07, 30) == pytest.approx(0.04 + 0.03 * 29.5 / 30)
    assert teacher_temperature(30, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(100, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(0.25, 0.02, 0.04, 0.5) == pytest.approx(0.03)  # fractional
    assert teacher_temperature(0, 0.04, 0.07, 0) == pytest.approx(0.07)  # no warm-up
    assert teacher_temperature(3) == pytest.approx(0.04)  # defaults: 0.04 throughout


def _fake_trainer(model, step: int, total: int, epochs: int) -> None:
    model._trainer = SimpleNamespace(
        global_step=step, estimated_stepping_batches=total, max_epochs=epochs
    )
    model._total_steps = None


def test_method_schedules_follow_training_progress():
    model = build_method(
        "dino",
        backbone="vit_mini",
        out_dim=32,
        proj_hidden_dim=16,
        bottleneck_dim=8,
        warmup_teacher_temp=0.02,
        teacher_temp=0.06,
        warmup_teacher_temp_epochs=2,
        weight_decay=0.04,
        weight_decay_end=0.4,
        ema_base=0.996,
    )
    for step, temp, wd, ema in [  # 80 steps: cosine at 1/4 of the run = 1 - sqrt(2)/2
        (0, 0.02, 0.04, 0.996),
        (10, 0.04, None, None),
        (20, 0.06, 0.04 + 0.18 * (1 - math.sqrt(0.5)), 0.996 + 0.002 * (1 - math.sqrt(0.5))),
        (40, 0.06, 0.22, 0.998),
        (80, 0.06, 0.4, 1.0),
    ]:
        _fake_trainer(model, step, total=80, epochs=8)  # 10 steps per epoch
        assert model.epoch_progress() == pytest.approx(step / 10)
        assert model.current_teacher_temp() == pytest.approx(temp)
        if wd is not None:
            assert model.current_weight_decay() == pytest.approx(wd)
        if ema is not None:
            assert model.current_momentum() == pytest.approx(ema)
    model._trainer = None


# ---- head ------------------------------------------------------------------------------------
def test_dino_head_shapes_and_weight_norm():
    torch.manual_seed(0)
    head = DINOHead(24, out_dim=50, hidden_dim=32, bottleneck_dim=8)
    x = torch.randn(6, 24)
    out = head(x)
    assert out.shape == (6, 50)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(24, 32), (32, 32), (32, 8)]
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
    wn = head.last_layer.parametrizations.weight
    gain, direction = wn.original0, wn.original1
    assert gain.shape == (50, 1) and direction.shape == (50, 8)
    assert torch.equal(gain, torch.ones(50, 1)) and not gain.requires_grad
    # independent forward: unit bottleneck, unit-norm prototypes -> cosine logits
    z = torch.nn.functional.normalize(head.mlp(x), dim=1)
    protos = direction / direction.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out, z @ protos.T)
    assert out.abs().max() <= 1 + 1e-5
    # a training step moves the direction but never the frozen gain
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=0.1)
    head(x).square().sum().backward()
    assert gain.grad is None and direction.grad is not None
    opt.step()
    assert torch.equal(gain, torch.ones(50, 1))
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(50))
    # the EMA copy is a faithful, frozen deep copy
    ema = momentum_copy(head)
    torch.testing.assert_close(ema(x), head(x))
    assert not any(p.requires_grad for p in ema.parameters())


def test_dino_head_trainable_gain():
    torch.manual_seed(0)
    head = DINOHead(8, out_dim=12, hidden_dim=16, bottleneck_dim=4, norm_last_layer=False)
    gain = head.last_layer.parametrizations.weight.original0
    assert gain.requires_grad and torch.equal(gain, torch.ones(12, 1))
    head(torch.randn(3, 8)).sum().backward()
    assert gain.grad is not None and gain.grad.abs().sum() > 0
    assert DINOHead(8, 12, 16, 4, num_layers=1)(torch.randn(3, 8)).shape == (3, 12)


# ---- last-layer freeze and per-tensor clipping ---------------------------------------------------
def _tiny_dino(**kw):
    kwargs = dict(backbone="vit_mini", out_dim=64, proj_hidden_dim=32, bottleneck_dim=16)
    return build_method("dino", **{**kwargs, **kw})


def _backward(model) -> None:
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    model.ssl_step(model.augment(images), torch.full((4,), -1))["loss"].backward()


def test_freeze_last_layer_drops_its_gradients_in_epoch_0():
    torch.manual_seed(0)
    model = _tiny_dino(freeze_last_layer=1, clip_grad=None)
    _backward(model)
    last = list(model.head.last_layer.parameters())
    assert all(p.grad is not None for p in last if p.requires_grad)
    model.on_before_optimizer_step(None)  # no trainer: epoch 0
    assert all(p.grad is None for p in last)
    assert model.head.mlp[0].weight.grad is not None
    assert model.backbone.blocks[0].attn.qkv.weight.grad is not None

    torch.manual_seed(0)
    model = _tiny_dino(freeze_last_layer=0, clip_grad=None)
    _backward(model)
    model.on_before_optimizer_step(None)
    assert model.head.last_layer.parametrizations.weight.original1.grad is not None


def test_gradients_are_clipped_per_tensor():
    torch.manual_seed(0)
    model = _tiny_dino(freeze_last_layer=0, clip_grad=None)
    _backward(model)
    student = [(n, p) for n, p in model.named_parameters() if n.startswith(("backbone.", "head."))]
    before = {n: p.grad.clone() for n, p in student if p.grad is not None}
    norms = sorted(float(g.norm()) for g in before.values())
    mid = len(norms) // 2
    clip = (norms[mid - 1] + norms[mid]) / 2  # half of the tensors get clipped
    model.hparams.clip_grad = clip
    model.on_before_optimizer_step(None)
    clipped = 0
    for n, p in student:
        if n not in before:
            continue
        g0, norm0 = before[n], float(before[n].norm())
        if norm0 > clip:
            clipped += 1
            assert float(p.grad.norm()) == pytest.approx(clip, rel=1e-4)
            torch.testing.assert_close(p.grad, g0 * (clip / (norm0 + 1e-6)))  # same direction
        else:
            torch.testing.assert_close(p.grad, g0, rtol=0, atol=0)
    assert clipped >= len(before) // 3


# ---- multi-crop views -----------------------------------------------------------------------
def test_multi_crop_views_and_sizes():
    model = _tiny_dino(local_crops=3)
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    views = model.augment(images)
    assert [tuple(v.shape[-2:]) for v in views] == [(28, 28)] * 2 + [(12, 12)] * 3
    assert [v.cfg.crop_scale for v in model.augment.views] == [(0.4, 1.0)] * 2 + [(0.05, 0.4)] * 3
    assert model.augment.views[1].cfg.solarize_p == 0.2
    assert model.augment.views[0].cfg.solarize_p == 0.0
    # ImageNet-sized images: 224 px global, 96 px local views (with blur: > 64 px)
    big = MultiViewAugment(model.multi_crop_config(), 224, 3)
    assert [v.size for v in big.views] == [224, 224, 96, 96, 96]
    assert all(v.use_blur for v in big.views)
    with pytest.raises(VislearnError, match="needs 5 views"):
        model.ssl_step(views[:3], torch.full((2,), -1))
    custom = _tiny_dino(
        local_crops=1, global_crops_scale=[0.25, 1.0], local_crops_scale=[0.05, 0.25]
    )
    assert [v.cfg.crop_scale for v in custom.augment.views] == [(0.25, 1.0)] * 2 + [(0.05, 0.25)]


# ---- training steps on the embedded Fashion-MNIST ------------------------------------------------
class RecordEMA(Callback):
    """Student, teacher and momentum at the start of every batch, teacher after it."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    @staticmethod
    def _state(module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.named_parameters()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append(
            {
                "m": pl_module.current_momentum(),
                "student": self._state(pl_module.backbone) | self._state(pl_module.head),
                "teacher": self._state(pl_module.momentum_backbone)
                | self._state(pl_module.momentum_head),
            }
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps[-1]["teacher_after"] = self._state(pl_module.momentum_backbone) | self._state(
            pl_module.momentum_head
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backbone": "vit_mini", "local_crops": 2, "joint_views": True},
        {"backbone": "resnet_tiny", "backbone_kwargs": {"stem": "small_ds", "width": 8}},
    ],
    ids=["vit_mini-2local-joint", "resnet_tiny"],
)
def test_training_steps_move_student_and_teacher_only_by_ema(kwargs, tmp_path):
    L.seed_everything(0, verbose=False)
    model = build_method(
        "dino",
        out_dim=128,
        proj_hidden_dim=32,
        bottleneck_dim=16,
        lr=1e-3,
        warmup_epochs=0,
        ema_base=0.9,  # a visible teacher step
        **kwargs,
    )
    init = RecordEMA._state(model.backbone) | RecordEMA._state(model.head)
    rec = RecordEMA()
    trainer = build_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        progress=False,
        accelerator="cpu",
        devices=1,
        callbacks=[rec],
    )
    # no online evaluation: the base class's kNN is tested with every method in test_methods
    trainer.fit(model, datamodule=ImageDataModule(batch_size=16, online_eval=False))
    assert trainer.global_step == 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    student = RecordEMA._state(model.backbone) | RecordEMA._state(model.head)
    last = "last_layer.parametrizations.weight.original"
    moved = [k for k in student if not torch.equal(student[k], init[k])]
    frozen = [k for k in student if last in k]
    assert set(moved) == set(student) - set(frozen), "all but the frozen last layer must move"
    assert all(torch.equal(student[k], init[k]) for k in frozen)  # freeze_last_layer=1 epoch
    # the teacher only ever moves by EMA towards the student of that step
    for step in rec.steps:
        m = step["m"]
        for k, t0 in step["teacher"].items():
            expected = m * t0 + (1 - m) * step["student"][k]
            torch.testing.assert_close(step["teacher_after"][k], expected, rtol=1e-5, atol=1e-6)
    assert rec.steps[1]["m"] == pytest.approx(0.9 + 0.1 * (1 - math.cos(math.pi / 2)) / 2)
    teacher_moved = [
        k for k, t in rec.steps[1]["teacher_after"].items() if not torch.equal(t, init[k])
    ]
    assert teacher_moved and not any(last in k for k in teacher_moved)
    assert all(p.grad is None for p in model.momentum_backbone.parameters())
    assert all(p.grad is None for p in model.momentum_head.parameters())
    assert model.criterion.center.abs().sum() > 0
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert "criterion.center" in ckpt["state_dict"]
    # the weight-decay schedule reached the decayed group, not the no-decay ones
    groups = trainer.optimizers[0].param_groups
    decayed = [g["weight_decay"] for g in groups if g["dino_wd_schedule"]]
    assert decayed and all(wd > 0.04 for wd in decayed)
    assert all(g["weight_decay"] == 0 for g in groups if not g["dino_wd_schedule"])


def test_dino_is_registered_with_the_paper_defaults():
    assert "dino" in list_methods()
    model = build_method("dino", backbone="vit_mini", out_dim=16, proj_hidden_dim=8)
    h = model.hparams
    assert (h.optimizer, h.lr, h.weight_decay, h.weight_decay_end) == ("adamw", 5e-4, 0.04, 0.4)
    assert (h.ema_base, h.ema_final, h.student_temp, h.teacher_temp) == (0.996, 1.0, 0.1, 0.04)
    assert (h.center_momentum, h.clip_grad, h.freeze_last_layer, h.local_crops) == (0.9, 3.0, 1, 0)
    assert h.bottleneck_dim == 256 and h.norm_last_layer
    with pytest.raises(VislearnError, match="weight_decay_end"):
        build_method("dino", backbone="vit_mini", out_dim=16, weight_decay=0.0)


def test_recipe_builds():
    cfg = load_config(Path(__file__).resolve().parents[3] / "configs/fmnist_ssl/dino.yaml")
    assert cfg["method"] == "dino"
    model = build_method("dino", in_chans=1, image_size=28, num_classes=10, **cfg["model"])
    assert model.backbone.num_features == 64 and model.hparams.out_dim == 1024
    assert model.head(torch.randn(2, 64)).shape == (2, 1024)
    assert [v.cfg.crop_scale for v in model.augment.views] == [(0.14, 1.0)] * 2
    assert model.current_weight_decay() == 1e-4  # constant: weight_decay_end null


# ---- loading DINO / timm ViT weights ------------------------------------------------------------
def _to_dino_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vislearn ViT keys -> DINO's (timm's) names, as in DINO's released files."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^patch_embed\.", "patch_embed.proj.", k)
        k = re.sub(r"\.mlp\.0\.", ".mlp.fc1.", k)
        k = re.sub(r"\.mlp\.2\.", ".mlp.fc2.", k)
        out[k] = v.clone()
    return out


def _vit(seed: int, dim: int = 32, depth: int = 2, img_size: int = 28) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size, 4, 1, dim, depth, 4).eval()


def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def _head_entries(prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}head.mlp.0.weight": torch.randn(16, 32),
        f"{prefix}head.last_layer.weight_g": torch.ones(64, 1),
        f"{prefix}head.last_layer.weight_v": torch.randn(64, 16),
    }


def _full_checkpoint(src: dict, teacher_prefix: str) -> dict:
    noise = {k: torch.randn_like(v) for k, v in src.items()}
    return {
        "student": {**_prefixed(noise, "module.backbone."), **_head_entries("module.")},
        "teacher": {**_prefixed(src, teacher_prefix), **_head_entries(teacher_prefix[:-9])},
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536, lr=5e-4),
        "dino_loss": {"center": torch.zeros(1, 64)},
    }


def _write(layout: str, src_model: VisionTransformer, path) -> None:
    sd = _to_dino_names(src_model.state_dict())
    assert "patch_embed.proj.weight" in sd and "blocks.0.mlp.fc1.weight" in sd
    if layout == "backbone_pth":
        torch.save(sd, path)
    elif layout == "full_checkpoint":
        torch.save(_full_checkpoint(sd, "backbone."), path)
    elif layout == "full_checkpoint_ddp_teacher":
        torch.save(_full_checkpoint(sd, "module.backbone."), path)
    elif layout == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif layout == "timm_with_classifier":
        torch.save({**sd, "head.weight": torch.randn(10, 32), "head.bias": torch.zeros(10)}, path)
    else:  # vislearn's own names keep loading
        torch.save(src_model.state_dict(), path)


LAYOUTS = [
    "backbone_pth",
    "full_checkpoint",
    "full_checkpoint_ddp_teacher",
    "safetensors",
    "timm_with_classifier",
    "vislearn_names",
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_dino_vit_layouts(layout, tmp_path):
    src, dst = _vit(1), _vit(2)
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pth")
    _write(layout, src, path)
    x = torch.randn(3, 1, 28, 28)
    assert not torch.allclose(dst(x), src(x))
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")  # nothing left over, nothing to warn
        load_vit_weights(dst, path)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_full_checkpoint_student_on_request(tmp_path):
    src = _vit(1)
    path = tmp_path / "full.pth"
    ckpt = _full_checkpoint(_to_dino_names(src.state_dict()), "backbone.")
    torch.save(ckpt, path)
    dst = load_vit_weights(_vit(2), path, nested="student")
    student = ckpt["student"]["module.backbone.cls_token"]
    torch.testing.assert_close(dst.cls_token, student)


def test_wrong_embed_dim_and_missing_or_extra_blocks_are_named(tmp_path):
    path = tmp_path / "w.pth"
    _write("backbone_pth", _vit(1, dim=64), path)
    with pytest.raises(VislearnError, match="shape mismatch") as err:
        load_vit_weights(_vit(2), path)
    assert "blocks.0.attn.proj.weight: file (64, 64) vs model (32, 32)" in str(err.value)

    _write("full_checkpoint", _vit(1, depth=1), path)
    with pytest.raises(VislearnError, match="missing") as err:
        load_vit_weights(_vit(2, depth=2), path)
    assert "blocks.1." in str(err.value)

    _write("safetensors", _vit(1, depth=3), tmp_path / "w.safetensors")
    with pytest.raises(VislearnError, match="unexpected") as err:
        load_vit_weights(_vit(2, depth=2), tmp_path / "w.safetensors")
    assert "blocks.2." in str(err.value)


def test_files_without_matching_keys_raise(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"foo.weight": torch.zeros(3), "bar.bias": torch.zeros(2)}, path)
    with pytest.raises(VislearnError, match="no key matches") as err:
        load_vit_weights(_vit(2), path)
    for key in ("foo.weight", "bar.bias", "blocks.0.attn.qkv.weight"):  # file's and model's
        assert key in str(err.value)
    torch.save({"teacher": {}, "epoch": 3}, path)
    with pytest.raises(VislearnError, match="no tensors"):
        load_vit_weights(_vit(2), path)


def test_pos_embed_interpolation_only_when_asked(tmp_path):
    src = _vit(1, img_size=28)  # 7 x 7 patch grid
    path = tmp_path / "w.pth"
    _write("backbone_pth", src, path)
    with pytest.raises(VislearnError, match="pos_embed.*interpolate_pos=True"):
        load_vit_weights(_vit(2, img_size=32), path)
    dst = load_vit_weights(_vit(2, img_size=32), path, interpolate_pos=True)  # 8 x 8 grid
    grid = src.pos_embed[:, 1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    torch.testing.assert_close(dst.pos_embed[:, 1:], ref.flatten(2).transpose(1, 2))
    torch.testing.assert_close(dst.pos_embed[:, :1], src.pos_embed[:, :1], rtol=0, atol=0)
    x = torch.randn(2, 1, 32, 32)  # the source interpolates its positions the same way
    torch.testing.assert_close(dst(x), src(x), rtol=1e-5, atol=1e-6)


def test_dino_backbone_names():
    expected = {"dino_vits8": (384, 8), "dino_vits16": (384, 16), "dino_vitb8": (768, 8)}
    expected["dino_vitb16"] = (768, 16)
    assert set(expected) <= set(list_backbones("dino_*"))
    for name, (dim, patch) in expected.items():
        with torch.device("meta"):
            model = create_backbone(name)
            ref = create_backbone("vit_small" if dim == 384 else "vit_base", patch_size=patch)
        assert model.num_features == dim and model.patch_size == patch
        assert model.pos_embed.shape == (1, 1 + (224 // patch) ** 2, dim)
        assert {k: v.shape for k, v in model.state_dict().items()} == {
            k: v.shape for k, v in ref.state_dict().items()
        }
        assert model.blocks[0].norm1.eps == 1e-6 and model.blocks[0].attn.qkv.bias is not None
