"""The jobs of benchmarks/vos_uvos.py (run in worker processes by vislearn.bench.run_jobs):
``dino_job`` (pretrain + token probe), ``block_job`` (SSL-UVOS block on cached keys) and
``eval_job`` (tune one row's parameter, score the test videos). See vos_uvos.py."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
#: result rows, in table order
ROWS = (
    "ssl_uvos",
    "untrained_block",
    "no_block",
    "kmeans_block",
    "kmeans_keys",
    "rgb_kmeans",
    "frame_difference",
    "token_oracle",
)
#: rows that use a (trained or freshly initialised) block: run once per block seed
BLOCK_ROWS = ("ssl_uvos", "untrained_block", "kmeans_block")
#: rows whose segmenter reads the frozen keys of every video
KEY_ROWS = ("kmeans_block", "kmeans_keys")
WEIGHTS = "dino/backbone.safetensors"


# ---- data ----------------------------------------------------------------------------------
def make_videos(v: dict, split: str):
    """``train`` (frames only are used), ``tune`` (another seed) or ``test`` videos."""
    from vislearn.data.synthetic.motion import moving_sprite_videos

    n = {"train": v["num_train"], "tune": v["num_tune"], "test": v["num_test"]}[split]
    seed = v["seed"] + (1 if split == "tune" else 0)
    return moving_sprite_videos(
        n,
        frames=v["frames"],
        size=v["size"],
        seed=seed,
        split="test" if split == "test" else "train",
        classes=v["classes"],
        speed=v["speed"],
        distractors=v["distractors"],
        sprite_scale=v["sprite_scale"],
    )


def write_frames(clips, folder: Path) -> Path:
    """Every frame of ``clips`` ``[N, T, C, H, W]`` as a PNG (once; a marker says done)."""
    from PIL import Image

    done = folder / ".complete"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        for t, frame in enumerate(clip):
            Image.fromarray(frame.permute(1, 2, 0).numpy()).save(folder / f"v{i:04d}_{t:02d}.png")
    done.write_text("ok")
    return folder


def read_losses(csv_file: Path, keys: tuple[str, ...]) -> dict:
    """First and last logged value (mean of the last five) of each key in a Lightning CSV."""
    if not csv_file.is_file():  # nothing logged (a run shorter than the logging interval)
        return {}
    rows = list(csv.DictReader(csv_file.open()))
    out = {}
    for key in keys:
        vals = [float(r[key]) for r in rows if r.get(key)]
        if vals:
            out[key.split("/")[-1]] = {
                "first": round(vals[0], 4),
                "last5_mean": round(float(np.mean(vals[-5:])), 4),
                "logged": len(vals),
            }
    return out


def load_vit(dino_dir: str):
    from vislearn.models.io import load_backbone

    return load_backbone(Path(dino_dir) / WEIGHTS)


def video_keys(features, clips) -> list[torch.Tensor]:
    """The frozen keys ``[T, N, D]`` of every video."""
    with torch.no_grad():
        return [features(c.float() / 255.0)[0] for c in clips]


# ---- stage 1: DINO and the token probe -------------------------------------------------------
def token_targets(masks, patch: int) -> torch.Tensor:
    """1 where a token's majority ground truth is an object, else 0: ``[V * T * N]``."""
    from vislearn.tasks.vos.baselines import token_majority

    return torch.cat([(token_majority(m, patch) > 0).flatten() for m in masks]).long()


def balanced_probe(train_x, train_y, test_x, test_y, steps: int = 200) -> float:
    """Balanced accuracy (%) of a logistic-regression probe (standardised features, L-BFGS,
    class-balanced loss) trained on ``train`` and scored on ``test``."""
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr, xte = (train_x - mu) / sd, (test_x - mu) / sd
    w = torch.zeros(xtr.shape[1], 2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    counts = torch.bincount(train_y, minlength=2).float()
    weight = counts.sum() / (2 * counts.clamp_min(1))
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w + b, train_y, weight=weight)
        loss = loss + 1e-4 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    pred = (xte @ w + b).argmax(1)
    recall = [(pred[test_y == c] == c).float().mean() for c in (0, 1)]
    return round(100 * float(sum(recall) / 2), 2)


