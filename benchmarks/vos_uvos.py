"""SSL-UVOS on synthetic moving-object videos: J&F of SSL-UVOS vs k-means on the same frozen
ViT features and vs frame differencing -> docs/results/vos_uvos.json.

Stages (each cached under --cache, so an interrupted run resumes):

1. Videos from :func:`vislearn.data.synthetic.moving_sprite_videos` (configs/vos_synth/uvos.yaml):
   training videos (frames and clips only, no masks), tuning videos (another seed; masks pick
   each method's one free parameter) and test videos (scored).
2. A DINO ViT pretrained by vislearn on the training frames (configs/vos_synth/dino.yaml):
   SSL-UVOS is defined on DINO features and no pretrained weights can be downloaded here.
3. The SSL-UVOS block trained on unlabelled 3-frame clips of the training videos.
4. Every method segments every tuning and test video:

   * ``uvos``: :func:`vislearn.tasks.vos.segment.segment_video` (leader clustering of the block's
     attention over key frames, every cluster a proposal), tau tuned;
   * ``kmeans_features``: spherical k-means of the same frozen keys over all tokens of a video
     (no block), k tuned;
   * ``frame_difference``: mean absolute difference to the next frame (the previous one for
     the last frame), 3x3 box-smoothed, thresholded: one foreground proposal; threshold tuned.

   Scores: J, F and J&F with the official DAVIS-17 unsupervised matching (``davis``: one
   assignment per video, at most 20 proposals) and, labelled separately, the per-frame oracle
   matching of the SSL-UVOS repository (``per_frame``).

    python benchmarks/vos_uvos.py
    python benchmarks/vos_uvos.py --smoke --cache /tmp/uvos_smoke --out /tmp/uvos_smoke.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("uvos", "kmeans_features", "frame_difference")
SMOKE = {
    "videos": {"num_train": 16, "num_tune": 2, "num_test": 3, "frames": 6},
    "block": {"epochs": 1, "samples_per_epoch": 16},
    "dino_epochs": 1,
}


def load_settings(smoke: bool) -> dict:
    from vislearn.core.config import load_recipe

    cfg = load_recipe(ROOT / "configs" / "vos_synth" / "uvos.yaml")
    if smoke:
        for section in ("videos", "block"):
            cfg[section].update(SMOKE[section])
    return cfg


def make_videos(v: dict) -> dict:
    from vislearn.data.synthetic.motion import moving_sprite_videos

    common = {
        "frames": v["frames"],
        "size": v["size"],
        "distractors": v["distractors"],
        "speed": v["speed"],
    }
    return {
        "train": moving_sprite_videos(v["num_train"], seed=v["seed"], split="train", **common),
        "tune": moving_sprite_videos(v["num_tune"], seed=v["seed"] + 1, split="train", **common),
        "test": moving_sprite_videos(v["num_test"], seed=v["seed"], split="test", **common),
    }


def write_frames(clips, folder: Path) -> Path:
    """Every frame of ``clips`` ``[N, T, C, H, W]`` as a PNG (once; a marker file says done)."""
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


def pretrain_dino(frames: Path, cache: Path, epochs: int | None) -> Path:
    from vislearn.core.config import load_config
    from vislearn.tasks.ssl.run import pretrain

    out = cache / "dino"
    weights = out / "backbone.safetensors"
    if weights.is_file():
        return weights
    trainer = {"progress": False}
    if epochs is not None:
        trainer.update(max_epochs=epochs, check_val_every_n_epoch=epochs)
    cfg = load_config(
        ROOT / "configs" / "vos_synth" / "dino.yaml",
        out=str(out),
        data={"dataset": str(frames)},
        trainer=trainer,
    )
    pretrain(cfg)
    return weights


def train_block(vit, clips, cache: Path, b: dict):
    from vislearn.tasks.vos.run import BLOCK_FILE, load_block, train_uvos

    out = cache / "uvos"
    if (out / BLOCK_FILE).is_file():
        return load_block(out / BLOCK_FILE)
    size = tuple(clips.shape[-2:])
    return train_uvos(
        clips,
        vit,
        out,
        epochs=b["epochs"],
        batch_size=b["batch_size"],
        resolution=size,
        gap=b["gap"],
        samples_per_epoch=b["samples_per_epoch"],
        num_workers=0,
        lr=b["lr"],
        min_lr=b["min_lr"],
        weight_decay=b["weight_decay"],
        num_heads=b["num_heads"],
        num_points=b["num_points"],
        progress=False,
    )


# ---- the three segmenters: uint8 frames [T, C, H, W] -> labels [T, H, W] ---------------------
def segment_uvos(frames, features, block, tau: float, s: dict):
    from vislearn.tasks.vos.segment import segment_video

    seg = segment_video(
        frames,
        features,
        block,
        key_stride=s["key_stride"],
        tau=tau,
        window=s["window"],
        objects=s["objects"],
        device="cpu",
    )
    return seg.labels


def segment_kmeans(keys, grid, size, k: int):
    """Spherical k-means of one video's keys ``[T, N, D]``; ids 1..k by decreasing size."""
    import torch
    import torch.nn.functional as F

    from vislearn.ops.neighbours import kmeans

    t, n, _ = keys.shape
    idx = kmeans(F.normalize(keys.flatten(0, 1), dim=1), min(k, t * n), seed=0)
    order = torch.argsort(torch.bincount(idx, minlength=k), descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, len(order) + 1)
    labels = rank[idx].view(t, 1, *grid).float()
    return F.interpolate(labels, size=size, mode="nearest")[:, 0].long()


