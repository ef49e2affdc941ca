"""Video backbones, video MoCo / FAME / supervised video training, the video evaluation
protocols and the CLI on tiny settings (8-frame 32-px clips, width-4 networks, 2 steps).

References are independent of the code under test: loss values from a NumPy transcription
of MoCo's InfoNCE, retrieval recalls worked out by hand, torchvision's own modules for the
torchvision architectures.
"""

from __future__ import annotations

import json
import math

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from vislearn.cli import main
from vislearn.core.errors import VislearnError
from vislearn.data.augment import ViewConfig
from vislearn.data.video.datamodule import VideoDataModule
from vislearn.data.video.fame import fame, sample_donors
from vislearn.data.video.views import ClipNormalize, ClipViews
from vislearn.engine import build_trainer
from vislearn.eval.linear import linear_probe
from vislearn.eval.video import (
    clip_retrieval,
    extract_clip_features,
    variance_share,
    video_finetune,
)
from vislearn.models import create_backbone, list_backbones, load_weights
from vislearn.tasks.ssl.methods import build_method, get_method, list_methods
from vislearn.tasks.ssl.methods.moco_v2 import split_bn

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_DATA = {
    "num_train": 16,
    "num_test": 8,
    "video_frames": 10,
    "frames": 8,
    "image_size": 32,
    "batch_size": 4,
    "knn_bank_size": 16,
    "background_bias": 0.8,
}
CLI_TINY = [
    "--data",
    "synthetic-motion",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "data.num_train=16",
    "data.num_test=8",
    "data.video_frames=10",
    "data.knn_bank_size=16",
    "model.backbone_kwargs.width=4",
    "trainer.limit_train_batches=2",
    "trainer.progress=false",
    "trainer.accelerator=cpu",
]


# ---- backbones ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["r2plus1d_tiny", "r3d_tiny"])
@pytest.mark.parametrize("chans", [1, 3])
def test_tiny_video_backbones_shapes_and_gradients(name, chans):
    torch.manual_seed(0)
    model = create_backbone(name, in_chans=chans, width=4).train()
    x = torch.randn(2, chans, 8, 32, 32)
    out = model(x)
    assert out.shape == (2, model.num_features) == (2, 16)
    pooled, maps = model.forward_features(x, return_stages=True)
    torch.testing.assert_close(pooled, out)
    assert [m.shape[1] for m in maps] == model.stage_channels == [4, 8, 16]
    assert maps[-1].shape[2:] == (2, 4, 4)  # time and space halved twice after the stem
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(VislearnError, match=r"\[B, C, T, H, W\]"):
        model(torch.randn(2, chans, 32, 32))


def test_video_backbones_are_listed_apart_from_image_ones():
    video = list_backbones(modality="video")
    assert {"r2plus1d_tiny", "r3d_tiny", "r3d_18", "r2plus1d_18"} <= set(video)
    assert not set(video) & set(list_backbones(modality="image"))
    assert set(video) <= set(list_backbones())


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_torchvision_video_resnets_load_a_local_state_dict(name, tmp_path):
    from torchvision.models import video as tv_video

    torch.manual_seed(1)
    reference = getattr(tv_video, name)(weights=None, num_classes=7).eval()
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": reference.state_dict()}, path)  # a nested layout, with fc.*
    model = create_backbone(name)
    assert model.num_features == 512
    with pytest.warns(UserWarning, match="unexpected keys: fc.bias, fc.weight"):
        load_weights(model, path)
    model.eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        reference.fc = nn.Identity()
        torch.testing.assert_close(model(x), reference(x))
    other = "r2plus1d_18" if name == "r3d_18" else "r3d_18"
    with pytest.raises(VislearnError, match="missing|shape mismatch"):
        load_weights(create_backbone(other), path)
    assert create_backbone(name, in_chans=1).eval()(torch.randn(1, 1, 4, 32, 32)).shape == (1, 512)


# ---- clip views and FAME on the first clip only -------------------------------------------
def _clips(b=4, k=2, t=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, k, t, 3, size, size), dtype=torch.uint8, generator=g)


