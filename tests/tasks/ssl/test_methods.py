"""Methods end to end on the embedded Fashion-MNIST: fit, resume equivalence, DDP equivalence of
one MoCo v2 step on 2 gloo processes, NaN detection.

Everything is tiny (ResNet-tiny of width 8, batch 32, 2-3 steps per epoch) so that a fit costs
about a second on 2 CPU cores.
"""

from __future__ import annotations

import inspect
import math

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from ddp_utils import run_ranks
from vislearn.core.errors import VislearnError
from vislearn.data.datamodule import ImageDataModule
from vislearn.engine import build_trainer
from vislearn.tasks.ssl.methods import build_method, get_method, list_methods

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_BACKBONE = {"backbone": "resnet_tiny", "backbone_kwargs": {"stem": "small_ds", "width": 8}}
BACKBONE_OF = {"mae": {"backbone": "vit_mini", "backbone_kwargs": {}}}  # needs a ViT
TINY_HEADS = {
    "decoder_dim": 32,  # MAE
    "decoder_depth": 1,
    "decoder_heads": 2,
    "proj_hidden_dim": 32,
    "pred_hidden_dim": 32,
    "queue_size": 64,
    "decoder_code_dim": 16,  # SaGe
    "decoder_stem_channels": 8,
    "out_dim": 64,  # DINO (65536 prototypes by default)
    "bottleneck_dim": 16,
}


def tiny_kwargs(name: str, **overrides) -> dict:
    """Small settings for ``name``: the tiny backbone plus whichever head sizes it accepts."""
    accepted = set(inspect.signature(get_method(name).__init__).parameters)
    backbone = BACKBONE_OF.get(name, TINY_BACKBONE)
    kwargs = {**backbone, **{k: v for k, v in TINY_HEADS.items() if k in accepted}}
    return {**kwargs, **overrides}


