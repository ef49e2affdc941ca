"""Training-free feature caching for diffusion transformers (DuCa, ToCa, FORA).

Attached from outside to a diffusers transformer (DiT, PixArt: ``BasicTransformerBlock``;
FLUX.1: ``FluxTransformer2DModel``, :mod:`vislearn.accel.flux`), nothing forked::

    from vislearn.accel import DuCaCache

    cache = DuCaCache(pipe.transformer, policy="duca", interval=3, score="vnorm")
    with cache:                       # enable() ... disable()
        images = pipe(class_labels=[1, 2], num_inference_steps=50).images
    print(cache.counts())             # {'full': 17, 'conservative': 17, 'aggressive': 16, ...}

:mod:`vislearn.accel.schedule` (step types, presets), :mod:`vislearn.accel.selection` (token
scores), the cache laid out like diffusers' hooks -- :mod:`vislearn.accel.config` (settings),
:mod:`vislearn.accel.state` (per-run state), :mod:`vislearn.accel.hook` (the block hooks),
:mod:`vislearn.accel.apply` (:class:`DuCaCache`, :func:`find_blocks`) --
:mod:`vislearn.accel.metrics` (FLOPs, PSNR, relative L2), :mod:`vislearn.accel.sampling`
(checkpoint loading, a CFG sampler), :mod:`vislearn.accel.modulation` (adaLN of all blocks at
once), :mod:`vislearn.accel.refresh` (token choice for a whole cycle),
:mod:`vislearn.accel.compiled` (``compile=True``). Names are
imported lazily, so ``import vislearn.accel`` imports neither torch nor diffusers.
"""

from __future__ import annotations

from vislearn.core.lazy import lazy_exports

_EXPORTS = {
    "DuCaCache": "apply",
    "UnsupportedModelError": "config",
    "find_blocks": "apply",
    "CacheConfig": "config",
    "BlockCache": "state",
    "RunState": "state",
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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