def token_probe(vit, tune, test, patch: int, seed: int) -> dict:
    """Object-vs-background balanced accuracy of a token probe on the DINO keys, on a
    random-init ViT's keys and on the raw patch pixels (trained on the tuning videos, scored
    on the test videos)."""
    from vislearn.models import create_backbone
    from vislearn.tasks.vos.features import ViTKeyFeatures

    torch.manual_seed(seed)
    size = tune.clips.shape[-1]
    random_vit = create_backbone("vit_mini", in_chans=3, img_size=size, patch_size=patch)
    y_tr, y_te = token_targets(tune.masks, patch), token_targets(test.masks, patch)
    out = {"object_token_share": round(float(y_te.float().mean()), 4)}
    for name, model in (("dino_keys", vit), ("random_init_keys", random_vit)):
        feats = ViTKeyFeatures(model)
        xtr = torch.cat([k.flatten(0, 1) for k in video_keys(feats, tune.clips)])
        xte = torch.cat([k.flatten(0, 1) for k in video_keys(feats, test.clips)])
        out[name] = balanced_probe(xtr, y_tr, xte, y_te)

    def pixels(clips):
        x = clips.flatten(0, 1).float() / 255.0
        x = torch.nn.functional.unfold(x, patch, stride=patch)  # [V T, C p p, N]
        return x.transpose(1, 2).flatten(0, 1)

    out["patch_pixels"] = balanced_probe(pixels(tune.clips), y_tr, pixels(test.clips), y_te)
    return out


def dino_job(config: dict, seed: int, ctx: dict) -> dict:
    from vislearn.core.config import load_config
    from vislearn.tasks.ssl.run import pretrain

    v, d = config["videos"], config["dino"]
    run = Path(ctx["run_dir"])
    t0 = time.perf_counter()
    frames = write_frames(make_videos(v, "train").clips, run / "train_frames")
    cfg = load_config(
        ROOT / "configs" / "vos_synth" / "dino.yaml",
        out=str(run / "dino"),
        seed=seed,
        data={"dataset": str(frames), "image_size": d["crop_size"], "batch_size": d["batch_size"]},
        model={
            "backbone_kwargs": {"img_size": d["crop_size"], "patch_size": v["patch_size"]},
            "lr": d["lr"],
            "out_dim": d["out_dim"],
            "ema_base": d["ema_base"],
        },
        trainer={
            "max_epochs": d["epochs"],
            "check_val_every_n_epoch": d["epochs"],
            "progress": False,
        },
    )
    if not (run / WEIGHTS).is_file():
        pretrain(cfg)
    seconds = time.perf_counter() - t0
    losses = read_losses(run / "dino" / "csv" / "metrics.csv", ("train/loss",))
    vit = load_vit(str(run))
    probe = token_probe(vit, make_videos(v, "tune"), make_videos(v, "test"), v["patch_size"], seed)
    return {
        "loss": losses.get("loss"),
        "log_k": round(float(np.log(d["out_dim"])), 4),
        "probe_balanced_acc": probe,
        "train_seconds": round(seconds, 1),
    }