def test_fame_merges_the_first_clip_only_after_crop_and_before_jitter():
    """The views equal an explicit replay of the documented order of random draws:
    spatial(clip 0), spatial(clip 1), donors, FAME(clip 0), photometric(0), photometric(1)."""
    x = _clips()
    views = ClipViews(ViewConfig(), size=32, channels=3, seed=5, fame=True)
    got = views(x)
    ref = ClipViews(ViewConfig(), size=32, channels=3, seed=5).clip
    g = torch.Generator().manual_seed(5)
    s0, s1 = ref.spatial(x[:, 0], g), ref.spatial(x[:, 1], g)
    donors = sample_donors(4, g)
    merged, masks = fame(s0, 0.5, donors=donors)
    want = [ref.normalize(ref.photometric(v, g)) for v in (merged, s1)]
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    # with FAME off the same stream gives the same second clip, and an unmerged first clip
    plain = ClipViews(ViewConfig(), size=32, channels=3, seed=5, fame=False)(x)
    torch.testing.assert_close(plain[1], got[1])
    assert not torch.equal(plain[0], got[0])


def test_fame_view_is_own_foreground_on_donor_background_without_jitter():
    x = _clips(seed=3)
    identity = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "hflip_p": 0.0}
    cfg = ViewConfig(**identity, jitter_p=0.0, gray_p=0.0, blur_p=0.0)
    views = ClipViews(cfg, size=32, channels=3, seed=0, fame=True)
    v0, v1 = views(x)
    mask = views.last_fame_mask  # [B, H, W]
    assert mask.sum().item() == 4 * 512  # beta = 0.5 of 32 x 32, every clip
    g = torch.Generator().manual_seed(0)
    for k in (0, 1):  # replay the crop draws, then the donor permutation
        views.clip.spatial(x[:, k], g)
    donors = sample_donors(4, g)
    raw = ClipNormalize(3)(x[:, 0])  # identity crop: the views are the normalised clips
    inside = mask[:, None, None].expand_as(raw)
    torch.testing.assert_close(v0[inside], raw[inside])
    torch.testing.assert_close(v0[~inside], raw[donors][~inside])
    torch.testing.assert_close(v1, ClipNormalize(3)(x[:, 1]))


# ---- data ---------------------------------------------------------------------------------
def test_video_datamodule_reads_ucf_style_folders(tmp_path):
    from vislearn.data.synthetic.clips import write_video_folders
    from vislearn.data.synthetic.motion import motion_splits

    train, test = motion_splits(8, 4, frames=10, size=32, classes=("right", "left", "grow"))
    write_video_folders(train, tmp_path / "train")
    write_video_folders(test, tmp_path / "test")
    dm = VideoDataModule(str(tmp_path), image_size=24, batch_size=4, frames=8)
    assert dm.num_classes == 3 and not dm.flip_changes_label and dm.test_set is not None
    clips, label = dm.train_set[0]
    assert clips.shape == (2, 8, 3, 24, 24) and clips.dtype == torch.uint8
    clip, _ = dm.test_set[0]
    assert clip.shape == (8, 3, 24, 24)
    names = sorted(("right", "left", "grow"))  # class folders in sorted order, both splits
    assert dm.train_set.classes == dm.test_set.classes == names
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 2, 8, 3, 24, 24) and y.shape == (4,)
    with pytest.raises(VislearnError, match="synthetic"):
        dm.split("train", target="background")


# ---- methods ------------------------------------------------------------------------------
def _fit(name, out, steps=2, spy=None, **overrides):
    L.seed_everything(0, verbose=False)
    dm = VideoDataModule(**TINY_DATA, clips_per_video=get_method(name).clips_per_video)
    kwargs = {"backbone_kwargs": {"width": 4}, "image_size": 32, "hflip_p": 0.0}
    model = build_method(name, num_classes=dm.num_classes, **kwargs, **overrides)
    if spy is not None:
        original = model.augment.merge

        def merge(clips, donors):
            spy.append(clips.shape)
            return original(clips, donors)

        model.augment.merge = merge
    before = {k: v.clone() for k, v in model.backbone.named_parameters()}
    trainer = build_trainer(
        out,
        max_epochs=1,
        limit_train_batches=steps,
        progress=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model, datamodule=dm)
    changed = [not torch.equal(p, before[k]) for k, p in model.backbone.named_parameters()]
    return model, trainer, changed


