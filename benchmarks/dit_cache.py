"""DiT feature-caching benchmark: vislearn's FORA / ToCa / DuCa against diffusers' cache hooks
and cache-dit, on one diffusers DiT checkpoint -> docs/results/dit_cache.json and a
speed-vs-FD Pareto plot (docs/dit_cache_pareto.png).

    python benchmarks/dit_cache.py --config configs/dit_cache/fmnist.yaml
    python benchmarks/dit_cache.py --config ... --only none vislearn/duca_n3   # a subset
    python benchmarks/dit_cache.py --config ... --report-only

Per setting (all with the same labels, noise and sampler):

* quality: ``n`` images sampled in runs of ``batch`` (each run starts with a fresh cache);
  Fréchet distance (FD) and class consistency from the feature classifier
  (:mod:`vislearn.tasks.dit.fid`) against the real test split; PSNR and relative L2 against the
  uncached images of the same noise;
* FLOPs: one run of ``flops_n`` images under ``torch.utils.flop_counter``, as a ratio to the
  uncached run;
* wall clock: ``timing.repeats`` rounds, each timing one run of ``timing.n`` images of every
  setting in turn (interleaved, so drifting load hits all alike); speed-up = median uncached /
  median cached.

Quality results are cached per setting under ``--cache`` (an interrupted benchmark resumes);
the timing phase always runs over every setting of the config.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "docs" / "results" / "dit_cache.json"
PLOT = ROOT / "docs" / "dit_cache_pareto.png"


class VislearnCache:
    """A :class:`vislearn.accel.DuCaCache` behind the same interface as the peers."""

    def __init__(self, name: str, model, num_steps: int, policy: str = "duca", **overrides):
        from vislearn.accel import DuCaCache

        self.name = name
        self.cache = DuCaCache(model, policy, num_steps=num_steps, **overrides)
        self.settings = {"preset": policy, **self.cache.policy.to_dict()}

    def calibrate(self, run) -> None:
        pass

    def __enter__(self):
        self.cache.enable()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cache.disable()

    def counts(self) -> dict:
        return self.cache.counts()


def family(entry: dict) -> str:
    """The curve a setting belongs to in the plot: ``family`` from the config, else the name
    up to the first ``_`` after its ``/`` (``cache_dit/dbcache_r0.24`` -> ``cache_dit/dbcache``)."""
    if entry.get("family"):
        return entry["family"]
    org, _, rest = entry["name"].rpartition("/")
    return f"{org}/{rest.split('_')[0]}" if org else rest


def build_setting(entry: dict, model, num_steps: int):
    if "vislearn" in entry:
        return VislearnCache(entry["name"], model, num_steps, **entry["vislearn"])
    from dit_peers import make_peer

    peer = make_peer(entry["peer"], model, num_steps, **entry.get("params", {}))
    peer.name = entry["name"]
    return peer


def time_settings(
    settings: dict[str, Any], run, rounds: int, device=None, label: str = ""
) -> dict[str, list[float]]:
    """Wall-clock seconds of ``run()`` inside every setting (each ``with setting`` starts a
    fresh cache state), in interleaved rounds -- each round times every setting once, in turn,
    so drifting load hits all alike -- synchronising ``device`` around each run."""
    from vislearn.accel.metrics import wall_time

    times: dict[str, list[float]] = {name: [] for name in settings}
    for rnd in range(rounds):
        for name, setting in settings.items():
            with setting:
                times[name].append(wall_time(run, device=device)[1])
        print(f"{label}round {rnd}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()))
    return times


def main() -> None:
    import torch

    from vislearn.accel.metrics import count_flops, flops_ratio, psnr, relative_l2
    from vislearn.accel.sampling import load_transformer, make_scheduler, sample_class_conditional
    from vislearn.core.utils import write_json
    from vislearn.data.datasets import get_dataset
    from vislearn.tasks.dit.fid import (
        class_consistency,
        feature_stats,
        frechet_distance,
        load_classifier,
        to_signed,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "dit_cache" / "fmnist.yaml"))
    p.add_argument("--only", nargs="+", help="run only these setting names (plus none)")
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "dit_cache"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    p.add_argument("--threads", type=int, default=2, help="threads (quality and timing)")
    p.add_argument(
        "--timing-threads",
        type=int,
        nargs="*",
        default=[1],
        help="also time every setting with these thread counts (speedup_wall_by_threads)",
    )
    p.add_argument("--flops-n", type=int, default=4)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--plot", default=str(PLOT), help="the Pareto plot (PNG)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from vislearn.core.config import load_recipe

    cfg = load_recipe(a.config)
    settings = [s for s in cfg["settings"] if not a.only or s["name"] in {"none", *a.only}]
    cache_dir = Path(a.cache)
    cache_dir.mkdir(parents=True, exist_ok=True)

    model_dir = ROOT / cfg["model"]
    model = load_transformer(model_dir)
    classifier, cls_info = load_classifier(ROOT / cfg["classifier"])
    sc = cfg["sampler"]
    steps, guidance = int(sc["steps"]), float(sc["cfg"])
    scheduler = make_scheduler(sc["scheduler"], model_dir)
    mc = model.config
    n_classes = int(mc.num_embeds_ada_norm)
    n, batch = int(cfg["n"]), int(cfg["batch"])
    labels = torch.arange(n) % n_classes
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    noise = torch.randn(n, mc.in_channels, mc.sample_size, mc.sample_size, generator=gen)

    def sample(count: int, setting=None, counts: dict | None = None) -> torch.Tensor:
        """The first ``count`` images, in runs of ``batch``; each run inside its own ``with
        setting`` (fresh cache state), or uncached when ``setting`` is None. The step counts
        of the first run go into ``counts``."""
        outs = []
        for i in range(0, count, batch):
            j = min(count, i + batch)
            with setting if setting is not None else contextlib.nullcontext():
                x = sample_class_conditional(
                    model, scheduler, labels[i:j], steps, guidance, noise=noise[i:j]
                )
                if counts is not None and i == 0:
                    counts.update(setting.counts())
            outs.append(x.clamp(-1, 1))
        return torch.cat(outs)

    built: dict[str, Any] = {}

    def get_setting(entry: dict):
        """Each setting is built and calibrated (MagCache) once, for both phases."""
        if entry["name"] not in built:
            setting = build_setting(entry, model, steps)
            setting.calibrate(lambda: sample(min(n, batch)))
            built[entry["name"]] = setting
        return built[entry["name"]]

    real = get_dataset(cfg["reference"], "test", image_size=mc.sample_size, channels=1)
    real_feats, _ = classifier.embed(to_signed(real.images))
    mu_r, s_r = feature_stats(real_feats)

    def run_setting(entry: dict, ref: torch.Tensor | None) -> dict:
        f = cache_dir / f"{entry['name'].replace('/', '__')}.json"
        if f.exists():
            return json.loads(f.read_text())
        if a.report_only:
            raise SystemExit(f"{entry['name']}: not in the cache; run without --report-only")
        setting = get_setting(entry)
        t0 = time.perf_counter()
        counts: dict = {}
        images = sample(n, setting, counts)
        seconds = time.perf_counter() - t0
        feats, logits = classifier.embed(images)
        mu, s = feature_stats(feats)
        _, flops = count_flops(sample, a.flops_n, setting)
        row = {
            "name": entry["name"],
            "family": family(entry),
            "fd": frechet_distance(mu, s, mu_r, s_r),
            "class_consistency": class_consistency(logits, labels),
            "flops": flops,
            "sample_seconds": seconds,
            "steps": counts,
            "settings": setting.settings,
        }
        if ref is not None:
            row["psnr"] = psnr(images, ref, data_range=2.0)
            row["rel_l2"] = relative_l2(images, ref)
        torch.save(images, cache_dir / f"{f.stem}.pt")
        write_json(f, row)
        print(json.dumps({k: row[k] for k in ("name", "fd", "class_consistency", "steps")}))
        return row

    ref_row = run_setting(settings[0], None)
    ref = torch.load(cache_dir / "none.pt", weights_only=True)
    rows = [ref_row] + [run_setting(e, ref) for e in settings[1:]]

    # wall clock: interleaved rounds over every setting, once per thread count
    tn = int(cfg["timing"]["n"])
    thread_counts = [a.threads] + [t for t in a.timing_threads if t != a.threads]
    times = {t: {e["name"]: [] for e in settings} for t in thread_counts}
    if not a.report_only:
        for e in settings:  # every setting built and calibrated before any timing
            get_setting(e)
        built_settings = {e["name"]: get_setting(e) for e in settings}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            times[threads] = time_settings(
                built_settings,
                lambda: sample_class_conditional(
                    model, scheduler, labels[:tn], steps, guidance, noise=noise[:tn]
                ),
                int(cfg["timing"]["repeats"]),
                label=f"{threads} threads, ",
            )
        torch.set_num_threads(a.threads)
    base_fd, base_flops = ref_row["fd"], ref_row["flops"]
    previous = {}  # --report-only: keep the wall-clock numbers of the last full run
    if a.report_only and Path(a.out).is_file():
        previous = {r["name"]: r for r in json.loads(Path(a.out).read_text())["rows"]}
    for r in rows:
        r["family"] = family(next(e for e in settings if e["name"] == r["name"]))
        for key in ("seconds_median", "speedup_wall", "speedup_wall_by_threads"):
            if key in previous.get(r["name"], {}):
                r[key] = previous[r["name"]][key]
        for threads in thread_counts:
            t, base = times[threads].get(r["name"]), times[threads]["none"]
            if not (t and base):
                continue
            speedup = statistics.median(base) / statistics.median(t)
            r.setdefault("speedup_wall_by_threads", {})[str(threads)] = speedup
            if threads == a.threads:
                r["seconds_median"] = statistics.median(t)
                r["speedup_wall"] = speedup
        r["flops_ratio"] = flops_ratio(base_flops, r["flops"])
        r["fd_ratio_vs_none"] = r["fd"] / base_fd
    settings_out = {
        "model": cfg["model"],
        "model_config": {
            k: mc[k]
            for k in (
                "num_layers",
                "num_attention_heads",
                "attention_head_dim",
                "patch_size",
                "sample_size",
            )
        },
        "sampler": sc,
        "n": n,
        "batch": batch,
        "timing": cfg["timing"],
        "classifier": {"path": cfg["classifier"], **cls_info},
        "fd": f"Fréchet distance on the classifier's {real_feats.shape[1]}-d features, "
        f"{n} samples vs the {len(real)} real test images",
        "timing_threads": thread_counts,
        "hardware": f"{platform.machine()}, {a.threads} threads, torch {torch.__version__}, no GPU",
    }
    write_json(a.out, {"benchmark": "dit_cache", "settings": settings_out, "rows": rows})
    print(f"wrote {a.out}")
    pareto_plot(rows, Path(a.plot))
    for r in rows:
        print(
            f"| {r['name']} | {r.get('speedup_wall', float('nan')):.2f} | {r['flops_ratio']:.2f}"
            f" | {r['fd']:.2f} | {r['class_consistency']:.3f} | {r.get('psnr', float('inf')):.1f} |"
        )


def pareto_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    families: dict[str, list[dict]] = {}
    for r in rows:
        if "speedup_wall" not in r:
            continue
        fam = r.get("family", r["name"])
        families.setdefault(fam, []).append(r)
    markers = {"vislearn": "o", "diffusers": "s", "cache_dit": "^", "teacache": "D"}
    colours = plt.get_cmap("tab20").colors
    for k, (fam, rs) in enumerate(sorted(families.items())):
        rs = sorted(rs, key=lambda r: r["speedup_wall"])
        ax.plot(
            [r["speedup_wall"] for r in rs],
            [r["fd"] for r in rs],
            "-" if fam.startswith("vislearn/duca") else "--",
            marker=markers.get(fam.split("/")[0], "o"),
            color=colours[k % len(colours)],
            label=fam,
            ms=5,
        )
    ax.set_xlabel("wall-clock speed-up vs uncached (CPU)")
    ax.set_ylabel("FD (lower is better)")
    ax.set_title("DiT caching on Fashion-MNIST: speed vs quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
