"""Checking a resolved run config before anything is written.

Every training command calls :func:`validate_config` on its resolved config, then
:func:`check_run_settings` on its trainer section and output folder, and only then starts the
run, so a bad value is one ``vislearn: error: ...`` line and no run folder.

The declared types come from two places:

* ``model.*``: the signature of the class the section is passed to (``inspect.signature`` of
  ``__init__`` along the class's MRO, following ``**kwargs`` to the base classes); the
  annotations ``int``, ``float``, ``bool``, ``str``, ``tuple[...]``, ``list[...]``,
  ``dict``, ``Literal[...]``, ``X | None`` are checked, anything else is accepted. A key that
  no ``__init__`` takes is an error when the chain does not end in ``**kwargs``.
* the other sections: the type of the key's default (an ``int`` default declares an integer,
  ...), or :data:`TYPES` where the default is ``None`` or the key takes several types.

On top of the types, :data:`RANGES` (and :data:`MODEL_RANGES` for ``model.*`` keys by name)
give the numeric ranges of the known keys: zero or negative epochs, batch sizes, learning
rates, steps or image sizes are errors, never silently replaced.
"""

from __future__ import annotations

import inspect
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

from vislearn.core.errors import VislearnError

__all__ = [
    "MODEL_RANGES",
    "RANGES",
    "TYPES",
    "check_run_settings",
    "check_value",
    "signature_schema",
    "validate_config",
]

#: declared types of keys whose default is ``None`` or that take several types
TYPES: dict[str, Any] = {
    "data.image_size": int | None,
    "data.channels": Literal[1, 3] | None,
    "data.label_fraction": float | None,
    "data.labelled_batch_size": int | None,
    "data.steps_per_epoch": int | None,
    "data.data_dir": str | None,
    "data.cache_dir": str | None,
    "data.background_dir": str | None,
    "trainer.devices": int | str | list | None,
    "trainer.accelerator": str,
    "trainer.strategy": str,
    "trainer.precision": int | str,
    "trainer.limit_train_batches": int | float | None,
    "trainer.max_epochs": int | None,
    "trainer.max_steps": int | None,
    "trainer.checkpoint_every_n_steps": int | None,
    "vit.patch_size": int | None,
    "vit.img_size": int | None,
    "segment.resolution": list | tuple | None,
    "segment.num_clusters": int | None,
    "segment.max_objects": int | None,
    "out": str | None,
    "seed": int,
}

#: ``section.key`` -> (lowest, highest, lowest allowed?) for the known numeric keys
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "data.batch_size": (1, None, True),
    "data.labelled_batch_size": (1, None, True),
    "data.image_size": (1, None, True),
    "data.num_workers": (0, None, True),
    "data.knn_bank_size": (0, None, True),
    "data.label_fraction": (0, 1, False),
    "data.fraction": (0, 1, False),
    "data.frames": (1, None, True),
    "data.frame_stride": (1, None, True),
    "data.video_frames": (1, None, True),
    "data.num_train": (1, None, True),
    "data.num_test": (1, None, True),
    "data.num_frames": (1, None, True),
    "data.gap": (1, None, True),
    "data.samples_per_epoch": (0, None, True),
    "data.synthetic_videos": (1, None, True),
    "data.steps_per_epoch": (1, None, True),
    "trainer.max_epochs": (1, None, True),
    "trainer.checkpoint_every_n_steps": (1, None, True),
    "trainer.num_nodes": (1, None, True),
    "trainer.log_every_n_steps": (1, None, True),
    "trainer.check_val_every_n_epoch": (1, None, True),
    "trainer.val_every_n_epochs": (0, None, True),
    "eval.knn_k": (1, None, True),
    "eval.knn_t": (0, None, False),
    "eval.linear_epochs": (1, None, True),
    "eval.linear_lr": (0, None, False),
    "eval.video_clips": (1, None, True),
    "eval.finetune_epochs": (1, None, True),
    "eval.finetune_lr": (0, None, False),
    "eval.finetune_batch_size": (1, None, True),
    "eval.batch_size": (1, None, True),
    "eval.num_predictions": (1, None, True),
    "eval.occlusion_size": (0, None, True),
    "eval.occlusion_fill": (0, 255, True),
    "block.num_heads": (1, None, True),
    "block.num_points": (1, None, True),
    "block.lr": (0, None, False),
    "block.min_lr": (0, None, True),
    "block.weight_decay": (0, None, True),
    "block.sem_pos_fraction": (0, 1, False),
    "block.sem_neg_fraction": (0, 1, False),
    "block.mot_pos_fraction": (0, 1, False),
    "block.mot_neg_fraction": (0, 1, False),
    "dit.patch_size": (1, None, True),
    "dit.depth": (1, None, True),
    "dit.heads": (1, None, True),
    "dit.head_dim": (1, None, True),
    "dit.lr": (0, None, False),
    "sampler.steps": (1, None, True),
    "sampler.n": (1, None, True),
    "repeats": (1, None, True),
    "vit.patch_size": (1, None, True),
    "vit.img_size": (1, None, True),
}
#: ``trainer.max_steps``: Lightning's ``-1`` (no limit) or a positive number of steps
_MAX_STEPS = "trainer.max_steps"

