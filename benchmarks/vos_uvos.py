"""SSL-UVOS on synthetic moving-object videos, against every piece it is made of ->
docs/results/vos_uvos.json.

Videos: :func:`vislearn.data.synthetic.moving_sprite_videos` (configs/vos_synth/uvos.yaml):
a tinted Fashion-MNIST item translating over a real photo plus one smaller distractor on a
random walk (ground-truth ids 1 and 2), 48 x 48 px, so a ViT with 4 px patches sees a
12 x 12 token grid. Training videos give frames and clips only (no masks); tuning videos
(another seed) choose each row's one free parameter; test videos are scored.

Stages, each a job on :func:`vislearn.bench.run_jobs` (cached by the hash of its settings, so
an interrupted run resumes and a changed setting runs again):

1. ``dino``: vislearn's ``dino`` method pretrains ``vit_mini`` on the training frames
   (configs/vos_synth/dino.yaml; real DINO weights cannot be downloaded here), then a
   token-level object/background linear probe checks its keys against a random-init ViT's and
   the patch colours before anything else is run.
2. ``block`` (one per seed): the frozen keys of every training frame are cached once, then
   the SSL-UVOS block trains on 3-frame clips of them (loss set sizes scaled to the grid).
3. ``eval`` (one per row and seed): the row's parameter is chosen on the tuning videos by
   J&F, then every test video is scored (J, F, J&F with the official DAVIS-17 unsupervised
   matching, strict: at most 20 proposals, more is an error).

Rows: ``ssl_uvos`` (leader clustering of the trained block's attention, tau tuned),
``untrained_block`` (the same on the block at its initialisation), ``no_block`` (the same
on the frozen keys' own attention), ``kmeans_block`` (k-means on the trained block's
descriptors, k tuned), ``kmeans_keys`` (k-means on the frozen keys), ``rgb_kmeans`` (k-means on
patch-mean colours: the floor), ``frame_difference`` (threshold tuned) and ``token_oracle``
(each token labelled with its majority ground truth: the ceiling of any token-level method).
Intervals: percentile bootstrap over test videos (per-video J&F, averaged over the block
seeds for the rows that use a block), and the paired per-video difference to ``ssl_uvos``.

    python benchmarks/vos_uvos.py                      # about an hour on 2 cores
    python benchmarks/vos_uvos.py --smoke --cache /tmp/uvos_smoke --out /tmp/uvos_smoke.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from vos_uvos_jobs import BLOCK_ROWS, ROWS

ROOT = Path(__file__).resolve().parents[1]

SMOKE = {
    "videos": {"num_train": 16, "num_tune": 2, "num_test": 3, "frames": 6},
    "dino": {"epochs": 1},
    "block": {"steps": 4, "seeds": [0, 1]},
    "segment": {"taus": [0.5, 1.0]},
    "kmeans": {"ks": [2, 4]},
    "frame_difference": {"thresholds": [0.04, 0.08]},
}


def load_settings(smoke: bool) -> dict:
    from vislearn.core.config import load_recipe

    cfg = load_recipe(ROOT / "configs" / "vos_synth" / "uvos.yaml")
    if smoke:
        for section, values in SMOKE.items():
            cfg[section].update(values)
    return cfg


def build_jobs(cfg: dict, cache: Path) -> tuple[object, list, list]:
    """The dino job, the block jobs and the eval jobs, each stage's config carrying the keys
    of the jobs it depends on (so a changed DINO retrains the blocks and re-scores)."""
    from vislearn.bench import Job

    fn = "vos_uvos_jobs:{}".format
    dino = Job("dino", 0, {"videos": cfg["videos"], "dino": cfg["dino"]}, fn("dino_job"))
    dino_dir = str(dino.run_dir(cache))
    blocks = {
        seed: Job(
            "block",
            seed,
            {"videos": cfg["videos"], "block": cfg["block"], "dino_key": dino.key},
            fn("block_job"),
            resources={"dino_dir": dino_dir},
        )
        for seed in cfg["block"]["seeds"]
    }
    evals = []
    for row in ROWS:
        seeds = cfg["block"]["seeds"] if row in BLOCK_ROWS else [0]
        for seed in seeds:
            block = blocks[seed] if row in BLOCK_ROWS else None
            config = {
                "row": row,
                "videos": cfg["videos"],
                "segment": cfg["segment"],
                "grid": grid_of(cfg, row),
                "dino_key": dino.key,
                "block_key": block.key if block else None,
                "block": cfg["block"] if row in BLOCK_ROWS else None,
            }
            resources = {"dino_dir": dino_dir}
            if block is not None:
                resources["block_dir"] = str(block.run_dir(cache))
            evals.append(Job(row, seed, config, fn("eval_job"), resources=resources))
    return dino, list(blocks.values()), evals


def grid_of(cfg: dict, row: str) -> list:
    if row == "untrained_block":
        return list(cfg["untrained_block"]["taus"])
    if row in ("ssl_uvos", "no_block"):
        return list(cfg["segment"]["taus"])
    if row in ("kmeans_block", "kmeans_keys", "rgb_kmeans"):
        return list(cfg["kmeans"]["ks"])
    if row == "frame_difference":
        return list(cfg["frame_difference"]["thresholds"])
    return [None]


#: further paired comparisons (a - b per video): the block under the same clustering, the
#: frozen features against the colour floor, the trained keys' attention against a random block
PAIRS = (
    ("kmeans_block", "kmeans_keys"),
    ("kmeans_keys", "rgb_kmeans"),
    ("no_block", "untrained_block"),
)


def per_video_jf(records: list[dict]) -> dict:
    """Per-video J&F of every row, averaged over its seeds: ``{row: array [videos]}``."""
    import numpy as np

    runs: dict[str, list] = {}
    for rec in records:
        runs.setdefault(rec["name"], []).append(rec["metrics"]["per_video_jf"])
    return {row: np.mean(values, axis=0) for row, values in runs.items()}


def paired(records: list[dict]) -> list[dict]:
    """Bootstrap intervals of the per-video J&F differences of :data:`PAIRS`."""
    from vislearn.bench.stats import bootstrap_ci

    per_video = per_video_jf(records)
    out = []
    for a, b in PAIRS:
        mean, ci = bootstrap_ci(per_video[a], paired=per_video[b])
        out.append({"a": a, "b": b, "jf_diff": round(mean, 2), "ci95": [round(v, 2) for v in ci]})
    return out


def summarise(records: list[dict]) -> list[dict]:
    """One row per method: J&F with a bootstrap interval over test videos (per-video scores
    averaged over seeds), the paired difference to ``ssl_uvos``, per-seed values."""
    import numpy as np

    from vislearn.bench.stats import bootstrap_ci, mean_ci95

    by_row: dict[str, list[dict]] = {}
    for rec in records:
        by_row.setdefault(rec["name"], []).append(rec)
    per_video = per_video_jf(records)
    rows = []
    for row in ROWS:
        recs = by_row[row]
        m = [r["metrics"] for r in recs]
        jf, ci = bootstrap_ci(per_video[row])
        out = {
            "name": row,
            "jf": round(jf, 2),
            "jf_ci95": [round(v, 2) for v in ci],
            "j": round(float(np.mean([x["J_mean"] for x in m])), 2),
            "f": round(float(np.mean([x["F_mean"] for x in m])), 2),
            "param": [x["param"] for x in m],
            "seeds": [r["seed"] for r in recs],
            "jf_per_seed": [x["JF_mean"] for x in m],
            "clusters_per_video": round(float(np.mean([x["clusters_per_video"] for x in m])), 2),
            "seconds_per_video": round(float(np.mean([x["seconds_per_video"] for x in m])), 3),
            "tuning": [x["tuning"] for x in m],
        }
        if len(m) > 1:
            out["jf_seed_mean_ci95"] = mean_ci95(out["jf_per_seed"])[1]
        if row != "ssl_uvos":
            diff, dci = bootstrap_ci(per_video[row], paired=per_video["ssl_uvos"])
            out["jf_diff"] = {
                "mean": round(diff, 2),
                "ci95": [round(v, 2) for v in dci],
                "baseline": "ssl_uvos",
                "n": len(per_video[row]),
            }
        rows.append(out)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "vos_uvos"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "vos_uvos.json"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 epoch each (a minute)")
    p.add_argument("--jobs", type=int, default=2, help="parallel block / eval jobs")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the DINO job")
    p.add_argument("--report-only", action="store_true", help="use cached jobs only")
    p.add_argument(
        "--seeds", type=int, nargs="+", help="run / report only these of the recipe's block "
        "seeds (the recipe's seed list stays part of every job's key)",
    )  # fmt: skip
    a = p.parse_args()

    from vislearn.bench import run_jobs, write_results

    cfg = load_settings(a.smoke)
    cache = Path(a.cache)
    dino, blocks, evals = build_jobs(cfg, cache)
    if a.seeds:
        blocks = [j for j in blocks if j.seed in a.seeds]
        evals = [j for j in evals if j.name not in BLOCK_ROWS or j.seed in a.seeds]
    paths = [ROOT / "benchmarks"]
    t0 = time.perf_counter()
    kw = {"import_paths": paths, "report_only": a.report_only}
    (dino_rec,) = run_jobs([dino], cache, n_jobs=1, threads_per_job=a.threads, **kw)
    block_recs = run_jobs(blocks, cache, n_jobs=a.jobs, **kw)
    records = run_jobs(evals, cache, n_jobs=a.jobs, **kw)
    rows = summarise(records)
    import torch

    settings = {
        "recipe": "configs/vos_synth/uvos.yaml + configs/vos_synth/dino.yaml"
        + (" (smoke)" if a.smoke else ""),
        "videos": cfg["videos"],
        "dino": cfg["dino"],
        "block": cfg["block"],
        "segment": cfg["segment"],
        "dino_result": dino_rec["metrics"],
        "block_results": [{"seed": r["seed"], **r["metrics"]} for r in block_recs],
        "paired_differences": paired(records),
        "protocol": "J/F/J&F (x100) with the DAVIS-17 unsupervised matching (one Hungarian "
        "assignment per video on frame-mean (J+F)/2), strict: at most 20 proposals per video; "
        "jf_ci95: percentile bootstrap over the test videos (10,000 resamples) of per-video "
        "J&F averaged over seeds; jf_diff: the paired per-video difference (row - ssl_uvos) "
        "with its bootstrap interval",
        "wall_seconds_this_call": round(time.perf_counter() - t0, 1),
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        "no GPU",
    }
    write_results(a.out, "vos_uvos", settings, rows)
    for row in rows:
        diff = row.get("jf_diff", {})
        print(f"{row['name']:18s} J&F {row['jf']:6.2f} {row['jf_ci95']}  diff {diff}")
    for d in settings["paired_differences"]:
        print(f"{d['a']} - {d['b']}: {d['jf_diff']} {d['ci95']}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
