"""Run configuration: YAML recipes + ``section.key=value`` overrides from the command line.

A recipe has five sections; every field can be overridden on the command line::

    method: moco_v2
    model:   {...}   # keyword arguments of the method class (backbone, lr, temperature, ...)
    data:    {...}   # ImageDataModule / VideoDataModule arguments (dataset, batch_size, ...)
    trainer: {...}   # build_trainer arguments (max_epochs, devices, strategy, precision, ...)
    eval:    {...}   # offline evaluation after training (kNN k/T, linear-probe epochs)
    seed: 0
    out: runs/moco_v2

A recipe may inherit: ``defaults: [base.yaml, ...]`` (paths relative to the recipe, chains
allowed) merges those recipes first, in order, and the recipe states only what differs
(mappings merged key by key, lists replaced). Every command resolves its settings the same
way, with :func:`load_config`: built-in defaults <- ``--config`` recipe <- the command's flags
(:func:`flag_updates`) <- ``section.key=value`` overrides.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path

#: The Lightning trainer settings every training command shares (hardware, precision, logging)
LIGHTNING_TRAINER: dict[str, Any] = {
    "accelerator": "auto",
    "devices": "auto",
    "num_nodes": 1,
    "strategy": "auto",
    "precision": "32-true",
    "sync_batchnorm": False,
    "log_every_n_steps": 10,
}

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
        # "classes" (8 classes at one speed) or "appearance_swap" (continuous motion, two
        # halves with different sprites, clip pairs across halves); see VideoDataModule
        "motion_design": "classes",
        # serve training clips / images with the ground-truth foreground as an extra channel
        # (FAME with ground-truth masks, model.fame_masks: gt; MRA's oracle selector and its
        # foreground-kept metric on photo-fmnist)
        "mask_channel": False,
    },
    "trainer": {
        "max_epochs": 10,
        **LIGHTNING_TRAINER,
        "check_val_every_n_epoch": 1,
        "limit_train_batches": None,
        # also write last.ckpt every N optimiser steps (long epochs); None: every epoch
        "checkpoint_every_n_steps": None,
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
STRICT_SECTIONS = ("data", "trainer", "eval", "vit", "block", "segment", "sampler", "cache", "dit")
#: recipe key listing the recipes it inherits from (paths relative to the recipe file)
INHERIT_KEY = "defaults"


def _check_keys(base: dict, new: dict, path: str = "") -> None:
    """Unknown top-level sections and unknown keys of the strict sections are errors."""
    for key, value in new.items():
        where = f"{path}{key}"
        if not path and key not in base:  # at the top level ``base`` holds every section
            raise VislearnError(f"unknown config section {key!r}; known: {', '.join(base)}")
        if path.rstrip(".") in STRICT_SECTIONS and key not in base:
            raise VislearnError(f"unknown config key {where!r}; known: {', '.join(base)}")
        if not path and isinstance(value, dict) and isinstance(base.get(key), dict):
            _check_keys(base[key], value, f"{where}.")


def _merge(base: dict, new: dict) -> dict:
    """``base`` <- ``new``: mappings merged key by key, lists and scalars replaced."""
    _check_keys(base, new)
    return _plain(OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(new)))


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _read_yaml(p: Path) -> dict:
    if not p.is_file():
        raise VislearnError(f"config file not found: {p}")
    try:
        recipe = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise VislearnError(f"invalid YAML in {p}: {str(exc).splitlines()[0]}") from None
    if not isinstance(recipe, dict):
        raise VislearnError(f"config {p} must be a mapping")
    return recipe


def load_recipe(path: str | os.PathLike, _stack: tuple[Path, ...] = ()) -> dict:
    """The recipe at ``path`` with the recipes of its ``defaults: [base.yaml, ...]`` list
    (paths relative to the recipe's folder, themselves allowed to inherit) merged under it
    in order; mappings are merged, lists and scalars replaced. No defaults, no key checks."""
    p = Path(path)
    key = p.resolve()
    if key in _stack:
        chain = " -> ".join(str(s) for s in (*_stack, key))
        raise VislearnError(f"config inheritance cycle: {chain}")
    recipe = _read_yaml(p)
    bases = recipe.pop(INHERIT_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise VislearnError(f"{p}: `{INHERIT_KEY}` must be a list of recipe paths")
    merged = OmegaConf.create({})
    for base in bases:
        parent = load_recipe(p.parent / base, (*_stack, key))
        merged = OmegaConf.merge(merged, OmegaConf.create(parent))
    return _plain(OmegaConf.merge(merged, OmegaConf.create(recipe)))


def parse_override(item: str) -> dict:
    """``"section.key=value"`` -> ``{"section": {"key": value}}``; the value is parsed as YAML
    (``model.backbone_kwargs={stem: small_ds}`` gives a mapping, an empty value ``None``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise VislearnError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError as exc:
        msg = str(exc).splitlines()[0]
        raise VislearnError(f"override {item!r}: invalid YAML value: {msg}") from None
    return nested_update(key, value)


def nested_update(key: str, value: Any) -> dict:
    """``("a.b.c", v)`` -> ``{"a": {"b": {"c": v}}}``."""
    nested: dict = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def flag_updates(args: Any, mapping: dict[str, Any]) -> dict:
    """The command-line flags of ``args`` that were given, as a nested config update: the one
    place where a command maps its flags onto config keys.

    ``mapping`` is ``{flag attribute: "section.key"}`` or ``{flag: ("section.key", convert)}``;
    a flag whose value is ``None`` (not given) is skipped, ``convert(value)`` is stored."""
    out: dict = {}
    for flag, target in mapping.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        key, convert = target if isinstance(target, tuple) else (target, None)
        if convert is not None:
            value = convert(value)
        out = _deep_update(out, nested_update(key, value))
    return out


def _deep_update(base: dict, new: dict) -> dict:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def lightning_count(value: Any) -> Any:
    """``"8"`` -> ``8``; ``"auto"``, ``"0,1"`` unchanged (Lightning devices / nodes flags)."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
    **updates: Any,
) -> dict:
    """Defaults <- YAML recipe (with its ``defaults:`` inheritance) <- ``updates`` (nested
    dict, e.g. from :func:`flag_updates`) <- ``section.key=value`` overrides; a plain dict.

    ``defaults`` replaces :data:`DEFAULTS` for a subsystem with its own sections (e.g.
    ``vislearn seg``); unknown top-level sections and unknown keys of the sections in
    :data:`STRICT_SECTIONS` are one-line :class:`VislearnError`\\ s."""
    cfg = copy.deepcopy(DEFAULTS if defaults is None else defaults)
    if path is not None:
        cfg = _merge(cfg, load_recipe(path))
    if updates:
        cfg = _merge(cfg, updates)
    for item in overrides or []:
        cfg = _merge(cfg, parse_override(item))
    return cfg


def save_config(cfg: dict, path: str | os.PathLike) -> None:
    """Write the fully resolved ``cfg`` as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(_plain(OmegaConf.create(cfg)), sort_keys=False))


def add_config_args(parser: Any, fields: str, recipe_help: str | None = None) -> None:
    """The options every command shares for its config: positional ``section.key=value``
    overrides (``fields`` says which sections), ``--config`` (a YAML recipe) and repeatable
    ``--set KEY=VALUE``."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help=f"override any config field ({fields})",
    )
    parser.add_argument(
        "--config", help=recipe_help or "YAML recipe: built-in defaults <- it <- flags <- overrides"
    )
    parser.add_argument(
        "--set",
        dest="set_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more section.key=value override (repeatable, allowed anywhere)",
    )
