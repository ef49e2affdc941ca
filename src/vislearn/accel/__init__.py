"""Training-free feature caching for diffusion transformers (DuCa, ToCa, FORA).

Attached from outside to a diffusers transformer, nothing forked::

    from vislearn.accel import DuCaCache

    cache = DuCaCache(pipe.transformer, policy="duca", interval=3, score="vnorm")
    with cache:                       # enable() ... disable()
        images = pipe(class_labels=[1, 2], num_inference_steps=50).images
    print(cache.counts())             # {'full': 17, 'conservative': 17, 'aggressive': 16, ...}

:mod:`vislearn.accel.schedule` (step types, presets), :mod:`vislearn.accel.selection` (token
scores), :mod:`vislearn.accel.cache` (the hooks), :mod:`vislearn.accel.metrics` (FLOPs, PSNR,
relative L2), :mod:`vislearn.accel.sampling` (checkpoint loading, a CFG sampler). Names are
imported lazily, so ``import vislearn.accel`` imports neither torch nor diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DuCaCache": "cache",
    "UnsupportedModelError": "cache",
    "find_blocks": "cache",
    "count_flops": "metrics",
    "flops_ratio": "metrics",
    "psnr": "metrics",
    "relative_l2": "metrics",
    "PRESETS": "schedule",
    "CachePolicy": "schedule",
    "StepType": "schedule",
    "count_step_types": "schedule",
    "fresh_ratio": "schedule",
    "get_policy": "schedule",
    "plan_steps": "schedule",
    "step_types": "schedule",
    "types_to_string": "schedule",
    "load_transformer": "sampling",
    "sample_class_conditional": "sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"vislearn.accel.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vislearn.accel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