@pytest.mark.parametrize("name", ["moco_video", "fame"])
def test_video_moco_and_fame_fit_two_steps(name, tmp_path):
    calls: list = []
    model, trainer, changed = _fit(name, tmp_path, spy=calls, queue_size=64)
    m = trainer.callback_metrics
    assert math.isfinite(float(m["train/loss"]))
    assert 0.0 <= float(m["val/knn_top1"]) <= 1.0 and 0.0 <= float(m["val/probe_top1"]) <= 1.0
    assert trainer.global_step == 2 and all(changed)
    assert int(model.queue.ptr) == 2 * 2 * 4  # both key sets enqueued, every step
    # FAME ran once per step on the first clips only ([B, C, T, S, S]); never for moco_video
    assert calls == ([torch.Size([4, 3, 8, 32, 32])] * 2 if name == "fame" else [])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert "augment_rng" in ckpt and ckpt["hyper_parameters"]["fame"] == (name == "fame")


def test_supervised_video_fits(tmp_path):
    model, trainer, changed = _fit("supervised_video", tmp_path)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"])) and all(changed)
    assert "val/classifier_top1" in trainer.callback_metrics


def _np_info_nce(q, k, negatives, t):
    """MoCo's InfoNCE in float64 NumPy: mean_i -log(e^{q.k/t} / (e^{q.k/t} + sum_j e^{q.n_j/t}))."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    pos = np.exp((q * k).sum(1) / t)
    neg = np.exp(q @ negatives.T / t).sum(1)
    return float(np.mean(-np.log(pos / (pos + neg))))


@pytest.mark.parametrize("order", ["release", "shared"])
def test_queue_order_release_and_shared(order):
    torch.manual_seed(0)
    model = build_method(
        "moco_video", backbone_kwargs={"width": 4}, image_size=32, queue_size=16, queue_order=order
    )
    views = model.augment(_clips())
    with torch.no_grad():
        (_, q0), (_, q1) = [model._online(v) for v in views]
        k0, k1 = [model._momentum(v) for v in views]
    queue = model.queue.queue.clone().double().numpy()
    out = model.ssl_step(views, torch.full((4,), -1))
    q0, q1, k0, k1 = (z.double().numpy() for z in (q0, q1, k0, k1))
    after_k1 = queue.copy()
    after_k1[:4] = k1 / np.linalg.norm(k1, axis=1, keepdims=True)  # ring rows 0..3
    want_0 = _np_info_nce(q0, k1, queue, 0.1)
    want_1 = _np_info_nce(q1, k0, after_k1 if order == "release" else queue, 0.1)
    assert float(out["loss_q0"]) == pytest.approx(want_0, rel=1e-4)
    assert float(out["loss_q1"]) == pytest.approx(want_1, rel=1e-4)
    assert float(out["loss"]) == pytest.approx((want_0 + want_1) / 2, rel=1e-4)
    assert int(model.queue.ptr) == 8


def test_key_bn_splits_normalises_shuffled_groups_and_keeps_the_order():
    """Split-BN (MoCo's single-device shuffle-BN): each key is computed with the BatchNorm
    statistics of its own random group; with frozen statistics the result is the plain one."""
    torch.manual_seed(0)
    model = build_method("moco_video", backbone_kwargs={"width": 4}, image_size=32,
                         queue_size=16, key_bn_splits=2)  # fmt: skip
    x = model.augment(torch.cat([_clips(), _clips()]))[0]  # 8 clips
    with torch.no_grad():
        torch.manual_seed(1)
        keys = model._momentum(x)
        torch.manual_seed(1)
        perm = torch.randperm(8)
        plain = model._momentum_unsplit(x)
        for group in perm.tensor_split(2):  # each group alone, batch statistics of 4 clips
            torch.testing.assert_close(keys[group], model._momentum_unsplit(x[group]))
        assert not torch.allclose(keys, plain, atol=1e-4)  # statistics did change
        model.eval()  # running statistics: no per-group effect, order restored
        torch.testing.assert_close(model._momentum(x), model._momentum_unsplit(x))
    with pytest.raises(VislearnError, match="key_bn_splits"):
        build_method("moco_v2", key_bn_splits=0)
    with pytest.raises(VislearnError, match="batch of >= 16"):
        split_bn(model._momentum_unsplit, x, 16)


def test_video_method_rejects_bad_settings():
    with pytest.raises(VislearnError, match="video backbone"):
        build_method("fame", backbone="resnet_tiny")
    with pytest.raises(VislearnError, match="queue_order"):
        build_method("moco_video", backbone_kwargs={"width": 4}, queue_order="nope")
    with pytest.raises(VislearnError, match="fame_beta"):
        build_method("fame", backbone_kwargs={"width": 4}, fame_beta=2.0)
    assert {"moco_video", "fame", "supervised_video"} <= set(list_methods())
    assert get_method("fame").modality == "video" and get_method("moco_v2").modality == "image"


# ---- evaluation ---------------------------------------------------------------------------
def test_clip_retrieval_against_a_hand_worked_case():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    g_labels = torch.tensor([0, 1, 2, 3])
    query = torch.tensor([[0.9, 0.1], [0.1, 0.9], [-1.0, 0.2]])
    q_labels = torch.tensor([0, 0, 3])
    # query 0: nearest g0 (hit at 1); query 1: g1, then g0 (hit at 2); query 2: g2, g1, g3
    res = clip_retrieval(query, q_labels, gallery, g_labels, ks=(1, 2, 3))
    assert res == pytest.approx({"r1": 1 / 3, "r2": 2 / 3, "r3": 1.0})
    # mean-centring by the gallery: shifting both sets by the same vector changes nothing
    shift = torch.tensor([5.0, 5.0])
    shifted = clip_retrieval(query + shift, q_labels, gallery + shift, g_labels, ks=(1, 2, 3))
    assert shifted == pytest.approx(res)
    # without centring the shifted points all lie near the direction (1, 1): by angle, query 1
    # (49.2 deg) sees g1 (50.2), g2 (51.3) and query 2 (52.4) sees g2, g1: R@2 drops to 1/3
    raw = clip_retrieval(query + shift, q_labels, gallery + shift, g_labels, (2,), center="none")
    assert raw == pytest.approx({"r2": 1 / 3})
    with pytest.raises(VislearnError, match="center"):
        clip_retrieval(query, q_labels, gallery, g_labels, center="median")


def test_variance_share_hand_worked():
    # one feature 1, 3, 5, 7 in groups {1, 3}, {5, 7}: SS_between / SS_total = 16 / 20
    feats = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0], [7.0, 2.0]])  # 2nd dim constant
    assert variance_share(feats, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.8)
    assert variance_share(feats[:, :1], torch.tensor([0, 1, 0, 1])) == pytest.approx(0.2)
    assert variance_share(feats[:, :1], torch.arange(4)) == pytest.approx(1.0)


class _MeanColour(nn.Module):
    """A fixed 'video backbone': the mean of each channel over the clip."""

    num_features = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 3, 1)  # unused: marks it as a video network

    def forward(self, x):
        return x.mean((2, 3, 4))


def _colour_set(n, k=None, seed=0):
    """Clips whose dominant channel is the class (3 classes), uint8; ``k`` clips per item."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        shape = (k, 4, 3, 8, 8) if k else (4, 3, 8, 8)
        clip = torch.randint(0, 100, shape, generator=g, dtype=torch.uint8)
        clip[..., i % 3, :, :] += 120
        items.append((clip, i % 3))
    return items


def test_linear_probe_on_clip_features_separable_case():
    train, test = _colour_set(30, k=3, seed=0), _colour_set(12, k=3, seed=1)
    xtr, ytr = extract_clip_features(_MeanColour(), train, batch_size=8)
    xte, yte = extract_clip_features(_MeanColour(), test, batch_size=8)
    assert xtr.shape == (30, 3) and ytr.tolist() == [i % 3 for i in range(30)]
    # features are the mean over the item's 3 clips
    norm = ClipNormalize(3)
    clip_means = _MeanColour()(norm(train[0][0])).mean(0)
    torch.testing.assert_close(xtr[0], clip_means)
    res = linear_probe(xtr, ytr, xte, yte, epochs=30, lr=0.5)
    assert res["train_top1"] == 1.0 and res["test_top1"] == 1.0


def test_video_finetune_learns_a_separable_case_and_leaves_the_backbone():
    torch.manual_seed(0)
    backbone = create_backbone("r2plus1d_tiny", width=4)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    train = _colour_set(48, seed=2)
    test = _colour_set(12, k=2, seed=3)
    cfg = ViewConfig(crop_scale=(0.8, 1.0), hflip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0)
    res = video_finetune(
        backbone, train, test, num_classes=3, epochs=4, lr=0.1, batch_size=8, augment=cfg
    )
    assert res["steps"] == 4 * 6 and res["finetune_top1"] >= 0.75
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())


