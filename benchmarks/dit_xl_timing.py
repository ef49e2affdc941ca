"""Latency of feature caching on a DiT-XL/2-sized diffusers DiT (random weights), uncached vs
vislearn's FORA / ToCa / DuCa vs the static diffusers peers, on one accelerator ->
docs/results/dit_xl_timing.json (rows ``name``, ``seconds_median``, ``speedup_wall``,
``flops_ratio``, ``steps``; settings with the device name).

    python benchmarks/dit_xl_timing.py --device cuda --dtype bf16
    python benchmarks/dit_xl_timing.py --tiny --device cpu --out /tmp/dit_xl.json  # smoke

Recipe: configs/dit_cache/dit_xl_gpu.yaml (model shape, sampler, settings). Every setting
samples the same labels from the same noise; one warm-up round, then ``repeats`` interleaved
rounds (each times every setting once, synchronising the device before and after), median.
FLOPs from ``torch.utils.flop_counter`` on a one-image run (``--no-flops`` skips it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "dit_cache" / "dit_xl_gpu.yaml"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--tiny", action="store_true", help="the recipe's tiny model (smoke test)")
    p.add_argument("--steps", type=int, help="override the sampler's steps")
    p.add_argument("--repeats", type=int, help="override the timing rounds")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP counts")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "dit_xl_timing.json"))
    return p.parse_args(argv)


def run_timing(
    config: str | Path = ROOT / "configs" / "dit_cache" / "dit_xl_gpu.yaml",
    device: str = "cuda",
    dtype: str = "bf16",
    tiny: bool = False,
    steps: int | None = None,
    repeats: int | None = None,
    flops: bool = True,
) -> dict:
    """Time every caching setting of the recipe ``config``; returns the result document
    (``benchmark``, ``settings``, ``rows``) that :func:`main` writes. Also called by
    benchmarks/gpu_suite.py."""
    import torch
    from diffusers import DiTTransformer2DModel

    from dit_cache import build_setting, time_settings
    from vislearn.accel.metrics import count_flops, flops_ratio
    from vislearn.accel.sampling import make_scheduler, sample_class_conditional
    from vislearn.core.config import load_recipe

    cfg = load_recipe(config)
    steps = steps or int(cfg["sampler"]["steps"])
    guidance = float(cfg["sampler"]["cfg"])
    repeats = repeats or int(cfg["repeats"])
    torch_dtype = getattr(torch, DTYPES[dtype])
    dev = torch.device(device)

    torch.manual_seed(int(cfg["seed"]))
    shape = cfg["tiny" if tiny else "model"]
    model = DiTTransformer2DModel(**shape).to(dev, torch_dtype).eval()
    scheduler = make_scheduler(cfg["sampler"]["scheduler"])
    n = int(cfg["n"])
    labels = torch.arange(n) % int(shape["num_embeds_ada_norm"])
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    size = (n, shape["in_channels"], shape["sample_size"], shape["sample_size"])
    noise = torch.randn(size, generator=gen).to(dev, torch_dtype)

    def run(count: int = n):
        return sample_class_conditional(
            model, scheduler, labels[:count], steps, guidance, noise=noise[:count]
        )

    entries = {e["name"]: e for e in cfg["settings"]}
    settings = {name: build_setting(e, model, steps) for name, e in entries.items()}
    counts: dict[str, dict] = {}
    for name, setting in settings.items():  # warm-up (kernels, allocator), step counts
        with setting:
            run()
            counts[name] = setting.counts()
    times = time_settings(settings, run, repeats, device=dev)
    flop_counts: dict[str, int] = {}
    if flops:
        for name, setting in settings.items():
            with setting:
                flop_counts[name] = count_flops(run, 1)[1]
    base = statistics.median(times["none"])
    rows = []
    for name, setting in settings.items():
        t = statistics.median(times[name])
        row = {
            "name": name,
            "seconds_median": t,
            "seconds_per_round": times[name],
            "speedup_wall": base / t,
            "steps": counts[name],
            "settings": getattr(setting, "settings", entries[name]),
        }
        if flop_counts:
            row["flops_ratio"] = flops_ratio(flop_counts["none"], flop_counts[name])
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("name", "seconds_median", "speedup_wall")}))
    if dev.type == "cuda":
        hardware = f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
    else:
        hardware = f"{dev.type}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    return {
        "benchmark": "dit_xl_timing",
        "settings": {
            "model": {**shape, "weights": "random"},
            "tiny": tiny,
            "sampler": {**cfg["sampler"], "steps": steps},
            "n": n,
            "repeats": repeats,
            "dtype": dtype,
            "hardware": hardware,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
            if dev.type == "cuda"
            else None,
        },
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    from vislearn.core.utils import write_json

    a = parse_args(argv)
    doc = run_timing(a.config, a.device, a.dtype, a.tiny, a.steps, a.repeats, not a.no_flops)
    write_json(a.out, doc)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
