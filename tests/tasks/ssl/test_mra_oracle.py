"""MRA with ground-truth foreground masks: the oracle selector (the top-k foreground patches
stay visible), the share of the object a selector keeps (``fg_kept``) against NumPy, the mask
reaching MRA through the views, and a 2-step classifier on photo-fmnist that logs
``train/mra_fg_kept``.

A 16 px, 1-block ViT MAE (4 x 4 patches) for the unit tests; an untrained ``vit_mini`` MAE at
32 px RGB for the fit (the cost of MRA does not depend on its weights).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from vislearn.core.config import load_config
from vislearn.core.errors import VislearnError
from vislearn.data.augment import MultiViewAugment
from vislearn.data.mra import MaskReconstruct
from vislearn.models.mae import MAEDecoder, MaskedAutoencoder
from vislearn.models.vit import VisionTransformer

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_mae(img: int = 16, chans: int = 1) -> MaskedAutoencoder:
    torch.manual_seed(0)
    enc = VisionTransformer(img, 4, chans, embed_dim=32, depth=1, num_heads=2)
    return MaskedAutoencoder(enc, MAEDecoder(enc.grid, 32, 4, chans, dim=16, depth=1, num_heads=2))


def images(n: int, size: int = 16, chans: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, chans, size, size), generator=g, dtype=torch.uint8)


def soft_masks(n: int, size: int = 16, seed: int = 1) -> torch.Tensor:
    """Random masks [n, 1, size, size] in [0, 1], about a third of them foreground, some empty."""
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(n, 1, size, size, generator=g) < 0.35).float()
    m[0] = 0.0  # an image without foreground
    return m


def numpy_fg_kept(fg: np.ndarray, keep: np.ndarray, grid: int) -> np.ndarray:
    """Per image: foreground pixels inside kept patches / all foreground pixels (NaN if none)."""
    n, size = fg.shape[0], fg.shape[-1]
    p = size // grid
    per_patch = fg.reshape(n, grid, p, grid, p).sum((2, 4)).reshape(n, -1)
    total = per_patch.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (per_patch * keep).sum(1) / total, np.nan)


def test_oracle_keeps_exactly_the_top_k_foreground_patches():
    mra = MaskReconstruct(tiny_mae(), mask_ratio=0.5, prob=1.0, score="oracle")
    assert mra.visible_patches == 8  # of 16
    # hand-built: patch j (row-major, 4 x 4 px) holds counts[j] foreground pixels, so the 8
    # patches with the most foreground are known in advance
    fg = torch.zeros(2, 1, 16, 16)
    counts = {0: 3, 5: 16, 6: 1, 7: 12, 9: 9, 10: 2, 12: 7, 13: 5, 14: 4, 15: 11, 2: 6}
    for j, c in counts.items():
        r, col = divmod(j, 4)
        patch = torch.zeros(16)
        patch[:c] = 1.0
        fg[0, 0, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4] = patch.view(4, 4)
    fg[1] = fg[0].flip(-1)  # the mirror image: mirrored patches
    d = mra.details(images(2), torch.Generator().manual_seed(0), foreground=fg)
    top8 = {5, 7, 15, 9, 12, 2, 13, 14}
    assert set(d["keep"][0].nonzero().flatten().tolist()) == top8
    mirrored = {4 * (j // 4) + 3 - j % 4 for j in top8}
    assert set(d["keep"][1].nonzero().flatten().tolist()) == mirrored
    kept = sum(counts[j] for j in top8) / sum(counts.values())
    assert d["fg_kept"].tolist() == pytest.approx([kept, kept])
    # pasted back: the kept patches are the input's; the others the decoder's
    assert torch.equal(d["output"][d["mask"].expand_as(d["output"])],
                       images(2)[d["mask"].expand_as(d["output"])])  # fmt: skip


def test_oracle_breaks_ties_at_random_and_needs_masks():
    mra = MaskReconstruct(tiny_mae(), mask_ratio=0.75, prob=1.0, score="oracle")  # 4 visible
    fg = torch.zeros(3, 1, 16, 16)
    fg[:, :, :8, :8] = 1.0  # 4 full patches (0, 1, 4, 5) and 12 empty ones
    fg[2] = 0.0  # nothing to keep: 4 patches at random
    keeps = [mra.details(images(3), torch.Generator().manual_seed(s), fg)["keep"] for s in (0, 1)]
    for keep in keeps:
        assert set(keep[0].nonzero().flatten().tolist()) == {0, 1, 4, 5}
        assert keep.sum(1).tolist() == [4, 4, 4]
    assert not torch.equal(keeps[0][2], keeps[1][2])  # ties drawn from the generator
    with pytest.raises(VislearnError, match="oracle"):
        mra.details(images(3))
    with pytest.raises(VislearnError, match="score"):
        MaskReconstruct(tiny_mae(), score="intensity")


@pytest.mark.parametrize("score", ["token_dot", "oracle"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_fg_kept_matches_numpy(score, ratio):
    mra = MaskReconstruct(tiny_mae(), mask_ratio=ratio, prob=1.0, score=score)
    x, fg = images(6), soft_masks(6)
    d = mra.details(x, torch.Generator().manual_seed(0), fg)
    expected = numpy_fg_kept(fg[:, 0].numpy(), d["keep"].numpy(), 4)
    np.testing.assert_allclose(d["fg_kept"].numpy(), expected, rtol=1e-6)
    assert np.isnan(expected[0]) and not np.isnan(expected[1:]).any()
    # forward: the images MRA rewrites (prob 0.5), the empty one left out of the means
    mra = MaskReconstruct(tiny_mae(), mask_ratio=ratio, prob=0.5, score=score, seed=3)
    g = torch.Generator().manual_seed(5)
    apply = torch.rand(6, generator=torch.Generator().manual_seed(5)) < 0.5
    out = mra(x, g, foreground=fg)
    idx = apply.nonzero().flatten()
    redo = mra.details(x[idx], _after_apply_draw(5, 6), fg[idx])["fg_kept"].numpy()
    redo = redo[~np.isnan(redo)]
    assert mra.last_fg_kept == pytest.approx(float(redo.mean()))
    assert (mra.fg_kept_count, mra.mean_fg_kept) == (len(redo), pytest.approx(redo.mean()))
    assert torch.equal(out[~apply], x[~apply])


def _after_apply_draw(seed: int, n: int) -> torch.Generator:
    g = torch.Generator().manual_seed(seed)
    torch.rand(n, generator=g)
    return g


def test_views_hand_the_cropped_mask_to_mra():
    mra = MaskReconstruct(tiny_mae(), mask_ratio=0.5, prob=1.0, score="oracle")
    aug = MultiViewAugment("supervised", 16, 1, seed=0)
    aug.add_op(0, mra)
    fg = (soft_masks(4) * 255).to(torch.uint8)
    view = aug(torch.cat([images(4), fg], 1))[0]
    assert view.shape == (4, 1, 16, 16) and 0 < mra.last_fg_kept <= 1
    with pytest.raises(VislearnError, match="oracle"):
        aug(images(4))  # no mask channel


def test_classifier_on_photo_fmnist_logs_the_share_kept(tmp_path):
    from vislearn.tasks.ssl.methods.mae import MAE
    from vislearn.tasks.ssl.run import pretrain

    mae = MAE(backbone="vit_mini", backbone_kwargs={"img_size": 32}, in_chans=3, image_size=32,
              num_classes=0, decoder_dim=32, decoder_depth=1, decoder_heads=2)  # fmt: skip
    mae.export_mae(tmp_path / "mae.safetensors")
    cfg = load_config(
        None,
        method="supervised",
        out=str(tmp_path / "run"),
        model={
            "backbone": "resnet_tiny",
            "backbone_kwargs": {"stem": "small_ds", "width": 8},
            "batch_augment": "mra",
            "mae": str(tmp_path / "mae.safetensors"),
            "mra": {"mask_ratio": 0.5, "prob": 1.0, "score": "oracle"},
        },  # fmt: skip
        data={
            "dataset": "photo-fmnist-mini",
            "batch_size": 32,
            "knn_bank_size": 200,
            "label_fraction": 0.1,
            "labelled_batch_size": 32,
            "mask_channel": True,
        },  # fmt: skip
        trainer={
            "max_epochs": 1,
            "limit_train_batches": 2,
            "progress": False,
            "accelerator": "cpu",
            "check_val_every_n_epoch": 2,
        },  # fmt: skip
    )
    L.seed_everything(0, verbose=False)
    model, _, _ = pretrain(cfg)
    assert model.trainer.global_step == 2
    kept = float(model.trainer.callback_metrics["train/mra_fg_kept"])
    op = model.augment.ops["normalized_0"]
    assert 0.9 < kept <= 1.0 and op.fg_kept_count == 64  # every image rewritten (prob 1)
    assert 0.9 < op.mean_fg_kept <= 1.0  # half the patches hold a ~20 % object