def test_evaluate_video_protocols_on_tiny_synthetic():
    from vislearn.core.config import load_config
    from vislearn.tasks.ssl.run import evaluate_video

    cfg = load_config(
        None,
        data={
            "dataset": "synthetic-motion",
            **{k: TINY_DATA[k] for k in ("num_train", "num_test")},
        },
        eval={"linear_epochs": 5, "video_clips": 2, "finetune_epochs": 1, "finetune_batch_size": 8},
    )
    torch.manual_seed(0)
    res = evaluate_video(
        create_backbone("r2plus1d_tiny", width=4),
        cfg,
        ("linear", "retrieval", "background", "finetune"),
    )
    keys = {"motion_top1", "retrieval_r1", "retrieval_r5", "retrieval_r10"}
    keys |= {"background_probe_top1", "background_var_share", "motion_var_share"}
    assert keys | {"finetune_top1"} == set(res)
    assert all(0.0 <= v <= 100.0 for v in res.values())
    assert res["retrieval_r1"] <= res["retrieval_r5"] <= res["retrieval_r10"]
    with pytest.raises(VislearnError, match="video backbone"):
        evaluate_video(create_backbone("resnet_tiny"), cfg, ("linear",))


# ---- CLI ----------------------------------------------------------------------------------
def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("vislearn: error: ")
    return lines[0]


