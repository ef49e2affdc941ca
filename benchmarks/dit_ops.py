"""Aten ops per model call of a cached diffusers DiT, a CPU-measurable proxy for GPU kernel
launches -> docs/results/dit_ops.json.

A DiT-XL/2 forward at batch 2-16 on an H100/H200 is bound by kernel launches, not FLOPs, so
the number of (non-view) aten ops a step dispatches says how much of its FLOPs saving a cached
step can turn into speed there. Counted with a ``TorchDispatchMode`` below autograd: every op
that reaches a kernel counts once, views (``view``, ``transpose``, ``expand``, ``detach``, ...)
and ``aten::item``-free metadata queries do not.

    python benchmarks/dit_ops.py                      # 28 blocks, reduced width + reference
    python benchmarks/dit_ops.py --wall --rounds 3    # also CPU wall clock of DuCa N=3 (DDIM)
    python benchmarks/dit_ops.py --out /tmp/ops.json --no-reference

Rows (per model call, batched CFG batch 2): ``full`` (a plain uncached call, the cache
disabled), ``duca_conservative`` (V-norm score; ``duca_conservative_random`` with the random
score), ``duca_aggressive``, ``fora_reuse``; each with the model's depth and width. Step types
come from the generic ``duca`` / ``fora`` presets with N=3 (F, C, A / F, R, R).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

REFERENCE = Path("/work/shared/dit-reference/fmdit")
RESULTS = ROOT / "docs" / "results" / "dit_ops.json"
#: DiT-XL/2's block count and token grid (28 blocks, 32x32x4 latent, patch 2: 256 tokens) with
#: a width that runs on a CPU (128 instead of 1152).
XL_REDUCED = dict(
    num_layers=28,
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=4,
    out_channels=8,
    patch_size=2,
    sample_size=32,
    num_embeds_ada_norm=1000,
)


def op_counter():
    """A dispatch mode that counts non-view aten ops (``.counts``: name -> calls)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.counts: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and func.name() not in ("aten::detach", "aten::lift_fresh"):
                self.counts[func.name()] += 1
            return func(*args, **(kwargs or {}))

        @property
        def total(self) -> int:
            return sum(self.counts.values())

    return OpCounter()


def count_call(fn) -> tuple[int, dict]:
    import torch

    with torch.no_grad(), op_counter() as c:
        fn()
    return c.total, dict(c.counts)


def make_inputs(model, batch: int = 1, seed: int = 0):
    import torch

    mc = model.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, mc.in_channels, mc.sample_size, mc.sample_size, generator=g)
    y = torch.arange(batch) % int(mc.num_embeds_ada_norm)
    null = torch.full_like(y, int(mc.num_embeds_ada_norm))
    return torch.cat([x, x]), torch.cat([y, null])


def measure_ops(model, **cache_kw) -> dict:
    """Ops per call of each step type on ``model`` (batched CFG, batch 2)."""
    import torch

    from vislearn.accel import DuCaCache

    x, y = make_inputs(model)

    ts = {t: torch.full((x.shape[0],), float(t)) for t in (900, 800, 700)}

    def call(t: int):
        return model(x, timestep=ts[t], class_labels=y).sample

    rows: dict[str, dict] = {}
    total, counts = count_call(lambda: call(900))
    rows["full"] = {"ops_per_call": total, "top_ops": dict(_top(counts))}
    plans = {
        "duca": ("duca", dict(interval=3, score="vnorm", fresh_ratio=0.3)),
        "duca_random": ("duca", dict(interval=3, score="random", fresh_ratio=0.3)),
        "fora": ("fora", dict(interval=3)),
    }
    for key, (policy, kw) in plans.items():
        cache = DuCaCache(model, policy, num_steps=3, **kw, **cache_kw)
        with cache:
            seen = []
            for t in (900, 800, 700):
                total, counts = count_call(lambda t=t: call(t))
                seen.append((cache.state.types[0].value, total, counts))
        for typ, total, counts in seen:
            name = {
                ("duca", "full"): "duca_full",
                ("duca", "conservative"): "duca_conservative",
                ("duca", "aggressive"): "duca_aggressive",
                ("duca_random", "conservative"): "duca_conservative_random",
                ("fora", "reuse"): "fora_reuse",
            }.get((key, typ))
            if name is not None and name not in rows:
                rows[name] = {"ops_per_call": total, "top_ops": dict(_top(counts))}
    return rows


