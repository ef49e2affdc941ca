"""DuCa / ToCa / FORA feature caching on tiny random diffusers transformers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vislearn.accel import (
    CachePolicy,
    DuCaCache,
    StepType,
    UnsupportedModelError,
    count_flops,
    count_step_types,
    fresh_ratio,
    get_policy,
    plan_steps,
    psnr,
    relative_l2,
    step_types,
    types_to_string,
)
from vislearn.core.errors import VislearnError

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("single_thread")

F, C, A, R = StepType.FULL, StepType.CONSERVATIVE, StepType.AGGRESSIVE, StepType.REUSE
NO_COND = {"resolution": None, "aspect_ratio": None}


# ---------------------------------------------------------------------- tiny models
def _randomise(model: nn.Module, seed: int) -> nn.Module:
    # diffusers zero-initialises nothing we rely on, but small random weights everywhere make
    # every gate, shift and scale non-trivial.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return model.eval()


def tiny_dit(layers: int = 3, sample: int = 8) -> nn.Module:
    torch.manual_seed(0)
    m = diffusers.DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=layers,
        sample_size=sample,
        patch_size=2,
        num_embeds_ada_norm=10,
    )
    return _randomise(m, 1)


def tiny_pixart(layers: int = 2) -> nn.Module:
    torch.manual_seed(0)
    m = diffusers.PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=layers,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=32,
        caption_channels=24,
        norm_type="ada_norm_single",
        use_additional_conditions=False,
    )
    return _randomise(m, 2)


def dit_call(model, x, t, y):
    t = torch.full((x.shape[0],), float(t)) if not torch.is_tensor(t) or t.ndim == 0 else t
    return model(x, timestep=t, class_labels=y).sample


def pixart_call(model, x, t, text, mask):
    t = torch.full((x.shape[0],), float(t))
    return model(
        x,
        encoder_hidden_states=text,
        encoder_attention_mask=mask,
        timestep=t,
        added_cond_kwargs=NO_COND,
    ).sample


def cfg_inputs(batch: int = 2, seed: int = 0):
    """Batched CFG input: identical latent halves, labels then null labels (id 10)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    y = torch.arange(batch) % 10
    return torch.cat([x, x]), torch.cat([y, torch.full_like(y, 10)])


def pixart_inputs(batch: int = 2):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    text = torch.randn(batch, 5, 24, generator=g)
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[0, 3:] = 0
    return torch.cat([x, x]), torch.cat([text, torch.zeros_like(text)]), torch.cat([mask, mask])


# ---------------------------------------------------------------------- schedules
def test_released_dit_schedule_matches_the_notes():
    # DuCa (arXiv:2412.18911) official code: DDIM-50, fresh_threshold 3, listed from t = T
    # (T = conservative)
    documented = "FTATFFTATFTATFTATFTFATFATFATFATFTFTFTFTFTFTFTFTFTF".replace("T", "C")
    types = step_types("duca_dit", 50)
    assert types_to_string(types) == documented
    assert count_step_types(types) == {"full": 20, "conservative": 22, "aggressive": 8, "reuse": 0}
    # the released code re-evaluates the type per block: code steps 45 and 32 (calls 4 and 17)
    plan = plan_steps("duca_dit", 50)  # the presets use the released per-block types
    mixed = {i: (a, b) for i, (a, b) in enumerate(plan) if a is not b}
    assert mixed == {4: (F, C), 17: (F, A)}
    assert not any(a is not b for a, b in plan_steps(get_policy("duca_dit", layer_quirk=False), 50))
    assert get_policy("toca_dit").fresh_ratio == 0.07 and get_policy("toca_dit").layer_quirk
    # ToCa: the same cycle without aggressive steps
    assert types_to_string(step_types("toca_dit", 50)) == documented.replace("A", "C")


def test_released_pixart_schedules_match_the_notes():
    # DPM-Solver++ 20 calls, counting up: N=3 FTA..., N=4 FTAT..., N=5 FTATA...
    t3 = step_types("duca_pixart", 20)
    assert types_to_string(t3) == "FCA" * 6 + "FC"
    assert count_step_types(t3) == {"full": 7, "conservative": 7, "aggressive": 6, "reuse": 0}
    assert types_to_string(step_types(get_policy("duca_pixart", interval=4), 8)) == "FCACFCAC"
    assert types_to_string(step_types(get_policy("duca_pixart", interval=5), 10)) == "FCACA" * 2


