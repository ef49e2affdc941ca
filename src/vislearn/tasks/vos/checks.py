"""Checks of ``vislearn train-uvos`` / ``vislearn video-seg`` settings, run before any video
is read or anything is written: types and ranges (:mod:`vislearn.core.schema`), required
keys, the weights files, the video input, hardware flags and the output folder."""

from __future__ import annotations

from pathlib import Path

from vislearn.core.errors import VislearnError
from vislearn.core.schema import check_run_settings, validate_config

__all__ = ["check_train_uvos", "check_video_seg"]


def _required(cfg: dict, command: str, keys: dict[str, object]) -> None:
    for key, value in keys.items():
        if value is None:
            raise VislearnError(f"{command} needs {key}")


def _file(path: object, what: str) -> None:
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise VislearnError(f"{what} not found: {path}")
    if p.is_dir():
        raise VislearnError(f"{what} {path} is a folder, not a weights file")


def check_train_uvos(cfg: dict) -> dict:
    """The resolved ``train-uvos`` config, checked (see the module docstring)."""
    from vislearn.tasks.vos.config import UVOS_DEFAULTS

    validate_config(cfg, UVOS_DEFAULTS)
    _required(
        cfg,
        "train-uvos",
        {"videos": cfg["videos"], "vit.weights": cfg["vit"]["weights"], "out": cfg["out"]},
    )
    _file(cfg["vit"]["weights"], "ViT weights (--weights)")
    videos = str(cfg["videos"])
    if videos.strip().lower() != "synthetic" and not Path(videos).expanduser().exists():
        raise VislearnError(f"video folder does not exist: {videos}")
    check_run_settings(cfg["trainer"], cfg["out"])
    return cfg


def check_video_seg(cfg: dict) -> dict:
    """The resolved ``video-seg`` config, checked (see the module docstring): the weights and
    the block exist before the video is decoded."""
    from vislearn.tasks.vos.config import VIDEO_SEG_DEFAULTS

    validate_config(cfg, VIDEO_SEG_DEFAULTS)
    _required(
        cfg,
        "video-seg",
        {
            "input": cfg["input"],
            "block": cfg["block"],
            "out": cfg["out"],
            "vit.weights (--weights)": cfg["vit"]["weights"],
        },
    )
    _file(cfg["vit"]["weights"], "ViT weights (--weights)")
    _file(cfg["block"], "block weights (--block)")
    if not Path(str(cfg["input"])).expanduser().exists():
        raise VislearnError(f"input does not exist: {cfg['input']}")
    out = Path(str(cfg["out"])).expanduser()
    if out.exists() and not out.is_dir():
        raise VislearnError(f"output folder {cfg['out']} is an existing file")
    return cfg