# ---- stage 2: the block --------------------------------------------------------------------------
def block_job(config: dict, seed: int, ctx: dict) -> dict:
    from vislearn.tasks.vos.features import ViTKeyFeatures, cache_tokens
    from vislearn.tasks.vos.run import BLOCK_FILE, train_uvos

    v, b = config["videos"], config["block"]
    run = Path(ctx["run_dir"])
    vit = load_vit(ctx["resources"]["dino_dir"])
    t0 = time.perf_counter()
    t_cache = 0.0
    if not (run / "uvos" / BLOCK_FILE).is_file():  # else: trained by an interrupted call
        tokens = cache_tokens(ViTKeyFeatures(vit), make_videos(v, "train").clips)
        t_cache = time.perf_counter() - t0
        train_uvos(
            tokens,
            vit,
            run / "uvos",
            epochs=1,
            batch_size=b["batch_size"],
            resolution=(v["size"], v["size"]),
            gap=b["gap"],
            samples_per_epoch=b["steps"] * b["batch_size"],
            num_workers=0,
            seed=seed,
            lr=b["lr"],
            min_lr=b["min_lr"],
            weight_decay=b["weight_decay"],
            num_heads=b["num_heads"],
            num_points=b["num_points"],
            augment=False,
            progress=False,
            trainer_kwargs={"log_every_n_steps": 10},
        )
    keys = ("train/loss", "train/loss_sem", "train/loss_mot")
    return {
        "losses": read_losses(run / "uvos" / "csv" / "metrics.csv", keys),
        "steps": b["steps"],
        "cache_seconds": round(t_cache, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }


# ---- stage 3: segment and score -----------------------------------------------------------------
def segmenter(row: str, config: dict, seed: int, ctx: dict):
    """``fn(index, clip, masks, keys, param) -> (labels [T, H, W], clusters)`` for a row."""
    from vislearn.tasks.vos import baselines as bl
    from vislearn.tasks.vos.block import SpatioTemporalBlock
    from vislearn.tasks.vos.features import ViTKeyFeatures
    from vislearn.tasks.vos.objects import ObjectRule
    from vislearn.tasks.vos.run import BLOCK_FILE, load_block
    from vislearn.tasks.vos.segment import segment_video

    s, patch = config["segment"], config["videos"]["patch_size"]
    vit = load_vit(ctx["resources"]["dino_dir"])
    features = ViTKeyFeatures(vit)
    block = None
    if row in ("ssl_uvos", "kmeans_block"):
        block = load_block(Path(ctx["resources"]["block_dir"]) / "uvos" / BLOCK_FILE)
    elif row == "untrained_block":  # the trained block's initialisation (train_uvos seeds it)
        torch.manual_seed(seed)
        block = SpatioTemporalBlock(features.dim, config["block"]["num_heads"])
    elif row == "no_block":
        block = bl.RawKeyAttention(features.dim, features.num_heads)
    if block is not None:
        block.eval()
    rule = ObjectRule(mode=s["objects"], max_objects=s["max_objects"])

    def run(clip, masks, keys, param):
        size = tuple(clip.shape[-2:])
        grid = (size[0] // patch, size[1] // patch)
        if row in ("ssl_uvos", "untrained_block", "no_block"):
            seg = segment_video(
                clip, features, block, key_stride=s["key_stride"], tau=param,
                window=s["window"], objects=rule, device="cpu",
            )  # fmt: skip
            return seg.labels.long(), seg.num_clusters
        if row == "kmeans_block":
            desc = bl.block_descriptors(keys, block, s["key_stride"])
            return bl.kmeans_labels(desc, grid, size, param), param
        if row == "kmeans_keys":
            return bl.kmeans_labels(keys, grid, size, param), param
        if row == "rgb_kmeans":
            return bl.kmeans_labels(bl.patch_mean_rgb(clip, patch), grid, size, param), param
        if row == "frame_difference":
            return bl.frame_difference_labels(clip, param), 1
        return bl.token_oracle_labels(masks, patch), int(masks.max())

    return run, features


def score_videos(run, videos, keys, param) -> tuple[dict, list[float], float, float]:
    """Strict DAVIS scores of one parameter value: summary, per-video J&F (x100), mean
    clusters per video and seconds per video."""
    from vislearn.eval.vos.protocols import evaluate_sequence, summarize

    rows, per_video, clusters = [], [], []
    t0 = time.perf_counter()
    for i, (clip, masks) in enumerate(zip(videos.clips, videos.masks, strict=True)):
        labels, n = run(clip, masks, keys[i], param)
        clusters.append(n)
        pred = {t: lab.numpy() for t, lab in enumerate(labels)}
        gt = {t: m.numpy() for t, m in enumerate(masks)}
        objs = evaluate_sequence(f"v{i:04d}", pred, gt, protocol="davis", strict=True)
        rows += objs
        per_video.append(100 * float(np.mean([(o["J_mean"] + o["F_mean"]) / 2 for o in objs])))
    seconds = (time.perf_counter() - t0) / len(videos.clips)
    return summarize(rows, "davis"), per_video, float(np.mean(clusters)), seconds


def eval_job(config: dict, seed: int, ctx: dict) -> dict:
    row, v = config["row"], config["videos"]
    run, features = segmenter(row, config, seed, ctx)
    tune, test = make_videos(v, "tune"), make_videos(v, "test")
    keys = {"tune": [None] * len(tune.clips), "test": [None] * len(test.clips)}
    if row in KEY_ROWS:  # the others read frames or masks (segment_video runs the ViT itself)
        keys = {"tune": video_keys(features, tune.clips), "test": video_keys(features, test.clips)}
    tried = {}
    for param in config["grid"]:
        summary, _, _, _ = score_videos(run, tune, keys["tune"], param)
        tried[str(param)] = round(100 * summary["JF_mean"], 2)
    best = config["grid"][int(np.argmax(list(tried.values())))]
    summary, per_video, clusters, seconds = score_videos(run, test, keys["test"], best)
    return {
        "param": best,
        "tuning": tried,
        "J_mean": round(100 * summary["J_mean"], 2),
        "F_mean": round(100 * summary["F_mean"], 2),
        "JF_mean": round(100 * summary["JF_mean"], 2),
        "J_recall": round(100 * summary["J_recall"], 2),
        "per_video_jf": [round(x, 3) for x in per_video],
        "clusters_per_video": round(clusters, 2),
        "seconds_per_video": round(seconds, 4),
    }
