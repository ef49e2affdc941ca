"""Built-in settings of ``vislearn train-uvos`` and ``vislearn video-seg`` (the first layer of
:func:`vislearn.core.config.load_config`). Imports nothing heavy.

``train-uvos`` defaults follow the released SSL-UVOS recipe: 48 epochs of 10,000 clips at 8
clips per step, 192x384 frames, gap 4, AdamW lr 1e-5 cosine to 1e-6, weight decay 0.1."""

from __future__ import annotations

from typing import Any

__all__ = ["UVOS_DEFAULTS", "VIDEO_SEG_DEFAULTS"]

UVOS_DEFAULTS: dict[str, Any] = {
    "videos": None,  # a video folder (recursive) or `synthetic`
    "vit": {  # the frozen ViT (vislearn.tasks.vos.cli.build_vit)
        "arch": "dino_vits8",
        "weights": None,
        "patch_size": None,
        "img_size": None,
        "nested": None,
    },
    "data": {
        "resolution": [192, 384],
        "num_frames": 3,
        "gap": 4,
        "samples_per_epoch": 10_000,  # 0: one clip per video
        "batch_size": 8,
        "num_workers": 4,
        "augment": True,
        "synthetic_videos": 64,
    },
    "block": {  # the spatio-temporal block and its optimiser / losses
        "num_heads": 8,
        "num_points": 8,
        "lr": 1e-5,
        "min_lr": 1e-6,
        "weight_decay": 0.1,
        "sem_weight": 1.0,
        "mot_weight": 1.0,
        # loss set sizes as fractions of a frame's tokens (the release's 30 / 200 and
        # 10 / 50 of 1152; vislearn.losses.uvos.loss_set_sizes)
        "sem_pos_fraction": 30 / 1152,
        "sem_neg_fraction": 200 / 1152,
        "mot_pos_fraction": 10 / 1152,
        "mot_neg_fraction": 50 / 1152,
    },
    "trainer": {
        "max_epochs": 48,
        "max_steps": -1,
        "accelerator": "auto",
        "devices": "auto",
        "strategy": "auto",
        "precision": "32-true",
        "progress": True,
    },
    "seed": 0,
    "out": None,
}

VIDEO_SEG_DEFAULTS: dict[str, Any] = {
    "input": None,  # a video file or a folder of frames
    "vit": {"arch": "dino_vits8", "weights": None, "patch_size": None},
    "block": None,  # the trained spatio-temporal block's weights
    "segment": {  # vislearn.tasks.vos.segment.segment_video
        "resolution": None,
        "key_stride": 10,
        "tau": 1.0,
        "window": 3,
        "clusters": "leader",
        "num_clusters": None,
        "objects": "motion",
        "max_objects": 20,  # the DAVIS evaluation scores at most 20 proposals
        "motion_threshold": 1.5,
        "chunk": 4096,
        "batch_size": 8,
        "overlay": False,
        "overlay_video": False,
    },
    "device": None,
    "out": None,
}
