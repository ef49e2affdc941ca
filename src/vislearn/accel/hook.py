"""The block hooks of a cache (as diffusers' hooks: attached from outside, nothing forked).

What a block does at each step type (DiT: ``norm_type="ada_norm_zero"``, PixArt:
``"ada_norm_single"``; plain ``"layer_norm"`` blocks work too, without gates):

``full``
    the block's own diffusers ``forward`` runs unchanged; forward hooks on ``attn1``, ``attn2``
    and ``ff`` store their *ungated* outputs (diffusers multiplies ``gate_msa`` / ``gate_mlp``
    in the block forward, after the module call), the attention processor stores the V-norms or
    attention maps the score needs, and the staleness counters are reset.
``conservative``
    re-implemented here: the adaLN parameters of every block are computed once per call from
    the current timestep (and class) (:mod:`vislearn.accel.modulation`: one embedding, one
    stacked matmul); then ``x += gate_msa * attn_cache`` (one fused ``addcmul``); the
    cross-attention (PixArt; not gated in diffusers) is recomputed for the selected query rows
    only and scattered into its cache, or reused whole; the MLP is recomputed for the selected
    tokens (``norm3``/``norm2``, shift/scale, ``ff``) and scattered into its cache;
    ``x += gate_mlp * mlp_cache``. The selected tokens were chosen for the whole cycle at the
    last full step (:mod:`vislearn.accel.refresh`), so a conservative block only reads them.
``reuse`` (FORA)
    as conservative with nothing recomputed.
``aggressive``
    every block returns its input untouched and the last one returns the final hidden state
    cached at the last full / conservative step; the model's own output head (DiT: ``norm_out``,
    ``proj_out_1/2`` with the new timestep and class; PixArt: ``scale_shift_table`` with the new
    timestep) runs as usual.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vislearn.accel.compiled import CompiledPaths, ff_weights
from vislearn.accel.config import REPLACEABLE_PROCESSORS, CacheConfig, UnsupportedModelError
from vislearn.accel.modulation import Modulation
from vislearn.accel.processor import CachingAttnProcessor
from vislearn.accel.refresh import plan_cycle
from vislearn.accel.schedule import StepType, fresh_ratio
from vislearn.accel.selection import (
    attention_column_score,
    cfg_mix,
    cross_attention_entropy_score,
    random_score,
    select_tokens,
    spatial_bonus,
    vnorm_score,
)
from vislearn.accel.state import BlockCache, RunState
from vislearn.core.errors import VislearnError

__all__ = ["BlockForward", "BlockHooks"]


class BlockHooks:
    """The hooks of one cache on its blocks: forward hooks on ``attn1`` / ``attn2`` / ``ff``
    that capture their ungated outputs on full steps, the recording attention processors, and
    each block's replacement ``forward`` (:class:`BlockForward`), which computes the step type
    planned in :attr:`state` (set by the model's pre-hook in
    :class:`~vislearn.accel.apply.DuCaCache`).
    """

    def __init__(
        self,
        config: CacheConfig,
        blocks: list[nn.Module],
        owner: Any = None,
        compiled: CompiledPaths | None = None,
    ) -> None:
        self.config = config
        self.compiled = compiled  # compile=True: the compiled block paths
        self.plan_ahead = True  # False: choose tokens call by call (reference path, tests)
        self.ff_weights: list[tuple | None] = [None] * len(blocks)
        self.owner = owner  # the DuCaCache these hooks belong to
        self.policy = config.policy
        self.blocks = blocks
        self.depth = len(blocks)
        self.state: RunState | None = None
        self.handles: list[Any] = []
        self.processors: list[tuple[nn.Module, Any]] = []
        self.procs: dict[tuple[int, str], CachingAttnProcessor] = {}
        self.capture: list[dict[str, torch.Tensor | None]] = []
        self.capturing = False
        self.modulation = Modulation(blocks)

    def attach(self) -> None:
        """Register the capture hooks, swap in the recording processors, wrap the forwards."""
        self.modulation.check()
        if self.compiled is not None:
            self.ff_weights = [ff_weights(b) for b in self.blocks]
        self.capture = [{} for _ in self.blocks]
        for i, block in enumerate(self.blocks):
            for name in ("attn1", "attn2", "ff"):
                mod = getattr(block, name, None)
                if mod is not None:
                    self.handles.append(mod.register_forward_hook(self.capture_hook(i, name)))
            wants = []
            if self.config.needs_vnorm:
                wants.append("attn1")
            if self.config.needs_probs:
                wants.append("attn2" if self.config.score_source[i] == "cross" else "attn1")
            for name in dict.fromkeys(wants):
                attn = getattr(block, name)
                original = attn.processor
                if type(original).__name__ not in REPLACEABLE_PROCESSORS:
                    raise UnsupportedModelError(
                        f"transformer_blocks[{i}].{name} uses {type(original).__name__}; the "
                        f"{self.policy.score!r} score needs a standard attention processor "
                        "(use score='random' to keep it)"
                    )
                proc = CachingAttnProcessor()
                self.processors.append((attn, original))
                attn.set_processor(proc)
                self.procs[(i, name)] = proc
            block.forward = BlockForward(self, block, i)

    def detach(self) -> None:
        """Undo :meth:`attach` (also after a partial attach)."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for attn, original in reversed(self.processors):
            attn.set_processor(original)
        self.processors.clear()
        self.procs.clear()
        for block in self.blocks:
            wrapper = vars(block).get("forward")
            if isinstance(wrapper, BlockForward) and wrapper.hooks is self:
                del block.forward

    def capture_hook(self, i: int, name: str):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self.capturing:
                self.capture[i][name] = output.detach()

        return hook

    def forward(self, block: nn.Module, i: int, hidden_states: torch.Tensor, **kw: Any):
        """Block ``i`` at the step type planned for this call."""
        st = self.state
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
            out = self.full(block, i, bc, hidden_states, kw)
        else:
            out = self.partial(block, i, bc, t, hidden_states, **kw)
        if i == self.depth - 1:
            st.final = out.detach()
            if self.compiled is not None and self.compiled.mode_for(out.device) == (
                "reduce-overhead"
            ):
                st.final = st.final.clone()  # out of the CUDA graph pool
            if st.refreshed:
                self.refresh(out)
        return out

    def full(self, block, i: int, bc: BlockCache, h: torch.Tensor, kw: dict) -> torch.Tensor:
        """The block's own forward, capturing its module outputs and scores into ``bc``."""
        p1, p2 = self.procs.get((i, "attn1")), self.procs.get((i, "attn2"))
        if p1 is not None:
            p1.want_vnorm = self.config.needs_vnorm
            p1.want_probs = self.config.needs_probs and self.config.score_source[i] == "self"
        if p2 is not None:
            p2.want_probs = self.config.needs_probs
        cap = self.capture[i]
        cap.clear()
        self.capturing = True
        try:
            out = type(block).forward(block, h, **kw)
        finally:
            self.capturing = False
            for p in (p1, p2):
                if p is not None:
                    p.want_vnorm = p.want_probs = False
        bc.attn = cap.get("attn1")
        bc.xattn = cap.get("attn2")
        bc.mlp = cap.get("ff")
        cap.clear()
        if self.config.needs_vnorm:
            bc.vnorm, p1.vnorm = p1.vnorm, None
        if self.config.needs_probs:
            if self.config.score_source[i] == "cross":
                bc.xattn_probs, p2.probs = p2.probs, None
            else:
                bc.attn_cols, p1.probs = p1.probs.sum(dim=1), None
        bc.stale.clear()
        bc.indices.clear()
        if self.state is not None:
            self.state.refreshed.append(i)
        return out

    def partial(
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
        """A conservative or reuse step from the caches in ``bc``."""
        cak = dict(cross_attention_kwargs or {})
        if cak.pop("gligen", None) is not None:
            raise VislearnError("DuCaCache does not support GLIGEN inputs")
        st = self.state
        if st.modulation is None:  # every block's adaLN parameters, once per call
            st.modulation = self.modulation(h, timestep, class_labels)
        gate_msa, shift_mlp, scale_mlp, gate_mlp = st.modulation[i]
        conservative = t is StepType.CONSERVATIVE
        w = self.ff_weights[i]
        if w is not None and bc.xattn is None and gate_msa is not None:  # compile=True
            h = h if h.is_contiguous() else h.contiguous()
            if conservative:
                _, rows = self.indices(i, bc, "mlp", h)
                if rows.numel():
                    h, bc.mlp = self.compiled.conservative(
                        h, gate_msa, bc.attn, rows, shift_mlp, scale_mlp, gate_mlp, bc.mlp, w
                    )
                    return h
            return self.compiled.reuse(h, gate_msa, bc.attn, gate_mlp, bc.mlp)

        # self-attention: always reused whole, re-gated with the current gate. The patch
        # embedding leaves the tokens channel-major: one copy here keeps every later block's
        # row gathers free of copies.
        h = _gated_add(h if h.is_contiguous() else h.contiguous(), gate_msa, bc.attn)
        if h.ndim == 4:
            h = h.squeeze(1)

        # cross-attention (not gated in diffusers)
        if block.attn2 is not None and bc.xattn is not None:
            if (
                conservative
                and self.policy.cross_attention == "partial"
                and encoder_hidden_states is not None
                and self.config.score_source[i] == "cross"
            ):
                idx, _ = self.indices(i, bc, "cross_attn", h)
                if idx.shape[1]:
                    tok = _gather(h, idx)
                    if block.norm_type != "ada_norm_single":
                        tok = block.norm2(tok)
                    p2 = self.procs.get((i, "attn2"))
                    if p2 is not None:
                        p2.want_probs = self.config.needs_probs
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
            _, rows = self.indices(i, bc, "mlp", h)
            if rows.numel():
                c = h.shape[-1]
                tok = h.reshape(-1, c).index_select(0, rows)
                out = _mlp_rows(block, tok.view(-1, h.shape[0], c), shift_mlp, scale_mlp)
                bc.mlp.view(-1, c).index_copy_(0, rows, out.to(bc.mlp.dtype))
        h = _gated_add(h, gate_mlp, bc.mlp)
        if h.ndim == 4:
            h = h.squeeze(1)
        return h

    def indices(self, i: int, bc: BlockCache, module: str, h: torch.Tensor):
        """The fresh tokens of ``module`` in this call, ``(B, k)`` token indices and ``(k B,)``
        row indices into the flattened ``(B N, C)`` hidden states: chosen at the last refresh
        (:func:`~vislearn.accel.refresh.plan_cycle`), else now (:meth:`select`)."""
        st = self.state
        sel = st.sel.get((st.step, i, module)) if bc.planned else None
        if sel is None:
            idx = self.select(i, bc, module, h)
            b, n = h.shape[0], h.shape[1]
            offs = torch.arange(b, device=h.device).mul_(n).view(b, 1)
            return idx, (idx + offs).t().reshape(-1)
        st.fresh_tokens += sel[0].shape[1]
        st.partial_tokens += h.shape[1]
        bc.indices[module] = sel[0]
        return sel

    def refresh(self, h: torch.Tensor) -> None:
        """After a call in which blocks were computed fully: choose their tokens for the cycle."""
        st = self.state
        st.sel = {k: v for k, v in st.sel.items() if k[0] > st.step}
        if self.plan_ahead and self.policy.method in ("toca", "duca"):
            plan_cycle(self.config, st, list(st.refreshed), h.shape[1], h.shape[0], h.device)
        for i in st.refreshed if not self.plan_ahead else ():
            st.blocks[i].planned = False
        st.refreshed.clear()

    def select(self, i: int, bc: BlockCache, module: str, h: torch.Tensor) -> torch.Tensor:
        """Indices ``(B, k)`` of the tokens ``module`` recomputes, chosen in this call;
        updates staleness."""
        st, p = self.state, self.policy
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
            score = self.base_score(i, bc, b, n, h.device)
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

    def base_score(self, i: int, bc: BlockCache, b: int, n: int, device) -> torch.Tensor:
        """The policy's token score ``(B, N)`` before staleness and spatial bonus."""
        st, score = self.state, self.policy.score
        if score == "random":
            return random_score(b, n, st.cfg, st.generator, device)
        if score in ("vnorm", "vnorm_high"):
            v = cfg_mix(bc.vnorm, st.cfg)
            return vnorm_score(v, high=score == "vnorm_high").to(device)
        if self.config.score_source[i] == "cross":
            probs = cfg_mix(bc.xattn_probs, st.cfg)
            return cross_attention_entropy_score(probs).to(device)
        cols = cfg_mix(bc.attn_cols, st.cfg)
        return attention_column_score(cols).to(device)


class BlockForward:
    """The replacement ``forward`` of one block (an object, so detach can recognise it)."""

    def __init__(self, hooks: BlockHooks, block: nn.Module, index: int) -> None:
        self.hooks = hooks
        self.block = block
        self.index = index

    @property
    def cache(self) -> Any:
        """The :class:`~vislearn.accel.apply.DuCaCache` this forward belongs to."""
        return self.hooks.owner

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
        return self.hooks.forward(
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
def _mlp_rows(block, tok: torch.Tensor, shift, scale1) -> torch.Tensor:
    """The block's feed-forward on gathered tokens laid out ``(k, B, C)`` (``shift``,
    ``scale1 = 1 + scale``: ``(B, 1, C)``), returned as ``(k B, C)`` rows."""
    nt = block.norm_type
    if nt in ("ada_norm_zero", "ada_norm_single"):
        # (1, B, C) views whose leading stride is the largest: the addcmul output is laid out
        # like ``tok`` (a transposed view would make it non-contiguous, and ``ff`` copy it)
        shift, scale1 = shift[:, 0].unsqueeze(0), scale1[:, 0].unsqueeze(0)
        normed = block.norm3(tok) if nt == "ada_norm_zero" else block.norm2(tok)
        x = torch.addcmul(shift, normed, scale1)
    else:
        x = block.norm3(tok)
    return block.ff(x.reshape(-1, x.shape[-1]))


def _gated_add(h: torch.Tensor, gate: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``h + gate * x`` as one fused op (``h + x`` without a gate)."""
    return h + x if gate is None else torch.addcmul(h, gate, x)


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _scatter_(dst: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> None:
    dst.scatter_(1, idx.unsqueeze(-1).expand(-1, -1, dst.shape[-1]), src.to(dst.dtype))
