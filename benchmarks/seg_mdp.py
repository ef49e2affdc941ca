"""Multi-dataset segmentation pretraining benchmark: random init, single-dataset, naive
multi-dataset and MDP pretraining (plus MDP ablations), each transferred to four target data
sets under three protocols -> docs/results/seg_mdp.json (metric ``miou``, %).

Data: the synthetic sets of ``vislearn.data.synthetic.SEG_DATASETS`` (Fashion-MNIST items on
real photos / generated colour fields, 48x48 by default, 2,000 train and 500 test images each):
``fine`` (10 classes + background), ``coarse`` (tops / bottoms / footwear / bags), ``partial``
(five classes labelled, the other items background) are the *seen* sets; ``heldout`` (its own
7-class grouping and photos) is never pretrained on -- the "unseen data set" case.

Pretraining (one run per seed, cached by recipe hash), at the target's labelled fraction f
(``--fraction``, 0.1):

* ``single_dataset``: cross-entropy on the target alone (its f subset); for ``heldout``, on all
  of ``fine`` (the one-data-set control: pretraining cannot see the held-out set);
* ``naive_multi``: all three seen sets, one classifier head per set;
* ``mdp``: all three seen sets with the MDP loss (configs/seg_mdp/pretrain_mdp.yaml);
* ablations of ``mdp`` (target ``heldout``): ``mdp_own_dataset`` (contrast
  over the pixel's own set only), ``mdp_no_sparse`` (``sparse_weight`` 0) and
  ``mdp_background_own`` (background pixels contrast against their own set's classes only).

A seen target contributes only its seeded f subset to every pretraining (the other sets all
their labels), so no row sees labels fine-tuning may not use; for ``heldout`` the
multi-dataset rows are one run on the three full seen sets.

Protocols, each trained on the target's f subset; model selection on as many further images
as 20 % of it, drawn from the rest of the target's train split (``data.val_from=rest``: never
trained on, and no pretraining saw them), validated every 200 steps; mIoU on the target's test
split with the best validated weights:

* ``linear_probe``: backbone + decoder transferred and frozen (batch-norm statistics too), a
  new per-pixel linear classifier (``--probe-steps``);
* ``finetune``: backbone + decoder transferred, everything trained, the backbone at 0.1x the
  learning rate (1x for random init), linear warm-up (``--finetune-steps``);
* ``backbone_only``: only the backbone transferred (new decoder), as ``finetune`` (targets
  ``fine`` and ``heldout``).

Learning rates are chosen per initialisation, target and protocol on the validation split of
seed 0 (grids :data:`LR_GRID`; ``backbone_only`` reuses ``finetune``'s choice) and reused for the
other seeds; the chosen run is seed 0's result, so nothing runs twice. ``oracle_full_labels``:
random init fine-tuned on all of the target's labels (same steps, seed 0 only, 20 % of them
held out for validation), the ceiling of the protocol.

    python benchmarks/seg_mdp.py --jobs 2 --seeds 0 1 2    # the full benchmark
    python benchmarks/seg_mdp.py --smoke --out /tmp/seg_mdp.json --cache /tmp/seg_mdp_cache
    python benchmarks/seg_mdp.py --report-only

Jobs run on :func:`vislearn.bench.run_jobs`: finished runs are cached under --cache by the hash
of their resolved recipe and seed (a transfer job's config holds its pretraining job's key;
rendered data sets under cache/data), so an interrupted benchmark resumes and a changed recipe
runs again. Rows: mean over seeds, per-seed values, 95 % t interval and the paired (same seed)
difference against ``single_dataset`` at the same target and protocol;
``paired_differences`` lists MDP against every other row and each ablation against MDP.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from vislearn.bench import Job, aggregate, run_jobs
from vislearn.bench import write_results as write_json_results
from vislearn.bench.stats import paired_diff

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
METRICS = ("miou", "val_miou", "pixel_acc", "best_step", "seconds_per_step")

SEEN = ("fine", "coarse", "partial")
TARGETS = (*SEEN, "heldout")
ROWS = ("random_init", "single_dataset", "naive_multi", "mdp")
#: MDP ablations: recipe overrides, and the targets they are transferred to
ABLATIONS = {
    "mdp_own_dataset": {"contrast_over": "own_dataset"},
    "mdp_no_sparse": {"sparse_weight": 0.0},
    "mdp_background_own": {"contrast_over": "background_own"},
}
ABLATION_TARGETS = ("heldout",)
PROTOCOLS = ("linear_probe", "finetune", "backbone_only")
#: learning-rate grid of each protocol (AdamW); backbone_only reuses finetune's choice
LR_GRID = {"linear_probe": (3e-3, 1e-2, 3e-2), "finetune": (3e-3, 1e-2)}
#: targets of the backbone_only protocol (CPU budget: one seen, the held-out one)
BACKBONE_ONLY_TARGETS = ("fine", "heldout")
#: what each protocol transfers and freezes
TRANSFER = {
    "linear_probe": ("backbone+decoder", "backbone+decoder"),
    "finetune": ("backbone+decoder", "none"),
    "backbone_only": ("backbone", "none"),
}
RECIPE = {"single_dataset": "single", "naive_multi": "naive_multi", "mdp": "mdp"}
SMOKE = {"num_train": 40, "num_test": 8, "image_size": 32, "pretrain_steps": 2,
         "finetune_steps": 2, "probe_steps": 2}  # fmt: skip


def _sizes(a: argparse.Namespace) -> dict:
    return {"num_train": a.num_train, "num_test": a.num_test, "image_size": a.image_size}


def _recipe(name: str, steps: int, data: dict, **updates) -> dict:
    from vislearn.core.config import load_config
    from vislearn.tasks.seg.run import SEG_DEFAULTS

    cfg = load_config(
        ROOT / "configs" / "seg_mdp" / f"{name}.yaml",
        defaults=SEG_DEFAULTS,
        data=data,
        trainer={"max_steps": steps, "progress": False, "accelerator": "cpu"},
        **updates,
    )
    cfg.pop("seed")  # the job's
    cfg.pop("out")  # the job's run directory
    return cfg


def data_section(a: argparse.Namespace) -> dict:
    """The resolved ``data`` section of the transfer recipe at the benchmark's sizes, with the
    rendered sets cached under ``--cache``/data."""
    return _recipe("finetune", 1, {**_sizes(a), "cache_dir": str(Path(a.cache) / "data")})["data"]


def run_pretrain_job(config: dict, seed: int, ctx: dict) -> dict:
    """One pretraining run (worker process)."""
    from vislearn.tasks.seg.run import pretrain_seg

    cfg = {**config["recipe"], "seed": seed, "out": ctx["run_dir"]}
    cfg["data"] = {**cfg["data"], "cache_dir": ctx["resources"]["data_cache"]}
    t0 = time.perf_counter()
    module, out = pretrain_seg(cfg)
    steps = cfg["trainer"]["max_steps"]
    return {
        "pretrained": str(out / "pretrained.safetensors"),
        "train_seconds": module.train_seconds,
        "seconds_per_step": module.train_seconds / steps,
        "wall_seconds": time.perf_counter() - t0,
    }


def run_transfer_job(config: dict, seed: int, ctx: dict) -> dict:
    """One fine-tuning / probing run with model selection and test evaluation (worker)."""
    from vislearn.tasks.seg.run import finetune_seg

    cfg = {**config["recipe"], "seed": seed, "out": ctx["run_dir"]}
    cfg["init"] = ctx["resources"].get("init")
    cfg["data"] = {**cfg["data"], "cache_dir": ctx["resources"]["data_cache"]}
    t0 = time.perf_counter()
    module, _, scores = finetune_seg(cfg)
    steps = cfg["trainer"]["max_steps"]
    return {
        "miou": 100 * scores["miou"],
        "val_miou": 100 * scores["val_miou"],
        "best_step": scores["best_step"],
        "val_curve": scores["val_curve"],
        "pixel_acc": 100 * scores["pixel_acc"],
        "iou": {k: None if v is None else 100 * v for k, v in scores["iou"].items()},
        "train_seconds": module.train_seconds,
        "seconds_per_step": module.train_seconds / steps,
        "wall_seconds": time.perf_counter() - t0,
    }


def prepare_data(a: argparse.Namespace) -> None:
    """Render every data set once in this process (workers then read the cache)."""
    from vislearn.tasks.seg.data import build_segmentation_dataset

    data = data_section(a)
    for t in TARGETS:
        for split in ("train", "test"):
            build_segmentation_dataset(f"synthetic:{t}", split, data)


def _source(row: str, target: str) -> str:
    """Which pretraining run a (row, target) uses: the target's f subset for a seen target,
    the full seen sets ("all") -- or ``fine`` for single_dataset -- for the held-out one."""
    if target != "heldout":
        return target
    return "fine_full" if row == "single_dataset" else "all"


def pretrain_jobs(a: argparse.Namespace) -> dict[tuple, Job]:
    """``{(row, source, seed): Job}`` for every pretraining a transfer row needs."""
    rows = [(r, t) for t in a.targets for r in ROWS[1:]]
    rows += [(r, t) for r in ABLATIONS for t in a.targets if t in ABLATION_TARGETS]
    res = {"data_cache": str(Path(a.cache) / "data")}
    jobs: dict[tuple, Job] = {}
    for seed in a.seeds:
        for row, t in rows:
            source = _source(row, t)
            if (row, source, seed) in jobs:
                continue
            if source == "fine_full":
                data = {"datasets": ["synthetic:fine"], "fractions": {}}
            elif source == "all":
                data = {"datasets": [f"synthetic:{s}" for s in SEEN], "fractions": {}}
            elif row == "single_dataset":
                data = {"datasets": [f"synthetic:{t}"], "fractions": {t: a.fraction}}
            else:
                data = {"datasets": [f"synthetic:{s}" for s in SEEN], "fractions": {t: a.fraction}}
            base = "mdp" if row in ABLATIONS else row
            model = ABLATIONS.get(row, {})
            recipe = _recipe(f"pretrain_{RECIPE[base]}", a.pretrain_steps,
                             {**_sizes(a), **data}, model=model)  # fmt: skip
            # a fine-tuning key, unused here; left out so the cache keys of the pretraining
            # runs made before it existed stay valid
            recipe["data"].pop("val_from", None)
            config = {"row": row, "source": source, "fraction": a.fraction, "recipe": recipe}
            jobs[(row, source, seed)] = Job(
                f"pretrain/{row}_{source}", seed, config, "seg_mdp:run_pretrain_job", resources=res
            )
    return jobs


def transfer_job(a, row, target, protocol, seed, lr, pre, cache, fraction=None) -> Job:
    """A transfer job: ``row``'s pretraining (none for random init) on ``target``."""
    fraction = a.fraction if fraction is None else fraction
    transfer, freeze = TRANSFER[protocol]
    pretrained = row not in ("random_init", "oracle_full_labels")
    steps = a.probe_steps if protocol == "linear_probe" else a.finetune_steps
    data = {**_sizes(a), "target": f"synthetic:{target}", "fraction": fraction,
            "val_from": "rest" if fraction < 1 else "labelled"}  # fmt: skip
    model = {"lr": lr, "freeze": freeze, "backbone_lr_mult": 0.1 if pretrained else 1.0}
    if protocol == "linear_probe":
        model["warmup_steps"] = 0
    recipe = _recipe("finetune", steps, data, model=model, transfer=transfer)
    config = {"row": row, "target": target, "fraction": fraction, "protocol": protocol,
              "lr": lr, "recipe": recipe}  # fmt: skip
    res = {"data_cache": str(cache / "data")}
    if pretrained:
        p = pre[(row, _source(row, target), seed)]
        config["init_key"] = p.key
        res["init"] = str(p.run_dir(cache / "pretrain") / "pretrained.safetensors")
    return Job(row, seed, config, "seg_mdp:run_transfer_job", resources=res)


