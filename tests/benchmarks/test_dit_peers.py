"""The peer caching adapters of benchmarks/dit_peers.py on a tiny random DiT."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS = 8
CFG = 1.5


def _load_peers():
    name = "dit_peers"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "dit_peers.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


peers = _load_peers()


@pytest.fixture(scope="module")
def setup():
    from vislearn.accel.sampling import sample_class_conditional
    from vislearn.tasks.dit.train import build_dit

    torch.manual_seed(0)
    model = build_dit(image_size=16, patch_size=4, depth=3, heads=2, head_dim=16).eval()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000)
    labels = torch.tensor([1, 2])
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))

    def run():
        return sample_class_conditional(model, scheduler, labels, STEPS, CFG, noise=noise)

    return model, run, run()


def _structure(model):
    mods = [
        (
            n,
            sorted(vars(m)),
            sorted(m._modules),
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
        )
        for n, m in model.named_modules()
    ]
    return mods, list(model.state_dict())


def _needs(family):
    if family.startswith("cache_dit"):
        pytest.importorskip("cache_dit")


# One setting per family that caches something on the tiny model within 8 steps.
CACHING = [
    ("diffusers_fbc", {"threshold": 0.3}),
    ("diffusers_taylorseer", {"interval": 3, "warmup": 2}),
    ("diffusers_pab", {"skip": 2, "t_range": [0, 1000]}),
    ("diffusers_fastercache", {"attn_t_range": [-1, 1000], "uncond_t_range": [-1, 1000]}),
    ("diffusers_magcache", {"threshold": 0.5}),
    ("cache_dit_dbcache", {"threshold": 0.3, "warmup": 2}),
    ("cache_dit_dbcache", {"threshold": 0.3, "warmup": 2, "taylorseer": True, "order": 1}),
    ("teacache", {"threshold": 0.3}),
]


@pytest.mark.parametrize(("family", "settings"), CACHING, ids=lambda v: str(v))
def test_peer_runs_resets_and_detaches(setup, family, settings):
    _needs(family)
    model, run, base = setup
    before = _structure(model)
    peer = peers.make_peer(family, model, STEPS, **settings)
    assert peer.name.split("/")[0] in ("diffusers", "cache_dit", "teacache")
    json.dumps({"name": peer.name, "settings": peer.settings})
    peer.calibrate(run)
    assert _structure(model) == before
    with peer:
        out1 = run()
    counts = peer.counts()
    with peer:
        out2 = run()
    # (a) a finite latent of the right shape, with something cached
    assert out1.shape == base.shape and torch.isfinite(out1).all()
    assert counts["calls"] == STEPS
    assert counts["full"] < STEPS, counts
    assert not torch.equal(out1, base)
    # (c) entering again starts from a fresh state
    assert torch.equal(out1, out2)
    assert peer.counts() == counts
    # (b) nothing left behind: same modules, attributes, hooks, state_dict, output
    assert _structure(model) == before
    assert not any("forward" in vars(m) or "_diffusers_hook" in vars(m) for m in model.modules())
    assert torch.equal(run(), base)


# Settings under which each method computes everything: the uncached output comes back.
NO_OP = [
    ("diffusers_fbc", {"threshold": 0.0}),
    ("diffusers_taylorseer", {"interval": 1, "warmup": 0}),
    ("diffusers_pab", {"skip": 1}),
    ("diffusers_fastercache", {"attn_skip": 1, "uncond_skip": 1}),
    ("cache_dit_dbcache", {"threshold": 0.0, "warmup": 0}),
    ("cache_dit_dbcache", {"threshold": 0.0, "warmup": 0, "taylorseer": True}),
    ("teacache", {"threshold": 0.0}),
]


@pytest.mark.parametrize(("family", "settings"), NO_OP, ids=lambda v: str(v))
def test_no_op_settings_reproduce_the_uncached_output(setup, family, settings):
    _needs(family)
    model, run, base = setup
    peer = peers.make_peer(family, model, STEPS, **settings)
    with peer:
        out = run()
    torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-6)
    assert peer.counts()["full"] == STEPS


@pytest.mark.parametrize(
    ("family", "settings"),
    [
        ("diffusers_fbc", {"threshold": 1e9}),
        ("cache_dit_dbcache", {"threshold": 1.0, "warmup": 1}),
    ],
    ids=lambda v: str(v),
)
def test_huge_threshold_caches_every_step_after_the_first(setup, family, settings):
    _needs(family)
    model, run, base = setup
    peer = peers.make_peer(family, model, STEPS, **settings)
    with peer:
        out = run()
    c = peer.counts()
    assert (c["full"], c["partial"]) == (1, STEPS - 1), c
    assert c["attn_fraction"] == pytest.approx((1 + (STEPS - 1) / 3) / STEPS)
    assert not torch.allclose(out, base)


def test_fbc_and_dbcache_f1b0_agree(setup):
    # Two libraries, one rule: FirstBlockCache(t) is DBCache F1B0 with threshold t and no
    # warm-up, so the adapters must give the same run.
    pytest.importorskip("cache_dit")
    model, run, _ = setup
    fbc = peers.make_peer("diffusers_fbc", model, STEPS, threshold=0.3)
    dbc = peers.make_peer("cache_dit_dbcache", model, STEPS, threshold=0.3, warmup=0)
    with fbc:
        a = run()
    with dbc:
        b = run()
    assert fbc.counts()["partial"] > 0
    assert dbc.counts()["cached_steps"] == fbc.counts()["partial"]
    torch.testing.assert_close(a, b)


def test_magcache_calibration_and_errors(setup):
    model, run, _ = setup
    peer = peers.make_peer("diffusers_magcache", model, STEPS, threshold=0.5)
    with pytest.raises(RuntimeError, match="calibrate"), peer:
        pass
    peer.calibrate(run)
    assert len(peer.mag_ratios) == STEPS and peer.mag_ratios[0] == 1.0
    given = peers.make_peer(
        "diffusers_magcache", model, STEPS, threshold=0.5, mag_ratios=peer.mag_ratios
    )
    with peer:
        a = run()
    with given:
        b = run()
    assert torch.equal(a, b)
    assert given.counts()["skipped"] > 0


def test_registry_and_errors(setup):
    model, run, _ = setup
    assert set(peers.PEERS) == {
        "diffusers_fbc",
        "diffusers_taylorseer",
        "diffusers_pab",
        "diffusers_fastercache",
        "diffusers_magcache",
        "cache_dit_dbcache",
        "teacache",
    }
    with pytest.raises(KeyError, match="unknown peer family"):
        peers.make_peer("nope", model, STEPS)
    with pytest.raises(TypeError, match="unknown setting"):
        peers.make_peer("diffusers_fbc", model, STEPS, treshold=0.1)
    with pytest.raises(ValueError):
        peers.make_peer("cache_dit_dbcache", model, STEPS, Fn=3)
    a = peers.make_peer("diffusers_fbc", model, STEPS)
    b = peers.make_peer("teacache", model, STEPS)
    with a:
        with pytest.raises(RuntimeError, match="attached"), b:
            pass
        with pytest.raises(RuntimeError, match="already attached"), a:
            pass
    assert not any("forward" in vars(m) for m in model.modules())


def test_refuses_a_model_with_duca_enabled_and_compares_with_it(setup):
    from vislearn.accel import DuCaCache

    model, run, base = setup
    peer = peers.make_peer("teacache", model, STEPS, threshold=0.3)
    duca = DuCaCache(model, "duca", num_steps=STEPS, interval=3, score="random")
    with duca:
        with pytest.raises(RuntimeError, match="wrapped forwards"), peer:
            pass
        ours = run()
    with peer:
        theirs = run()
    assert ours.shape == theirs.shape == base.shape
    assert torch.equal(run(), base)


def test_fastercache_refuses_a_call_without_cfg(setup):
    from vislearn.accel.sampling import sample_class_conditional

    model, _, _ = setup
    peer = peers.make_peer("diffusers_fastercache", model, STEPS)
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000)
    with pytest.raises(RuntimeError, match="batched-CFG"), peer:
        sample_class_conditional(model, sched, torch.tensor([1, 2]), STEPS, 1.0)
    assert not any("forward" in vars(m) for m in model.modules())
