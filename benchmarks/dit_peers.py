"""Peer training-free caching methods attached to a diffusers ``DiTTransformer2DModel``.

Every adapter here is a :class:`Peer`: a context manager that attaches one peer method to the
transformer for exactly one sampling run and detaches it completely afterwards, so that it can be
compared with :class:`vislearn.accel.DuCaCache` in the same, unchanged sampling loop::

    peer = make_peer("diffusers_fbc", model, num_steps=50, threshold=0.2)
    peer.calibrate(lambda: sample_class_conditional(model, sched, labels, 50, 4.0, noise=noise))
    with peer:                                           # fresh state for this run
        x = sample_class_conditional(model, sched, labels, 50, 4.0, noise=noise)
    peer.counts()                                        # what was computed in that run

The methods are the libraries' own, through their configuration objects and ``apply_*`` /
``enable_cache`` / ``disable_cache`` functions; nothing of diffusers or cache-dit is copied or
edited. A few non-public pieces are needed around them (they may move in other versions):
diffusers' ``hooks.hooks._set_cache_context`` (to set the context on a model without
``CacheMixin``), the hook-name constants (``_FBC_LEADER_BLOCK_HOOK``, ...) that
``HookRegistry.remove_hook`` needs, MagCache's hook state (``state_manager._state_cache``) to
read the calibration ratios, and ``cache_dit.caching.patch_functors.DiTPatchFunctor``. Versions
used while writing this: diffusers 0.42.1, cache-dit 1.5.3, torch 2.14 (CPU).

Families (:data:`PEERS`; settings and their defaults on each class):

``diffusers_fbc``
    ``FirstBlockCacheConfig(threshold)``. Block 0 always runs; blocks 1..L-1 are replaced by
    the cached tail residual while ``mean|res0 - res0_prev| / mean|res0_prev| < threshold``
    (``res0_prev`` is block 0's residual at the last *computed* step). A threshold below the
    model's typical first-block change (about 0.12-0.2 on random DiTs) never caches.
``diffusers_taylorseer``
    ``TaylorSeerCacheConfig`` with explicit ``cache_identifiers`` for DiT's
    ``BasicTransformerBlock``: ``transformer_blocks.<i>.attn1`` and ``.ff`` (the ungated module
    outputs; the adaLN gates are still applied by the block). The library defaults
    (``^transformer_blocks.*attn``, ``fullmatch``) hook nothing on DiT, and its lite mode
    predicts ``proj_out``, which DiT does not have (``proj_out_1/2``), so neither is offered.
    Settings: ``interval`` (a full step every N), ``order`` (Taylor order), ``warmup`` (full
    steps before caching starts), ``stop`` (full steps from this index on; ``None``: never),
    ``factors_dtype`` (``"float32"`` by default; the library default is bfloat16). The
    library's schedule computes calls ``0..warmup-1`` and then ``warmup+1``, ``warmup+1+N``,
    ...: the call at index ``warmup`` is already a predicted one.
``diffusers_pab``
    ``PyramidAttentionBroadcastConfig`` on the self-attention (``attn1``) of every block, the
    only attention DiT has: recompute it every ``skip`` calls while the timestep is inside
    ``t_range`` (open interval, timestep units 0..1000), reuse it in between. The required
    ``current_timestep_callback`` reads the timestep that a forward pre-hook on the model
    stores at each call.
``diffusers_fastercache``
    ``FasterCacheConfig``: attention reuse with a linear extrapolation (weight
    ``attention_weight``) every ``attn_skip`` calls inside ``attn_t_range``, and CFG-Cache:
    inside ``uncond_t_range`` the unconditional half of the batch is computed only every
    ``uncond_skip`` calls and otherwise rebuilt from the conditional half plus the low/high
    frequency difference of the last full call (weights ``alpha_low`` / ``alpha_high`` inside
    ``lf_t_range`` / ``hf_t_range``). It works with DiT's call signature when the identifiers of
    the batched inputs are ``hidden_states``, ``timestep`` and ``class_labels`` (positional
    tensors are split too) and the tensor format is ``BCHW``; FasterCache assumes the batch is
    ``[uncond; cond]`` whereas our sampler (like diffusers' ``DiTPipeline``) builds
    ``[cond; uncond]``, so the adapter swaps the halves of the inputs in a forward pre-hook and
    swaps the output back in a forward hook (exact: DiT treats samples independently). The
    sampler must run batched CFG (``guidance_scale > 1``); a call whose halves differ is refused.
``diffusers_magcache``
    ``MagCacheConfig``: skips the whole block stack (adding the last residual) while the
    accumulated ``|1 - prod(ratio)|`` stays ``<= threshold`` and at most ``max_skip`` calls in a
    row; no skipping in the first ``retention`` fraction of the steps. The magnitude ratios come
    from :meth:`MagCachePeer.calibrate` (one full run with ``MagCacheConfig(calibrate=True)``,
    the library's own calibration), or from the ``mag_ratios`` setting.
``cache_dit_dbcache``
    cache-dit DBCache through a transformer-only ``BlockAdapter`` (``Pattern_3`` plus cache-dit's
    ``DiTPatchFunctor``, as its built-in ``"DiT"`` adapter): the first ``Fn`` blocks always run,
    the middle blocks are replaced by the cached residual when the rel-L1 change of the Fn
    residual is below ``threshold``, the last ``Bn`` blocks always run. ``warmup`` full steps
    first (``max_warmup_steps``, library default 8), at most ``max_cached`` cached steps in total
    and ``max_continuous`` in a row (-1: no limit). ``taylorseer=True`` adds the TaylorSeer
    calibrator (order ``order``) that forecasts the cached residual instead of reusing it.
    cache-dit treats ``threshold <= 0`` as "never cache" and ``threshold >= 1`` as "always
    cache" (after warm-up, within the limits). With ``Fn=1, Bn=0, warmup=0`` DBCache is the same
    rule as FirstBlockCache, and the two adapters give the same run (tested). The cache-dit
    context is created per ``with`` block: in transformer-only mode cache-dit refreshes its
    context by counting calls against ``num_inference_steps``, and reusing one enabled model
    for several runs gave a third run shifted by one call.
``teacache``
    Not a library: TeaCache's rule implemented here by wrapping the blocks' ``forward`` from
    outside (see :class:`TeaCachePeer`). What differs from TeaCache: **no rescaling
    polynomial** (TeaCache fits one per model; none exists for DiT), so the raw rel-L1 of the
    block-0 modulated input is accumulated; the modulated input is ``norm1`` of block 0
    (``AdaLayerNormZero``) on the whole ``[cond; uncond]`` batch; as in TeaCache that ``norm1``
    is evaluated once more on computed steps (outside and inside the block).

Not included: ``use_lite_mode`` TaylorSeer (see above), SeaCache / TextKVCache / LayerSkip
(not caches for a class-conditional DiT, or not asked for), DBPrune.

Context for the diffusers hooks: DiT does not inherit ``CacheMixin`` (no ``enable_cache`` /
``cache_context`` on the model) and ``DiTPipeline`` never sets a cache context, so the hooks are
applied with the functional ``apply_*`` API and a forward pre-hook on the model sets the
context ``CacheContext("cond", step_index=i, num_inference_steps=n, timestep=t)`` before each
call through diffusers' ``_set_cache_context`` (the function behind ``CacheMixin.cache_context``).
One context name per run is right for batched CFG: the model is called once per step.

Detaching: each ``__exit__`` removes the library's hooks with the library's own API
(``HookRegistry.remove_hook``, ``cache_dit.disable_cache``), then puts back every module's
instance attributes and child modules as they were at ``__enter__``. Both libraries leave
traces otherwise: diffusers leaves a ``_diffusers_hook`` registry and an instance ``forward``
(the original bound method) on every hooked module; cache-dit leaves its patched ``forward``,
``_is_patched`` and a ``_norm1_emb`` submodule on the transformer (which adds duplicate keys to
``state_dict()``), and every call while enabled moves ``transformer_blocks`` to the end of the
transformer's children (it swaps the block list in and out with ``unittest.mock.patch.object``,
which deletes and re-adds the attribute), so the order of ``named_modules()``, ``parameters()``
and ``state_dict()`` changes; the order is put back too.

Counts: :meth:`Peer.counts` reports, for the last run, how much of the block stack was really
computed, measured the same way for every peer with forward pre-hooks on the first ``Linear`` of
each block's ``attn1`` and ``ff`` (they fire only when the module really computes, and count
batch rows): ``full`` / ``partial`` / ``skipped`` calls (every / some / no ``attn1`` or ``ff``
computed for the whole batch; the blocks' norms and gates may still run, e.g. on TaylorSeer's
predicted calls) and ``attn_fraction`` / ``mlp_fraction`` of the module rows of a plain run;
cache-dit adds its own ``cached_steps``, ``cached_step_indices`` and ``residual_diffs``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = [
    "PEERS",
    "CacheDitDBCachePeer",
    "FasterCachePeer",
    "FirstBlockCachePeer",
    "MagCachePeer",
    "PABPeer",
    "Peer",
    "TaylorSeerPeer",
    "TeaCachePeer",
    "make_peer",
]

PEERS: dict[str, Callable[..., Peer]] = {}

_ACTIVE: dict[int, Peer] = {}  # id(model) -> the peer attached to it


def _register(family: str):
    def deco(cls):
        cls.family = family
        PEERS[family] = cls
        return cls

    return deco


def make_peer(family: str, model: nn.Module, num_steps: int, **settings: Any) -> Peer:
    """The peer ``family`` (a key of :data:`PEERS`) for ``model`` and runs of ``num_steps``
    model calls, with ``settings`` overriding the family's defaults."""
    if family not in PEERS:
        raise KeyError(f"unknown peer family {family!r}; choose one of {', '.join(PEERS)}")
    return PEERS[family](model, num_steps, **settings)