def segment_frame_difference(frames, threshold: float):
    import torch
    import torch.nn.functional as F

    x = frames.float() / 255.0
    diff = (x[1:] - x[:-1]).abs().mean(1, keepdim=True)  # [T-1, 1, H, W]
    diff = torch.cat([diff, diff[-1:]])  # frame t: to t+1; the last frame: to t-1
    diff = F.avg_pool2d(diff, 3, stride=1, padding=1, count_include_pad=False)
    return (diff[:, 0] > threshold).long()


def score(preds: dict, gts: dict) -> dict:
    from vislearn.eval.vos.protocols import evaluate_sequences

    out = {}
    for protocol in ("davis", "per_frame"):
        r = evaluate_sequences(preds, gts, protocol=protocol)
        out[protocol] = {
            k: round(100 * float(r[k]), 2) for k in ("J_mean", "F_mean", "JF_mean", "J_recall")
        }
    return out


def run_method(name: str, param, videos, features, block, keys, s: dict) -> dict:
    """Labels of every video of ``videos`` with one method and parameter value."""
    preds = {}
    for i, clip in enumerate(videos.clips):
        if name == "uvos":
            labels = segment_uvos(clip, features, block, param, s)
        elif name == "kmeans_features":
            k, grid = keys[i]
            labels = segment_kmeans(k, grid, tuple(clip.shape[-2:]), param)
        else:
            labels = segment_frame_difference(clip, param)
        preds[f"v{i:04d}"] = {t: lab.numpy() for t, lab in enumerate(labels)}
    return preds


def ground_truth(videos) -> dict:
    return {
        f"v{i:04d}": {t: m.numpy() for t, m in enumerate(ms)} for i, ms in enumerate(videos.masks)
    }


def video_keys(videos, features) -> list:
    import torch

    out = []
    with torch.no_grad():
        for clip in videos.clips:
            k, _, grid = features(clip.float() / 255.0)
            out.append((k, grid))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "vos_uvos"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "vos_uvos.json"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 epoch each (a minute)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import torch

    from vislearn.core.utils import write_json
    from vislearn.models.io import load_backbone
    from vislearn.tasks.vos.features import ViTKeyFeatures

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = load_settings(a.smoke)
    cache = Path(a.cache)
    t0 = time.perf_counter()
    videos = make_videos(cfg["videos"])
    frames = write_frames(videos["train"].clips, cache / "train_frames")
    weights = pretrain_dino(frames, cache, SMOKE["dino_epochs"] if a.smoke else None)
    t_dino = time.perf_counter() - t0
    vit = load_backbone(weights)
    features = ViTKeyFeatures(vit)
    block = train_block(vit, videos["train"].clips, cache, cfg["block"]).eval()
    t_block = time.perf_counter() - t0 - t_dino

    grids = {"uvos": cfg["segment"]["taus"], "kmeans_features": cfg["kmeans"]["ks"]}
    grids["frame_difference"] = cfg["frame_difference"]["thresholds"]
    keys = {split: video_keys(videos[split], features) for split in ("tune", "test")}
    gts = {split: ground_truth(videos[split]) for split in ("tune", "test")}
    rows, tuning = [], {}
    for name in METHODS:
        tried = {}
        for value in grids[name]:
            preds = run_method(
                name, value, videos["tune"], features, block, keys["tune"], cfg["segment"]
            )
            tried[value] = score(preds, gts["tune"])["davis"]["JF_mean"]
        best = max(tried, key=tried.get)
        tuning[name] = {"tried": {str(k): v for k, v in tried.items()}, "chosen": best}
        ts = time.perf_counter()
        preds = run_method(
            name, best, videos["test"], features, block, keys["test"], cfg["segment"]
        )
        seconds = time.perf_counter() - ts
        s = score(preds, gts["test"])
        row = {"name": name, "param": best, **s["davis"], "seconds": round(seconds, 2)}
        row["per_frame"] = s["per_frame"]
        rows.append(row)
        print(json.dumps(row))

    settings = {
        "videos": cfg["videos"],
        "block": cfg["block"],
        "segment": cfg["segment"],
        "tuning": tuning,
        "dino": "configs/vos_synth/dino.yaml" + (" (smoke: 1 epoch)" if a.smoke else ""),
        "protocol": "J/F/J&F (x100) with the DAVIS-17 unsupervised matching (one Hungarian "
        "assignment per video on frame-mean (J+F)/2, <= 20 proposals); per_frame: the SSL-UVOS "
        "repository's per-frame oracle matching (not the official protocol)",
        "dino_seconds": round(t_dino, 1),
        "block_seconds": round(t_block, 1),
        "hardware": f"{platform.processor() or platform.machine()}, {a.threads} threads, torch "
        f"{torch.__version__}, no GPU",
    }
    write_json(a.out, {"benchmark": "vos_uvos", "settings": settings, "rows": rows})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