def _top(counts: dict, n: int = 12):
    return sorted(counts.items(), key=lambda kv: -kv[1])[:n]


def shape_of(model) -> dict:
    mc = model.config
    return {
        "depth": int(mc.num_layers),
        "width": int(mc.num_attention_heads * mc.attention_head_dim),
        "tokens": int((mc.sample_size // mc.patch_size) ** 2),
    }


def wall_clock(
    model, rounds: int, steps: int = 50, policy: str = "duca_dit", compile: bool = False
) -> dict:
    """CPU seconds of one batched-CFG DDIM run (batch 1, CFG 4) uncached, with ``policy``
    (and with ``compile=True`` too), in interleaved rounds (each times every setting once, so
    drifting load hits all alike), median; and the FLOPs ratio of the same run."""
    import torch

    from vislearn.accel import DuCaCache, count_flops, flops_ratio
    from vislearn.accel.sampling import make_scheduler, sample_class_conditional

    mc = model.config
    sched = make_scheduler("ddim")
    labels = torch.tensor([1])
    noise = torch.randn(
        1, mc.in_channels, mc.sample_size, mc.sample_size, generator=torch.Generator()
    )

    def run():
        return sample_class_conditional(model, sched, labels, steps, 4.0, noise=noise)

    settings: dict = {"none": None, policy: DuCaCache(model, policy, num_steps=steps)}
    if compile:
        settings[f"{policy}_compiled"] = DuCaCache(model, policy, num_steps=steps, compile=True)
    counts, warm = {}, {}
    with torch.no_grad():
        _, base_flops = count_flops(run)
        with settings[policy]:
            _, cached_flops = count_flops(run)
        for name, c in settings.items():  # warm-up (compiles with compile=True)
            t0 = time.perf_counter()
            with c if c is not None else contextlib.nullcontext():
                run()
                counts[name] = c.counts() if c is not None else None
            warm[name] = time.perf_counter() - t0
        times: dict[str, list[float]] = {k: [] for k in settings}
        cpu: dict[str, list[float]] = {k: [] for k in settings}
        for _ in range(rounds):
            for name, c in settings.items():
                with c if c is not None else contextlib.nullcontext():
                    t0, p0 = time.perf_counter(), time.process_time()
                    run()
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - p0)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    ratio = flops_ratio(base_flops, cached_flops)
    speed = {k: med["none"] / v for k, v in med.items() if k != "none"}
    speed_cpu = {k: cpu_med["none"] / v for k, v in cpu_med.items() if k != "none"}
    return {
        "policy": policy,
        "steps": steps,
        "rounds": rounds,
        "counts": counts[policy],
        "seconds": times,
        "seconds_median": med,
        "warmup_seconds": warm,
        "speedup_wall": speed,
        "flops_ratio": ratio,
        "wall_over_flops": {k: v / ratio for k, v in speed.items()},
        # process CPU time: less sensitive to other jobs on a shared machine
        "cpu_seconds": cpu,
        "speedup_cpu_time": speed_cpu,
        "cpu_time_over_flops": {k: v / ratio for k, v in speed_cpu.items()},
    }


def flux_ops(double: int = 19, single: int = 38) -> dict:
    """Ops per call on a FLUX.1-shaped diffusers ``FluxTransformer2DModel`` (19 double- and
    38 single-stream blocks) of tiny width (16), 16 image + 4 text tokens, random weights."""
    import torch
    from diffusers import FluxTransformer2DModel

    from vislearn.accel import DuCaCache

    torch.manual_seed(0)
    m = FluxTransformer2DModel(
        patch_size=1,
        in_channels=8,
        num_layers=double,
        num_single_layers=single,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=12,
        axes_dims_rope=(2, 2, 4),
    ).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 8, generator=g)
    grid = torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij")
    kw = dict(
        encoder_hidden_states=torch.randn(2, 4, 16, generator=g),
        pooled_projections=torch.randn(2, 12, generator=g),
        img_ids=torch.stack(grid, -1).view(-1, 3),
        txt_ids=torch.zeros(4, 3),
    )
    ts = {t: torch.full((2,), t) for t in (0.9, 0.8, 0.7)}
    rows = {"full": {"ops_per_call": count_call(lambda: m(x, timestep=ts[0.9], **kw))[0]}}
    for policy, extra in (("duca", {"score": "vnorm", "fresh_ratio": 0.3}), ("fora", {})):
        with DuCaCache(m, policy, interval=3, num_steps=3, **extra) as cache:
            for t in ts.values():
                n = count_call(lambda t=t: m(x, timestep=t, **kw))[0]
                name = f"{policy}_{cache.state.types[0].value}"
                if name in ("duca_conservative", "duca_aggressive", "fora_reuse"):
                    rows[name] = {"ops_per_call": n}
    for r in rows.values():
        r.update(double_blocks=double, single_blocks=single, width=16)
        r["ratio_to_full"] = round(r["ops_per_call"] / rows["full"]["ops_per_call"], 3)
    return rows