def test_cli_pretrain_moco_video_then_eval_retrieval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "moco_video", *CLI_TINY, "--out", str(out)]) == 0
    assert (out / "backbone.safetensors").is_file() and (out / "config.yaml").is_file()
    capsys.readouterr()
    args = ["eval", "retrieval", "--ckpt", str(out / "backbone.safetensors")]
    args += ["--config", str(out / "config.yaml"), "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["dataset"] == "synthetic-motion" and 0 <= res["retrieval_r1"] <= 100
    assert json.loads((tmp_path / "r.json").read_text())["retrieval_r5"] == res["retrieval_r5"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["pretrain", "moco_video"], "video method"),
        (["pretrain", "moco_v2", "--data", "synthetic-motion"], "holds videos"),
        (["pretrain", "fame", *CLI_TINY, "data.background_bias=2"], "background_bias"),
        (["pretrain", "fame", *CLI_TINY, "--backbone", "resnet_tiny"], "video backbone"),
        (["pretrain", "fame", "--data", "{tmp}/no_videos_here"], "no_videos_here"),
        (["eval", "video-linear", "--ckpt", "{tmp}/missing.ckpt"], "not found"),
        (["eval", "knn", "--ckpt", "{tmp}/x.ckpt", "data.num_train=4"], "video protocols"),
    ],
)
def test_cli_bad_video_input_gives_one_line_error(args, expected, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in args]
    if "pretrain" in args:
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "out" / "checkpoints").exists()