# ---------------------------------------------------------------------------------- helpers
def _json(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_json(x) for x in v]
    if isinstance(v, torch.Tensor):
        return [float(x) for x in v.flatten().tolist()]
    if isinstance(v, float | int | str | bool) or v is None:
        return v
    raise TypeError(f"setting value {v!r} is not JSON-serialisable")


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@contextlib.contextmanager
def _quiet(*prefixes: str) -> Iterator[None]:
    """Raise the level of the named library loggers to ERROR for a while (cache-dit logs
    several INFO/WARNING lines per enable/disable)."""
    names = [
        n
        for n in list(logging.root.manager.loggerDict)
        if any(n == p or n.startswith(p + ".") for p in prefixes)
    ]
    loggers = [logging.getLogger(n) for n in dict.fromkeys([*prefixes, *names])]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


_MISSING = object()


def _snapshot(model: nn.Module) -> list[tuple[nn.Module, dict, dict]]:
    return [(m, dict(vars(m)), dict(m._modules)) for m in model.modules()]


def _restore(snapshot: list[tuple[nn.Module, dict, dict]]) -> None:
    """Put back each module's instance attributes and children exactly as snapshotted."""
    for m, attrs, children in snapshot:
        d = vars(m)
        for k in [k for k in d if k not in attrs]:
            del d[k]
        for k, v in attrs.items():
            if d.get(k, _MISSING) is not v:
                d[k] = v
        mods = m._modules
        if list(mods.items()) != list(children.items()):  # also the order (see module doc)
            mods.clear()
            mods.update(children)