def test_generic_schedules():
    assert types_to_string(step_types("fora", 7)) == "FRRFRRF"
    assert types_to_string(step_types("none", 4)) == "FFFF"
    assert types_to_string(step_types("toca", 7)) == "FCCFCCF"
    assert types_to_string(step_types(get_policy("duca", warmup=3), 9)) == "FFFFCAFCA"
    # the dynamic interval is off in the official FORA mode (fresh ratio 0)
    static = step_types(get_policy("duca_dit", fresh_ratio=0.0), 12)
    assert [i for i, t in enumerate(static) if t is F] == [0, 2, 5, 8, 11]  # s = 11 and s % 3 == 0
    with pytest.raises(VislearnError, match="number of sampling steps"):
        from vislearn.accel.schedule import StepPlanner

        StepPlanner(get_policy("duca_dit"), None)


def test_fresh_ratio_schedules():
    dit = get_policy("duca_dit")
    # first DDIM step (code step 49): step factor 3 - 4*49/50 < 0 -> clamped to 0
    assert fresh_ratio(dit, 0, 50, 27, 28, "mlp") == 0.0
    # last step (code step 0), last layer: 0.05 * 3 * 1.2 * 2.5 = 0.45 (notes 2.5)
    assert fresh_ratio(dit, 49, 50, 27, 28, "mlp") == pytest.approx(0.45)
    assert fresh_ratio(dit, 49, 50, 0, 28, "mlp") == pytest.approx(0.05 * 3 * 0.8 * 2.5)
    pix = get_policy("duca_pixart")
    # PixArt: 1.9 -> 0.1 step factor, 1.6 -> 0.4 layer factor, module 1.6 (mlp) / 0.6 (cross)
    assert fresh_ratio(pix, 0, 20, 0, 28, "mlp") == 1.0
    assert fresh_ratio(pix, 19, 20, 27, 28, "cross_attn") == pytest.approx(
        0.75 * (1.9 - 1.8 * 19 / 20) * 0.4 * 0.6
    )
    assert fresh_ratio(get_policy("duca", fresh_ratio=0.3), 5, None, 1, 3, "mlp") == 0.3


def test_policy_errors():
    with pytest.raises(VislearnError, match="unknown cache policy"):
        get_policy("teacache")
    with pytest.raises(VislearnError, match="unknown cache policy field"):
        get_policy("duca", intervall=3)
    with pytest.raises(VislearnError, match="score"):
        CachePolicy(score="entropy")
    with pytest.raises(VislearnError, match="warmup"):
        CachePolicy(warmup=0)


# ---------------------------------------------------------------------- exactness
def test_disabled_cache_is_bit_identical_and_restores_the_model():
    model = tiny_dit()
    plain = copy.deepcopy(model)
    x, y = cfg_inputs()
    procs = [type(b.attn1.processor) for b in model.transformer_blocks]
    with torch.no_grad():
        ref = dit_call(plain, x, 500, y)
        cache = DuCaCache(model, "duca", score="vnorm")
        with cache:
            for t in (900, 700):
                dit_call(model, x, t, y)
            assert "forward" in vars(model.transformer_blocks[0])
        assert not cache.enabled
        assert all("forward" not in vars(b) for b in model.transformer_blocks)
        assert [type(b.attn1.processor) for b in model.transformer_blocks] == procs
        assert torch.equal(dit_call(model, x, 500, y), ref)
        # policy "none" runs every block through the cache and changes nothing
        with DuCaCache(model, "none"):
            for t in (900, 500, 100):
                assert torch.equal(dit_call(model, x, t, y), dit_call(plain, x, t, y))


def _sampling_check(model, plain, call, inputs, policy, steps=7, exact=True, **kw):
    """Run a DDIM loop with the cache; every full step's output must equal the plain model's."""
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(steps)
    x = inputs[0].clone()
    cache = DuCaCache(model, policy, scheduler=sched, **kw)
    seen = []
    with torch.no_grad(), cache:
        for t in sched.timesteps:
            out = call(model, x, t, *inputs[1:])
            seen.append(cache.state.types[0])
            if seen[-1] is F:
                ref = call(plain, x, t, *inputs[1:])
                if exact:
                    assert torch.equal(out, ref)
                else:
                    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
            eps = out[:, :4]
            x = sched.step(eps, t, x).prev_sample
    return seen


