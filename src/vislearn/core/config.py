"""Run configuration: YAML recipes + ``section.key=value`` overrides from the command line.

A recipe has five sections; every field can be overridden on the command line::

    method: moco_v2
    model:   {...}   # keyword arguments of the method class (backbone, lr, temperature, ...)
    data:    {...}   # ImageDataModule / VideoDataModule arguments (dataset, batch_size, ...)
    trainer: {...}   # build_trainer arguments (max_epochs, devices, strategy, precision, ...)
    eval:    {...}   # offline evaluation after training (kNN k/T, linear-probe epochs)
    seed: 0
    out: runs/moco_v2
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path

DEFAULTS: dict[str, Any] = {
    "method": None,
    "model": {},
    "data": {
        "dataset": "fmnist-mini",
        "data_dir": None,
        "image_size": None,
        "channels": None,
        "batch_size": 256,
        "num_workers": 0,
        "knn_bank_size": 10000,
        # semi-supervised runs: keep a seeded class-balanced fraction of the training labels
        # (the rest are hidden, label -1); see vislearn.data.datamodule.ImageDataModule
        "label_fraction": None,
        "labelled_batch_size": None,
        "label_seed": 0,
        # video data (vislearn.data.video.datamodule.VideoDataModule): clips of `frames`
        # frames `frame_stride` apart; the synthetic-motion set's size and background bias
        "frames": 8,
        "frame_stride": 1,
        "video_frames": 16,
        "num_train": 2000,
        "num_test": 800,
        "background_bias": 0.0,
        "num_backgrounds": 16,
        "distractors": 0,
        "motion_speed": 2.0,
        "synthetic_seed": 0,
    },
    "trainer": {
        "max_epochs": 10,
        "accelerator": "auto",
        "devices": "auto",
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "32-true",
        "sync_batchnorm": False,
        "log_every_n_steps": 10,
        "check_val_every_n_epoch": 1,
        "limit_train_batches": None,
        "progress": True,
    },
    "eval": {
        "knn_k": 200,
        "knn_t": 0.07,
        "linear_epochs": 100,
        "linear_lr": 0.1,
        "embedding_plot": True,
        # video protocols (vislearn.eval.video): multi-clip test, fine-tuning, retrieval
        "video_clips": 5,
        "finetune_epochs": 5,
        "finetune_lr": 0.05,
        "finetune_batch_size": 32,
        "retrieval_ks": [1, 5, 10],
    },
    "seed": 0,
    "out": None,
}
STRICT_SECTIONS = ("data", "trainer", "eval")


def _merge(base: dict, new: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in new.items():
        where = f"{path}{key}"
        if path.rstrip(".") in STRICT_SECTIONS and key not in base:
            raise VislearnError(f"unknown config key {where!r}; known: {', '.join(base)}")
        if not path and key not in base:  # at the top level ``base`` holds every section
            raise VislearnError(f"unknown config section {key!r}; known: {', '.join(base)}")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{where}.")
        else:
            out[key] = value
    return out


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
    **updates: Any,
) -> dict:
    """Defaults <- YAML file <- ``updates`` (nested dict) <- ``key.sub=value`` overrides.

    ``defaults`` replaces :data:`DEFAULTS` for a subsystem with its own sections (e.g.
    ``vislearn seg``); its ``data``/``trainer``/``eval`` sections are checked as strictly."""
    cfg = copy.deepcopy(DEFAULTS if defaults is None else defaults)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise VislearnError(f"config file not found: {p}")
        try:
            recipe = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise VislearnError(f"invalid YAML in {p}: {str(exc).splitlines()[0]}") from None
        if not isinstance(recipe, dict):
            raise VislearnError(f"config {p} must be a mapping")
        cfg = _merge(cfg, recipe)
    cfg = _merge(cfg, updates)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise VislearnError(f"override {item!r} must look like section.key=value")
        value = yaml.safe_load(raw) if raw else None
        nested: dict = {}
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        cfg = _merge(cfg, nested)
    return cfg


def save_config(cfg: dict, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