def _foreign_wrappers(model: nn.Module) -> list[str]:
    """Modules whose ``forward`` is already replaced, or that carry diffusers / cache-dit
    hooks: attaching a peer on top would measure a mixture."""
    found = []
    for name, m in model.named_modules():
        d = vars(m)
        registry = d.get("_diffusers_hook")
        if (
            "forward" in d
            or (registry is not None and registry.hooks)
            or d.get("_is_cached", False)
        ):
            found.append(name or "<model>")
    return found


def _blocks(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(model, "transformer_blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise TypeError(f"{type(model).__name__} has no transformer_blocks ModuleList")
    return blocks


def _first_linear(module: nn.Module | None) -> nn.Module | None:
    if module is None:
        return None
    return next((m for m in module.modules() if isinstance(m, nn.Linear)), None)


def _call_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Any]:
    x = args[0] if args else kwargs.get("hidden_states")
    t = kwargs["timestep"] if "timestep" in kwargs else (args[1] if len(args) > 1 else None)
    if not torch.is_tensor(x):
        raise TypeError("the model was called without hidden_states")
    return x, t


def _timestep_value(t: Any) -> float | None:
    if t is None:
        return None
    if torch.is_tensor(t):
        return float(t.reshape(-1)[0]) if t.numel() else None
    return float(t)


# ---------------------------------------------------------------------------------- base class
class Peer:
    """A peer caching method attached to ``model`` for one run per ``with`` block.

    Subclasses set ``family`` (via :data:`PEERS` registration), ``prefix`` (library name used in
    :attr:`name`), ``defaults`` (every setting with its default) and implement ``_attach`` /
    ``_detach``; ``_before_call`` / ``_after_call`` see every model call.
    """

    family: str = ""
    prefix: str = ""
    defaults: dict[str, Any] = {}

    def __init__(self, model: nn.Module, num_steps: int, **settings: Any) -> None:
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise TypeError(
                f"{self.family}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(self.defaults)}"
            )
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.model = model
        self.num_steps = int(num_steps)
        self.blocks = _blocks(model)
        self.depth = len(self.blocks)
        self.settings: dict[str, Any] = {
            k: _json(v) for k, v in {**self.defaults, **settings}.items()
        }
        self._check_settings()
        self.name = f"{self.prefix}/{self._tag()}"
        self._active = False
        self._snap: list | None = None
        self._handles: list[Any] = []
        self._calls: list[list[int]] = []  # per call: [batch, attn rows, mlp rows]
        self._extra_counts: dict[str, Any] = {}
        self._counts: dict[str, Any] = {}
        self.timestep: float | None = None  # timestep of the current call
        self.call_index = -1  # index of the current call in this run

    # ----------------------------------------------------------- to be provided by subclasses
    def _check_settings(self) -> None:
        pass

    def _tag(self) -> str:
        return "_".join(f"{k}{_num(v)}" for k, v in self.settings.items())

    def _attach(self) -> None:
        raise NotImplementedError

    def _detach(self) -> None:
        pass

    def _before_call(self, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        return None

    def _after_call(self, output: Any) -> Any:
        return None

    def _library_counts(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------------- public API
    def calibrate(self, run: Callable[[], Any]) -> None:
        """Run ``run()`` (one full sampler run) if the method needs calibration; no-op here."""
        return None

    def __enter__(self) -> Peer:
        if self._active:
            raise RuntimeError(f"{self.name} is already attached")
        other = _ACTIVE.get(id(self.model))
        if other is not None:
            raise RuntimeError(f"{other.name} is attached to this model; exit it first")
        foreign = _foreign_wrappers(self.model)
        if foreign:
            raise RuntimeError(
                "the model already has wrapped forwards or library hooks (a DuCaCache enabled? "
                f"hooks applied by hand?) on {', '.join(foreign[:3])}; remove them first"
            )
        self._start()
        try:
            self._attach()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._active:
            return
        try:
            if exc[0] is None:  # after a failed run, detach without asking the library
                self._extra_counts = self._library_counts()
        finally:
            self._stop()

    def counts(self) -> dict[str, Any]:
        """Statistics of the last (or current) run; ``{}`` before any run."""
        if self._active:
            return self._summarise()
        return dict(self._counts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, active={self._active})"

    # -------------------------------------------------------------------- attach machinery
    def _start(self) -> None:
        self._snap = _snapshot(self.model)
        self._calls = []
        self._extra_counts = {}
        self._counts = {}
        self.timestep = None
        self.call_index = -1
        _ACTIVE[id(self.model)] = self
        self._active = True
        h = self._handles
        h.append(self.model.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        h.append(self.model.register_forward_hook(self._post_hook))
        for block in self.blocks:
            for name, slot in (("attn1", 1), ("ff", 2)):
                lin = _first_linear(getattr(block, name, None))
                if lin is not None:
                    h.append(lin.register_forward_pre_hook(self._row_counter(slot)))

    def _stop(self) -> None:
        try:
            self._detach()
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            if self._snap is not None:
                _restore(self._snap)
                self._snap = None
            self._counts = self._summarise()
            _ACTIVE.pop(id(self.model), None)
            self._active = False

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict):
        x, t = _call_inputs(args, kwargs)
        self.call_index += 1
        self.timestep = _timestep_value(t)
        self._calls.append([int(x.shape[0]), 0, 0])
        return self._before_call(args, kwargs)

    def _post_hook(self, module: nn.Module, args: tuple, output: Any):
        return self._after_call(output)

    def _row_counter(self, slot: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if self._calls and args and torch.is_tensor(args[0]):
                self._calls[-1][slot] += int(args[0].shape[0])

        return hook

    def _summarise(self) -> dict[str, Any]:
        if not self._calls:
            return {}
        full = partial = skipped = 0
        rows = attn = mlp = 0
        for b, a, m in self._calls:
            if a == m == 0:
                skipped += 1
            elif a >= b * self.depth and m >= b * self.depth:
                full += 1
            else:
                partial += 1
            rows += b * self.depth
            attn += a
            mlp += m
        out: dict[str, Any] = {
            "calls": len(self._calls),
            "full": full,
            "partial": partial,
            "skipped": skipped,
            "attn_fraction": attn / rows if rows else 0.0,
            "mlp_fraction": mlp / rows if rows else 0.0,
        }
        out.update(self._extra_counts)
        return out


# ---------------------------------------------------------------------------------- diffusers
def _diffusers_hooks():
    from diffusers.hooks import hooks as hooks_mod

    if not hasattr(hooks_mod, "_set_cache_context"):  # pragma: no cover - older diffusers
        raise RuntimeError(
            "these adapters need diffusers' CacheContext hooks (written against 0.42.1)"
        )
    return hooks_mod


class _DiffusersPeer(Peer):
    """Common part of the diffusers hook adapters: apply on enter, set the cache context
    before every call, remove the named hooks on exit."""

    prefix = "diffusers"
    context_name = "cond"
    hook_names: tuple[str, ...] = ()

    def _apply(self) -> None:
        raise NotImplementedError

    def _attach(self) -> None:
        with _quiet("diffusers.hooks"):
            self._apply()
        self._registry().invalidate_child_registries_cache()

    def _registry(self):
        return _diffusers_hooks().HookRegistry.check_if_exists_or_initialize(self.model)

    def _detach(self) -> None:
        hooks_mod = _diffusers_hooks()
        registry = self._registry()
        registry.invalidate_child_registries_cache()
        hooks_mod._set_cache_context(self.model, None)
        for name in self.hook_names:
            registry.remove_hook(name, recurse=True)
        registry.invalidate_child_registries_cache()

    def _before_call(self, args: tuple, kwargs: dict):
        hooks_mod = _diffusers_hooks()
        ctx = hooks_mod.CacheContext(
            self.context_name,
            step_index=self.call_index,
            num_inference_steps=self.num_steps,
            timestep=self.timestep,
        )
        hooks_mod._set_cache_context(self.model, ctx)
        return None

    def _hooked_modules(self, hook_name: str) -> list[str]:
        return [
            n
            for n, m in self.model.named_modules()
            if getattr(m, "_diffusers_hook", None) is not None
            and m._diffusers_hook.get_hook(hook_name) is not None
        ]


@_register("diffusers_fbc")
class FirstBlockCachePeer(_DiffusersPeer):
    """diffusers FirstBlockCache; ``threshold`` on the rel-L1 change of block 0's residual."""

    defaults = {"threshold": 0.1}

    def _check_settings(self) -> None:
        if self.depth < 2:
            raise ValueError("FirstBlockCache needs at least 2 blocks")
        if float(self.settings["threshold"]) < 0:
            raise ValueError("threshold must be >= 0")

    def _tag(self) -> str:
        return f"fbc_t{_num(self.settings['threshold'])}"

    def _apply(self) -> None:
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
        from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

        self.hook_names = (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK)
        apply_first_block_cache(
            self.model, FirstBlockCacheConfig(threshold=float(self.settings["threshold"]))
        )


@_register("diffusers_taylorseer")
class TaylorSeerPeer(_DiffusersPeer):
    """diffusers TaylorSeer with explicit identifiers for DiT's ``attn1`` and ``ff``."""

    defaults = {
        "interval": 5,
        "order": 1,
        "warmup": 3,
        "stop": None,
        "modules": ["attn1", "ff"],
        "factors_dtype": "float32",
    }

    def _check_settings(self) -> None:
        s = self.settings
        if int(s["interval"]) < 1 or int(s["order"]) < 0 or int(s["warmup"]) < 0:
            raise ValueError("interval >= 1, order >= 0, warmup >= 0 needed")
        bad = set(s["modules"]) - {"attn1", "ff"}
        if bad or not s["modules"]:
            raise ValueError(f"modules must be a non-empty subset of ['attn1', 'ff'], got {bad}")
        if s["factors_dtype"] not in ("float32", "bfloat16", "float16"):
            raise ValueError("factors_dtype must be float32, bfloat16 or float16")

    def _tag(self) -> str:
        s = self.settings
        tag = f"taylorseer_n{s['interval']}_o{s['order']}_w{s['warmup']}"
        if s["stop"] is not None:
            tag += f"_s{s['stop']}"
        if sorted(s["modules"]) != ["attn1", "ff"]:
            tag += "_" + "+".join(s["modules"])
        return tag

    def _apply(self) -> None:
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
        from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

        s = self.settings
        self.hook_names = (_TAYLORSEER_CACHE_HOOK,)
        modules = "|".join(sorted(s["modules"]))
        apply_taylorseer_cache(
            self.model,
            TaylorSeerCacheConfig(
                cache_interval=int(s["interval"]),
                disable_cache_before_step=int(s["warmup"]),
                disable_cache_after_step=None if s["stop"] is None else int(s["stop"]),
                max_order=int(s["order"]),
                taylor_factors_dtype=getattr(torch, s["factors_dtype"]),
                cache_identifiers=[rf"transformer_blocks\.\d+\.({modules})"],
            ),
        )
        hooked = self._hooked_modules(_TAYLORSEER_CACHE_HOOK)
        if len(hooked) != self.depth * len(s["modules"]):
            raise RuntimeError(f"TaylorSeer hooked {len(hooked)} modules: {hooked}")


@_register("diffusers_pab")
class PABPeer(_DiffusersPeer):
    """diffusers Pyramid Attention Broadcast on DiT's self-attention."""

    defaults = {"skip": 2, "t_range": [100, 800]}

    def _check_settings(self) -> None:
        if int(self.settings["skip"]) < 1 or len(self.settings["t_range"]) != 2:
            raise ValueError("skip >= 1 and t_range = [low, high] needed")

    def _tag(self) -> str:
        lo, hi = self.settings["t_range"]
        return f"pab_s{self.settings['skip']}_t{_num(lo)}-{_num(hi)}"

    def _current_timestep(self) -> float:
        return -math.inf if self.timestep is None else self.timestep

    def _apply(self) -> None:
        from diffusers.hooks import (
            PyramidAttentionBroadcastConfig,
            apply_pyramid_attention_broadcast,
        )
        from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

        self.hook_names = (_PYRAMID_ATTENTION_BROADCAST_HOOK,)
        lo, hi = self.settings["t_range"]
        apply_pyramid_attention_broadcast(
            self.model,
            PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=int(self.settings["skip"]),
                spatial_attention_timestep_skip_range=(lo, hi),
                current_timestep_callback=self._current_timestep,
            ),
        )
        if not self._hooked_modules(_PYRAMID_ATTENTION_BROADCAST_HOOK):
            raise RuntimeError("PyramidAttentionBroadcast hooked no attention module")


def _swap_halves(v: Any) -> Any:
    if torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] % 2 == 0 and v.shape[0] > 0:
        a, b = v.chunk(2)
        return torch.cat([b, a])
    return v


@_register("diffusers_fastercache")
class FasterCachePeer(_DiffusersPeer):
    """diffusers FasterCache (attention reuse + CFG-Cache) on a batched-CFG DiT call."""

    defaults = {
        "attn_skip": 2,
        "attn_t_range": [-1, 681],
        "uncond_skip": 5,
        "uncond_t_range": [-1, 641],
        "attention_weight": 0.5,
        "alpha_low": 1.1,
        "alpha_high": 1.1,
        "lf_t_range": [99, 901],
        "hf_t_range": [-1, 301],
    }
    _batched = ("hidden_states", "timestep", "class_labels")

    def _check_settings(self) -> None:
        s = self.settings
        if int(s["attn_skip"]) < 1 or int(s["uncond_skip"]) < 1:
            raise ValueError("attn_skip >= 1 and uncond_skip >= 1 needed")

    def _tag(self) -> str:
        s = self.settings
        return f"fastercache_a{s['attn_skip']}_u{s['uncond_skip']}"

    def _current_timestep(self) -> float:
        return -math.inf if self.timestep is None else self.timestep

    def _apply(self) -> None:
        from diffusers.hooks import FasterCacheConfig, apply_faster_cache
        from diffusers.hooks.faster_cache import (
            _FASTER_CACHE_BLOCK_HOOK,
            _FASTER_CACHE_DENOISER_HOOK,
        )

        s = self.settings
        self.hook_names = (_FASTER_CACHE_DENOISER_HOOK, _FASTER_CACHE_BLOCK_HOOK)
        weight = float(s["attention_weight"])
        apply_faster_cache(
            self.model,
            FasterCacheConfig(
                spatial_attention_block_skip_range=int(s["attn_skip"]),
                spatial_attention_timestep_skip_range=tuple(s["attn_t_range"]),
                unconditional_batch_skip_range=int(s["uncond_skip"]),
                unconditional_batch_timestep_skip_range=tuple(s["uncond_t_range"]),
                low_frequency_weight_update_timestep_range=tuple(s["lf_t_range"]),
                high_frequency_weight_update_timestep_range=tuple(s["hf_t_range"]),
                alpha_low_frequency=float(s["alpha_low"]),
                alpha_high_frequency=float(s["alpha_high"]),
                attention_weight_callback=lambda _module: weight,
                tensor_format="BCHW",
                is_guidance_distilled=False,
                current_timestep_callback=self._current_timestep,
                _unconditional_conditional_input_kwargs_identifiers=list(self._batched),
            ),
        )

    def _before_call(self, args: tuple, kwargs: dict):
        super()._before_call(args, kwargs)
        x, _ = _call_inputs(args, kwargs)
        n = x.shape[0]
        if n % 2 or not torch.equal(x[: n // 2], x[n // 2 :]):
            raise RuntimeError(
                "FasterCache needs a batched-CFG call ([x; x] with [cond; uncond] labels)"
            )
        # [cond; uncond] -> [uncond; cond], the order FasterCache assumes.
        args = tuple(_swap_halves(a) for a in args)
        kwargs = {k: (_swap_halves(v) if k in self._batched else v) for k, v in kwargs.items()}
        return args, kwargs

    def _after_call(self, output: Any) -> Any:
        if torch.is_tensor(output):
            return _swap_halves(output)
        if isinstance(output, tuple):
            return (_swap_halves(output[0]), *output[1:])
        output.sample = _swap_halves(output.sample)
        return output


@_register("diffusers_magcache")
class MagCachePeer(_DiffusersPeer):
    """diffusers MagCache; :meth:`calibrate` measures the magnitude ratios with one run."""

    defaults = {"threshold": 0.06, "max_skip": 3, "retention": 0.2, "mag_ratios": None}

    def __init__(self, model: nn.Module, num_steps: int, **settings: Any) -> None:
        super().__init__(model, num_steps, **settings)
        ratios = self.settings["mag_ratios"]
        self.mag_ratios: list[float] | None = None if ratios is None else list(ratios)
        self._calibrating = False

    def _check_settings(self) -> None:
        s = self.settings
        if int(s["max_skip"]) < 0 or not 0 <= float(s["retention"]) <= 1:
            raise ValueError("max_skip >= 0 and 0 <= retention <= 1 needed")

    def _tag(self) -> str:
        s = self.settings
        return f"magcache_t{_num(s['threshold'])}_k{s['max_skip']}_r{_num(s['retention'])}"

    def calibrate(self, run: Callable[[], Any]) -> None:
        """One run of ``run()`` with ``MagCacheConfig(calibrate=True)``; stores the per-call
        magnitude ratios in :attr:`mag_ratios` (no block is skipped during it)."""
        from diffusers.hooks.mag_cache import _MAG_CACHE_LEADER_BLOCK_HOOK

        self._calibrating = True
        try:
            with self:
                run()
                hook = self.blocks[0]._diffusers_hook.get_hook(_MAG_CACHE_LEADER_BLOCK_HOOK)
                states = list(hook.state_manager._state_cache.values())
                ratios = [float(r) for r in states[0].calibration_ratios] if states else []
        finally:
            self._calibrating = False
        if len(ratios) != self.num_steps:
            raise RuntimeError(
                f"MagCache calibration saw {len(ratios)} model calls, expected {self.num_steps}"
            )
        self.mag_ratios = ratios

    def _apply(self) -> None:
        from diffusers.hooks import MagCacheConfig, apply_mag_cache
        from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

        s = self.settings
        self.hook_names = (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK)
        if self._calibrating:
            # num_inference_steps one larger than the run: the hook then neither resets its
            # state nor prints at the last call, and the ratios can be read afterwards.
            config = MagCacheConfig(calibrate=True, num_inference_steps=self.num_steps + 1)
        else:
            if self.mag_ratios is None:
                raise RuntimeError(f"{self.name}: call calibrate(run) first or pass mag_ratios")
            config = MagCacheConfig(
                threshold=float(s["threshold"]),
                max_skip_steps=int(s["max_skip"]),
                retention_ratio=float(s["retention"]),
                num_inference_steps=self.num_steps,
                mag_ratios=torch.tensor(self.mag_ratios, dtype=torch.float32),
            )
        apply_mag_cache(self.model, config)


# ---------------------------------------------------------------------------------- cache-dit
@_register("cache_dit_dbcache")
class CacheDitDBCachePeer(Peer):
    """cache-dit DBCache (optionally with the TaylorSeer calibrator) on a transformer-only
    ``BlockAdapter``."""

    prefix = "cache_dit"
    defaults = {
        "Fn": 1,
        "Bn": 0,
        "threshold": 0.08,
        "warmup": 8,
        "max_cached": -1,
        "max_continuous": -1,
        "taylorseer": False,
        "order": 1,
    }

    def _check_settings(self) -> None:
        s = self.settings
        fn, bn = int(s["Fn"]), int(s["Bn"])
        if fn < 1 or bn < 0 or fn + bn >= self.depth:
            raise ValueError(
                f"need Fn >= 1, Bn >= 0 and Fn + Bn < depth ({self.depth}); got Fn={fn} Bn={bn}"
            )
        if int(s["warmup"]) < 0 or int(s["order"]) < 1:
            raise ValueError("warmup >= 0 and order >= 1 needed")

    def _tag(self) -> str:
        s = self.settings
        tag = "dbcache_taylor" if s["taylorseer"] else "dbcache"
        tag += f"_f{s['Fn']}b{s['Bn']}_r{_num(s['threshold'])}_w{s['warmup']}"
        if int(s["max_cached"]) >= 0:
            tag += f"_m{s['max_cached']}"
        if int(s["max_continuous"]) >= 0:
            tag += f"_mc{s['max_continuous']}"
        if s["taylorseer"]:
            tag += f"_o{s['order']}"
        return tag

    def _attach(self) -> None:
        import cache_dit
        from cache_dit import (
            BlockAdapter,
            DBCacheConfig,
            ForwardPattern,
            TaylorSeerCalibratorConfig,
        )
        from cache_dit.caching.patch_functors import DiTPatchFunctor

        s = self.settings
        self._adapter = None
        with _quiet("cache_dit"):
            # Built per run: the adapter applies DiTPatchFunctor when constructed.
            self._adapter = BlockAdapter(
                transformer=self.model,
                blocks=self.blocks,
                forward_pattern=ForwardPattern.Pattern_3,
                patch_functor=DiTPatchFunctor(),
                check_forward_pattern=True,
            )
            calibrator = None
            if s["taylorseer"]:
                calibrator = TaylorSeerCalibratorConfig(
                    taylorseer_order=int(s["order"]), enable_encoder_calibrator=False
                )
            cache_dit.enable_cache(
                self._adapter,
                cache_config=DBCacheConfig(
                    Fn_compute_blocks=int(s["Fn"]),
                    Bn_compute_blocks=int(s["Bn"]),
                    residual_diff_threshold=float(s["threshold"]),
                    max_warmup_steps=int(s["warmup"]),
                    max_cached_steps=int(s["max_cached"]),
                    max_continuous_cached_steps=int(s["max_continuous"]),
                    enable_separate_cfg=False,  # batched CFG: one call per step
                    num_inference_steps=self.num_steps,
                ),
                calibrator_config=calibrator,
            )

    def _library_counts(self) -> dict[str, Any]:
        import cache_dit

        with _quiet("cache_dit"):
            stats = cache_dit.summary(self.model, logging=False)
        if not stats:
            return {}
        st = stats[-1]
        return {
            "cached_steps": len(st.cached_steps),
            "cached_step_indices": [int(i) for i in st.cached_steps],
            "residual_diffs": {str(k): float(v) for k, v in dict(st.residual_diffs).items()},
        }

    def _detach(self) -> None:
        adapter = getattr(self, "_adapter", None)
        if adapter is None:
            return
        import cache_dit

        try:
            with _quiet("cache_dit"):
                cache_dit.disable_cache(adapter)
        finally:
            self._adapter = None


# ---------------------------------------------------------------------------------- TeaCache
@_register("teacache")
class TeaCachePeer(Peer):
    """TeaCache's rule with the raw rel-L1 (no fitted polynomial), implemented here.

    At every model call, block 0's ``norm1`` (adaLN-Zero: ``LN(x)(1 + scale_msa) + shift_msa``)
    is evaluated on the stack input; ``rel = mean|m - m_prev| / mean|m_prev|`` (whole
    ``[cond; uncond]`` batch) is added to an accumulator. The first call of a run, calls from
    ``num_steps - 1`` on, and calls with nothing cached compute fully and zero the accumulator;
    otherwise, if the accumulator is still below ``threshold`` the whole stack is skipped and
    ``x + residual`` returned (``residual`` = last block output - first block input at the last
    computed call), else the stack is computed and the accumulator zeroed. ``m_prev`` is the
    previous call's modulated input whether it was computed or not, as in TeaCache. The output
    head (``norm_out``, ``proj_out_1/2``) always runs with the current timestep and class.
    """

    prefix = "teacache"
    defaults = {"threshold": 0.1}

    def _check_settings(self) -> None:
        if float(self.settings["threshold"]) < 0:
            raise ValueError("threshold must be >= 0")
        for i, b in enumerate(self.blocks):
            if getattr(b, "norm_type", None) != "ada_norm_zero":
                raise TypeError(
                    f"teacache supports DiT blocks (norm_type 'ada_norm_zero'); block {i} has "
                    f"{getattr(b, 'norm_type', None)!r}"
                )

    def _tag(self) -> str:
        return f"rawl1_t{_num(self.settings['threshold'])}"

    def _attach(self) -> None:
        self._acc = 0.0
        self._prev_mod: torch.Tensor | None = None
        self._residual: torch.Tensor | None = None
        self._stack_in: torch.Tensor | None = None
        self._skip = False
        self._sig = inspect.signature(type(self.blocks[0]).forward)
        for i, block in enumerate(self.blocks):
            block.forward = _TeaBlock(self, block, i, block.forward)

    def _detach(self) -> None:
        self._prev_mod = self._residual = self._stack_in = None

    def _decide(self, block: nn.Module, hidden_states: torch.Tensor, args, kwargs) -> bool:
        bound = self._sig.bind(block, hidden_states, *args, **kwargs)
        a = bound.arguments
        mod = block.norm1(
            hidden_states,
            a.get("timestep"),
            a.get("class_labels"),
            hidden_dtype=hidden_states.dtype,
        )[0]
        k = self.call_index
        if k <= 0 or k >= self.num_steps - 1 or self._residual is None or self._prev_mod is None:
            skip = False
        else:
            prev = self._prev_mod
            rel = ((mod - prev).abs().mean() / prev.abs().mean()).item()
            self._acc += rel
            skip = self._acc < float(self.settings["threshold"])
        if not skip:
            self._acc = 0.0
        self._prev_mod = mod
        return skip

    def _block(self, i: int, original, hidden_states: torch.Tensor, args, kwargs):
        block = self.blocks[i]
        if i == 0:
            self._skip = self._decide(block, hidden_states, args, kwargs)
            if self._skip:
                return hidden_states + self._residual
            self._stack_in = hidden_states
        elif self._skip:
            return hidden_states
        out = original(hidden_states, *args, **kwargs)
        if i == self.depth - 1:
            self._residual = out - self._stack_in
            self._stack_in = None
        return out


class _TeaBlock:
    def __init__(self, peer: TeaCachePeer, block: nn.Module, index: int, original) -> None:
        self.peer = peer
        self.index = index
        self.original = original

    def __call__(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        return self.peer._block(self.index, self.original, hidden_states, args, kwargs)