@pytest.mark.parametrize("score", ["random", "vnorm", "attention"])
def test_full_step_after_cached_steps_equals_plain_dit(score):
    model = tiny_dit()
    plain = copy.deepcopy(model)
    seen = _sampling_check(
        model,
        plain,
        dit_call,
        cfg_inputs(),
        "duca",
        exact=score != "attention",
        score=score,
        interval=4,
        fresh_ratio=0.5,
    )
    assert types_to_string(seen) == "FCACFCA"
    seen = _sampling_check(model, plain, dit_call, cfg_inputs(), "fora", interval=2)
    assert types_to_string(seen) == "FRFRFRF"


@pytest.mark.parametrize("score", ["random", "vnorm", "attention"])
def test_full_step_after_cached_steps_equals_plain_pixart(score):
    model = tiny_pixart()
    plain = copy.deepcopy(model)
    seen = _sampling_check(
        model,
        plain,
        pixart_call,
        pixart_inputs(),
        "duca",
        exact=score != "attention",
        score=score,
        fresh_ratio=0.5,
    )
    assert types_to_string(seen) == "FCAFCAF"


def test_same_input_cached_steps_reproduce_the_full_step():
    # With the input, timestep and class of the last full step, re-gating the caches must give
    # the full result back: aggressive exactly, reuse up to float rounding (stacked adaLN
    # matmul, fused gate-and-add), conservative with ratio 1 up to matmul rounding (the MLP is
    # recomputed on gathered rows).
    model = tiny_dit()
    x, y = cfg_inputs()
    with torch.no_grad():
        for policy, kw, nxt in (
            ("fora", {}, R),
            ("duca", {"interval": 3}, C),
            ("duca", {"interval": 3}, A),
        ):
            with DuCaCache(model, policy, fresh_ratio=1.0, score="random", **kw) as cache:
                full = dit_call(model, x, 500, y)
                if nxt is A:
                    cache.state.planner.next()
                out = dit_call(model, x, 500, y)
                assert cache.state.types[0] is nxt
                if nxt is A:
                    assert torch.equal(out, full)
                else:
                    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)


def test_layer_quirk_mixes_block_types_like_the_released_code():
    model = tiny_dit(layers=3)
    x, y = cfg_inputs()
    policy = get_policy("duca_dit", layer_quirk=True, fresh_ratio=0.3)
    with torch.no_grad(), DuCaCache(model, policy, num_steps=50) as cache:
        for t in range(999, 994, -1):  # calls 0..4; call 4 = code step 45: block 0 full, rest C
            dit_call(model, x, t, y)
        assert cache.state.types == (F, C)
        assert cache.state.blocks[0].indices == {}
        assert all("mlp" in bc.indices for bc in cache.state.blocks[1:])


def _block_inputs(model):
    """Capture every block's input hidden states and kwargs (hooks still fire when the cache
    replaces ``forward``)."""
    seen = {}
    handles = [
        b.register_forward_pre_hook(
            lambda m, a, kw, i=i: seen.__setitem__(i, (a[0] if a else kw["hidden_states"], kw)),
            with_kwargs=True,
        )
        for i, b in enumerate(model.transformer_blocks)
    ]
    return seen, handles


