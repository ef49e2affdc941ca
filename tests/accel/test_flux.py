"""DuCa / ToCa / FORA caching on a tiny random-weight diffusers FLUX transformer (double- and
single-stream blocks): the invariants of the DiT tests."""

from __future__ import annotations

import copy

import pytest
import torch

from vislearn.accel import DuCaCache, StepType, UnsupportedModelError, types_to_string
from vislearn.core.errors import VislearnError

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("single_thread")

F, C, A, R = StepType.FULL, StepType.CONSERVATIVE, StepType.AGGRESSIVE, StepType.REUSE
B, SIDE, TEXT = 2, 4, 4


def tiny_flux(double: int = 2, single: int = 2):
    torch.manual_seed(0)
    m = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=8,
        num_layers=double,
        num_single_layers=single,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=12,
        axes_dims_rope=(2, 2, 4),
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return m.eval()


def flux_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, SIDE * SIDE, 8, generator=g)
    enc = torch.randn(B, TEXT, 16, generator=g)
    pooled = torch.randn(B, 12, generator=g)
    grid = torch.meshgrid(
        torch.zeros(1), torch.arange(SIDE * 1.0), torch.arange(SIDE * 1.0), indexing="ij"
    )
    img_ids = torch.stack(grid, -1).reshape(-1, 3)
    return x, enc, pooled, img_ids, torch.zeros(TEXT, 3)


def flux_call(model, x, t, enc, pooled, img_ids, txt_ids):
    t = torch.full((x.shape[0],), float(t))
    return model(
        x,
        encoder_hidden_states=enc,
        pooled_projections=pooled,
        timestep=t,
        img_ids=img_ids,
        txt_ids=txt_ids,
    ).sample


def _run(model, inputs, policy="duca", steps=6, plain=None, **kw):
    """An Euler-like loop; with ``plain`` every full step must equal the plain model."""
    x, rest = inputs[0].clone(), inputs[1:]
    seen = []
    with torch.no_grad(), DuCaCache(model, policy, num_steps=steps, **kw) as cache:
        for i in range(steps):
            t = 1.0 - i / steps
            out = flux_call(model, x, t, *rest)
            seen.append(cache.state.types[0])
            if plain is not None and seen[-1] is F:
                assert torch.equal(out, flux_call(plain, x, t, *rest))
            x = x - out / steps
        fraction = cache.fresh_token_fraction()
    return x, types_to_string(seen), fraction


@pytest.mark.parametrize("score", ["vnorm", "random"])
def test_flux_cache_off_identical_full_steps_plain_runs_reset(score):
    model = tiny_flux()
    plain = copy.deepcopy(model)
    inputs = flux_inputs()
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    first, seen, fraction = _run(model, inputs, plain=plain, score=score, fresh_ratio=0.5)
    assert seen == "FCAFCA" and fraction == 0.5
    again, _, _ = _run(model, inputs, score=score, fresh_ratio=0.5)
    assert torch.equal(first, again)  # a fresh run: same result
    assert all("forward" not in vars(b) for b in blocks)
    with torch.no_grad():
        for t in (1.0, 0.5):  # disabled: the model as before; policy "none": plain too
            ref = flux_call(plain, inputs[0], t, *inputs[1:])
            assert torch.equal(flux_call(model, inputs[0], t, *inputs[1:]), ref)
        with DuCaCache(model, "none"):
            for t in (1.0, 0.5):
                assert torch.equal(
                    flux_call(model, inputs[0], t, *inputs[1:]),
                    flux_call(plain, inputs[0], t, *inputs[1:]),
                )
    # state does not leak: two runs back to back in one cache (call counting) match
    x, rest = inputs[0], inputs[1:]
    with torch.no_grad(), DuCaCache(model, "duca", num_steps=3, score=score) as cache:
        a = [flux_call(model, x, t, *rest) for t in (1.0, 0.7, 0.4)]
        b = [flux_call(model, x, t, *rest) for t in (1.0, 0.7, 0.4)]
        cache.reset()
        c = [flux_call(model, x, t, *rest) for t in (1.0, 0.7, 0.4)]
    for u, v, w in zip(a, b, c, strict=True):
        assert torch.equal(u, v) and torch.equal(u, w)


def test_flux_same_input_cached_steps_reproduce_the_full_step():
    """Same input and timestep as the last full step: reuse and conservative with ratio 1
    give the full output back up to rounding (double and single blocks), aggressive exactly."""
    model = tiny_flux()
    x, *rest = flux_inputs()
    with torch.no_grad():
        for policy, nxt in (("fora", R), ("duca", C), ("duca", A)):
            with DuCaCache(model, policy, interval=3, fresh_ratio=1.0, score="random") as cache:
                full = flux_call(model, x, 0.5, *rest)
                if nxt is A:
                    cache.state.planner.next()
                out = flux_call(model, x, 0.5, *rest)
                assert cache.state.types[0] is nxt
                if nxt is A:
                    assert torch.equal(out, full)
                else:
                    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)
                if nxt is C:  # every token of every block recomputed
                    n = [bc.indices["mlp"].shape[1] for bc in cache.state.blocks]
                    assert n == [SIDE * SIDE] * 2 + [SIDE * SIDE + TEXT] * 2


def test_flux_refuses_attention_score_and_double_enable():
    model = tiny_flux(1, 1)
    with pytest.raises(UnsupportedModelError, match="attention"):
        DuCaCache(model, "toca", score="attention")
    with DuCaCache(model, "duca"), pytest.raises(VislearnError, match="another DuCaCache"):
        DuCaCache(model, "duca")


def test_flux_cached_calls_dispatch_few_ops_and_never_read_the_host():
    """A conservative FLUX call dispatches <= 0.6x the ops of a plain one; no cached call
    reads a tensor value on the host (no aten::item / _local_scalar_dense)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and func.name() not in ("aten::detach", "aten::lift_fresh"):
                Count.n += 1
            return func(*args, **(kwargs or {}))

    def ops(fn) -> int:
        Count.n = 0
        with torch.no_grad(), Count():
            fn()
        return Count.n

    model = tiny_flux(double=4, single=8)
    x, *rest = flux_inputs()
    full = ops(lambda: flux_call(model, x, 0.9, *rest))
    seen = {}
    with torch.no_grad(), DuCaCache(model, "duca", num_steps=3, fresh_ratio=0.3) as cache:
        for run in range(2):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for t in (0.9, 0.8, 0.7):
                    n = ops(lambda t=t: flux_call(model, x, t, *rest))
                    seen[cache.state.types[0]] = n
            names = {e.name for e in prof.events()}
            assert not names & {"aten::item", "aten::_local_scalar_dense"}, run
    assert seen[C] <= 0.6 * full and seen[A] < seen[C], (seen, full)