def main(argv: list[str] | None = None) -> None:
    import torch
    from diffusers import DiTTransformer2DModel

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-reference", action="store_true", help="skip the reference DiT")
    p.add_argument("--wall", action="store_true", help="also time DuCa N=3 against FLOPs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--compile", action="store_true", help="time compile=True as well")
    p.add_argument("--label", default="", help="a note stored with the results")
    p.add_argument("--before", help="an earlier result file whose rows are stored alongside")
    p.add_argument("--flux", action="store_true", help="also count a FLUX.1-shaped model")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    torch.manual_seed(0)
    models = {"dit_xl2_reduced": DiTTransformer2DModel(**XL_REDUCED).eval()}
    if not a.no_reference and REFERENCE.is_dir():
        from vislearn.accel.sampling import load_transformer

        models["reference_fmdit"] = load_transformer(REFERENCE)
    doc: dict = {
        "benchmark": "dit_ops",
        "label": a.label,
        "counting": "non-view aten ops per model call (TorchDispatchMode), batched CFG batch 2; "
        "generic presets duca (N=3, vnorm or random score, ratio 0.3) and fora (N=3)",
        "hardware": f"{platform.machine()}, {a.threads} threads, torch {torch.__version__}",
        "models": {},
    }
    for name, model in models.items():
        rows = measure_ops(model)
        full = rows["full"]["ops_per_call"]
        for r in rows.values():
            r.update(shape_of(model))
            r["ratio_to_full"] = round(r["ops_per_call"] / full, 3)
        doc["models"][name] = {"shape": shape_of(model), "rows": rows}
        print(name, {k: v["ops_per_call"] for k, v in rows.items()})
    doc["rows"] = doc["models"]["dit_xl2_reduced"]["rows"]
    if a.before:
        before = json.loads(Path(a.before).read_text())
        doc["before"] = {
            "label": before.get("label", ""),
            "models": {
                k: {r: v["ops_per_call"] for r, v in m["rows"].items()}
                for k, m in before["models"].items()
            },
            "wall_clock": before.get("wall_clock"),
        }
    if a.flux:
        doc["flux"] = flux_ops()
        print("flux", {k: v["ops_per_call"] for k, v in doc["flux"].items()})
    if a.wall:
        w = wall_clock(models["dit_xl2_reduced"], a.rounds, a.steps, compile=a.compile)
        doc["wall_clock"] = w
        keys = ("speedup_wall", "flops_ratio", "wall_over_flops", "cpu_time_over_flops")
        print(json.dumps({k: w[k] for k in keys}))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