def test_conservative_step_recomputes_exactly_the_selected_tokens_dit():
    model = tiny_dit(layers=3)
    x, y = cfg_inputs()
    cache = DuCaCache(model, "duca", score="vnorm", fresh_ratio=0.25, num_steps=None)
    with torch.no_grad(), cache:
        dit_call(model, x, 800, y)  # full
        before = [bc.mlp.clone() for bc in cache.state.blocks]
        attn = [bc.attn.clone() for bc in cache.state.blocks]
        seen, handles = _block_inputs(model)
        dit_call(model, x * 0.9, 700, y)  # conservative
        for h in handles:
            h.remove()
        assert cache.state.types == (C, C)
        n = (8 // 2) ** 2
        for i, block in enumerate(model.transformer_blocks):
            idx = cache.state.blocks[i].indices["mlp"]
            after = cache.state.blocks[i].mlp
            assert idx.shape == (4, int(0.25 * n))
            assert all(len(set(row.tolist())) == idx.shape[1] for row in idx)
            # unselected tokens keep their cached value bit for bit
            keep = torch.ones(4, n, dtype=torch.bool)
            keep.scatter_(1, idx, False)
            assert torch.equal(after[keep], before[i][keep])
            # selected tokens = the block's own MLP on the current hidden states
            h_in, kw = seen[i]
            _, gate_msa, shift_mlp, scale_mlp, _ = block.norm1(
                h_in, kw["timestep"], kw["class_labels"], hidden_dtype=h_in.dtype
            )
            h_mid = gate_msa.unsqueeze(1) * attn[i] + h_in
            expected = block.ff(block.norm3(h_mid) * (1 + scale_mlp[:, None]) + shift_mlp[:, None])
            sel = ~keep
            torch.testing.assert_close(after[sel], expected[sel], rtol=1e-5, atol=1e-6)
            assert not torch.allclose(after[sel], before[i][sel])


def test_conservative_step_recomputes_selected_cross_attention_rows_pixart():
    model = tiny_pixart()
    x, text, mask = pixart_inputs()
    cache = DuCaCache(model, "duca", score="attention", fresh_ratio=0.5)
    with torch.no_grad(), cache:
        pixart_call(model, x, 800, text, mask)
        x_before = [bc.xattn.clone() for bc in cache.state.blocks]
        m_before = [bc.mlp.clone() for bc in cache.state.blocks]
        attn = [bc.attn.clone() for bc in cache.state.blocks]
        seen, handles = _block_inputs(model)
        pixart_call(model, x * 0.9, 700, text, mask)
        for h in handles:
            h.remove()
        assert cache.state.types == (C, C)
        for i, block in enumerate(model.transformer_blocks):
            bc = cache.state.blocks[i]
            h_in, kw = seen[i]
            b = h_in.shape[0]
            _, _, gate_msa, shift_mlp, scale_mlp, _ = (
                block.scale_shift_table[None] + kw["timestep"].reshape(b, 6, -1)
            ).chunk(6, dim=1)
            h_mid = gate_msa * attn[i] + h_in
            x_sel = torch.zeros(b, h_in.shape[1], dtype=torch.bool).scatter_(
                1, bc.indices["cross_attn"], True
            )
            assert torch.equal(bc.xattn[~x_sel], x_before[i][~x_sel])
            expected_x = block.attn2(
                h_mid,
                encoder_hidden_states=kw["encoder_hidden_states"],
                attention_mask=kw["encoder_attention_mask"],
            )
            torch.testing.assert_close(bc.xattn[x_sel], expected_x[x_sel], rtol=1e-5, atol=1e-6)
            h_mid = bc.xattn + h_mid
            m_sel = torch.zeros_like(x_sel).scatter_(1, bc.indices["mlp"], True)
            assert torch.equal(bc.mlp[~m_sel], m_before[i][~m_sel])
            expected_m = block.ff(block.norm2(h_mid) * (1 + scale_mlp) + shift_mlp)
            torch.testing.assert_close(bc.mlp[m_sel], expected_m[m_sel], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("score", ["random", "vnorm", "vnorm_high", "attention"])
def test_cfg_halves_select_the_same_tokens(score):
    model = tiny_dit()
    x, y = cfg_inputs(batch=3)
    with torch.no_grad(), DuCaCache(model, "toca", score=score, fresh_ratio=0.3) as cache:
        for t in (900, 800, 700):
            dit_call(model, x, t, y)
        assert cache.state.cfg
        for bc in cache.state.blocks:
            idx = bc.indices["mlp"]
            assert idx.shape[0] == 6 and torch.equal(idx[:3], idx[3:])
    # halves that differ are not a CFG batch: each row chooses for itself
    x2 = torch.randn(6, 4, 8, 8)
    with torch.no_grad(), DuCaCache(model, "toca", score="random", fresh_ratio=0.3) as cache:
        for t in (900, 800):
            dit_call(model, x2, t, y)
        assert not cache.state.cfg
        assert not torch.equal(
            cache.state.blocks[0].indices["mlp"][:3], (cache.state.blocks[0].indices["mlp"][3:])
        )


def _ddim_run(model, x0, y, steps=6):
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(steps)
    x = x0.clone()
    for t in sched.timesteps:
        x = sched.step(dit_call(model, x, t, y)[:, :4], t, x).prev_sample
    return x


def test_state_does_not_leak_between_runs():
    model = tiny_dit()
    x, y = cfg_inputs()
    other_x, _ = cfg_inputs(seed=5)
    with torch.no_grad():
        with DuCaCache(model, "duca", score="random") as cache:
            first = _ddim_run(model, x, y)
            assert len(cache.step_history) == 6
            _ddim_run(model, other_x, y)  # a different run in between, no explicit reset
            again = _ddim_run(model, x, y)
            assert cache.counts() == {"full": 2, "conservative": 2, "aggressive": 2, "reuse": 0}
        with DuCaCache(model, "duca", score="random") as fresh:
            clean = _ddim_run(model, x, y)
            fresh.reset()
            after_reset = _ddim_run(model, x, y)
    assert torch.equal(first, again)
    assert torch.equal(first, clean)
    assert torch.equal(first, after_reset)


def test_unsupported_models_are_refused_with_one_line():
    with pytest.raises(UnsupportedModelError) as err:
        DuCaCache(nn.Linear(4, 4))
    assert "transformer_blocks" in str(err.value) and "\n" not in str(err.value)

    class Wrapper(nn.Module):
        def __init__(self, norm_type: str):
            super().__init__()
            self.transformer_blocks = nn.ModuleList(
                [
                    diffusers.models.attention.BasicTransformerBlock(
                        32, 2, 16, norm_type=norm_type, num_embeds_ada_norm=10
                    )
                ]
            )

    with pytest.raises(UnsupportedModelError, match="norm_type='ada_norm'"):
        DuCaCache(Wrapper("ada_norm"))

    class Blocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer_blocks = nn.ModuleList([nn.Linear(2, 2)])

    with pytest.raises(UnsupportedModelError, match="not a diffusers BasicTransformerBlock"):
        DuCaCache(Blocks())
    model = tiny_dit(layers=2)
    idle = DuCaCache(model)
    with DuCaCache(model) as active:
        with pytest.raises(VislearnError, match="another DuCaCache"):
            DuCaCache(model)
        with pytest.raises(VislearnError, match="another DuCaCache"):
            idle.enable()
        idle.disable()  # an idle cache leaves the active one alone
        assert all(vars(b)["forward"].cache is active for b in model.transformer_blocks)


@pytest.mark.parametrize("sched_name", ["ddim", "euler", "dpm"])
def test_sampling_loops_with_schedulers_and_batch(sched_name):
    """A CFG sampling loop (batch 3, cfg 1.5) with DDIM, Euler and DPM-Solver++: depth and
    step count come from the model and the scheduler; the preset's step types are executed."""
    model = tiny_dit(layers=4, sample=16)
    make = {
        "ddim": diffusers.DDIMScheduler,
        "euler": diffusers.EulerDiscreteScheduler,
        "dpm": diffusers.DPMSolverMultistepScheduler,
    }[sched_name]
    steps, batch, guidance = 10, 3, 1.5
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(batch, 4, 16, 16, generator=g)
    labels = torch.tensor([1, 2, 3])

    def sample(policy=None):
        sched = make(num_train_timesteps=1000)
        sched.set_timesteps(steps)
        x = noise * sched.init_noise_sigma
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([x, x]), t)
            out = dit_call(model, inp, t, torch.cat([labels, torch.full_like(labels, 10)]))
            cond, uncond = out[:, :4].chunk(2)
            x = sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        return x

    with torch.no_grad():
        ref = sample()
        policy = get_policy("duca_dit", fresh_ratio=0.3)
        with DuCaCache(model, policy, num_steps=steps) as cache:
            out = sample()
            assert cache.depth == 4 and cache.state.cfg
            assert cache.step_history == step_types(policy, steps)
            assert cache.fresh_token_fraction() > 0
    assert torch.isfinite(out).all()
    assert out.shape == ref.shape
    assert relative_l2(out, out) == 0.0 and psnr(ref, ref) == float("inf")
    assert relative_l2(out, ref) > 0


def test_flops_fall_with_the_step_type():
    model = tiny_dit(layers=3, sample=16)
    x, y = cfg_inputs()
    x = torch.randn(4, 4, 16, 16)
    with torch.no_grad():
        _, plain = count_flops(dit_call, model, x, 900, y)
        with DuCaCache(model, "duca", fresh_ratio=0.25, score="random"):
            _, full = count_flops(dit_call, model, x, 900, y)
            _, cons = count_flops(dit_call, model, x, 800, y)
            _, aggr = count_flops(dit_call, model, x, 700, y)
    assert full == plain
    assert aggr < cons < full
    # conservative: no attention, 1/4 of the MLP tokens; aggressive: only embedder and head
    assert cons < 0.5 * full and aggr < 0.2 * full


def test_cli_sample_and_bench(tmp_path, capsys):
    from vislearn.cli import main

    model = tiny_dit(layers=2)
    model.save_pretrained(tmp_path / "dit")
    common = ["--model", str(tmp_path / "dit"), "--steps", "4", "--n", "3", "--cfg", "2"]
    assert (
        main(["dit", "sample", *common, "--classes", "1,2", "--out", str(tmp_path / "g.png")]) == 0
    )
    assert (tmp_path / "g.png").stat().st_size > 0
    assert "conservative" in capsys.readouterr().out
    bench = ["dit", "bench", *common, "--cache", "fora", "--interval", "2", "--repeats", "1"]
    assert main([*bench, "--scheduler", "euler", "--json", str(tmp_path / "r.json")]) == 0
    import json

    row = json.loads((tmp_path / "r.json").read_text())
    assert row["name"] == "vislearn/fora" and row["steps"]["reuse"] == 2
    assert row["flops_ratio"] > 1.2
    assert main(["dit", "sample", "--model", str(tmp_path / "nope"), "--out", "x.png"]) == 2
    assert "no such model folder" in capsys.readouterr().err


def test_dit_pipeline_from_tiny_components():
    """diffusers' own DiTPipeline (batched CFG, null class 1000), built offline."""
    model = _randomise(
        diffusers.DiTTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=16,
            in_channels=4,
            out_channels=8,
            num_layers=2,
            sample_size=8,
            num_embeds_ada_norm=1000,
        ),
        1,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=8,
    ).eval()
    pipe = diffusers.DiTPipeline(model, vae, diffusers.DDIMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)

    def run():
        gen = torch.Generator().manual_seed(0)
        return pipe(
            class_labels=[1, 2],
            num_inference_steps=6,
            guidance_scale=2.0,
            generator=gen,
            output_type="pt",
        ).images

    plain = run()
    with DuCaCache(model, "duca", scheduler=pipe.scheduler) as cache:
        first = run()
        assert cache.state.cfg and cache.counts()["aggressive"] == 2
        second = run()  # no reset: the timestep going up starts a new run
    assert torch.equal(first, second)
    assert torch.equal(run(), plain)
    assert psnr(first, plain, data_range=1.0) > 10


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
def test_dit_train_two_steps_exports_a_cacheable_model(tmp_path):
    from vislearn.accel.sampling import load_transformer, make_scheduler, sample_class_conditional
    from vislearn.tasks.dit.train import train_dit

    _, model_dir = train_dit(
        tmp_path / "run",
        max_steps=2,
        batch_size=8,
        trainer_kwargs={"accelerator": "cpu", "devices": 1, "progress": False},
        image_size=16,
        patch_size=4,
        depth=2,
        heads=2,
        head_dim=8,
    )
    model = load_transformer(model_dir)
    assert model.config.num_embeds_ada_norm == 10 and model.config.in_channels == 1
    scheduler = make_scheduler("ddim", model_dir)
    labels = torch.tensor([0, 1])
    with DuCaCache(model, "duca", score="vnorm") as cache:
        x = sample_class_conditional(model, scheduler, labels, 4, 2.0)
        assert cache.counts() == {"full": 2, "conservative": 1, "aggressive": 1, "reuse": 0}
    assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all()


