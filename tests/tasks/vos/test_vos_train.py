"""SSL-UVOS training: losses vs a NumPy transcription, clip sampling, augmentation, the
Lightning module (a few steps, resume), block files and the CLI."""

from __future__ import annotations

import argparse
import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch

from vislearn.core.errors import VislearnError
from vislearn.losses.uvos import motion_consistency_loss, semantic_consistency_loss
from vislearn.models import create_backbone
from vislearn.tasks.vos.block import SpatioTemporalBlock
from vislearn.tasks.vos.data import (
    EpochSampler,
    UVOSAugment,
    UVOSClipDataset,
    find_uvos_videos,
    uvos_clip_indices,
)
from vislearn.tasks.vos.module import UVOSModule
from vislearn.tasks.vos.run import (
    BLOCK_FILE,
    load_block,
    read_block_metadata,
    save_block,
    train_uvos,
)

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = {"accelerator": "cpu", "devices": 1, "log_every_n_steps": 1}


# ----------------------------------------------------------------------------- NumPy reference


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (max(np.linalg.norm(a), 1e-12) * max(np.linalg.norm(b), 1e-12)))


def np_semantic(attn, feats, points, num_pos, num_neg, pos_margin, neg_margin):
    """SSL-UVOS semantic consistency, one query, one target frame and one token at a time; in
    the query's own frame the query token is not ranked."""
    bsz, frames, n, _ = feats.shape
    kp, kn = num_pos, num_neg
    pos_terms, neg_terms = [], []
    for b in range(bsz):
        for s in range(frames):
            for p in points:
                query = feats[b, s, p]
                for t in range(frames):
                    row = attn[b, s * n + p, t * n : (t + 1) * n]
                    order = [j for j in np.argsort(-row, kind="stable") if (t, j) != (s, p)]
                    for j in order[:kp]:
                        pos_terms.append(max(0.0, pos_margin - _cos(feats[b, t, j], query)))
                    for j in order[len(order) - kn :]:
                        neg_terms.append(max(0.0, _cos(feats[b, t, j], query) - neg_margin))
    return float(np.mean(pos_terms) + np.mean(neg_terms))


def _ell(q, row, eps):
    """Σ_c q_c log(L1norm(row)_c + eps)."""
    a = row / max(row.sum(), 1e-12)
    return sum(qc * math.log(ac + eps) for qc, ac in zip(q, a, strict=True))


def np_motion(attn, points, frames, num_pos, num_neg, margin, eps):
    """SSL-UVOS motion consistency: per clip and frame, Σ_p w_p · mean over (neg, pos) pairs
    of the query's own frame, the query itself not ranked."""
    bsz, tn, _ = attn.shape
    n = tn // frames
    kp, kn = num_pos, num_neg
    per_frame = []
    for b in range(bsz):
        for s in range(frames):
            scores, hinges = [], []
            for p in points:
                row = attn[b, s * n + p]
                q = row / max(row.sum(), 1e-12)
                scores.append(sum(qc * math.log(qc + eps) for qc in q))
                own = attn[b, s * n + p, s * n : (s + 1) * n]
                order = [j for j in np.argsort(-own, kind="stable") if j != p]
                pos = [_ell(q, attn[b, s * n + j], eps) for j in order[:kp]]
                neg = [_ell(q, attn[b, s * n + j], eps) for j in order[len(order) - kn :]]
                pairs = [max(0.0, ln - lp + margin) for ln in neg for lp in pos]
                hinges.append(sum(pairs) / len(pairs))
            scores = np.array(scores)
            w = np.exp(scores - scores.max())
            w /= w.sum()
            per_frame.append(float(np.dot(w, hinges)))
    return float(np.mean(per_frame))


def _random_attention(bsz, frames, n, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(bsz, frames * (1 + n), frames * (1 + n))) * 2
    full = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    keep = np.ones(frames * (1 + n), bool)
    keep[:: 1 + n] = False  # drop the class tokens, rows not renormalised
    return full[:, keep][:, :, keep]


