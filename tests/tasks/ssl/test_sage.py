"""SaGe: decoder sizes and layout, pixel-space conversions, the loss against a hand computation,
gradient flow through the frozen evaluator, the evaluator staying frozen in training, the decoder
optimiser, the reconstruction grid, resume, configs and the CLI.

Everything is tiny (ResNet-tiny width 8, decoder widths 16/8, batch 32 or random tensors of 4)
so that each test costs at most a few seconds on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from test_methods import CrashAtEpoch, _Crash

from vislearn.core.config import load_config
from vislearn.core.errors import VislearnError
from vislearn.data.augment import GRAY_MEAN, GRAY_STD, RGB_MEAN, RGB_STD
from vislearn.data.datamodule import ImageDataModule
from vislearn.engine import build_trainer
from vislearn.models import create_backbone
from vislearn.models.decoder import SaGeDecoder, decoder_plan
from vislearn.tasks.ssl.methods import build_method
from vislearn.tasks.ssl.methods.sage import SaGe, from_signed, to_signed

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[3]
TINY = {
    "backbone": "resnet_tiny",
    "backbone_kwargs": {"stem": "small_ds", "width": 8},
    "proj_hidden_dim": 32,
    "proj_dim": 16,
    "pred_hidden_dim": 32,
    "decoder_code_dim": 16,
    "decoder_stem_channels": 8,
}


def sage(evaluator=None, seed: int = 0, **overrides) -> SaGe:
    L.seed_everything(seed, verbose=False)
    kwargs = {**TINY, **overrides}
    if evaluator is not None:
        kwargs["evaluator"] = str(evaluator)
    return build_method("sage", **kwargs)


def random_views(n: int = 4, seed: int = 3, chans: int = 1, size: int = 28) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, chans, size, size, generator=g) for _ in range(2)]


def fit(model, out, max_epochs=1, limit_train_batches=2, ckpt_path=None, callbacks=None):
    trainer = build_trainer(
        out,
        max_epochs=max_epochs,
        limit_train_batches=limit_train_batches,
        progress=False,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        log_every_n_steps=1,
    )
    dm = ImageDataModule(batch_size=32, knn_bank_size=200)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return trainer


# ---- decoder ----------------------------------------------------------------------------------
BACKBONES = [
    ("resnet_tiny", {"stem": "small_ds", "width": 4}),
    ("resnet_tiny", {"stem": "small", "width": 4}),
    ("resnet18", {"stem": "imagenet", "width": 4}),
    ("resnet18", {"stem": "small_ds", "width": 4}),
]


@pytest.mark.parametrize("size", [28, 32, 64, 96, 224])
@pytest.mark.parametrize("backbone,kwargs", BACKBONES)
def test_decoder_shape_and_range(size, backbone, kwargs):
    net = create_backbone(backbone, in_chans=3, **kwargs).eval()
    with torch.no_grad():
        _, maps = net.forward_features(torch.zeros(2, 3, size, size), return_stages=True)
    last = maps[-1]
    dec = SaGeDecoder(last.shape[1], last.shape[-1], size, 3, code_dim=8, stem_channels=4)
    assert dec.stem_size * 2 ** len(dec.up) == size
    out = dec(100 * torch.randn_like(last))  # large inputs saturate tanh
    assert out.shape == (2, 3, size, size)
    assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1


def test_decoder_paper_layout():
    """2048 x 7 x 7 -> 512 code -> 256 x 7 x 7 -> 512, 256, 128, 64, 32 -> 3 x 224 x 224."""
    dec = SaGeDecoder(2048, 7, 224, 3)
    assert dec.code.weight.shape == (512, 2048, 7, 7)
    assert dec.stem[0].weight.shape == (512, 256, 7, 7)  # ConvTranspose: (in, out, k, k)
    ups = [(b[0].in_channels, b[0].out_channels) for b in dec.up]
    assert ups == [(256, 512), (512, 256), (256, 128), (128, 64), (64, 32)]
    assert all(b[0].kernel_size == (4, 4) and b[0].stride == (2, 2) for b in dec.up)
    assert dec.final.weight.shape == (3, 32, 1, 1)


def test_decoder_size_rule():
    assert decoder_plan(224, 7) == (7, 5)
    assert decoder_plan(28, 4) == decoder_plan(28, 7) == (7, 2)
    assert decoder_plan(32, 4) == (4, 3)
    assert decoder_plan(96, 12) == (12, 3)
    for size in range(8, 130):
        for m in (1, 2, 3, 4, 7, 12):
            stem, n = decoder_plan(size, m)
            assert stem * 2**n == size and (stem >= m or n == 0)
    with pytest.raises(VislearnError, match="up-blocks"):
        SaGeDecoder(8, 4, 28, 1, up_channels=[8])
    with pytest.raises(VislearnError, match="4x4 maps"):
        SaGeDecoder(8, 4, 28, 1, code_dim=4, stem_channels=4)(torch.zeros(2, 8, 7, 7))


# ---- pixel spaces ---------------------------------------------------------------------------
@pytest.mark.parametrize("mean,std", [(GRAY_MEAN, GRAY_STD), (RGB_MEAN, RGB_STD)])
def test_normalisation_round_trip(mean, std):
    c = len(mean)
    mean, std = torch.tensor(mean).view(1, c, 1, 1), torch.tensor(std).view(1, c, 1, 1)
    u8 = torch.randint(0, 256, (3, c, 8, 8), dtype=torch.uint8)
    x = (u8.float() / 255 - mean) / std  # what the augmentation outputs
    s = to_signed(x, mean, std)
    torch.testing.assert_close(s, u8.float() / 127.5 - 1)
    assert s.min() >= -1 - 1e-6 and s.max() <= 1 + 1e-6
    torch.testing.assert_close(from_signed(s, mean, std), x)
    s2 = torch.rand(3, c, 8, 8) * 2 - 1
    torch.testing.assert_close(to_signed(from_signed(s2, mean, std), mean, std), s2)


# ---- loss -------------------------------------------------------------------------------------
def _mse(a, b):
    return ((a - b) ** 2).mean()


def test_loss_matches_hand_computation(tiny_evaluator):
    model = sage(tiny_evaluator["ckpt"], w_pix=0.3, w_proj=0.2, w_feat=0.05, view_reduction="sum")
    model.train()
    views = random_views()
    recons = [torch.rand(4, 1, 28, 28) * 2 - 1 for _ in range(2)]
    total, parts = model.generative_loss(views, recons)
    mean, std = torch.tensor(GRAY_MEAN).view(1, 1, 1, 1), torch.tensor(GRAY_STD).view(1, 1, 1, 1)
    ev = model.evaluator
    pix = proj = feat = 0.0
    for x, r in zip(views, recons, strict=True):
        pix += _mse(r, 2 * (x * std + mean) - 1)
        with torch.no_grad():  # eval-mode evaluator: a fixed function, order does not matter
            pa, ma = ev.backbone.forward_features(x, return_stages=True)
            pb, mb = ev.backbone.forward_features(((r + 1) / 2 - mean) / std, True)
        proj += _mse(ev.head(pa), ev.head(pb))
        assert len(ma) == 3  # resnet_tiny: the "last three stages" are all of them
        feat += _mse(ma[-1], mb[-1]) + _mse(ma[-2], mb[-2]) + _mse(ma[-3], mb[-3])
    torch.testing.assert_close(parts["loss_pix"], pix)
    torch.testing.assert_close(parts["loss_proj"], proj)
    torch.testing.assert_close(parts["loss_feat"], feat)
    torch.testing.assert_close(total.detach(), 0.3 * pix + 0.2 * proj + 0.05 * feat)

    # "mean" over the views halves everything; ssl_step adds BYOL's loss
    model.hparams.view_reduction = "mean"
    total_mean, parts_mean = model.generative_loss(views, recons)
    torch.testing.assert_close(total_mean.detach(), total.detach() / 2)
    torch.testing.assert_close(parts_mean["loss_pix"], pix / 2)
    out = model.ssl_step(views, torch.full((4,), -1))
    expect = out["loss_byol"] + sum(
        w * out[k] for w, k in ((0.3, "loss_pix"), (0.2, "loss_proj"), (0.05, "loss_feat"))
    )
    torch.testing.assert_close(out["loss"].detach(), expect)


def test_released_weights_are_the_defaults(tiny_evaluator):
    h = sage(tiny_evaluator["ckpt"]).hparams
    assert (h.w_pix, h.w_proj, h.w_feat) == (0.1, 0.1, 1 / 30)
    assert list(h.evaluator_stages) == [-1, -2, -3]
    assert (h.decoder_optimizer, h.decoder_lr) == ("adam", 0.048)
    assert tuple(h.decoder_betas) == (0.9, 0.999)
    assert h.evaluator_bn_mode == "eval" and h.decoder_weight_decay == 0.0


def test_zero_weights_is_byol_and_byol_part_is_unperturbed(tiny_evaluator):
    views, labels = random_views(), torch.full((4,), -1)
    L.seed_everything(0, verbose=False)
    byol = build_method(
        "byol", **{k: v for k, v in TINY.items() if not k.startswith("decoder")}
    ).train()
    ref = byol.ssl_step(views, labels)["loss"]
    off = sage(w_pix=0.0, w_proj=0.0, w_feat=0.0).train()  # no evaluator needed
    assert off.evaluator is None
    out = off.ssl_step(views, labels)
    assert torch.equal(out["loss"], ref)
    on = sage(tiny_evaluator["ckpt"]).train()  # same seed: same BYOL weights
    out = on.ssl_step(views, labels)
    assert torch.equal(out["loss_byol"], ref.detach())
    assert out["loss"] > out["loss_byol"]


@pytest.mark.parametrize("w_pix", [0.1, 0.0])
def test_generative_gradients_reach_decoder_and_backbone_not_evaluator(tiny_evaluator, w_pix):
    model = sage(tiny_evaluator["ckpt"], w_pix=w_pix).train()
    views = random_views()
    (_, _, m1), (_, _, m2) = [model._online_with_map(v) for v in views]
    gen, _ = model.generative_loss(views, [model.decoder(m1), model.decoder(m2)])
    gen.backward()
    for name, mod in (("decoder", model.decoder), ("backbone", model.backbone)):
        grads = [p.grad for p in mod.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    assert all(p.grad is None for p in model.evaluator.parameters())
    assert not any(p.requires_grad for p in model.evaluator.parameters())
    assert all(p.grad is None for p in model.projector.parameters())  # L_G skips the heads


# ---- training: evaluator frozen, optimisers, grid ---------------------------------------------
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_training_keeps_evaluator_frozen(tiny_evaluator, tmp_path, bn_mode):
    model = sage(tiny_evaluator["ckpt"], evaluator_bn_mode=bn_mode)
    params0 = {k: p.clone() for k, p in model.evaluator.named_parameters()}
    buffers0 = {k: b.clone() for k, b in model.evaluator.named_buffers()}
    decoder0 = {k: p.clone() for k, p in model.decoder.named_parameters()}
    trainer = fit(model, tmp_path)
    assert trainer.global_step == 2
    for k, p in model.evaluator.named_parameters():
        assert torch.equal(p, params0[k]), k
        assert p.grad is None
    drifted = [k for k, b in model.evaluator.named_buffers() if not torch.equal(b, buffers0[k])]
    if bn_mode == "eval":
        assert not drifted
        assert not model.evaluator.training
    else:  # the release's behaviour: batch statistics, running statistics drift
        assert any(k.endswith("running_mean") for k in drifted)
        assert model.evaluator.training
    assert all(not torch.equal(p, decoder0[k]) for k, p in model.decoder.named_parameters())

    # optimisers: the main one holds neither decoder nor evaluator; the decoder's holds it all
    main = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    dec = {id(p) for g in model._decoder_opt.param_groups for p in g["params"]}
    assert len(trainer.optimizers) == 1
    assert dec == {id(p) for p in model.decoder.parameters()}
    assert not main & dec
    assert not main & {id(p) for p in model.evaluator.parameters()}
    others = {id(p) for n, p in model.named_parameters() if p.requires_grad} - dec
    assert main == others
    assert isinstance(model._decoder_opt, torch.optim.Adam)
    assert model._decoder_sched.last_epoch == 2

    png = tmp_path / "reconstructions" / "epoch_0000.png"
    assert png.is_file()
    with Image.open(png) as im:  # 16 images: 2 rows of views over 2 rows of reconstructions
        assert im.size == (8 * 30 + 2, 4 * 30 + 2)
    assert not list(png.parent.glob("*.tmp"))
    csv = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    for key in ("loss_byol", "loss_pix", "loss_proj", "loss_feat", "decoder_lr"):
        assert f"train/{key}" in csv


def test_decoder_sgd_and_schedule(tiny_evaluator, tmp_path):
    model = sage(
        tiny_evaluator["ckpt"],
        decoder_optimizer="sgd",
        decoder_lr=0.5,
        warmup_epochs=1,
        recon_grid_images=0,
    )
    trainer = fit(model, tmp_path, max_epochs=2, limit_train_batches=2)
    assert isinstance(model._decoder_opt, torch.optim.SGD)
    # both schedules: warm-up over epoch 0 (2 steps), cosine to 0 at step 4
    main_lr = trainer.optimizers[0].param_groups[0]["lr"]
    dec_lr = model._decoder_opt.param_groups[0]["lr"]
    assert main_lr == pytest.approx(0.0, abs=1e-12) and dec_lr == pytest.approx(0.0, abs=1e-12)
    assert not (tmp_path / "reconstructions").exists()


# ---- resume -------------------------------------------------------------------------------------
def test_resume_after_interruption_equals_uninterrupted(tiny_evaluator, tmp_path):
    """``train`` BN mode: the evaluator's drifted statistics must come back from the checkpoint
    too. A: 2 epochs straight; B: killed after epoch 1, resumed by a new Trainer."""
    kw = {"evaluator_bn_mode": "train"}
    a = sage(tiny_evaluator["ckpt"], **kw)
    fit(a, tmp_path / "A", max_epochs=2, limit_train_batches=2)
    with pytest.raises(_Crash):
        fit(sage(tiny_evaluator["ckpt"], **kw), tmp_path / "B", 2, 2, callbacks=[CrashAtEpoch(1)])
    last = tmp_path / "B" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 2 and "sage_decoder" in ckpt
    assert any(k.startswith("evaluator.") for k in ckpt["state_dict"])
    b = sage(tiny_evaluator["ckpt"], **kw)
    trainer_b = fit(b, tmp_path / "B", 2, 2, ckpt_path=str(last))
    assert trainer_b.global_step == 4
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.allclose(sa[k].double(), sb[k].double(), atol=1e-6)]
    assert not differ, differ[:8]
    oa, ob = a._decoder_opt.state_dict(), b._decoder_opt.state_dict()
    assert a._decoder_sched.last_epoch == b._decoder_sched.last_epoch == 4
    for i, st in oa["state"].items():
        assert int(st["step"]) == int(ob["state"][i]["step"]) == 4
        torch.testing.assert_close(st["exp_avg"], ob["state"][i]["exp_avg"], atol=1e-6, rtol=0)
    assert (tmp_path / "B" / "reconstructions" / "epoch_0001.png").is_file()


# ---- evaluator loading errors -------------------------------------------------------------------
def test_evaluator_errors(tiny_evaluator, tmp_path):
    with pytest.raises(VislearnError, match="evaluator"):
        sage(None)
    with pytest.raises(VislearnError, match="file not found"):
        sage(tmp_path / "nope.ckpt")
    with pytest.raises(VislearnError, match="has 3 stages"):
        sage(tiny_evaluator["ckpt"], evaluator_stages=[-1, -4])
    with pytest.raises(VislearnError, match="1-channel"):
        sage(tiny_evaluator["ckpt"], in_chans=3)
    with pytest.raises(VislearnError, match="evaluator_bn_mode"):
        sage(tiny_evaluator["ckpt"], evaluator_bn_mode="frozen")
    with pytest.raises(VislearnError, match="decoder_optimizer"):
        sage(tiny_evaluator["ckpt"], decoder_optimizer="lamb")
    # an evaluator is optional for the pixel-only ablation
    assert sage(None, w_proj=0.0, w_feat=0.0).evaluator is None


def test_exported_backbone_evaluator_uses_pooled_features(tiny_evaluator):
    with pytest.warns(UserWarning, match="no projector head"):
        model = sage(tiny_evaluator["safetensors"])
    assert model.evaluator.head is None
    out = model.train().ssl_step(random_views(), torch.full((4,), -1))
    assert torch.isfinite(out["loss"]) and out["loss_proj"] > 0


# ---- configs and CLI ----------------------------------------------------------------------------
CONFIGS = ["sage.yaml", "sage_pixel_only.yaml", "sage_evaluator_only.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_mirror_byol_and_build(name, tiny_evaluator):
    byol = load_config(ROOT / "configs/fmnist_ssl/byol.yaml")
    cfg = load_config(
        ROOT / "configs/fmnist_ssl" / name, [f"model.evaluator={tiny_evaluator['ckpt']}"]
    )
    assert cfg["method"] == "sage"
    for key, value in byol["model"].items():
        assert cfg["model"][key] == value, key
    for section in ("data", "trainer", "eval", "seed"):
        assert cfg[section] == byol[section], section
    weights = (cfg["model"]["w_pix"], cfg["model"]["w_proj"], cfg["model"]["w_feat"])
    expect = {
        "sage.yaml": (0.1, 0.1, 1 / 30),
        "sage_pixel_only.yaml": (0.1, 0.0, 0.0),
        "sage_evaluator_only.yaml": (0.0, 0.1, 1 / 30),
    }[name]
    assert weights == pytest.approx(expect)
    model = build_method("sage", in_chans=1, image_size=28, num_classes=10, **cfg["model"])
    assert (model.evaluator is None) == (name == "sage_pixel_only.yaml")


def test_cli_pretrain_sage(tiny_evaluator, tmp_path):
    from vislearn.cli import main

    out = tmp_path / "run"
    args = [
        "pretrain",
        "sage",
        "--config",
        str(ROOT / "configs/fmnist_ssl/sage.yaml"),
        f"model.evaluator={tiny_evaluator['ckpt']}",
        "model.backbone_kwargs={stem: small_ds, width: 8}",
        "model.proj_hidden_dim=32",
        "model.pred_hidden_dim=32",
        "model.decoder_code_dim=16",
        "model.decoder_stem_channels=8",
        "data.dataset=fmnist-mini",
        "data.batch_size=32",
        "data.knn_bank_size=200",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "trainer.limit_train_batches=2",
        "trainer.progress=false",
        "trainer.accelerator=cpu",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert (out / "backbone.safetensors").is_file()
    assert (out / "reconstructions" / "epoch_0000.png").is_file()
    # the exported backbone is the online one (not the evaluator's)
    from vislearn.models.io import load_backbone

    bb = load_backbone(out / "backbone.safetensors")
    ck = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for k, v in bb.state_dict().items():
        assert torch.equal(v, ck[f"backbone.{k}"])


# ---- views batched together, mixed precision --------------------------------------------------
def test_joint_views_runs(tiny_evaluator):
    model = sage(tiny_evaluator["ckpt"], joint_views=True).train()
    out = model.ssl_step(random_views(), torch.full((4,), -1))
    assert torch.isfinite(out["loss"]) and out["loss_feat"] > 0


def test_decoder_step_through_grad_scaler(tiny_evaluator):
    """fp16 AMP: the decoder's gradients are unscaled by the main optimiser's GradScaler, so
    the decoder's update equals the unscaled one (CPU GradScaler; no fp16 autocast here)."""
    from types import SimpleNamespace

    views = random_views()
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        model = sage(tiny_evaluator["ckpt"]).train()
        main = torch.optim.SGD(
            [p for n, p in model.named_parameters() if "decoder" not in n and p.requires_grad],
            lr=0.1,
        )
        model._decoder_opt = torch.optim.SGD(model.decoder.parameters(), lr=0.1)  # scale-sensitive
        model._decoder_sched = torch.optim.lr_scheduler.LambdaLR(model._decoder_opt, lambda s: 1)
        model._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler))
        loss = model.ssl_step(views, torch.full((4,), -1))["loss"]
        if scaler is None:
            loss.backward()
            model.on_before_optimizer_step(main)
            main.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(main)
            model.on_before_optimizer_step(main)
            scaler.step(main)
            scaler.update()
        assert all(p.grad is None for p in model.decoder.parameters())  # zeroed after its step
        model._trainer = None
        results.append({k: v.clone() for k, v in model.decoder.state_dict().items()})
    for k, v in results[0].items():
        torch.testing.assert_close(results[1][k], v, msg=k)


def test_bf16_mixed_fit(tiny_evaluator, tmp_path):
    model = sage(tiny_evaluator["ckpt"])
    trainer = build_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        progress=False,
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed",
    )
    trainer.fit(model, datamodule=ImageDataModule(batch_size=32, knn_bank_size=200))
    assert trainer.global_step == 1 and (tmp_path / "reconstructions/epoch_0000.png").is_file()
