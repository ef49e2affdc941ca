"""DuCa / ToCa / FORA feature caching attached from outside to a diffusers transformer.

``DuCaCache(model, policy)`` wraps the ``forward`` of every block in ``model.transformer_blocks``
(diffusers ``BasicTransformerBlock``, as built by ``DiTTransformer2DModel`` and
``PixArtTransformer2DModel``) and adds a forward pre-hook to the model; nothing of the model
class is forked and :meth:`DuCaCache.disable` restores the model exactly.

What a block does at each step type (DiT: ``norm_type="ada_norm_zero"``, PixArt:
``"ada_norm_single"``; plain ``"layer_norm"`` blocks work too, without gates):

``full``
    the block's own diffusers ``forward`` runs unchanged; forward hooks on ``attn1``, ``attn2``
    and ``ff`` store their *ungated* outputs (diffusers multiplies ``gate_msa`` / ``gate_mlp``
    in the block forward, after the module call), the attention processor stores the V-norms or
    attention maps the score needs, and the staleness counters are reset.
``conservative``
    re-implemented here: the adaLN parameters are recomputed from the current timestep (and
    class) -- for ``ada_norm_zero`` via ``norm1.emb`` / ``norm1.linear`` without normalising the
    tokens, for ``ada_norm_single`` from ``scale_shift_table + timestep``; then
    ``x += gate_msa * attn_cache``; the cross-attention (PixArt; not gated in diffusers) is
    recomputed for the selected query rows only and scattered into its cache, or reused whole;
    the MLP is recomputed for the selected tokens (``norm3``/``norm2``, shift/scale, ``ff``) and
    scattered into its cache; ``x += gate_mlp * mlp_cache``.
``reuse`` (FORA)
    as conservative with nothing recomputed.
``aggressive``
    every block returns its input untouched and the last one returns the final hidden state
    cached at the last full / conservative step; the model's own output head (DiT: ``norm_out``,
    ``proj_out_1/2`` with the new timestep and class; PixArt: ``scale_shift_table`` with the new
    timestep) runs as usual.

Runs and state: a run is a sequence of model calls. A new run starts (all caches dropped, the
step counter and the random generator reset) at :meth:`reset`, at the first call after
:meth:`enable`, when the timestep goes up from one call to the next (every sampler counts
timesteps down), or when the input shape changes. The step index is the number of model calls
since the run started, so one call per sampler step is assumed (batched CFG, as the diffusers
DiT and PixArt pipelines do). Reading the timestep costs one host sync per call on GPU.

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
  that block computes fully; calls beyond ``num_steps`` are full; cached tensors are detached
  (inference only). ``torch.compile`` was not tried: the step type is a Python decision per
  call, so compile submodules (attention, feed-forward) rather than the whole model.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vislearn.accel.processor import CachingAttnProcessor
from vislearn.accel.schedule import (
    CachePolicy,
    StepPlanner,
    StepType,
    count_step_types,
    fresh_ratio,
    get_policy,
)
from vislearn.accel.selection import (
    attention_column_score,
    cfg_average,
    cross_attention_entropy_score,
    random_score,
    select_tokens,
    spatial_bonus,
    vnorm_score,
)
from vislearn.core.errors import VislearnError

__all__ = ["DuCaCache", "UnsupportedModelError", "find_blocks"]

SUPPORTED_NORMS = ("ada_norm_zero", "ada_norm_single", "layer_norm")
_REPLACEABLE_PROCESSORS = (
    "AttnProcessor2_0",
    "AttnProcessor",
    "XFormersAttnProcessor",
    "AttnProcessorNPU",
    "CachingAttnProcessor",
)
_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class UnsupportedModelError(VislearnError):
    """The model cannot be cached (raised with a one-line reason)."""


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
            "DiTTransformer2DModel, PixArtTransformer2DModel and other diffusers models whose "
            "`transformer_blocks` are BasicTransformerBlock"
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
        if isinstance(vars(b).get("forward"), _BlockForward):
            raise VislearnError("another DuCaCache is enabled on this model; disable it first")
        if "forward" in vars(b):
            raise UnsupportedModelError(
                f"{where} is already wrapped by another hook (e.g. a diffusers cache hook); "
                "remove it first"
            )
    return list(blocks)


@dataclass
class BlockCache:
    """What one block keeps between steps (tensors are ``(B, N, C)`` unless noted)."""

    attn: torch.Tensor | None = None  # ungated self-attention output
    xattn: torch.Tensor | None = None  # cross-attention output
    mlp: torch.Tensor | None = None  # ungated feed-forward output
    vnorm: torch.Tensor | None = None  # (B, H, N) value norms of the last full step
    attn_cols: torch.Tensor | None = None  # (B, N) self-attention column sums (ToCa s1)
    xattn_probs: torch.Tensor | None = None  # (B, N, L) cross-attention map (ToCa s2)
    stale: dict[str, torch.Tensor] = field(default_factory=dict)  # module -> (B, N) int32
    indices: dict[str, torch.Tensor] = field(default_factory=dict)  # last fresh indices

    @property
    def ready(self) -> bool:
        return self.attn is not None and self.mlp is not None


@dataclass
class RunState:
    """The state of one sampling run."""

    num_steps: int | None
    planner: StepPlanner
    blocks: list[BlockCache]
    generator: torch.Generator
    cfg: bool
    grid: tuple[int, int] | None
    shape: tuple[int, ...]
    step: int = -1
    types: tuple[StepType, StepType] = (StepType.FULL, StepType.FULL)
    history: list[StepType] = field(default_factory=list)
    final: torch.Tensor | None = None
    last_timestep: float | None = None
    fresh_tokens: int = 0
    partial_tokens: int = 0


class DuCaCache:
    """Training-free DuCa / ToCa / FORA caching for a diffusers transformer.

    >>> cache = DuCaCache(transformer, policy="duca", interval=3, score="random")
    >>> with cache:                      # enable(); disable() on exit
    ...     images = pipe(...).images    # any scheduler; one model call per step

    Args:
        model: the transformer (``DiTTransformer2DModel``, ``PixArtTransformer2DModel``, ...).
        policy: a preset name (:data:`vislearn.accel.schedule.PRESETS`) or a
            :class:`CachePolicy`; ``**overrides`` replace its fields (``interval=5``, ...).
        num_steps: model calls per run (needed by the ``*_dit`` presets and the ``toca`` ratio
            schedule); alternatively ``scheduler``, whose ``timesteps`` length is read at the
            start of every run.
    """

    def __init__(
        self,
        model: nn.Module,
        policy: str | CachePolicy = "duca",
        *,
        num_steps: int | None = None,
        scheduler: Any = None,
        **overrides: Any,
    ) -> None:
        self.policy: CachePolicy = get_policy(policy, **overrides)
        self.model = model
        self.blocks = find_blocks(model)
        self.depth = len(self.blocks)
        self.num_steps = num_steps
        self.scheduler = scheduler
        self._handles: list[Any] = []
        self._processors: list[tuple[nn.Module, Any]] = []
        self._procs: dict[tuple[int, str], CachingAttnProcessor] = {}
        self._capture: list[dict[str, torch.Tensor | None]] = []
        self._capturing = False
        self._enabled = False
        self._state: RunState | None = None
        self.total_counts: dict[str, int] = count_step_types([])
        p = self.policy
        self._score_source = [
            "cross"
            if (b.attn2 is not None and getattr(b.attn2, "is_cross_attention", False))
            else "self"
            for b in self.blocks
        ]
        self._needs_vnorm = p.score in ("vnorm", "vnorm_high") and p.method in ("toca", "duca")
        self._needs_probs = p.score == "attention" and p.method in ("toca", "duca")

    # ------------------------------------------------------------------ public API
    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def state(self) -> RunState | None:
        """The current run's state (``None`` before the first call of a run)."""
        return self._state

    @property
    def step_history(self) -> list[StepType]:
        """The step types of the current (or last) run so far."""
        return list(self._state.history) if self._state else []

    def counts(self) -> dict[str, int]:
        """Number of calls of each step type in the current (or last) run."""
        return count_step_types(self.step_history)

    def fresh_token_fraction(self) -> float:
        """Fraction of token-module evaluations recomputed on conservative steps of this run."""
        st = self._state
        return st.fresh_tokens / st.partial_tokens if st and st.partial_tokens else 0.0

    def enable(self) -> DuCaCache:
        """Attach the hooks; the next model call starts a new run."""
        if self._enabled:
            return self
        other = _ACTIVE.get(self.model)
        if other is not None and other is not self:
            raise VislearnError("another DuCaCache is enabled on this model; disable it first")
        find_blocks(self.model)  # re-check (e.g. a hook added since construction)
        try:
            self._attach()
        except BaseException:
            self._detach()
            raise
        _ACTIVE[self.model] = self
        self._enabled = True
        self._state = None
        return self

    def disable(self) -> None:
        """Remove every hook and processor; the model is exactly as before."""
        if not self._enabled:
            return
        self._detach()
        if _ACTIVE.get(self.model) is self:
            del _ACTIVE[self.model]
        self._enabled = False
        self._state = None

    def reset(self, num_steps: int | None = None) -> None:
        """Drop all cached tensors; the next call starts a new run (optionally with a new
        ``num_steps``)."""
        if num_steps is not None:
            self.num_steps = num_steps
        self._state = None

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
        self._handles.append(self.model.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        self._capture = [{} for _ in self.blocks]
        for i, block in enumerate(self.blocks):
            for name in ("attn1", "attn2", "ff"):
                mod = getattr(block, name, None)
                if mod is not None:
                    self._handles.append(mod.register_forward_hook(self._capture_hook(i, name)))
            wants = []
            if self._needs_vnorm:
                wants.append("attn1")
            if self._needs_probs:
                wants.append("attn2" if self._score_source[i] == "cross" else "attn1")
            for name in dict.fromkeys(wants):
                attn = getattr(block, name)
                original = attn.processor
                if type(original).__name__ not in _REPLACEABLE_PROCESSORS:
                    raise UnsupportedModelError(
                        f"transformer_blocks[{i}].{name} uses {type(original).__name__}; the "
                        f"{self.policy.score!r} score needs a standard attention processor "
                        "(use score='random' to keep it)"
                    )
                proc = CachingAttnProcessor()
                self._processors.append((attn, original))
                attn.set_processor(proc)
                self._procs[(i, name)] = proc
            block.forward = _BlockForward(self, block, i)

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for attn, original in reversed(self._processors):
            attn.set_processor(original)
        self._processors.clear()
        self._procs.clear()
        for block in self.blocks:
            wrapper = vars(block).get("forward")
            if isinstance(wrapper, _BlockForward) and wrapper.cache is self:
                del block.forward

    def _capture_hook(self, i: int, name: str):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self._capturing:
                self._capture[i][name] = output.detach()

        return hook

    # ------------------------------------------------------------------ run bookkeeping
    def _resolve_num_steps(self) -> int | None:
        if self.num_steps is not None:
            return int(self.num_steps)
        ts = getattr(self.scheduler, "timesteps", None)
        return len(ts) if ts is not None else None

    def _new_run(self, x: torch.Tensor) -> RunState:
        p = self.policy
        num_steps = self._resolve_num_steps()
        cfg = p.cfg
        if cfg == "auto":
            b = x.shape[0]
            cfg = b >= 2 and b % 2 == 0 and torch.equal(x[: b // 2], x[b // 2 :])
        elif cfg and x.shape[0] % 2:
            raise VislearnError(f"cfg=True needs an even batch, got {x.shape[0]}")
        grid = None
        patch = getattr(getattr(self.model, "config", None), "patch_size", None)
        if x.ndim == 4 and isinstance(patch, int) and patch > 0:
            grid = (x.shape[-2] // patch, x.shape[-1] // patch)
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(p.seed))
        return RunState(
            num_steps=num_steps,
            planner=StepPlanner(p, num_steps),
            blocks=[BlockCache() for _ in self.blocks],
            generator=gen,
            cfg=bool(cfg),
            grid=grid,
            shape=tuple(x.shape),
        )

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("hidden_states")
        if not torch.is_tensor(x):
            raise VislearnError("DuCaCache: the model was called without hidden_states")
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        tval = None
        if t is not None:
            tval = float(torch.as_tensor(t).float().max())
        st = self._state
        if (
            st is None
            or tuple(x.shape) != st.shape
            or (tval is not None and st.last_timestep is not None and tval > st.last_timestep)
        ):
            st = self._state = self._new_run(x)
        st.last_timestep = tval
        st.step += 1
        t0, t_rest = st.planner.next()
        if st.final is None:  # nothing cached yet: compute
            t0 = t_rest = StepType.FULL
        st.types = (t0, t_rest)
        st.history.append(t0)
        self.total_counts[t0.value] += 1

    # ------------------------------------------------------------------ block computation
    def _block(self, block: nn.Module, i: int, hidden_states: torch.Tensor, **kw: Any):
        st = self._state
        if st is None:  # block called outside a model forward: behave as the plain block
            return type(block).forward(block, hidden_states, **kw)
        t = st.types[0] if i == 0 else st.types[1]
        bc = st.blocks[i]
        if t is StepType.AGGRESSIVE:
            return st.final if i == self.depth - 1 else hidden_states
        if t is not StepType.FULL and (
            not bc.ready or bc.attn.shape[:2] != hidden_states.shape[:2]
        ):
            t = StepType.FULL
        if t is StepType.FULL:
            out = self._full(block, i, bc, hidden_states, kw)
        else:
            out = self._partial(block, i, bc, t, hidden_states, **kw)
        if i == self.depth - 1:
            st.final = out.detach()
        return out

    def _full(self, block, i: int, bc: BlockCache, h: torch.Tensor, kw: dict) -> torch.Tensor:
        p1, p2 = self._procs.get((i, "attn1")), self._procs.get((i, "attn2"))
        if p1 is not None:
            p1.want_vnorm = self._needs_vnorm
            p1.want_probs = self._needs_probs and self._score_source[i] == "self"
        if p2 is not None:
            p2.want_probs = self._needs_probs
        cap = self._capture[i]
        cap.clear()
        self._capturing = True
        try:
            out = type(block).forward(block, h, **kw)
        finally:
            self._capturing = False
            for p in (p1, p2):
                if p is not None:
                    p.want_vnorm = p.want_probs = False
        bc.attn = cap.get("attn1")
        bc.xattn = cap.get("attn2")
        bc.mlp = cap.get("ff")
        cap.clear()
        if self._needs_vnorm:
            bc.vnorm, p1.vnorm = p1.vnorm, None
        if self._needs_probs:
            if self._score_source[i] == "cross":
                bc.xattn_probs, p2.probs = p2.probs, None
            else:
                bc.attn_cols, p1.probs = p1.probs.sum(dim=1), None
        bc.stale.clear()
        bc.indices.clear()
        return out

    def _partial(
        self,
        block,
        i: int,
        bc: BlockCache,
        t: StepType,
        h: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        cross_attention_kwargs: dict | None = None,
        class_labels: torch.Tensor | None = None,
        added_cond_kwargs: dict | None = None,
    ) -> torch.Tensor:
        cak = dict(cross_attention_kwargs or {})
        if cak.pop("gligen", None) is not None:
            raise VislearnError("DuCaCache does not support GLIGEN inputs")
        gate_msa, shift_mlp, scale_mlp, gate_mlp = _modulation(block, h, timestep, class_labels)
        conservative = t is StepType.CONSERVATIVE

        # self-attention: always reused whole, re-gated with the current gate
        h = _gated(gate_msa, bc.attn) + h
        if h.ndim == 4:
            h = h.squeeze(1)

        # cross-attention (not gated in diffusers)
        if block.attn2 is not None and bc.xattn is not None:
            if (
                conservative
                and self.policy.cross_attention == "partial"
                and encoder_hidden_states is not None
                and self._score_source[i] == "cross"
            ):
                idx = self._select(i, bc, "cross_attn", h)
                if idx.shape[1]:
                    tok = _gather(h, idx)
                    if block.norm_type != "ada_norm_single":
                        tok = block.norm2(tok)
                    p2 = self._procs.get((i, "attn2"))
                    if p2 is not None:
                        p2.want_probs = self._needs_probs
                    try:
                        out = block.attn2(
                            tok,
                            encoder_hidden_states=encoder_hidden_states,
                            attention_mask=encoder_attention_mask,
                            **cak,
                        )
                    finally:
                        if p2 is not None:
                            p2.want_probs = False
                    _scatter_(bc.xattn, idx, out)
                    if p2 is not None and p2.probs is not None:
                        _scatter_(bc.xattn_probs, idx, p2.probs)
                        p2.probs = None
            h = bc.xattn + h

        # feed-forward
        if conservative:
            idx = self._select(i, bc, "mlp", h)
            if idx.shape[1]:
                tok = _gather(h, idx)
                _scatter_(bc.mlp, idx, block.ff(_mlp_input(block, tok, shift_mlp, scale_mlp)))
        h = _gated(gate_mlp, bc.mlp) + h
        if h.ndim == 4:
            h = h.squeeze(1)
        return h

    def _select(self, i: int, bc: BlockCache, module: str, h: torch.Tensor) -> torch.Tensor:
        st, p = self._state, self.policy
        b, n, _ = h.shape
        r = fresh_ratio(p, st.step, st.num_steps, i, self.depth, module)
        k = int(r * n)
        st.fresh_tokens += k
        st.partial_tokens += n
        stale = bc.stale.get(module)
        if stale is None:
            stale = torch.zeros(b, n, dtype=torch.int32, device=h.device)
        if k == 0:
            idx = torch.empty(b, 0, dtype=torch.long, device=h.device)
        else:
            score = self._base_score(i, bc, b, n, h.device)
            if p.staleness_weight:
                score = score + p.staleness_weight * stale.float() / p.interval
            score = spatial_bonus(score, st.grid, int(p.bonus_grid), float(p.bonus_ratio))
            idx = select_tokens(score, k, st.cfg)
        stale = stale + 1
        if k:
            stale.scatter_(1, idx, 0)
        bc.stale[module] = stale
        bc.indices[module] = idx
        return idx

    def _base_score(self, i: int, bc: BlockCache, b: int, n: int, device) -> torch.Tensor:
        st, score = self._state, self.policy.score
        if score == "random":
            return random_score(b, n, st.cfg, st.generator, device)
        if score in ("vnorm", "vnorm_high"):
            v = cfg_average(bc.vnorm) if st.cfg else bc.vnorm
            return vnorm_score(v, high=score == "vnorm_high").to(device)
        if self._score_source[i] == "cross":
            probs = cfg_average(bc.xattn_probs) if st.cfg else bc.xattn_probs
            return cross_attention_entropy_score(probs).to(device)
        cols = cfg_average(bc.attn_cols) if st.cfg else bc.attn_cols
        return attention_column_score(cols).to(device)


class _BlockForward:
    """The replacement ``forward`` of one block (an object, so detach can recognise it)."""

    def __init__(self, cache: DuCaCache, block: nn.Module, index: int) -> None:
        self.cache = cache
        self.block = block
        self.index = index

    def __call__(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        cross_attention_kwargs: dict | None = None,
        class_labels: torch.Tensor | None = None,
        added_cond_kwargs: dict | None = None,
    ) -> torch.Tensor:
        return self.cache._block(
            self.block,
            self.index,
            hidden_states,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            timestep=timestep,
            cross_attention_kwargs=cross_attention_kwargs,
            class_labels=class_labels,
            added_cond_kwargs=added_cond_kwargs,
        )


# ---------------------------------------------------------------------- block helpers
def _modulation(block, h: torch.Tensor, timestep, class_labels):
    """``(gate_msa, shift_mlp, scale_mlp, gate_mlp)`` broadcastable to ``(B, N, C)``, computed
    as diffusers' block forward does, without normalising the tokens."""
    nt = block.norm_type
    if nt == "ada_norm_zero":
        n1 = block.norm1
        emb = n1.linear(n1.silu(n1.emb(timestep, class_labels, hidden_dtype=h.dtype)))
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb.chunk(6, dim=1)
        return gate_msa.unsqueeze(1), shift_mlp[:, None], scale_mlp[:, None], gate_mlp.unsqueeze(1)
    if nt == "ada_norm_single":
        b = h.shape[0]
        params = block.scale_shift_table[None] + timestep.reshape(b, 6, -1)
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = params.chunk(6, dim=1)
        return gate_msa, shift_mlp, scale_mlp, gate_mlp
    return None, None, None, None


def _mlp_input(block, tok: torch.Tensor, shift, scale) -> torch.Tensor:
    nt = block.norm_type
    if nt == "ada_norm_zero":
        return block.norm3(tok) * (1 + scale) + shift
    if nt == "ada_norm_single":
        return block.norm2(tok) * (1 + scale) + shift
    return block.norm3(tok)


def _gated(gate: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if gate is None else gate * x


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _scatter_(dst: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> None:
    dst.scatter_(1, idx.unsqueeze(-1).expand(-1, -1, dst.shape[-1]), src.to(dst.dtype))