# ---------------------------------------------------------------------- launch overhead
def _count_ops(fn) -> int:
    """Non-view aten ops dispatched by ``fn()`` (a proxy for GPU kernel launches)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and func.name() not in ("aten::detach", "aten::lift_fresh"):
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count():
        fn()
    return Count.n


def _share_embedders(model: nn.Module) -> nn.Module:
    """As converted DiT checkpoints: one timestep/class embedder copied into every block."""
    first = model.transformer_blocks[0].norm1.emb.state_dict()
    for b in model.transformer_blocks[1:]:
        b.norm1.emb.load_state_dict(first)
    return model


@pytest.mark.parametrize("shared", [True, False])
def test_cached_steps_dispatch_few_ops(shared):
    """28 blocks as DiT-XL/2: a conservative call dispatches <= 0.6x the ops of a plain call
    (no per-block token scoring, one embedding, one stacked adaLN matmul), an aggressive one
    <= 40, a FORA reuse call fewer than a conservative one."""
    model = tiny_dit(layers=28)
    if shared:
        _share_embedders(model)
    x, y = cfg_inputs()
    ts = {t: torch.full((4,), float(t)) for t in (900, 800, 700)}
    full = _count_ops(lambda: dit_call(model, x, ts[900], y))
    ops = {}
    for policy, kw in (("duca", {"score": "vnorm"}), ("duca", {"score": "random"}), ("fora", {})):
        with DuCaCache(model, policy, interval=3, num_steps=3, fresh_ratio=0.3, **kw) as cache:
            assert cache.hooks.modulation.emb_mode == ("shared" if shared else "stacked")
            for t in (900, 800, 700):
                n = _count_ops(lambda t=t: dit_call(model, x, ts[t], y))
                ops[(policy, kw.get("score"), cache.state.types[0])] = n
    for score in ("vnorm", "random"):
        assert ops[("duca", score, C)] <= 0.6 * full, (ops, full)
        assert ops[("duca", score, A)] <= 40
    assert ops[("fora", None, R)] < ops[("duca", "vnorm", C)]


@pytest.mark.parametrize("score", ["vnorm", "random", "attention"])
def test_no_host_sync_in_cached_calls(score):
    """No call reads a tensor value on the host (no aten::item / _local_scalar_dense): run
    boundaries come from call counting, the CFG check stays on the device."""
    from torch.profiler import ProfilerActivity, profile

    model = tiny_dit(layers=3)
    x, y = cfg_inputs()
    steps = 8
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    sched.set_timesteps(steps)
    ts = [torch.full((4,), float(t)) for t in sched.timesteps]
    policy = get_policy("duca_dit", score=score, fresh_ratio=0.3)
    with torch.no_grad(), DuCaCache(model, policy, scheduler=sched) as cache:
        for run in range(2):  # the second run starts by call counting, without reset
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for t in ts:
                    dit_call(model, x, t, y)
            names = {e.name for e in prof.events()}
            assert not names & {"aten::item", "aten::_local_scalar_dense"}, run
            assert cache.counts()["conservative"] > 0 and len(cache.step_history) == steps
        assert bool(cache.state.cfg)


def test_shared_embedding_and_stacked_modulation_match_the_blocks():
    """Embed-once (shared embedders) and per-block stacked embedders give the same cached
    steps as each block's own adaLN, up to float rounding."""
    model = _share_embedders(tiny_dit(layers=4))
    x, y = cfg_inputs()
    outs = {}
    for mode in ("shared", "stacked", "per_block"):
        with torch.no_grad(), DuCaCache(model, "duca", interval=4, fresh_ratio=0.5) as cache:
            cache.hooks.modulation.emb_mode = mode
            cache.hooks.modulation.prepare()
            outs[mode] = [dit_call(model, x * s, t, y) for s, t in ((1, 900), (0.9, 800))]
            assert [*cache.counts().values()][:2] == [1, 1]
    for mode in ("shared", "stacked"):
        for a, b in zip(outs[mode], outs["per_block"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_heun_runs_are_planned_by_model_calls():
    """Heun calls the model twice per step (2 N - 1 calls): the plan follows the scheduler's
    timesteps, even when ``num_steps`` says N; back-to-back runs restart by call counting."""
    model = tiny_dit(layers=2)
    x, y = cfg_inputs()
    sched = diffusers.HeunDiscreteScheduler(num_train_timesteps=1000)
    steps = 6
    policy = get_policy("duca_dit", fresh_ratio=0.3)
    with torch.no_grad(), DuCaCache(model, policy, num_steps=steps, scheduler=sched) as cache:
        for _ in range(2):
            sched.set_timesteps(steps)
            calls = len(sched.timesteps)
            assert calls == 2 * steps - 1
            for t in sched.timesteps:
                dit_call(model, sched.scale_model_input(x, t), t, y)
            assert cache.state.num_steps == calls
            assert cache.step_history == step_types(policy, calls)
        history = cache.step_history
        for t in sched.timesteps[:3]:  # the same timesteps object: a new run by call counting
            dit_call(model, x, t, y)
        assert cache.step_history == history[:3]


def test_scheduler_fallback_does_not_clip():
    from vislearn.accel.sampling import make_scheduler

    assert make_scheduler("ddim").config.clip_sample is False
    assert make_scheduler("ddpm").config.clip_sample is False
    assert make_scheduler("heun").order == 2


def test_compiled_block_paths_match_eager():
    """compile=True (inductor on the CPU): conservative and reuse blocks through one compiled
    graph per step type, shared by every block; outputs equal the eager path up to float
    rounding, full steps stay the plain model. Compiling takes ~30-60 s on a busy 2-core CPU
    (the slowest test of this module; inductor's on-disk cache makes reruns fast)."""
    from torch._dynamo.utils import counters

    model = tiny_dit(layers=3)
    plain = copy.deepcopy(model)
    x, y = cfg_inputs()
    ts = [torch.full((4,), float(t)) for t in (900, 800, 700, 600, 500)]
    outs = {}
    counters.clear()
    for comp in (False, True):
        with (
            torch.no_grad(),
            DuCaCache(
                model, "duca", interval=4, fresh_ratio=0.3, num_steps=5, compile=comp
            ) as cache,
        ):
            outs[comp] = [dit_call(model, x * (1 - 0.05 * i), t, y) for i, t in enumerate(ts)]
            assert types_to_string(cache.step_history) == "FCACF"
            if comp:
                assert cache.hooks.compiled is not None
                assert all(w is not None for w in cache.hooks.ff_weights)
    with torch.no_grad():
        assert torch.equal(outs[True][0], dit_call(plain, x, ts[0], y))
    for a, b in zip(outs[False], outs[True], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # three blocks, two conservative calls: one graph per step type, not one per block
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])


@pytest.mark.parametrize(
    ("policy", "score"),
    [("duca_dit", "vnorm"), ("duca_dit", "attention"), ("toca", "vnorm")],
)
def test_tokens_chosen_at_the_refresh_equal_the_call_by_call_choice(policy, score):
    """The whole-cycle, all-blocks token choice made after each full step picks, for every
    call and block, the same tokens as choosing call by call (staleness and spatial bonus
    included; released per-block step types), so outputs agree up to rounding."""
    model = tiny_dit(layers=4, sample=16)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    x, y = torch.cat([x, x]), torch.tensor([1, 2, 10, 10])
    steps = 50 if policy == "duca_dit" else 12
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    sched.set_timesteps(steps)
    runs = {}
    for ahead in (True, False):
        chosen, xt = [], x.clone()
        p = get_policy(policy, score=score, fresh_ratio=0.2 if policy == "toca" else 0.05)
        with torch.no_grad(), DuCaCache(model, p, scheduler=sched) as cache:
            cache.hooks.plan_ahead = ahead
            for t in sched.timesteps:
                out = dit_call(model, xt, t, y)
                chosen.append(
                    [
                        sorted(bc.indices["mlp"][0].tolist()) if "mlp" in bc.indices else None
                        for bc in cache.state.blocks
                    ]
                )
                xt = sched.step(out[:, :4], t, xt).prev_sample
            runs[ahead] = (chosen, xt, cache.fresh_token_fraction())
    assert runs[True][0] == runs[False][0]
    assert runs[True][2] == runs[False][2] > 0
    torch.testing.assert_close(runs[True][1], runs[False][1], rtol=1e-4, atol=1e-4)
