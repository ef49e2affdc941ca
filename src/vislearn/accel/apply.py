"""DuCa / ToCa / FORA feature caching attached from outside to a diffusers transformer.

``DuCaCache(model, policy)`` wraps the ``forward`` of every block in ``model.transformer_blocks``
(diffusers ``BasicTransformerBlock``, as built by ``DiTTransformer2DModel`` and
``PixArtTransformer2DModel``) and adds a forward pre-hook to the model; nothing of the model
class is forked and :meth:`DuCaCache.disable` restores the model exactly.

The pieces, as diffusers' hooks are laid out: :mod:`vislearn.accel.config` (the fixed settings),
:mod:`vislearn.accel.state` (per-run state), :mod:`vislearn.accel.hook` (the block hooks and the
step types), and here :class:`DuCaCache` (enable / disable, the model pre-hook that starts runs
and plans steps) and :func:`find_blocks`.

Choices where the notes leave room (to be copied into ``docs/RESULTS.md``):

* Scores read on the last full step: ``vnorm`` from the *self*-attention values (as all three
  released models), ``attention`` from the self-attention map on blocks without
  cross-attention (s1, DiT) and from the cross-attention map on blocks with it (s2, PixArt;
  its rows are refreshed when cross-attention rows are recomputed). Only ``attention`` needs
  explicit softmax attention (ToCa's cost); it makes full steps equal to the plain model up to
  float rounding instead of bit for bit.
* CFG: cond and uncond halves always choose the same tokens (the released DiT code lets each
  half choose for itself with ``kv-norm`` / ``attention``); see ``selection``.
* Token choice per module and block, staleness counted per module (``cross_attn``, ``mlp``),
  reset on full steps, ``+1`` for every token on each conservative step and ``0`` for the
  chosen ones (``cache_cutfresh``).
* The final hidden state is cached at full, conservative and reuse steps (the released code
  stores it after every pass of the last block). If a non-full step finds no cache for a block,
  that block computes fully; after ``num_steps`` calls (or the scheduler's number of
  timesteps) the next call starts a new run; cached tensors are detached (inference only).
* No call reads a device tensor on the host (no sync, nothing that blocks graph capture): runs
  are delimited by ``reset``, call counting (``num_steps`` / ``scheduler``), a new
  ``scheduler.timesteps`` or a new input shape; see :mod:`vislearn.accel.state`.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from vislearn.accel.compiled import CompiledPaths
from vislearn.accel.config import (
    SUPPORTED_NORMS,
    CacheConfig,
    UnsupportedModelError,
    resolve_num_steps,
)
from vislearn.accel.flux import FluxBlockForward, FluxHooks, find_flux_blocks, is_flux
from vislearn.accel.hook import BlockForward, BlockHooks
from vislearn.accel.schedule import CachePolicy, StepType, count_step_types, get_policy
from vislearn.accel.state import RunState, new_run
from vislearn.core.errors import VislearnError

__all__ = ["DuCaCache", "UnsupportedModelError", "find_blocks"]

_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The cacheable blocks of ``model``, or :class:`UnsupportedModelError` naming what is
    missing."""
    try:
        from diffusers.models.attention import BasicTransformerBlock
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise VislearnError("feature caching needs diffusers: pip install 'vislearn[dit]'") from exc
    name = type(model).__name__
    blocks = getattr(model, "transformer_blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise UnsupportedModelError(
            f"{name} has no `transformer_blocks` ModuleList; DuCaCache supports "
            "DiTTransformer2DModel, PixArtTransformer2DModel, FluxTransformer2DModel and other "
            "diffusers models whose `transformer_blocks` are BasicTransformerBlock"
        )
    for i, b in enumerate(blocks):
        where = f"{name}.transformer_blocks[{i}]"
        if not isinstance(b, BasicTransformerBlock):
            raise UnsupportedModelError(
                f"{where} is a {type(b).__name__}, not a diffusers BasicTransformerBlock"
            )
        if b.norm_type not in SUPPORTED_NORMS:
            raise UnsupportedModelError(
                f"{where} uses norm_type={b.norm_type!r}; supported: {', '.join(SUPPORTED_NORMS)}"
            )
        if b.pos_embed is not None or hasattr(b, "fuser"):
            raise UnsupportedModelError(
                f"{where} has per-block positional embeddings or a GLIGEN fuser (not supported)"
            )
        if getattr(b, "_chunk_size", None) is not None:
            raise UnsupportedModelError(
                f"{where} uses chunked feed-forward; call set_chunk_feed_forward(None) first"
            )
        if isinstance(vars(b).get("forward"), BlockForward):
            raise VislearnError("another DuCaCache is enabled on this model; disable it first")
        if "forward" in vars(b):
            raise UnsupportedModelError(
                f"{where} is already wrapped by another hook (e.g. a diffusers cache hook); "
                "remove it first"
            )
    return list(blocks)


