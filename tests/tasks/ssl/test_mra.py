"""MAE pretraining and MRA (mask-reconstruct augmentation): masks, loss, frozen MAE, paste-back,
determinism, loading, the classifier recipe with batch augmentations, occluders, CLI errors.

Everything is tiny (a 1-block 32-wide ViT for the unit tests; ``vit_mini`` with a 32-wide decoder
for the 2-step fits) so the module runs in seconds on one thread.
"""

from __future__ import annotations

import json
import math

import lightning as L
import numpy as np
import pytest
import torch

from vislearn.cli import main
from vislearn.core.config import load_config
from vislearn.core.errors import VislearnError
from vislearn.data.augment import BatchRandAugment, MultiViewAugment
from vislearn.data.masking import masking_from_keep, random_keep
from vislearn.data.mixing import mixup
from vislearn.data.mra import MaskReconstruct, mra_grid
from vislearn.data.occlusion import OccludedDataset, occlude, occluder_boxes
from vislearn.models import create_backbone
from vislearn.models.mae import (
    MAEDecoder,
    MaskedAutoencoder,
    class_attention,
    encode,
    load_mae,
    mae_loss,
    patchify,
    unpatchify,
)
from vislearn.models.vit import VisionTransformer

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_DECODER = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}
TINY_CLASSIFIER = {"backbone": "resnet_tiny", "backbone_kwargs": {"stem": "small_ds", "width": 8}}


def tiny_mae(seed: int = 0, img: int = 28, patch: int = 4, chans: int = 1) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    enc = VisionTransformer(img, patch, chans, embed_dim=32, depth=2, num_heads=2)
    dec = MAEDecoder(enc.grid, 32, patch, chans, dim=16, depth=1, num_heads=2)
    return MaskedAutoencoder(enc, dec)


def images(n: int = 6, size: int = 28, chans: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, chans, size, size), generator=g, dtype=torch.uint8)