@pytest.mark.parametrize(("num_pos", "num_neg"), [(5, 7), (1, 14), (3, 1)])
def test_semantic_loss_matches_numpy(num_pos, num_neg):
    bsz, frames, n, c = 2, 3, 16, 8
    attn = _random_attention(bsz, frames, n, 0)
    feats = np.random.default_rng(1).normal(size=(bsz, frames, n, c))
    points = np.array([3, 0, 11, 15])
    ref = np_semantic(attn, feats, points, num_pos, num_neg, 0.9, 0.1)
    got = semantic_consistency_loss(
        torch.from_numpy(attn), torch.from_numpy(feats), torch.from_numpy(points), num_pos, num_neg
    )
    assert got.item() == pytest.approx(ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("num_pos", "num_neg", "margin"), [(3, 5, 1.0), (1, 10, 0.5)])
def test_motion_loss_matches_numpy(num_pos, num_neg, margin):
    bsz, frames, n = 2, 3, 12
    attn = _random_attention(bsz, frames, n, 2)
    attn[:, :, 5] = 0.0  # a column of exact zeros: q_c = 0 in the entropy, log(0 + eps)
    points = np.array([7, 2, 9])
    ref = np_motion(attn, points, frames, num_pos, num_neg, margin, 1e-10)
    got = motion_consistency_loss(
        torch.from_numpy(attn), torch.from_numpy(points), num_pos, num_neg, margin,
        num_frames=frames,
    )  # fmt: skip
    assert got.item() == pytest.approx(ref, rel=1e-9)


def test_semantic_loss_zero_when_margins_met():
    """Two groups of tokens with orthogonal features; every token attends to its own group.
    Then Pos (top 4 of a frame) is in the query's group (cos 1 >= 0.9) and Neg (bottom 4) in
    the other (cos 0 <= 0.1): the loss is exactly 0, and swapping the groups is penalised."""
    frames, n = 2, 16
    group = torch.arange(n) % 2
    feats = torch.zeros(1, frames, n, 4)
    feats[..., 0] = (group == 0).float()
    feats[..., 1] = (group == 1).float()
    same = (group[:, None] == group[None, :]).float()
    attn = same.repeat(frames, frames) + 0.01 * torch.rand(frames * n, frames * n)
    points = torch.tensor([0, 1, 6, 13])
    zero = semantic_consistency_loss(attn[None], feats, points, 4, 4)
    assert zero.item() == 0.0
    flipped = semantic_consistency_loss(
        (1 - same).repeat(frames, frames)[None], feats, points, 4, 4
    )
    assert flipped.item() == pytest.approx(0.9 + 0.9)


def test_losses_reject_bad_shapes():
    attn = torch.rand(1, 12, 12)
    with pytest.raises(VislearnError, match="query points"):
        motion_consistency_loss(attn, torch.tensor([5]), num_frames=3)  # N = 4
    with pytest.raises(VislearnError, match="multiple"):
        motion_consistency_loss(attn, torch.tensor([0]), num_frames=5)
    with pytest.raises(VislearnError, match="do not match"):
        semantic_consistency_loss(attn, torch.rand(1, 3, 5, 2), torch.tensor([0]))


# ----------------------------------------------------------------------------- model pieces


def _tiny_vit(seed: int = 0):
    torch.manual_seed(seed)
    return create_backbone("vit_mini", in_chans=3, img_size=32, patch_size=8)


def test_motion_gradient_reaches_block_not_vit():
    module = UVOSModule(_tiny_vit(), augment=False)
    assert module.num_heads == 8 and module.block.dim == 128
    clips = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    feats, attn = module(clips)
    assert feats.shape == (2, 3, 16, 128) and attn.shape == (2, 48, 48)
    loss = motion_consistency_loss(attn, torch.tensor([0, 5, 9, 15]), 2, 6, num_frames=3)
    loss.backward()
    qkv = module.block.qkv.weight.grad
    assert qkv is not None and torch.isfinite(qkv).all() and qkv.abs().sum() > 0
    assert all(p.grad is None for p in module.features.parameters())
    assert not any(p.requires_grad for p in module.features.parameters())
    module.train()
    assert not module.features.vit.training and module.block.training


