"""Checks that the video_fame benchmark can separate methods, before training anything
(``python benchmarks/video_fame.py --checks``; seconds on one core):

* ``sprite_histogram_nn_top1``: a colour histogram (8 x 8 x 8 RGB bins) of the sprite pixels
  (true masks) of each training video's first clip; the share of videos whose nearest
  second clip (L1 distance), among all videos' second clips, is their own: the appearance
  shortcut of instance discrimination (chance 1/N). ``frame_histogram_nn_top1``: the same
  with every pixel (sprite + background: what plain MoCo can match on);
* ``shared_frames``: mean number of frames the two training clips of a video share;
* ``fame_beta``: for several beta, FAME's mask on cropped training clips against the true
  swept foreground: ``bg_kept`` (share of the clip's own background pixels the mask keeps,
  i.e. not replaced by the donor's), ``fg_recall`` (share of the foreground kept);
  ``fg_area`` is the true swept foreground's share of the frame.

Each is computed for the benchmark's data (``design`` of the recipe) and, for reference, for
the previous design (``classes``: 8 motion classes, 16-frame videos, overlapping clips).
"""

from __future__ import annotations

import torch

from vislearn.data.augment import ViewConfig
from vislearn.data.synthetic import MotionClipDataset
from vislearn.data.video.augment import ClipAugment
from vislearn.data.video.datamodule import synthetic_motion_splits
from vislearn.data.video.fame import fame_mask

BETAS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.5)


def _hist(clips: torch.Tensor, masks: torch.Tensor | None, bins: int = 8) -> torch.Tensor:
    """Normalised RGB histograms ``[N, bins^3]`` of uint8 clips ``[N, T, 3, H, W]`` over the
    pixels where ``masks`` ``[N, T, H, W]`` is set (all pixels when None)."""
    q = (clips.long() * bins // 256).clamp(max=bins - 1)
    ids = (q[:, :, 0] * bins + q[:, :, 1]) * bins + q[:, :, 2]  # N, T, H, W
    w = torch.ones_like(ids, dtype=torch.float) if masks is None else (masks > 0).float()
    n = ids.shape[0]
    flat = (ids + torch.arange(n).view(-1, 1, 1, 1) * bins**3).flatten()
    h = torch.bincount(flat, weights=w.flatten(), minlength=n * bins**3).view(n, -1)
    return h / h.sum(1, keepdim=True).clamp_min(1)


def _nn_top1(a: torch.Tensor, b: torch.Tensor) -> float:
    d = torch.cdist(a, b, p=1)
    return float((d.argmin(1) == torch.arange(len(a))).float().mean())


def _pairs(ds: MotionClipDataset, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One draw of the training pairs: clips ``[N, 2, T, C, H, W]``, masks, shared frames."""
    ds.generator = torch.Generator().manual_seed(seed)
    clips, masks, shared = [], [], []
    for i in range(len(ds)):
        c, _, m = ds[i]
        clips.append(c)
        masks.append(m)
        idx = ds.last_indices
        shared.append(len(set(idx[0].tolist()) & set(idx[1].tolist())))
    return torch.stack(clips), torch.stack(masks), torch.tensor(shared, dtype=torch.float)


def design_checks(data: dict, model: dict, design: str, seed: int = 0) -> dict:
    """The checks of the module docstring for ``data`` with ``motion_design=design``."""
    frames = data["video_frames"] if design == data["motion_design"] else 16
    train, _ = synthetic_motion_splits(
        data["num_train"], 8, frames, data["image_size"], 3, data["background_bias"],
        data["num_backgrounds"] if design == "appearance_swap" else 16, seed=data["synthetic_seed"],
        design=design,
    )  # fmt: skip
    ds = MotionClipDataset(train, return_masks=True, frames=data["frames"], two_clips=True)
    clips, masks, shared = _pairs(ds, seed)
    out = {
        "videos": len(train),
        "video_frames": frames,
        "shared_frames": round(float(shared.mean()), 3),
        "sprite_histogram_nn_top1": round(
            100 * _nn_top1(_hist(clips[:, 0], masks[:, 0]), _hist(clips[:, 1], masks[:, 1])), 2
        ),
        "frame_histogram_nn_top1": round(
            100 * _nn_top1(_hist(clips[:, 0], None), _hist(clips[:, 1], None)), 2
        ),
        "chance": round(100 / len(train), 3),
    }
    # FAME's mask vs the true swept foreground on cropped first clips (the training crops)
    aug = ClipAugment(
        ViewConfig(crop_scale=tuple(model["crop_scale"]), hflip_p=0.0), data["image_size"]
    )
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([clips[:, 0], masks[:, 0, :, None].mul(255)], 2)
    views = aug.spatial(x, g)  # B, C+1, T, S, S
    rgb, fg = views[:, :3], views[:, 3].amax(1) >= 0.5
    bg = ~fg
    out["fg_area"] = round(100 * float(fg.float().mean()), 2)
    out["fame_beta"] = {}
    for beta in BETAS:
        keep = torch.cat([fame_mask(c, beta) for c in rgb.split(256)])
        out["fame_beta"][str(beta)] = {
            "bg_kept": round(100 * float((keep & bg).sum() / bg.sum()), 2),
            "fg_recall": round(100 * float((keep & fg).sum() / fg.sum().clamp_min(1)), 2),
        }
    return out


def benchmark_checks(cfg: dict) -> dict:
    """:func:`design_checks` for the recipe's design and for the previous ``classes`` one."""
    d, m = cfg["data"], cfg["model"]
    designs = dict.fromkeys([d["motion_design"], "classes"])
    return {name: design_checks(d, m, name) for name in designs}