def fit(
    name: str,
    out,
    max_epochs: int = 1,
    limit_train_batches: int = 2,
    ckpt_path=None,
    callbacks=None,
    model=None,
    **overrides,
):
    """Seed, build ``name`` (unless given) and fit it on the embedded data set."""
    if model is None:
        L.seed_everything(0, verbose=False)
        model = build_method(name, **tiny_kwargs(name, **overrides))
    dm = ImageDataModule(batch_size=32, knn_bank_size=200)
    trainer = build_trainer(
        out,
        max_epochs=max_epochs,
        limit_train_batches=limit_train_batches,
        progress=False,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, trainer


# ---- every method fits ----------------------------------------------------------------------
IMAGE_METHODS = [n for n in list_methods() if get_method(n).modality == "image"]


@pytest.mark.parametrize("name", IMAGE_METHODS)  # video methods: tests/test_video_methods.py
def test_method_fits(name, tmp_path, request):
    extra = {}
    params = inspect.signature(get_method(name).__init__).parameters
    for key in ("evaluator", "teacher"):  # SaGe, BINGO: a frozen pretrained network
        if key in params:
            extra[key] = str(request.getfixturevalue("tiny_evaluator")["ckpt"])
    L.seed_everything(0, verbose=False)
    model = build_method(name, **tiny_kwargs(name, **extra))
    before = {k: v.clone() for k, v in model.backbone.named_parameters()}
    model, trainer = fit(name, tmp_path, model=model)
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"]))
    assert 0.0 <= float(metrics["val/knn_top1"]) <= 1.0
    assert 0.0 <= float(metrics["val/probe_top1"]) <= 1.0
    assert trainer.global_step == 2
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 2 and "augment_rng" in ckpt
    assert ckpt["hyper_parameters"]["backbone"] == tiny_kwargs(name)["backbone"]
    csv = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "val/knn_top1" in csv.splitlines()[0]
    unchanged = [k for k, p in model.backbone.named_parameters() if torch.equal(p, before[k])]
    assert not unchanged, f"backbone parameters not updated: {unchanged}"


def test_unknown_method_and_bad_kwarg():
    with pytest.raises(VislearnError, match="unknown method"):
        build_method("no_such_method")
    with pytest.raises(VislearnError, match="moco_v2"):
        build_method("moco_v2", no_such_kwarg=1)


# ---- resume ---------------------------------------------------------------------------------
class _Crash(Exception):
    pass


class CrashAtEpoch(Callback):
    """Simulate a run killed at the start of ``epoch`` (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Crash


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    groups = ("backbone.", "projector.", "predictor.", "momentum_", "queue.", "probe.")
    assert any(k.startswith("momentum_") for k in sa)
    differ = [
        k
        for k in sa
        if not torch.allclose(sa[k].double(), sb[k].double(), rtol=0, atol=1e-6)
        and k.startswith(groups)
    ]
    assert not differ, f"state differs after resume: {differ[:8]} ({len(differ)} tensors)"


@pytest.mark.parametrize("name", ["moco_v2", "byol"])
def test_resume_after_interruption_equals_uninterrupted(name, tmp_path):
    """A: 2 epochs straight. B: same run killed after epoch 1, resumed by a new Trainer."""
    a, trainer_a = fit(name, tmp_path / "A", max_epochs=2, limit_train_batches=3)
    with pytest.raises(_Crash):
        fit(name, tmp_path / "B", 2, 3, callbacks=[CrashAtEpoch(1)])
    last = tmp_path / "B" / "checkpoints" / "last.ckpt"
    assert last.is_file(), "no checkpoint was written at the end of epoch 1"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    b, trainer_b = fit(name, tmp_path / "B", 2, 3, ckpt_path=str(last))
    assert trainer_a.global_step == trainer_b.global_step == 6
    _assert_same_state(a, b)
    if name == "moco_v2":
        assert int(a.queue.ptr) == int(b.queue.ptr) == (6 * 2 * 32) % 64


@pytest.mark.parametrize("name", ["moco_v2", "byol"])
def test_extending_max_epochs_continues_the_same_streams(name, tmp_path, monkeypatch):
    """B: 1 epoch, then a new Trainer with ``max_epochs=2`` resumes from ``last.ckpt``.

    The LR (and BYOL's EMA) schedules span ``max_epochs``, so extending a finished run follows
    a different schedule than a 2-epoch run by design. With the schedules held constant, the
    resumed run must equal the uninterrupted one: augmentation RNG, sampler order, queue and
    optimiser state all continue.
    """
    import vislearn.engine.ssl as base
    import vislearn.ops.optim as optim

    monkeypatch.setattr(optim, "warmup_cosine", lambda *args, **kwargs: 1.0)
    monkeypatch.setattr(base, "cosine_momentum", lambda step, total, b, final=1.0: b)
    a, _ = fit(name, tmp_path / "A", max_epochs=2, limit_train_batches=3)
    fit(name, tmp_path / "B", max_epochs=1, limit_train_batches=3)
    b, _ = fit(name, tmp_path / "B", 2, 3, ckpt_path=str(tmp_path / "B/checkpoints/last.ckpt"))
    _assert_same_state(a, b)


# ---- DDP: one MoCo v2 step on 2 gloo ranks == one step on the global batch -------------------
WORLD, PER_RANK = 2, 4


def _ddp_model():
    torch.manual_seed(0)  # same weights and initial queue in every process
    model = build_method(
        "moco_v2",
        backbone="vit_mini",
        proj_hidden_dim=32,
        proj_dim=16,
        queue_size=64,
        num_classes=0,
    )
    return model.double().train()


def _ddp_views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    shape = (WORLD * PER_RANK, 1, 28, 28)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2)]


def _step(model, views) -> dict:
    out = model.ssl_step(views, torch.full((views[0].shape[0],), -1))
    out["loss"].backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return {
        "loss": out["loss"].detach(),
        "grads": grads,
        "queue": model.queue.queue.clone(),
        "ptr": int(model.queue.ptr),
    }


def _moco_rank(r: int) -> dict:
    model = _ddp_model()
    views = [v[r * PER_RANK : (r + 1) * PER_RANK] for v in _ddp_views()]
    res = _step(model, views)
    for g in res["grads"].values():  # what DDP does to parameter gradients
        dist.all_reduce(g)
        g /= WORLD
    return res


@pytest.fixture(scope="module")
def moco_ranks(tmp_path_factory) -> list[dict]:
    return run_ranks(_moco_rank, tmp_path_factory.mktemp("ddp_moco"), WORLD, start_method="fork")


def test_moco_ddp_step_equals_single_process(moco_ranks):
    single = _step(_ddp_model(), _ddp_views())
    assert single["grads"], "no gradients"
    losses = torch.stack([res["loss"] for res in moco_ranks])
    torch.testing.assert_close(losses.mean(), single["loss"], rtol=1e-10, atol=1e-12)
    for res in moco_ranks:
        assert res["grads"].keys() == single["grads"].keys()
        for k, g in single["grads"].items():
            torch.testing.assert_close(res["grads"][k], g, rtol=1e-8, atol=1e-12, msg=k)


def test_moco_ddp_queue_equals_single_process(moco_ranks):
    single = _step(_ddp_model(), _ddp_views())
    assert single["ptr"] == 2 * WORLD * PER_RANK
    for res in moco_ranks:
        assert res["ptr"] == single["ptr"]
        torch.testing.assert_close(res["queue"], moco_ranks[0]["queue"], rtol=0, atol=0)
        torch.testing.assert_close(res["queue"], single["queue"], rtol=1e-10, atol=1e-12)


# ---- NaN losses -----------------------------------------------------------------------------
def test_huge_learning_rate_raises_nan_error(tmp_path):
    with pytest.raises(VislearnError, match="loss is nan"):
        fit("moco_v2", tmp_path, limit_train_batches=4, lr=1e30)


def test_nan_from_ssl_step_raises(tmp_path):
    L.seed_everything(0, verbose=False)
    model = build_method("simclr", **tiny_kwargs("simclr"))
    original = model.ssl_step

    def nan_step(views, labels):
        out = original(views, labels)
        out["loss"] = out["loss"] * float("nan")
        return out

    model.ssl_step = nan_step
    with pytest.raises(VislearnError, match="loss is nan at step 0"):
        fit("simclr", tmp_path, model=model)
