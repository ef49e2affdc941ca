"""DuCa / ToCa / FORA caching on diffusers' ``FluxTransformer2DModel`` (FLUX.1).

The released DuCa code also accelerates FLUX.1 (Zou et al., "Accelerating Diffusion
Transformers with Dual Feature Caching", arXiv:2412.18911). FLUX has two kinds of blocks,
cached here in the spirit of the DiT/PixArt hooks (:mod:`vislearn.accel.hook`), step types and
token choice shared with them (:mod:`vislearn.accel.schedule`, :mod:`vislearn.accel.refresh`):

double-stream ``FluxTransformerBlock`` (image and text streams, joint attention)
    ``full``: the block's own forward; forward hooks keep the ungated attention outputs of both
    streams and the ungated feed-forward outputs (``ff``, ``ff_context``). ``conservative``:
    both attention outputs reused whole and re-gated, the image feed-forward recomputed for the
    selected image tokens, the text feed-forward reused (the text stream is short and its
    tokens are not scored). ``reuse``: everything re-gated.
single-stream ``FluxSingleTransformerBlock`` (text + image tokens concatenated)
    ``out = x + gate * proj_out([attn(x'), gelu(proj_mlp(x'))])``. ``full``: own forward,
    keeping the attention output and the ungated ``proj_out`` output ``P``. ``conservative``:
    for the selected tokens ``P`` is recomputed from the cached attention output and a fresh
    MLP branch; ``reuse``: ``P`` re-gated.
``aggressive``
    every block hands its inputs on, the last single block the cached final pair of streams.

The adaLN parameters of all blocks come from one ``silu(temb)`` (FLUX embeds timestep,
guidance and pooled text once per call already) and two stacked matmuls (double, single).
Scores: ``vnorm`` (value norms read from ``attn.to_v`` on full steps: image tokens in double
blocks, all tokens in single blocks) or ``random``; the attention-map score and the spatial
bonus over the text + image sequence are not available. Not compiled (``compile=True`` is
ignored for FLUX).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vislearn.accel.config import CacheConfig, UnsupportedModelError
from vislearn.accel.refresh import plan_cycle
from vislearn.accel.schedule import StepType
from vislearn.accel.state import BlockCache, RunState

__all__ = ["FluxHooks", "find_flux_blocks", "is_flux"]


def is_flux(model: nn.Module) -> bool:
    return isinstance(getattr(model, "single_transformer_blocks", None), nn.ModuleList)


def find_flux_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """``(double-stream blocks, single-stream blocks)`` of a diffusers FLUX transformer."""
    double, single = model.transformer_blocks, model.single_transformer_blocks
    for name, blocks, cls in (
        ("transformer_blocks", double, "FluxTransformerBlock"),
        ("single_transformer_blocks", single, "FluxSingleTransformerBlock"),
    ):
        for i, b in enumerate(blocks):
            if type(b).__name__ != cls:
                raise UnsupportedModelError(f"{name}[{i}] is a {type(b).__name__}, not a {cls}")
            if "forward" in vars(b):
                raise UnsupportedModelError(
                    f"{name}[{i}] is already wrapped (another DuCaCache or a diffusers hook)"
                )
    if len(double) + len(single) == 0:
        raise UnsupportedModelError("the FLUX model has no blocks")
    return list(double), list(single)


def _stack(rows: list[list[tuple[nn.Linear, int, int, bool]]]) -> tuple[torch.Tensor, ...]:
    """Weights ``(D, R, C)`` and biases ``(D, 1, R)`` of the chosen row ranges of each block's
    linears; ranges marked ``True`` get ``+1`` on the bias (``1 + scale``)."""
    ws, bs = [], []
    for parts in rows:
        ws.append(torch.cat([lin.weight[a:b] for lin, a, b, _ in parts]))
        bs.append(torch.cat([lin.bias[a:b] + (1 if one else 0) for lin, a, b, one in parts]))
    return torch.stack(ws), torch.stack(bs)[:, None]


class FluxModulation:
    """Per call, every block's gates / shifts / ``1 + scale`` from one ``silu(temb)``."""

    def __init__(self, double: list[nn.Module], single: list[nn.Module]) -> None:
        self.double, self.single = double, single
        self.stacks: tuple | None = None

    def prepare(self) -> None:
        with torch.no_grad():
            d = s = None
            if self.double:
                c = self.double[0].norm1.linear.in_features
                d = _stack(
                    [
                        [
                            (b.norm1.linear, 2 * c, 4 * c, False),  # gate_msa, shift_mlp
                            (b.norm1.linear, 4 * c, 5 * c, True),  # 1 + scale_mlp
                            (b.norm1.linear, 5 * c, 6 * c, False),  # gate_mlp
                            (b.norm1_context.linear, 2 * c, 3 * c, False),  # c_gate_msa
                            (b.norm1_context.linear, 5 * c, 6 * c, False),  # c_gate_mlp
                        ]
                        for b in self.double
                    ]
                )
            if self.single:
                c = self.single[0].norm.linear.in_features
                s = _stack(
                    [
                        [
                            (b.norm.linear, 0, c, False),  # shift
                            (b.norm.linear, c, 2 * c, True),  # 1 + scale
                            (b.norm.linear, 2 * c, 3 * c, False),  # gate
                        ]
                        for b in self.single
                    ]
                )
            self.stacks = (d, s)

    def __call__(self, temb: torch.Tensor) -> list:
        d, s = self.stacks
        out: list = []
        for stack, parts in ((d, 6), (s, 3)):
            if stack is None:
                continue
            w, b = stack
            e = torch.nn.functional.silu(temb).to(w.dtype)
            m = torch.baddbmm(b, e.expand(w.shape[0], *e.shape), w.transpose(1, 2))
            m = m.view(w.shape[0], m.shape[1], parts, -1)
            out += [tuple(x[:, None, j] for j in range(parts)) for x in m.unbind(0)]
        return out