def patch_equal(a: torch.Tensor, b: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, L]``: True where the patch of ``a`` equals that of ``b`` bit for bit."""
    return (patchify(a.float(), patch) == patchify(b.float(), patch)).all(-1)


# ---- patches, masks --------------------------------------------------------------------------
def test_patchify_layout_and_roundtrip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    # patch 1 = row 0, column 1: pixels (y, x, c) for y < 4, 4 <= x < 8
    expected = x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1)
    assert torch.equal(p[0, 1], expected)
    assert torch.equal(unpatchify(p, 4, (2, 2), 3), x)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_random_masking_keeps_the_right_number(ratio):
    keep = random_keep(5, 49, ratio, torch.Generator().manual_seed(0))
    k = max(1, math.floor((1 - ratio) * 49 + 0.5))
    assert (keep.sum(1) == k).all()
    ids_keep, mask, ids_restore = masking_from_keep(keep)
    assert ids_keep.shape == (5, k) and (mask.sum(1) == 49 - k).all()
    assert torch.equal(keep.gather(1, ids_keep), torch.ones_like(ids_keep, dtype=torch.bool))
    hidden = torch.stack([(~row).nonzero().flatten() for row in keep])
    shuffle = torch.cat([ids_keep, hidden], 1)  # visible first, then hidden
    assert torch.equal(shuffle.gather(1, ids_restore), torch.arange(49).expand(5, -1))


def test_mae_encoder_sees_only_the_visible_tokens():
    mae = tiny_mae()
    x = torch.randn(3, 1, 28, 28)
    keep = random_keep(3, 49, 0.75, torch.Generator().manual_seed(1))
    ids_keep, _, ids_restore = masking_from_keep(keep)
    latent = encode(mae.encoder, x, ids_keep)
    assert latent.shape == (3, 1 + 12, 32)
    pred = mae.decoder(latent, ids_restore)
    assert pred.shape == (3, 49, 16)
    # all patches visible == the ViT's own forward (class token and normalised patch tokens)
    full = encode(mae.encoder, x, torch.arange(49).expand(3, -1))
    pooled, maps = mae.encoder.forward_features(x, return_stages=True)
    assert torch.allclose(full[:, 0], pooled, atol=1e-5)
    ref = mae.encoder.norm(maps[-1].flatten(2).transpose(1, 2))
    assert torch.allclose(full[:, 1:], ref, atol=1e-5)


def test_mae_loss_is_on_masked_patches_only():
    """Toy case by hand: 1 image 1x4x4, patch 2 (4 patches of 4 pixels)."""
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    target = patchify(x, 2)
    delta = torch.tensor([1.0, 100.0, 2.0, -50.0]).view(1, 4, 1)  # huge errors on visible ones
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    loss = mae_loss(x, target + delta, mask, 2, norm_pix=False)
    assert math.isclose(loss.item(), (1.0**2 + 2.0**2) / 2, rel_tol=1e-6)
    # norm_pix: each target patch standardised with its unbiased std (NumPy transcription)
    t = target.numpy()[0]
    tn = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
    pred = torch.zeros(1, 4, 4)
    expected = ((tn[[0, 2]] - 0.0) ** 2).mean()
    assert math.isclose(mae_loss(x, pred, mask, 2, True).item(), expected, rel_tol=1e-5)


def test_vit_mean_pooling_option():
    vit = create_backbone("vit_mini", pool="mean")
    x = torch.randn(2, 1, 28, 28)
    tokens = encode(vit, x)
    assert torch.allclose(vit(x), tokens[:, 1:].mean(1), atol=1e-5)
    with pytest.raises(VislearnError, match="pool"):
        create_backbone("vit_mini", pool="max")


def test_mae_224_layout_shapes():
    enc = create_backbone("vit_tiny", in_chans=3)  # 224 px, patch 16: the ViT-B/16 layout
    dec = MAEDecoder(enc.grid, enc.num_features, 16, 3, dim=32, depth=1, num_heads=2)
    x = torch.randn(1, 3, 224, 224)
    keep = random_keep(1, 196, 0.75)
    ids_keep, _, ids_restore = masking_from_keep(keep)
    assert ids_keep.shape == (1, 49)
    pred = dec(encode(enc, x, ids_keep), ids_restore)
    assert pred.shape == (1, 196, 16 * 16 * 3)


# ---- MRA ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("score", ["token_dot", "attention"])
def test_mra_keeps_exactly_k_top_scoring_patches_bit_identical(ratio, score):
    mae = tiny_mae()
    mra = MaskReconstruct(mae, mask_ratio=ratio, prob=1.0, score=score)
    x = images()
    d = mra.details(x)
    k = math.floor((1 - ratio) * 49 + 0.5)  # rounded half up
    assert (d["keep"].sum(1) == k).all() and mra.visible_patches == k
    # the kept patches are the k best of the score, computed here without MRA
    xm = (x.float() / 255 - mae.mean) / mae.std
    if score == "token_dot":
        z = encode(mae.encoder, xm).numpy()
        scores = np.einsum("bd,bld->bl", z[:, 0], z[:, 1:])
    else:
        scores = class_attention(mae.encoder, xm).numpy()
    for b in range(len(x)):
        top = set(np.argsort(-scores[b], kind="stable")[:k].tolist())
        assert top == set(d["keep"][b].nonzero().flatten().tolist())
    out = mra(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    same = patch_equal(out, x, 4)
    assert same[d["keep"]].all()  # kept patches: bit-identical
    assert not same[~d["keep"]].all()  # masked patches: re-synthesised


def test_attention_score_matches_a_numpy_transcription():
    mae = tiny_mae()
    x = torch.randn(2, 1, 28, 28)
    captured = {}
    last = mae.encoder.blocks[-1]
    hook = last.attn.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
    with torch.no_grad():
        encode(mae.encoder, x)
        got = class_attention(mae.encoder, x).numpy()
    hook.remove()
    t = captured["in"].numpy()  # norm1 output of the last block, [B, 50, 32]
    w, bias = last.attn.qkv.weight.detach().numpy(), last.attn.qkv.bias.detach().numpy()
    qkv = t @ w.T + bias
    heads, dh = 2, 16
    q, k = qkv[..., :32], qkv[..., 32:64]
    ref = np.zeros((2, 49))
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        s = np.einsum("bd,bnd->bn", q[:, 0, sl], k[:, :, sl])
        e = np.exp(s / np.sqrt(dh) - (s / np.sqrt(dh)).max(-1, keepdims=True))
        ref += (e / e.sum(-1, keepdims=True))[:, 1:] / heads
    assert np.allclose(got, ref, atol=1e-5)


def test_mra_paste_back_on_normalised_and_resized_batches():
    mae = tiny_mae()
    mra = MaskReconstruct(mae, mask_ratio=0.5, prob=1.0)
    x = images()
    xn = (x.float() / 255 - mae.mean) / mae.std  # the vislearn normalisation (same as the MAE's)
    d = mra.details(xn)
    out = mra(xn)
    assert out.dtype == torch.float32
    assert patch_equal(out, xn, 4)[d["keep"]].all()
    # floats in [0, 1]: explicit statistics; agrees with the uint8 path up to rounding
    unit = MaskReconstruct(mae, 0.5, 1.0, input_mean=(0.0,), input_std=(1.0,))
    out_unit = unit(x.float() / 255)
    assert (out_unit * 255 - mra(x).float()).abs().max() <= 0.5 + 1e-3
    # 32 px images through a 28 px MAE: the kept region is still the input's own pixels
    x32 = images(size=32)
    d32 = mra.details(x32)
    assert d32["output"].shape == x32.shape
    assert torch.equal(d32["output"][d32["mask"].expand_as(x32)], x32[d32["mask"].expand_as(x32)])
    assert d32["mask"].float().mean(dim=(1, 2, 3)).allclose(torch.tensor(25 / 49), atol=0.05)


def test_mra_without_paste_back_uses_the_decoder_output():
    mae = tiny_mae()
    x = images()
    d = MaskReconstruct(mae, 0.5, 1.0, paste_back=False).details(x)
    assert torch.equal(d["output"], d["reconstruction"])


def test_mra_is_a_noop_at_ratio_zero_and_prob_zero():
    mae = tiny_mae()
    calls = []
    mae.encoder.register_forward_pre_hook(lambda *a: calls.append(1))
    mae.decoder.register_forward_pre_hook(lambda *a: calls.append(1))
    x = images()
    for mra in (MaskReconstruct(mae, 0.0, 1.0), MaskReconstruct(mae, 0.75, 0.0)):
        assert torch.equal(mra(x), x)
        xn = torch.randn(4, 1, 28, 28)
        assert torch.equal(mra(xn), xn)
    assert not calls, "the MAE ran although nothing was to be augmented"


def test_mra_is_deterministic_given_a_seed():
    mae = tiny_mae()
    x = images(16)
    a = MaskReconstruct(mae, 0.5, 0.5, seed=3)
    b = MaskReconstruct(mae, 0.5, 0.5, seed=3)
    c = MaskReconstruct(mae, 0.5, 0.5, seed=4)
    outs = [m(x) for m in (a, b, c)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    applied = ~patch_equal(outs[0], x, 4).all(1)
    assert 0 < applied.sum() < 16  # prob 0.5: some images augmented, some left alone
    assert torch.equal(outs[0][~applied], x[~applied])
    # Gumbel-top-k: random masks, but reproducible from the generator
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    m = MaskReconstruct(mae, 0.5, 1.0, gumbel_tau=0.5)
    assert torch.equal(m(x, g1), m(x, g2))
    assert (m.details(x, g1)["keep"].sum(1) == 25).all()


def test_mra_runs_on_cpu_and_keeps_the_mae_frozen():
    mae = tiny_mae()
    before = {k: v.clone() for k, v in mae.state_dict().items()}
    mra = MaskReconstruct(mae, 0.5, 1.0)
    mra.train()
    assert not mae.training and all(not p.requires_grad for p in mae.parameters())
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    out = mra(x)
    assert out.device.type == "cpu" and not out.requires_grad
    assert not mae.training
    assert all(torch.equal(v, before[k]) for k, v in mae.state_dict().items())


def test_mra_on_single_images_and_pil():
    from PIL import Image

    mra = MaskReconstruct(tiny_mae(), 0.5, 1.0)
    x = images(1)[0]
    out = mra(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    pil = Image.fromarray(x[0].numpy(), mode="L")
    out_pil = mra(pil)
    assert out_pil.size == pil.size and out_pil.mode == "L"
    assert np.array_equal(np.asarray(out_pil), out[0].numpy())


def test_mra_bad_input():
    mae = tiny_mae()
    for bad in (-0.1, 1.0, 1.5, "x"):
        with pytest.raises(VislearnError, match="mask ratio"):
            MaskReconstruct(mae, mask_ratio=bad)
    with pytest.raises(VislearnError, match="prob"):
        MaskReconstruct(mae, prob=1.5)
    with pytest.raises(VislearnError, match="score"):
        MaskReconstruct(mae, score="max")
    with pytest.raises(VislearnError, match="channel"):
        MaskReconstruct(mae, prob=1.0)(images(chans=3))
    mae.norm_pix_loss = True
    with pytest.raises(VislearnError, match="raw-pixel"):
        MaskReconstruct(mae)
    with pytest.raises(VislearnError, match="not found"):
        load_mae("/no/such/mae.safetensors")


def test_mra_grid_rows():
    grid = mra_grid(MaskReconstruct(tiny_mae(), 0.5, 1.0), images(3))
    assert grid.shape == (3, 4 * 29 + 1, 3 * 29 + 1)
    assert grid.min() >= 0.0 and grid.max() <= 1.0


# ---- other batch augmentations -------------------------------------------------------------------
def test_batch_randaugment_is_per_image_and_seeded():
    op = BatchRandAugment(num_ops=2, magnitude=9)
    x = images(32)
    a = op(x, torch.Generator().manual_seed(0))
    b = op(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    # per image: equals torchvision's operation on that image alone, for a few ops
    for name in ("Rotate", "Contrast", "Equalize", "Posterize"):
        mag, _ = op.magnitude(name, 28, 28)
        batch = op.apply(x, name, mag)
        single = torch.stack([op.apply(img[None], name, mag)[0] for img in x])
        assert torch.equal(batch, single), name
    with pytest.raises(VislearnError):
        op(x.float())


def test_mixup_mixes_with_one_lambda():
    a, b = torch.zeros(4, 1, 2, 2), torch.ones(4, 1, 2, 2)
    mixed, lam = mixup(a, b, 1.0, torch.Generator().manual_seed(0))
    assert 0 < lam < 1 and torch.allclose(mixed, torch.full_like(a, 1 - lam))


def test_view_ops_on_multiview_augment():
    aug = MultiViewAugment("semi", 28, 1, seed=0)
    aug.add_op(1, MaskReconstruct(tiny_mae(), 0.5, 1.0))
    views = aug(images(4))
    assert len(views) == 2 and views[1].shape == (4, 1, 28, 28)
    with pytest.raises(VislearnError, match="out of range"):
        aug.add_op(2, torch.nn.Identity())


# ---- occlusion -----------------------------------------------------------------------------------
def test_occluders_are_seeded_and_cover_the_requested_size():
    x = torch.full((5, 1, 28, 28), 255, dtype=torch.uint8)
    a, b = occlude(x, 14, seed=0), occlude(x, 14, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, occlude(x, 14, seed=1))
    assert ((a == 0).sum(dim=(1, 2, 3)) == 14 * 14).all()
    assert len({occluder_boxes(28, 28, 14, 0, i)[0] for i in range(20)}) > 1  # positions vary
    assert ((occlude(x, 40) == 0).sum(dim=(1, 2, 3)) == 28 * 28).all()  # clipped to the image
    ds = OccludedDataset([(x[i], i) for i in range(5)], 14, seed=0)
    assert torch.equal(ds[3][0], a[3]) and ds[3][1] == 3  # independent of batching
    with pytest.raises(VislearnError):
        occlude(x, 0)


# ---- training: MAE fit, classifier with MRA, semi-supervised strong view ----------------------
@pytest.fixture(scope="module")
def trained_mae(tmp_path_factory):
    """``vit_mini`` MAE with a tiny decoder, 2 steps of 32 on the embedded data."""
    from vislearn.core.config import load_config
    from vislearn.tasks.ssl.run import pretrain

    out = tmp_path_factory.mktemp("mae")
    torch.set_num_threads(1)
    cfg = load_config(
        None,
        method="mae",
        out=str(out),
        model={"backbone": "vit_mini", **TINY_DECODER},
        data={"batch_size": 32, "knn_bank_size": 200},
        trainer={
            "max_epochs": 1,
            "limit_train_batches": 2,
            "progress": False,
            "accelerator": "cpu",
        },
    )
    model, out, _ = pretrain(cfg)
    return model, out


def test_mae_fits_two_steps_and_writes_its_grid(trained_mae):
    from PIL import Image

    model, out = trained_mae
    assert model.trainer.global_step == 2
    grid = out / "reconstructions" / "epoch_0000.png"
    assert grid.is_file()
    w, h = Image.open(grid).size
    assert (w, h) == (8 * 29 + 1, 4 * 29 + 1)  # 8 images x (original, masked, recon, pasted)
    assert not list((out / "reconstructions").glob(".*.tmp"))
    assert (out / "mae.safetensors").is_file() and (out / "backbone.safetensors").is_file()
    csv = (out / "csv" / "metrics.csv").read_text()
    assert "val/knn_top1" in csv.splitlines()[0]


@pytest.mark.parametrize("name", ["mae.safetensors", "checkpoints/last.ckpt"])
def test_load_mae_from_both_files(trained_mae, name):
    model, out = trained_mae
    mae = load_mae(out / name)
    assert not mae.training and all(not p.requires_grad for p in mae.parameters())
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(mae.encoder.state_dict()[k], v.cpu())
    for k, v in model.decoder.state_dict().items():
        assert torch.equal(mae.decoder.state_dict()[k], v.cpu())


def test_load_mae_rejects_a_non_mae_file(tiny_evaluator):
    for path in tiny_evaluator.values():
        with pytest.raises(VislearnError, match="MAE"):
            load_mae(path)


def _classifier_cfg(out, augment: str, mae=None, **model) -> dict:
    return load_config(
        None,
        method="supervised",
        out=str(out),
        model={**TINY_CLASSIFIER, "batch_augment": augment, "mae": mae, **model},
        data={
            "batch_size": 32,
            "knn_bank_size": 200,
            "label_fraction": 0.1,
            "labelled_batch_size": 32,
        },
        trainer={
            "max_epochs": 1,
            "limit_train_batches": 2,
            "progress": False,
            "accelerator": "cpu",
        },
    )


def test_train_classifier_with_mra_two_steps(trained_mae, tmp_path):
    from vislearn.tasks.ssl.run import train_classifier

    _, mae_dir = trained_mae
    path = mae_dir / "mae.safetensors"
    frozen = {k: v.clone() for k, v in load_mae(path).state_dict().items()}
    cfg = _classifier_cfg(tmp_path, "mra", str(path), mra={"mask_ratio": 0.5, "prob": 0.5})
    L.seed_everything(0, verbose=False)
    model, out, res = train_classifier(cfg, {"size": 14, "seed": 0})
    assert model.trainer.global_step == 2
    op = model.augment.ops["normalized_0"]
    assert isinstance(op, MaskReconstruct) and not op.mae.training
    assert all(not p.requires_grad for p in op.mae.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in op.mae.state_dict().items())
    assert 0 <= res["top1"] <= 100 and 0 <= res["occluded_top1"] <= 100
    saved = json.loads((out / "results.json").read_text())
    assert saved["occlusion"]["size"] == 14 and "occluded_top1" in saved


@pytest.mark.parametrize("augment", ["cutmix", "mixup", "randaugment"])
def test_train_classifier_other_augmentations(augment, tmp_path):
    from vislearn.tasks.ssl.run import pretrain

    L.seed_everything(0, verbose=False)
    model, _, _ = pretrain(_classifier_cfg(tmp_path, augment))
    assert model.trainer.global_step == 2
    assert math.isfinite(float(model.trainer.callback_metrics["train/loss"]))


def test_semi_supervised_strong_view_with_mra(trained_mae, tmp_path):
    from vislearn.tasks.ssl.run import pretrain

    _, mae_dir = trained_mae
    cfg = load_config(
        None,
        method="pseudolabel",
        out=str(tmp_path),
        model={
            **TINY_CLASSIFIER,
            "strong_augment": "mra",
            "mae": str(mae_dir / "mae.safetensors"),
            "mra": {"prob": 1.0},
        },
        data={"batch_size": 32, "knn_bank_size": 200, "label_fraction": 0.1},
        trainer={
            "max_epochs": 1,
            "limit_train_batches": 2,
            "progress": False,
            "accelerator": "cpu",
        },
    )
    model, _, _ = pretrain(cfg)
    assert model.trainer.global_step == 2
    assert isinstance(model.augment.ops["normalized_1"], MaskReconstruct)
    assert "normalized_0" not in model.augment.ops  # the weak view is untouched


# ---- CLI ---------------------------------------------------------------------------------------
def _one_line_error(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vislearn: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_bad_input_is_one_line(capsys, tmp_path, trained_mae):
    _, mae_dir = trained_mae
    base = ["train-classifier", "--out", str(tmp_path / "x"), "--augment", "mra"]
    assert "not found" in _one_line_error(capsys, [*base, "--mae", str(tmp_path / "none.ckpt")])
    mae = str(mae_dir / "mae.safetensors")
    assert "mask ratio" in _one_line_error(capsys, [*base, "--mae", mae, "--mask-ratio", "1"])
    assert "mask ratio" in _one_line_error(capsys, [*base, "--mae", mae, "--mask-ratio", "-0.2"])
    assert "MAE" in _one_line_error(capsys, base)
    grid = ["mra-grid", "--out", str(tmp_path / "g.png")]
    assert "not found" in _one_line_error(capsys, [*grid, "--mae", str(tmp_path / "no.pt")])


def test_cli_mra_grid(capsys, tmp_path, trained_mae):
    from PIL import Image

    _, mae_dir = trained_mae
    out = tmp_path / "grid.png"
    args = ["mra-grid", "--mae", str(mae_dir / "checkpoints" / "last.ckpt"), "--out", str(out)]
    assert main([*args, "--n", "4", "--score", "attention"]) == 0
    assert Image.open(out).size == (4 * 29 + 1, 4 * 29 + 1)


def test_mae_method_bad_layouts():
    from vislearn.tasks.ssl.methods import build_method

    with pytest.raises(VislearnError, match="ViT"):
        build_method("mae", backbone="resnet_tiny")
    with pytest.raises(VislearnError, match="img_size=32"):
        build_method("mae", image_size=32)
    with pytest.raises(VislearnError, match="mask ratio"):
        build_method("mae", mask_ratio=1.0)
    model = build_method("mae", image_size=32, backbone_kwargs={"img_size": 32}, **TINY_DECODER)
    assert model.num_patches == 64