def _check_free(model: nn.Module) -> None:
    for b in [*model.transformer_blocks, *model.single_transformer_blocks]:
        if isinstance(vars(b).get("forward"), FluxBlockForward):
            raise VislearnError("another DuCaCache is enabled on this model; disable it first")


class DuCaCache:
    """Training-free DuCa / ToCa / FORA caching for a diffusers transformer.

    >>> cache = DuCaCache(transformer, policy="duca", interval=3, score="random")
    >>> with cache:                      # enable(); disable() on exit
    ...     images = pipe(...).images    # any scheduler; one model call per step

    Args:
        model: the transformer (``DiTTransformer2DModel``, ``PixArtTransformer2DModel``, ...;
            ``FluxTransformer2DModel`` through :mod:`vislearn.accel.flux`).
        policy: a preset name (:data:`vislearn.accel.schedule.PRESETS`) or a
            :class:`CachePolicy`; ``**overrides`` replace its fields (``interval=5``, ...).
        num_steps: model calls per run (needed by the ``*_dit`` presets and the ``toca`` ratio
            schedule); better ``scheduler``, whose ``timesteps`` length (one model call per
            entry: 2 N - 1 for a Heun run of N steps) is read at the start of every run and
            takes precedence.
        compile: run the conservative and reuse block paths through ``torch.compile``
            (:mod:`vislearn.accel.compiled`; ``compile_mode`` defaults to
            ``"reduce-overhead"``, i.e. CUDA graphs, on CUDA and ``"default"`` elsewhere;
            ``compile_backend`` is passed on). The first calls of each step type compile.
    """

    def __init__(
        self,
        model: nn.Module,
        policy: str | CachePolicy = "duca",
        *,
        num_steps: int | None = None,
        scheduler: Any = None,
        compile: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
        **overrides: Any,
    ) -> None:
        self.policy: CachePolicy = get_policy(policy, **overrides)
        self.model = model
        self.num_steps = num_steps
        self.scheduler = scheduler
        self.hooks: BlockHooks | FluxHooks
        if is_flux(model):
            _check_free(model)
            double, single = find_flux_blocks(model)
            self.blocks = double + single
            self.config = CacheConfig.build(self.policy, self.blocks)
            self.hooks = FluxHooks(self.config, double, single, owner=self)
        else:
            self.blocks = find_blocks(model)
            self.config = CacheConfig.build(self.policy, self.blocks)
            compiled = CompiledPaths(compile_mode, compile_backend) if compile else None
            self.hooks = BlockHooks(self.config, self.blocks, owner=self, compiled=compiled)
        self.depth = len(self.blocks)
        self._pre_handle: Any = None
        self._enabled = False
        self.total_counts: dict[str, int] = count_step_types([])

    # ------------------------------------------------------------------ public API
    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def state(self) -> RunState | None:
        """The current run's state (``None`` before the first call of a run)."""
        return self.hooks.state

    @property
    def step_history(self) -> list[StepType]:
        """The step types of the current (or last) run so far."""
        return list(self.hooks.state.history) if self.hooks.state else []

    def counts(self) -> dict[str, int]:
        """Number of calls of each step type in the current (or last) run."""
        return count_step_types(self.step_history)

    def fresh_token_fraction(self) -> float:
        """Fraction of token-module evaluations recomputed on conservative steps of this run."""
        st = self.hooks.state
        return st.fresh_tokens / st.partial_tokens if st and st.partial_tokens else 0.0

    def enable(self) -> DuCaCache:
        """Attach the hooks; the next model call starts a new run."""
        if self._enabled:
            return self
        other = _ACTIVE.get(self.model)
        if other is not None and other is not self:
            raise VislearnError("another DuCaCache is enabled on this model; disable it first")
        if is_flux(self.model):  # re-check (e.g. a hook added since construction)
            _check_free(self.model)
            find_flux_blocks(self.model)
        else:
            find_blocks(self.model)
        try:
            self._attach()
        except BaseException:
            self._detach()
            raise
        _ACTIVE[self.model] = self
        self._enabled = True
        self.hooks.state = None
        return self

    def disable(self) -> None:
        """Remove every hook and processor; the model is exactly as before."""
        if not self._enabled:
            return
        self._detach()
        if _ACTIVE.get(self.model) is self:
            del _ACTIVE[self.model]
        self._enabled = False
        self.hooks.state = None

    def reset(self, num_steps: int | None = None) -> None:
        """Drop all cached tensors; the next call starts a new run (optionally with a new
        ``num_steps``)."""
        if num_steps is not None:
            self.num_steps = num_steps
        self.hooks.state = None

    def __enter__(self) -> DuCaCache:
        return self.enable()

    def __exit__(self, *exc: Any) -> None:
        self.disable()

    def __repr__(self) -> str:
        p = self.policy
        return (
            f"DuCaCache({type(self.model).__name__}, method={p.method}, interval={p.interval}, "
            f"score={p.score}, depth={self.depth}, enabled={self._enabled})"
        )

    # ------------------------------------------------------------------ attach / detach
    def _attach(self) -> None:
        self._pre_handle = self.model.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        self.hooks.attach()

    def _detach(self) -> None:
        if self._pre_handle is not None:
            self._pre_handle.remove()
            self._pre_handle = None
        self.hooks.detach()

    # ------------------------------------------------------------------ run bookkeeping
    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("hidden_states")
        if not torch.is_tensor(x):
            raise VislearnError("DuCaCache: the model was called without hidden_states")
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        st = self.hooks.state
        if st is None or self._new_run(st, x, t):
            num_steps = resolve_num_steps(self.num_steps, self.scheduler)
            st = self.hooks.state = new_run(self.config, self.model, num_steps, x)
            st.timesteps = getattr(self.scheduler, "timesteps", None)
            if self.policy.method != "none":
                self.hooks.modulation.prepare()
        if st.num_steps is None:
            st.last_timestep = _host_timestep(t)
        st.step += 1
        st.modulation = None
        t0, t_rest = st.planner.next()
        if st.final is None:  # nothing cached yet: compute
            t0 = t_rest = StepType.FULL
        st.types = (t0, t_rest)
        st.history.append(t0)
        self.total_counts[t0.value] += 1

    def _new_run(self, st: RunState, x: torch.Tensor, t: Any) -> bool:
        """Whether this call starts a new run; reads no device tensor (no host sync)."""
        if tuple(x.shape) != st.shape:
            return True
        if st.num_steps is not None:
            return st.step + 1 >= st.num_steps
        if self.scheduler is not None and getattr(self.scheduler, "timesteps", None) is not (
            st.timesteps
        ):
            return True
        tval = _host_timestep(t)
        return tval is not None and st.last_timestep is not None and tval > st.last_timestep


def _host_timestep(t: Any) -> float | None:
    """The largest timestep if it is held on the host (a number, or a CPU tensor), else None:
    a device tensor is never read (that would be a host sync)."""
    if t is None:
        return None
    if isinstance(t, int | float):
        return float(t)
    if torch.is_tensor(t) and t.device.type == "cpu":
        return float(t.float().max()) if t.numel() else None
    return None