def test_module_state_excludes_frozen_vit():
    module = UVOSModule(_tiny_vit())
    state = module.state_dict()
    assert state and all(k.startswith("block.") for k in state)
    other = UVOSModule(_tiny_vit(1))
    other.load_state_dict(state)  # strict: the ViT's keys are not asked for
    assert torch.equal(other.block.qkv.weight, module.block.qkv.weight)
    with pytest.raises(VislearnError, match="divisible"):
        UVOSModule(_tiny_vit(), num_heads=3)


def test_optimizer_groups_and_schedule():
    module = UVOSModule(_tiny_vit(), lr=1e-3, min_lr=1e-4)
    out = module.configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"])
    assert all(p.ndim <= 1 for p in plain["params"])
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert ids == {id(p) for p in module.block.parameters()}
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # no warm-up
    opt.step()
    sched.step()  # total = 1 step without a trainer: the end of the cosine
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_augment_identical_on_every_frame():
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(8, 1, 3, 24, 24)
    clips = frame.expand(-1, 3, -1, -1, -1).contiguous()
    out = UVOSAugment()(clips, g)
    assert out.shape == clips.shape
    torch.testing.assert_close(out[:, 1], out[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[:, 2], out[:, 0], rtol=0, atol=1e-6)
    changed = (out - clips).abs().flatten(1).amax(1) > 1e-3
    assert changed.sum() >= 4  # p = 0.8 jitter, 0.5 blur, 0.2 gray: most clips change


# ----------------------------------------------------------------------------- clips


def test_clip_indices_gap_and_ends():
    rng = np.random.default_rng(0)
    centres = set()
    for _ in range(300):
        a, c, b = uvos_clip_indices(100, 3, 4, rng)
        assert (c - a, b - c) == (4, 4) and a >= 0 and b <= 99
        centres.add(c)
    assert min(centres) == 4 and max(centres) == 95
    # short videos: the gap shrinks until the clip fits, frames never repeat
    assert {tuple(uvos_clip_indices(7, 3, 4, rng)) for _ in range(50)} == {(0, 3, 6)}
    assert {tuple(uvos_clip_indices(9, 3, 4, rng)) for _ in range(50)} == {(0, 4, 8)}
    assert {tuple(uvos_clip_indices(8, 3, 4, rng)) for _ in range(50)} == {(0, 3, 6), (1, 4, 7)}
    assert uvos_clip_indices(3, 3, 4, rng) == [0, 1, 2]
    assert uvos_clip_indices(9, 5, 2, rng) == [0, 2, 4, 6, 8]
    with pytest.raises(VislearnError, match="shorter"):
        uvos_clip_indices(2, 3, 4, rng)


def _write_frames(folder, values, size=(20, 24)):
    from PIL import Image

    folder.mkdir(parents=True)
    for i, v in enumerate(values):
        Image.fromarray(np.full((*size, 3), v, np.uint8)).save(folder / f"frame_{i}.png")


def test_dataset_from_folders_and_files(tmp_path):
    from vislearn.data.video.io import write_video

    root = tmp_path / "videos"
    _write_frames(root / "a" / "vid1", [10 * i for i in range(5)])
    _write_frames(root / "short", [7, 8])
    (root / "b" / "c").mkdir(parents=True)
    frames = torch.arange(10).mul(10).view(10, 1, 1, 1).expand(10, 3, 16, 16).to(torch.uint8)
    write_video(root / "b" / "c" / "vid2.avi", frames.contiguous())
    assert [p.name for p in find_uvos_videos(root)] == ["vid1", "vid2.avi", "short"]
    with pytest.warns(UserWarning, match="short"):
        ds = UVOSClipDataset(root, resolution=(16, 32), samples_per_epoch=None, seed=3)
    assert ds.num_videos == 2 and len(ds) == 2 and ds.lengths == [5, 10]
    clip = ds[0]  # vid1: 5 frames, gap 2
    assert clip.shape == (3, 3, 16, 32) and clip.dtype == torch.uint8
    assert clip[:, 0, 0, 0].tolist() == [0, 20, 40]
    values = ds[1][:, 0, 0, 0].tolist()  # vid2: gap 4, centre 4 or 5
    assert values in ([0, 40, 80], [10, 50, 90])
    assert torch.equal(ds[1], ds[1])
    seen = {tuple(ds[k][:, 0, 0, 0].tolist()) for k in range(1, 40, 2)}
    assert seen == {(0, 40, 80), (10, 50, 90)}
    with pytest.raises(VislearnError, match="no usable video"), pytest.warns(UserWarning):
        UVOSClipDataset(root / "short")


def test_dataset_from_tensor_and_sampler():
    videos = torch.randint(0, 256, (4, 6, 1, 8, 8), dtype=torch.uint8)
    ds = UVOSClipDataset(videos, resolution=(8, 16), samples_per_epoch=10, seed=1)
    clip = ds[3]
    assert len(ds) == 10 and clip.shape == (3, 3, 8, 16)
    assert torch.equal(clip[:, 0], clip[:, 2])  # gray videos become 3-channel
    with pytest.raises(VislearnError, match="fewer than"):
        UVOSClipDataset(videos[:, :2])
    ranks = [EpochSampler(10, 2, r, seed=0) for r in range(2)]
    assert [len(s) for s in ranks] == [5, 5]
    epoch0 = [list(s) for s in ranks]
    assert sorted(epoch0[0] + epoch0[1]) == list(range(10))
    for s in ranks:
        s.set_epoch(1)
    epoch1 = sorted(list(ranks[0]) + list(ranks[1]))
    assert epoch1 == list(range(10, 20))  # new items (new clips) every epoch
    assert list(ranks[0]) == list(ranks[0])


# ----------------------------------------------------------------------------- training


def _sprites():
    from vislearn.data.synthetic.motion import moving_sprite_videos

    return moving_sprite_videos(4, frames=8, size=32, seed=0, distractors=1).clips


def _train(videos, vit, out, epochs, trainer_kwargs=CPU, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_uvos(
            videos, vit, out, epochs=epochs, batch_size=2, resolution=(32, 32),
            samples_per_epoch=2, num_workers=0, lr=1e-3, progress=False,
            trainer_kwargs=trainer_kwargs, **kw,
        )  # fmt: skip


def _ckpt(out):
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


class _Killed(Exception):
    pass


class _KillAtEpoch(L.Callback):
    """Kill the run when epoch ``epoch`` starts (after the previous epoch's last.ckpt)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Killed


def test_train_changes_block_not_vit_and_resumes_exactly(tmp_path):
    videos = _sprites()
    vit = _tiny_vit()
    vit_before = {k: v.clone() for k, v in vit.state_dict().items()}
    torch.manual_seed(0)  # train_uvos seeds 0 before building the block: same initial block
    initial = SpatioTemporalBlock(128, 8, drop=0.0, attn_drop=0.0).state_dict()
    no_drop = {"module_kwargs": {"drop": 0.0, "attn_drop": 0.0}}  # dropout: global RNG

    killed = {**CPU, "callbacks": [_KillAtEpoch(1)]}
    with pytest.raises(_Killed):  # a 2-epoch run killed after its first step
        _train(videos, vit, tmp_path / "a", 2, trainer_kwargs=killed, **no_drop)
    ckpt = _ckpt(tmp_path / "a")
    assert ckpt["global_step"] == 1
    state = ckpt["state_dict"]
    assert state and all(k.startswith("block.") for k in state)  # no frozen ViT inside
    assert any(not torch.equal(initial[k], state[f"block.{k}"]) for k in initial)
    assert all(torch.equal(vit_before[k], v) for k, v in vit.state_dict().items())

    resumed = _train(videos, vit, tmp_path / "a", 2, **no_drop)  # continues from last.ckpt
    assert _ckpt(tmp_path / "a")["global_step"] == 2
    straight = _train(videos, vit, tmp_path / "b", 2, **no_drop)
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    assert all(torch.equal(vit_before[k], v) for k, v in vit.state_dict().items())

    path = tmp_path / "a" / BLOCK_FILE
    meta = read_block_metadata(path)
    assert meta["block"]["num_heads"] == 8 and meta["vit"]["embed_dim"] == 128
    assert meta["info"]["global_step"] == 2
    loaded = load_block(path)
    tokens = torch.randn(2, 3, 17, 128)
    with torch.no_grad():
        ref, ref_attn = resumed.eval()(tokens)
        got, got_attn = loaded(tokens)
    assert torch.equal(ref, got) and torch.equal(ref_attn, got_attn)
    assert (tmp_path / "a" / "uvos_config.json").is_file()


def test_load_block_rejects_wrong_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(VislearnError, match="not found"):
        load_block(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(VislearnError, match="not an SSL-UVOS block"):
        load_block(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(VislearnError):
        load_block(junk)
    block = SpatioTemporalBlock(32, 4)
    good = save_block(block, tmp_path / "b.safetensors")
    assert load_block(good).num_heads == 4
    mixed = tmp_path / "mixed.safetensors"  # metadata of one block, weights of another
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    save_file(SpatioTemporalBlock(16, 4).state_dict(), str(mixed), metadata=meta)
    with pytest.raises(VislearnError, match="do not fit"):
        load_block(mixed)


def test_cli_trains_from_frame_folders(tmp_path, capsys):
    from vislearn.tasks.vos.cli import (
        add_train_uvos_parser,
        build_vit,
        run_train_uvos,
        train_uvos_config,
    )

    parser = argparse.ArgumentParser(prog="vislearn")
    sub = parser.add_subparsers(dest="command")
    add_train_uvos_parser(sub)
    defaults = train_uvos_config(
        parser.parse_args(["train-uvos", "v", "--weights", "w", "--out", "o"])
    )
    assert defaults["vit"]["arch"] == "dino_vits8" and defaults["data"]["resolution"] == [192, 384]
    assert defaults["trainer"]["max_epochs"] == 48 and defaults["data"]["batch_size"] == 8
    assert defaults["block"]["lr"] == 1e-5 and defaults["vit"]["weights"] == "w"
    help_text = sub.choices["train-uvos"].format_help()
    assert "synthetic" in help_text and "last.ckpt" in help_text

    weights = tmp_path / "vit.pth"
    torch.save(_tiny_vit(3).state_dict(), weights)
    root = tmp_path / "videos"
    rng = np.random.default_rng(0)
    for name in ("x", "y"):
        _write_frames(root / name, rng.integers(0, 255, 6).tolist(), size=(32, 32))
    out = tmp_path / "run"
    args = parser.parse_args(
        ["train-uvos", str(root), "--weights", str(weights), "--arch", "vit_mini",
         "--patch-size", "8", "--img-size", "32", "--resolution", "32", "32", "--out", str(out),
         "--epochs", "1", "--batch-size", "2", "--samples-per-epoch", "2", "--workers", "0",
         "--accelerator", "cpu", "--devices", "1", "--no-progress"]
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = run_train_uvos(args)
    assert path.endswith(BLOCK_FILE) and "wrote" in capsys.readouterr().out
    meta = read_block_metadata(path)
    assert meta["vit"]["arch"] == "vit_mini" and meta["vit"]["weights"] == str(weights)
    assert load_block(path).dim == 128

    with pytest.raises(VislearnError):
        build_vit("dino_vits8", str(weights), 16, 224)  # patch size contradicts the name
    with pytest.raises(VislearnError):
        build_vit("vit_small", str(weights), 8, 224)  # weights of another ViT