class FluxHooks:
    """Block hooks of a :class:`~vislearn.accel.apply.DuCaCache` on a FLUX transformer (the
    interface of :class:`vislearn.accel.hook.BlockHooks`)."""

    def __init__(self, config: CacheConfig, double: list, single: list, owner: Any = None):
        self.config, self.owner, self.policy = config, owner, config.policy
        self.n_double = len(double)
        self.blocks = double + single
        self.depth = len(self.blocks)
        self.state: RunState | None = None
        self.handles: list[Any] = []
        self.capture: list[dict[str, Any]] = []
        self.capturing = False
        self.modulation = FluxModulation(double, single)
        if config.needs_probs:
            raise UnsupportedModelError(
                "score='attention' needs attention maps, which FLUX's fused attention does not "
                "give; use score='vnorm' or 'random'"
            )

    def attach(self) -> None:
        self.capture = [{} for _ in self.blocks]
        for i, block in enumerate(self.blocks):
            double = i < self.n_double
            names = ("attn", "ff", "ff_context") if double else ("attn", "proj_out")
            for name in names:
                mod = getattr(block, name)
                self.handles.append(mod.register_forward_hook(self._hook(i, name)))
            if self.config.needs_vnorm:
                if getattr(block.attn, "fused_projections", False):
                    raise UnsupportedModelError(
                        "the vnorm score reads attn.to_v; unfuse the QKV projections first"
                    )
                h = block.attn.to_v.register_forward_hook(self._hook(i, "v"))
                self.handles.append(h)
            block.forward = FluxBlockForward(self, block, i)

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for block in self.blocks:
            wrapper = vars(block).get("forward")
            if isinstance(wrapper, FluxBlockForward) and wrapper.hooks is self:
                del block.forward

    def _hook(self, i: int, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.capturing:
                self.capture[i][name] = output

        return hook

    # ------------------------------------------------------------------ per block
    def forward(self, block, i: int, hidden_states, encoder_hidden_states, temb, **kw):
        st = self.state
        own = type(block).forward
        if st is None:
            return own(block, hidden_states, encoder_hidden_states, temb, **kw)
        t = st.types[0] if i == 0 else st.types[1]
        bc = st.blocks[i]
        if t is StepType.AGGRESSIVE:
            return st.final if i == self.depth - 1 else (encoder_hidden_states, hidden_states)
        if t is not StepType.FULL and (
            not bc.ready or bc.attn.shape[0] != hidden_states.shape[0] or bc.ctx_len is None
        ):
            t = StepType.FULL
        if t is StepType.FULL:
            out = self.full(block, i, bc, hidden_states, encoder_hidden_states, temb, kw)
        else:
            if st.modulation is None:
                st.modulation = self.modulation(temb)
            x, enc = hidden_states, encoder_hidden_states
            cons = t is StepType.CONSERVATIVE
            out = (
                self.double(i, bc, x, enc, cons)
                if i < self.n_double
                else self.single(block, i, bc, x, enc, cons)
            )
        if i == self.depth - 1:
            st.final = (out[0].detach(), out[1].detach())
            if st.refreshed:
                self.refresh(out[1].shape[0], out[1].device)
        return out

    def full(self, block, i, bc: BlockCache, x, enc, temb, kw):
        cap = self.capture[i]
        cap.clear()
        self.capturing = True
        try:
            out = type(block).forward(block, x, enc, temb, **kw)
        finally:
            self.capturing = False
        attn = cap.get("attn")
        if i < self.n_double:
            bc.attn, bc.xattn = attn[0].detach(), attn[1].detach()
            bc.mlp, bc.ctx_mlp = cap["ff"].detach(), cap["ff_context"].detach()
        else:
            bc.attn, bc.mlp = attn.detach(), cap["proj_out"].detach()
        bc.ctx_len = enc.shape[1]
        v = cap.get("v")
        if v is not None:
            b, n, c = v.shape
            heads = block.attn.heads
            bc.vnorm = torch.linalg.vector_norm(v.detach().float().view(b, n, heads, -1), dim=-1)
            bc.vnorm = bc.vnorm.transpose(1, 2)
        cap.clear()
        bc.stale.clear()
        bc.indices.clear()
        self.state.refreshed.append(i)
        return out

    def rows(self, i: int, bc: BlockCache) -> torch.Tensor | None:
        st = self.state
        sel = st.sel.get((st.step, i, "mlp")) if bc.planned else None
        if sel is None:
            return None
        st.fresh_tokens += sel[0].shape[1]
        st.partial_tokens += bc.mlp.shape[1]
        bc.indices["mlp"] = sel[0]
        return sel[1] if sel[1].numel() else None

    def double(self, i: int, bc: BlockCache, x, enc, conservative: bool):
        g_msa, shift, scale1, g_mlp, c_g_msa, c_g_mlp = self.state.modulation[i]
        block = self.blocks[i]
        x = torch.addcmul(x if x.is_contiguous() else x.contiguous(), g_msa, bc.attn)
        rows = self.rows(i, bc) if conservative else None
        if rows is not None:
            c = x.shape[-1]
            tok = x.reshape(-1, c).index_select(0, rows).view(-1, x.shape[0], c)
            y = torch.addcmul(shift[:, 0][None], block.norm2(tok), scale1[:, 0][None])
            bc.mlp.view(-1, c).index_copy_(0, rows, block.ff(y.reshape(-1, c)).to(bc.mlp.dtype))
        x = torch.addcmul(x, g_mlp, bc.mlp)
        enc = torch.addcmul(torch.addcmul(enc, c_g_msa, bc.xattn), c_g_mlp, bc.ctx_mlp)
        if enc.dtype == torch.float16:
            enc = enc.clip(-65504, 65504)
        return enc, x

    def single(self, block, i: int, bc: BlockCache, x, enc, conservative: bool):
        shift, scale1, gate = self.state.modulation[i]
        text = enc.shape[1]
        h = torch.cat([enc, x], dim=1)
        rows = self.rows(i, bc) if conservative else None
        if rows is not None:
            c = h.shape[-1]
            tok = h.reshape(-1, c).index_select(0, rows).view(-1, h.shape[0], c)
            y = torch.addcmul(shift[:, 0][None], block.norm.norm(tok), scale1[:, 0][None])
            mlp = block.act_mlp(block.proj_mlp(y.reshape(-1, c)))
            attn = bc.attn.reshape(-1, c).index_select(0, rows)
            p = block.proj_out(torch.cat([attn, mlp], dim=1))
            bc.mlp.view(-1, c).index_copy_(0, rows, p.to(bc.mlp.dtype))
        h = torch.addcmul(h, gate, bc.mlp)
        if h.dtype == torch.float16:
            h = h.clip(-65504, 65504)
        return h[:, :text], h[:, text:]

    def refresh(self, batch: int, device) -> None:
        st = self.state
        st.sel = {k: v for k, v in st.sel.items() if k[0] > st.step}
        if self.policy.method in ("toca", "duca"):
            for blocks in (
                [i for i in st.refreshed if i < self.n_double],
                [i for i in st.refreshed if i >= self.n_double],
            ):
                if blocks:
                    tokens = st.blocks[blocks[0]].mlp.shape[1]
                    image = blocks[0] < self.n_double  # the single stream is text + image
                    plan_cycle(self.config, st, blocks, tokens, batch, device, bonus=image)
        st.refreshed.clear()


class FluxBlockForward:
    """The replacement ``forward`` of one FLUX block."""

    def __init__(self, hooks: FluxHooks, block: nn.Module, index: int) -> None:
        self.hooks, self.block, self.index = hooks, block, index

    @property
    def cache(self) -> Any:
        return self.hooks.owner

    def __call__(self, hidden_states, encoder_hidden_states, temb, **kw):
        return self.hooks.forward(
            self.block, self.index, hidden_states, encoder_hidden_states, temb, **kw
        )