def transfer_rows(a: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(row, target, protocol) of every transfer result."""
    out = []
    for t in a.targets:
        names = [*ROWS, *(r for r in ABLATIONS if t in ABLATION_TARGETS)]
        for protocol in PROTOCOLS:
            for row in names:
                if protocol == "backbone_only" and (
                    row == "random_init" or row in ABLATIONS or t not in BACKBONE_ONLY_TARGETS
                ):
                    continue  # random init: same as finetune; ablations: probe and finetune only
                out.append((row, t, protocol))
    return out


def select(records: list[dict]) -> dict[tuple, float]:
    """Chosen lr per (row, target, protocol): the best validation mIoU of seed 0's grid."""
    best: dict[tuple, tuple[float, float]] = {}
    for r in records:
        c = r["config"]
        k = (c["row"], c["target"], c["protocol"])
        v = r["metrics"]["val_miou"]
        if k not in best or v > best[k][0]:
            best[k] = (v, c["lr"])
    return {k: lr for k, (_, lr) in best.items()}


def build_parser() -> argparse.ArgumentParser:
    """The command line (its defaults are the benchmark's settings)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    p.add_argument("--fraction", type=float, default=0.1, help="labelled fraction of a target")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=800)
    p.add_argument("--probe-steps", type=int, default=300)
    p.add_argument("--num-train", type=int, default=2000, help="train images per data set")
    p.add_argument("--num-test", type=int, default=500, help="test images per data set")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument(
        "--jobs", type=int, default=2, help="concurrent runs (threads each = 1); 0: in-process"
    )
    p.add_argument("--smoke", action="store_true", help="tiny sets, 32 px, 2 steps per run")
    p.add_argument("--cache", default=str(BENCH / ".cache" / "seg_mdp"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "seg_mdp.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    return p


def main() -> None:
    p = build_parser()
    a = p.parse_args()
    if a.smoke:
        for k, v in SMOKE.items():
            setattr(a, k, v)
    cache = Path(a.cache)
    if not a.report_only:
        prepare_data(a)
    t0 = time.perf_counter()
    run = {"n_jobs": a.jobs, "report_only": a.report_only, "import_paths": [BENCH],
           "show": ("miou", "val_miou", "seconds_per_step")}  # fmt: skip
    pre = pretrain_jobs(a)
    pre_recs = run_jobs(list(pre.values()), cache / "pretrain", **run)
    done = {r["key"] for r in pre_recs}

    def ready(jobs: list[Job]) -> list[Job]:  # report-only on a partial cache
        return [j for j in jobs if "init_key" not in j.config or j.config["init_key"] in done]

    wanted = transfer_rows(a)
    s0 = a.seeds[0]
    grid = [transfer_job(a, r, t, pr, s0, lr, pre, cache) for r, t, pr in wanted
            if pr in LR_GRID for lr in LR_GRID[pr]]  # fmt: skip
    grid_recs = run_jobs(ready(grid), cache / "transfer", **run)
    chosen = select(grid_recs)
    rest = []
    for r, t, pr in wanted:
        lr = chosen.get((r, t, "finetune" if pr == "backbone_only" else pr))
        if lr is None:
            continue  # report-only before seed 0's grid finished
        seeds = a.seeds if pr == "backbone_only" else a.seeds[1:]
        rest += [transfer_job(a, r, t, pr, s, lr, pre, cache) for s in seeds]
    oracle_lr = LR_GRID["finetune"][-1]
    rest += [transfer_job(a, "oracle_full_labels", t, "finetune", s0, oracle_lr, pre, cache, 1.0)
             for t in a.targets]  # fmt: skip
    rest_recs = run_jobs(ready(rest), cache / "transfer", **run)
    results = [
        r for r in grid_recs
        if r["seed"] != s0 or chosen.get(_key(r)) == r["config"]["lr"]
    ] + rest_recs  # fmt: skip
    write_results(pre_recs, results, grid_recs, chosen, a, time.perf_counter() - t0)


def _key(rec: dict) -> tuple[str, str, str]:
    c = rec["config"]
    return (c["row"], c["target"], c["protocol"])


def paired_rows(recs: list[dict]) -> list[dict]:
    """MDP against every other row, and each ablation against MDP, per target and protocol
    (paired by seed)."""
    val: dict[tuple, dict[int, float]] = {}
    for r in recs:
        val.setdefault(_key(r), {})[r["seed"]] = r["metrics"]["miou"]
    pairs = [("mdp", b) for b in ROWS if b != "mdp"] + [(x, "mdp") for x in ABLATIONS]
    out = []
    for t in dict.fromkeys(k[1] for k in val):
        for protocol in PROTOCOLS:
            for x, y in pairs:
                a_, b_ = val.get((x, t, protocol)), val.get((y, t, protocol))
                if not a_ or not b_ or not set(a_) & set(b_):
                    continue
                d = paired_diff(a_, b_)
                out.append({"a": x, "b": y, "target": t, "protocol": protocol,
                            "miou_diff": round(d["mean"], 2), "n": d["n"],
                            "ci95": None if d["ci95"] is None else [round(v, 2) for v in d["ci95"]],
                            "excludes_zero": d["ci95"] is not None
                            and (d["ci95"][0] > 0 or d["ci95"][1] < 0)})  # fmt: skip
    return out


def trivial_and_oracle_miou(a: argparse.Namespace, stride: int = 4) -> dict[str, dict]:
    """Per target, on its test split (mIoU %): ``all_background`` -- background predicted
    everywhere, the trivial floor -- and ``label_map_at_stride`` -- the ground truth reduced to
    the network's output stride (each ``stride`` x ``stride`` block takes its most frequent
    labelled class) and upsampled, the ceiling a perfect classifier of the features reaches."""
    import torch
    import torch.nn.functional as F

    from vislearn.eval.segmentation import confusion_matrix, segmentation_scores
    from vislearn.tasks.seg.data import build_segmentation_dataset

    data = data_section(a)
    out = {}
    for t in a.targets:
        ds = build_segmentation_dataset(f"synthetic:{t}", "test", data)
        masks = torch.stack([ds[i][1] for i in range(len(ds))]).long()
        k, ign = ds.num_classes, ds.ignore_index
        onehot = F.one_hot(masks.clamp(max=k), k + 1)[..., :k].permute(0, 3, 1, 2).float()
        block = F.avg_pool2d(onehot, stride).argmax(1)  # ignore pixels carry no vote
        coarse = block.repeat_interleave(stride, 1).repeat_interleave(stride, 2)
        scores = {}
        for name, pred in (("all_background", torch.zeros_like(masks)),
                           ("label_map_at_stride", coarse)):  # fmt: skip
            conf = confusion_matrix(pred, masks, k, ign)
            scores[name] = round(100 * segmentation_scores(conf)["miou"], 2)
        out[t] = scores
    return out


def write_results(pre, results, grid, chosen, a, wall) -> None:
    import torch

    from vislearn.core.config import load_config
    from vislearn.tasks.seg.run import SEG_DEFAULTS

    recs = [{**r, **{k: r["config"][k] for k in ("target", "protocol", "fraction")}}
            for r in results]  # fmt: skip
    names = [*ROWS, *ABLATIONS, "oracle_full_labels"]
    order = {(n, t, pr): i for i, (pr, t, n) in enumerate(
        (pr, t, n) for pr in PROTOCOLS for t in a.targets for n in names)}  # fmt: skip
    recs.sort(key=lambda r: order.get((r["name"], r["target"], r["protocol"]), len(order)))
    rows = aggregate(recs, METRICS, baseline="single_dataset",
                     group_keys=("name", "target", "protocol"))  # fmt: skip
    for row in rows:
        gk = (row["name"], row["target"], row["protocol"])
        first = next(r for r in recs if (r["name"], r["target"], r["protocol"]) == gk)
        row["fraction"] = first["fraction"]
        row["lr"] = first["config"]["lr"]
        row["iou"] = {k: None if v is None else round(v, 2)
                      for k, v in first["metrics"]["iou"].items()}  # fmt: skip
    step_time: dict[str, list[float]] = {}
    for r in pre:
        step_time.setdefault(f"pretrain/{r['config']['row']}", []).append(
            r["metrics"]["seconds_per_step"]
        )
    for r in results:
        step_time.setdefault(r["config"]["protocol"], []).append(r["metrics"]["seconds_per_step"])
    selection = [{"name": c["row"], "target": c["target"], "protocol": c["protocol"],
                  "lr": c["lr"], "val_miou": round(r["metrics"]["val_miou"], 2),
                  "chosen": chosen.get(_key(r)) == c["lr"]}
                 for r in grid for c in [r["config"]]]  # fmt: skip
    mdp = load_config(ROOT / "configs" / "seg_mdp" / "pretrain_mdp.yaml", defaults=SEG_DEFAULTS)
    ft = load_config(ROOT / "configs" / "seg_mdp" / "finetune.yaml", defaults=SEG_DEFAULTS)
    settings = {
        "data": f"synthetic segmentation sets (vislearn.data.synthetic.SEG_DATASETS), "
        f"{a.image_size}x{a.image_size}, {a.num_train} train / {a.num_test} test images each; "
        "seen: fine / coarse / partial; held out: heldout",
        "targets": a.targets,
        "fraction": a.fraction,
        "protocols": {
            "linear_probe": "backbone + decoder transferred and frozen (BN statistics too), "
            f"new 1x1 classifier, {a.probe_steps} steps",
            "finetune": "backbone + decoder transferred, all trained, backbone lr x0.1 (x1 for "
            f"random init), {ft['model']['warmup_steps']} warm-up steps, {a.finetune_steps} "
            "steps",
            "backbone_only": "backbone transferred, new decoder and classifier, as finetune",
        },
        "model_selection": f"validation on as many images as {ft['data']['val_fraction']:.0%} "
        "of the labelled subset, drawn from the rest of the target's train split (never "
        "trained on, unseen by every pretraining); validation every "
        f"{ft['trainer']['val_every_n_epochs']} x "
        f"{ft['data']['steps_per_epoch']} steps and at the end; test mIoU of the best validated "
        f"weights; lr grid {LR_GRID} chosen per (row, target, protocol) on seed "
        f"{a.seeds[0]}'s validation mIoU (backbone_only: finetune's choice), reused for the "
        "other seeds",
        "pretraining": "single_dataset: the target alone (heldout: all of fine); naive_multi / "
        "mdp / ablations: the three seen sets; a seen target contributes only its seeded "
        "labelled fraction, the others all their labels",
        "pretrain_steps": a.pretrain_steps,
        "finetune_steps": a.finetune_steps,
        "probe_steps": a.probe_steps,
        "batch_size": mdp["data"]["batch_size"],
        "network": "resnet_tiny (stem small_ds, width 16) + DeepLabv3 head (ASPP rates 1/2/3, "
        "64 channels), output stride 4",
        "optimizer": f"pretraining: SGD momentum 0.9, lr {mdp['model']['lr']}, wd 1e-4, poly "
        "0.9; transfer: AdamW, wd 1e-4, poly 0.9",
        "mdp": {k: v for k, v in mdp["model"].items() if k not in ("backbone_kwargs",)},
        "ablations": ABLATIONS,
        "ablation_targets": list(ABLATION_TARGETS),
        "oracle_full_labels": f"random init fine-tuned on all the target's labels (lr "
        f"{LR_GRID['finetune'][-1]}, 20 % of them held out for validation), same steps, seed "
        f"{a.seeds[0]} only",
        "backbone_only_targets": list(BACKBONE_ONLY_TARGETS),
        "metric": "miou: mean IoU (%) over classes present in truth or prediction, ignore "
        "index 255 excluded, on the target's test split",
        "floor_and_ceiling_miou": trivial_and_oracle_miou(a),
        "lr_selection": selection,
        "paired_differences": paired_rows(results),
        "seconds_per_step": {k: round(statistics.mean(v), 3) for k, v in step_time.items()},
        "wall_seconds_this_invocation": round(wall, 1),
        "seeds": a.seeds,
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval (n - 1 dof); *_diff: "
        "paired (same seed) difference against single_dataset at the same target and protocol",
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU; {a.jobs} runs at a time",
        "smoke": bool(a.smoke),
    }
    write_json_results(a.out, "seg_mdp", settings, rows)
    print(f"wrote {a.out}")
    for r in rows:
        print(json.dumps({k: r.get(k) for k in ("name", "target", "protocol", "miou")}))
    print("seconds per step:", json.dumps(settings["seconds_per_step"]))


if __name__ == "__main__":
    main()