#: ``model.*`` keys by name (any method) -> range
MODEL_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "lr": (0, None, False),
    "probe_lr": (0, None, False),
    "weight_decay": (0, None, True),
    "temperature": (0, None, False),
    "teacher_temperature": (0, None, False),
    "student_temperature": (0, None, False),
    "knn_k": (1, None, True),
    "knn_t": (0, None, False),
    "image_size": (1, None, True),
    "in_chans": (1, None, True),
    "num_classes": (0, None, True),
    "proj_dim": (1, None, True),
    "queue_size": (1, None, True),
    "warmup_epochs": (0, None, True),
    "mask_ratio": (0, 1, True),
}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}
    if tp in names:
        return names[tp]
    if (origin or tp) in (list, tuple):
        return "a list"
    if (origin or tp) is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits ``tp``, and the value to keep (``"1e-3"`` -> ``0.001`` for a
    float: YAML reads that spelling as a string)."""
    if tp is Any or tp is inspect.Parameter.empty or isinstance(tp, str | typing.TypeVar):
        return True, value
    origin = typing.get_origin(tp)
    if tp is type(None) or tp is None:
        return value is None, value
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp)), value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, kept = _matches(value, arg)
            if ok:
                return True, kept
        return False, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return False, value
            return math.isfinite(number), number
        return isinstance(value, int | float) and not isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    base = origin or tp
    if base in (list, tuple, typing.Sequence):
        if not isinstance(value, list | tuple):
            return False, value
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if len(args) == 1 or (args and Ellipsis in typing.get_args(tp)):
            return all(_matches(v, args[0])[0] for v in value), value
        if args and base is tuple:
            return len(args) == len(value) and all(
                _matches(v, a)[0] for v, a in zip(value, args, strict=True)
            ), value
        return True, value
    if base in (dict, typing.Mapping):
        return isinstance(value, dict), value
    if isinstance(base, type):
        return True, value  # a class we cannot check from config data (e.g. nn.Module)
    return True, value


def _in_range(value: Any, bounds: tuple[float | None, float | None, bool]) -> bool:
    lo, hi, lo_ok = bounds
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True  # (the type check reports non-numbers)
    if lo is not None and (value < lo or (value == lo and not lo_ok)):
        return False
    return hi is None or value <= hi


def _range_text(bounds: tuple[float | None, float | None, bool]) -> str:
    lo, hi, lo_ok = bounds
    if hi is None:
        return f"{'>=' if lo_ok else '>'} {lo}"
    return f"in {'[' if lo_ok else '('}{lo}, {hi}]"


def check_value(key: str, value: Any, tp: Any, bounds: tuple | None = None) -> Any:
    """``value`` of config key ``key`` checked against type ``tp`` and ``bounds``
    ((lowest, highest, lowest allowed?)); returns the value to keep, raises a one-line
    :class:`VislearnError`."""
    ok, kept = _matches(value, tp)
    if not ok:
        raise VislearnError(f"{key} must be {_describe(tp)}, got {value!r}")
    if bounds is not None and not _in_range(kept, bounds):
        raise VislearnError(f"{key} must be {_range_text(bounds)}, got {kept!r}")
    return kept


def signature_schema(cls: type) -> tuple[dict[str, Any], bool]:
    """``({keyword: annotation}, open)`` of the keyword arguments ``cls(...)`` takes, following
    ``**kwargs`` from each ``__init__`` to the next class in the MRO; ``open`` is whether the
    last one still takes ``**kwargs`` (then unknown keys cannot be told apart)."""
    schema: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # an annotation naming something not importable here
            hints = {}
        params = list(inspect.signature(init).parameters.values())[1:]
        more = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                more = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                schema.setdefault(p.name, hints.get(p.name, Any))
        if not more:
            return schema, False
    return schema, True


def _default_type(value: Any) -> Any:
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, str):
        return str
    if isinstance(value, list | tuple):
        return list | tuple
    if isinstance(value, dict):
        return dict
    return Any


def _walk(cfg: dict, defaults: dict, prefix: str, skip: tuple[str, ...]) -> None:
    for key, value in list(cfg.items()):
        name = f"{prefix}{key}"
        if name in skip:
            continue
        default = defaults.get(key) if isinstance(defaults, dict) else None
        if isinstance(default, dict) and default and isinstance(value, dict):
            _walk(value, default, f"{name}.", skip)
            continue
        tp = TYPES.get(name)
        if tp is None:
            tp = _default_type(default) if default is not None else Any
            if tp is not Any and value is None:
                continue  # `key=` (null): the command's own default for it
        if name == _MAX_STEPS:
            check_value(name, value, tp)
            if value is not None and value != -1 and value < 1:
                raise VislearnError(f"{name} must be >= 1 (or -1: no limit), got {value!r}")
            continue
        cfg[key] = check_value(name, value, tp, RANGES.get(name))


def validate_config(
    cfg: dict,
    defaults: dict,
    model_class: type | None = None,
    skip: tuple[str, ...] = (),
) -> dict:
    """Check every value of the resolved ``cfg`` against its declared type and range (see the
    module docstring); ``defaults`` is the dict ``cfg`` was resolved from, ``model_class``
    the class ``cfg["model"]`` is passed to, ``skip`` keys (``section.key``) checked
    elsewhere. Returns ``cfg`` (float strings such as ``1e-3`` made numbers); raises a
    one-line :class:`VislearnError` for the first bad value."""
    _walk(cfg, defaults, "", ("model", *skip))
    model = cfg.get("model")
    if model_class is not None and isinstance(model, dict):
        schema, open_ = signature_schema(model_class)
        for key, value in list(model.items()):
            if key not in schema:
                if open_:
                    continue
                known = ", ".join(sorted(schema))
                raise VislearnError(f"unknown config key 'model.{key}'; known: {known}")
            model[key] = check_value(f"model.{key}", value, schema[key], MODEL_RANGES.get(key))
    elif isinstance(model, dict):
        for key, value in model.items():
            if key in MODEL_RANGES:
                check_value(f"model.{key}", value, Any, MODEL_RANGES[key])
    return cfg


def _precisions() -> tuple[Any, ...]:
    try:
        from lightning.fabric import connector

        names = typing.get_args(connector._PRECISION_INPUT)  # noqa: SLF001
        return tuple(a for lit in names for a in typing.get_args(lit))
    except (ImportError, AttributeError):
        return ("16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true",
                64, 32, 16, "64", "32", "16", "bf16")  # fmt: skip


def _device_count(devices: Any) -> int | None:
    """How many devices a Lightning ``devices`` value asks for (``None``: auto / all)."""
    if devices is None or devices == "auto" or devices == -1 or devices == "-1":
        return None
    if isinstance(devices, int):
        return devices
    if isinstance(devices, list | tuple):
        return len(devices)
    text = str(devices).strip()
    if text.isdigit():
        return int(text)
    return len([d for d in text.split(",") if d.strip()])


def check_run_settings(trainer: dict | None, out: Any = None) -> None:
    """The hardware flags and the output folder, checked before a run starts: the accelerator
    exists on this machine, the precision is one Lightning accepts, ``devices`` asks for no
    more devices (CPU: cores) than there are, and ``out`` is not an existing file."""
    target = None if out is None else Path(str(out)).expanduser()
    if target is not None and target.exists() and not target.is_dir():
        raise VislearnError(f"output folder {out} is an existing file")
    t = trainer or {}
    precision = t.get("precision")
    if precision is not None:
        allowed = _precisions()
        if precision not in allowed and str(precision) not in map(str, allowed):
            names = ", ".join(str(a) for a in allowed if isinstance(a, str) and "-" in a)
            raise VislearnError(f"unknown precision {precision!r}; Lightning accepts {names}")
    accelerator = str(t.get("accelerator") or "auto").lower()
    if "accelerator" not in t and "devices" not in t:
        return
    import torch  # (the training commands import it anyway)

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if accelerator in ("gpu", "cuda") and not cuda:
        raise VislearnError(f"--accelerator {accelerator}: no CUDA GPU on this machine")
    if accelerator == "mps" and not mps:
        raise VislearnError("--accelerator mps: MPS is not available on this machine")
    if accelerator not in ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu", "xla"):
        raise VislearnError(f"unknown accelerator {accelerator!r}; e.g. auto, cpu, gpu, mps")
    wanted = _device_count(t.get("devices"))
    if wanted is None:
        return
    if wanted < 1:
        raise VislearnError(f"devices must be >= 1, 'auto' or -1, got {t.get('devices')!r}")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda)
    have = cuda if on_gpu else (os.cpu_count() or 1)
    if accelerator in ("auto", "cpu", "gpu", "cuda") and wanted > have:
        what = "GPUs" if on_gpu else "CPU cores"
        raise VislearnError(
            f"devices={t.get('devices')!r} asks for {wanted} processes but this machine has "
            f"{have} {what}"
        )
