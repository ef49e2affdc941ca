"""Photo-background MRA benchmark (issue 22): a supervised classifier on Fashion-MNIST items
pasted on photo crops, with MRA at mask ratios 0.25 / 0.5 / 0.75, MRA with the ground-truth
(oracle) selector, CutMix and Mixup, at 100 %, 10 % and 1 % of the labels, clean and occluded
test top-1 -> docs/results/photo_mra.json.

MRA ("Masked Autoencoders are Robust Data Augmentors", Xu et al., arXiv:2206.04846, 2022)
keeps the patches a frozen MAE scores as foreground and re-synthesises the rest. On
Fashion-MNIST (black background, ~27 of 49 patches hold the item) it cannot help: at ratio 0.5
even a perfect selector re-synthesises part of the object. Here the background is a real photo
and the item covers ~24 % of the pixels and touches ~24 of the 64 patches (4 px at 32 px), so
at ratios 0.25 and 0.5 a perfect selector keeps all of it, at 0.75 most of it.

Protocol:

* **Data**: ``photo-fmnist`` (:mod:`vislearn.data.synthetic.photo_items`): 60k training /
  10k test images, 32 px RGB, each the Fashion-MNIST item of that index (the label) on a random
  crop of a photo -- training photos and test photos are disjoint files (22 / 8) -- with its
  ground-truth mask. Rendered once per setting and cached under ``<cache>/data``.
* **Validation**: 5,000 training images (500 per class, seeded, outside the 10 % labelled
  subset and so outside the nested 1 % one; ``fmnist_semi.validation_indices``) are held out
  of every run's training, the MAE's included, and only score the selection; the test set is
  never selected on.
* **MAE** (``configs/photo_mra/mae.yaml``, ``--mae-epochs``): vit_mini at 32 px, 75 % random
  masking, raw-pixel target, on the 55k training images without labels. Reported: the last
  training loss, the online kNN top-1 (test queries, a monitor), the masked-patch loss and
  PSNR on 2,000 test images at 75 % masking next to the PSNR of filling each hidden patch with
  the image's mean colour (a blur-free check that reconstructions carry detail), the share of
  the object each selector keeps on those images at each ratio (``selector_fg_kept``: token_dot,
  attention, oracle), and an MRA grid (``mra_grid_*.png`` in its run folder).
* **Rows** (``configs/photo_mra/<augmentation>.yaml``, batch 256, resnet_tiny width 16, SGD
  momentum 0.9, wd 5e-4, cosine): ``baseline`` (crop 0.5-1 + flip), ``cutmix``, ``mixup``,
  ``mra25`` / ``mra50`` / ``mra75`` (token_dot selector, prob 0.5, paste-back) and
  ``oracle<r>`` (the same with the oracle selector) at ``--oracle-ratios`` (default ``best``:
  per label fraction, the ratio of the highest mean validation top-1 among the mra rows).
  The mask ratio is a hyper-parameter chosen like the learning rate: the first
  ``--ratio-seeds`` seeds (default 1: seed 0) run the whole sweep, the ratio with the best
  validation top-1 is picked per fraction, and the other seeds run ``mra<r>`` at that ratio
  only, so the picked row has every seed and the others one (``settings.selection``).
  Every row of a label fraction trains the same steps (``--epochs`` of 214 steps: 55,000 //
  256; at 10 % / 1 % every batch holds 256 of the 6,000 / 600 labelled images).
* **Learning rates**: baseline, cutmix and mixup each pick theirs per fraction from
  ``LR_GRID`` by validation top-1 with seed 0 (seeds 1, 2 reuse it); the MRA rows train at the
  baseline's pick (a grid for them would add ~45 % to the classifier cost). Picks at a grid
  edge are flagged.
* **Metrics**: ``top1`` (clean test), ``occluded_top1`` (one 16x16 black square per test image,
  seeded), ``val_top1`` and, for MRA rows, ``fg_kept`` (mean share of the object that MRA kept
  visible in the images it rewrote, over training: ``train/mra_fg_kept``), ``train_top1``
  (clean top-1 on up to 5,000 of the labelled images the row trained on: with ``val_top1``,
  the generalisation gap; near zero, the classifier is under-fitted and no regulariser can
  pay). Seeds 0 1 2, mean, 95 % Student-t interval and the paired (same seed) difference
  against ``baseline_<fraction>``.
* **CutMix's labels** (``settings.cutmix_labels``, :func:`cutmix_label_check`): how far
  CutMix's area label is from the share of the objects the mixed image shows, on this data
  set's masks and on plain Fashion-MNIST items (where the item fills the frame).
* ``--rows`` runs a subset (``baseline`` always), e.g. a longer schedule for two rows:
  ``--rows baseline cutmix --fractions 100pct --epochs 100pct=80 --lr-grid 0.24``.

**Cost** (``--plan``; ``--plan --measure`` re-measures ``STEP_SECONDS`` here, ~1 min):
seconds per training step of one run on one thread (batch 256, median of 5 steps), measured
twice on the 2-core benchmark machine while another benchmark kept both cores busy: baseline
0.085 / 0.067, cutmix 0.11 / 0.068, mixup 0.10 / 0.068, mra (token_dot) 0.53 / 0.37, oracle
0.30 / 0.20, MAE 0.84 / 0.59 (the first, more loaded, set is ``STEP_SECONDS``). MRA costs ~6
baseline steps (the MAE scores every patch of half the batch, then encodes the kept ones and
decodes all). In the committed run, with the MAE on the other core, the CutMix and Mixup
grids ran at ``STEP_SECONDS`` (0.107 s per step), not at 0.7x: use ``--idle-factor 1``.
Each job adds ~15 s (imports, data from the cache, scoring 25k test and
validation images). The plan takes 0.7x ``STEP_SECONDS`` for two jobs on two otherwise idle
cores (``--idle-factor``; an assumption, not measured: use 1 with ``--measure`` on an idle
machine). The default (``--epochs 100pct=5 10pct=3 1pct=2 --mae-epochs 15``: 1,070 / 642 /
428 steps per run; 70 jobs) comes to ~10,500 CPU-s at the 0.7x factor (~1.5 h on 2 cores)
and ~2 h at ``--idle-factor 1``, which is what the committed run took. MRA is about half of the
classifier cost: a longer schedule at 100 % costs either time or rows (``--ratios``,
``--fractions``). ``--ratio-seeds 3`` sweeps every seed (27 instead of 15 MRA runs, 82 jobs,
~+35 % CPU). A wider classifier (``--width``) adds the baseline step's increase
(:data:`WIDTH_COST`) to every classifier row: at width 32 and ``--epochs 100pct=80 10pct=30
1pct=20`` the whole table is ~166,000 CPU-s (~23 h on 2 cores); its baseline and CutMix rows
alone at 100 % (``--rows baseline cutmix --fractions 100pct --lr-grid 0.24``) ~17,500 CPU-s.

    python benchmarks/photo_mra.py --plan                # job table and CPU-time estimate
    python benchmarks/photo_mra.py --jobs 2              # the benchmark (~2 h on 2 cores)
    python benchmarks/photo_mra.py --report-only
    python benchmarks/photo_mra.py --smoke --jobs 0      # end-to-end check on tiny data

Jobs run on :func:`vislearn.bench.run_jobs` in three phases (the MAE and seed 0's learning-rate
grids; the other seeds and the MRA sweep; the oracle rows): finished runs are cached under
--cache by the hash of their resolved recipe and seed, so an interrupted benchmark resumes;
the MRA rows' config holds the MAE job's key, so a changed MAE recipe reruns them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from vislearn.bench import Job, aggregate, run_jobs, run_seconds
from vislearn.bench import write_results as write_json_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CONFIGS = ROOT / "configs" / "photo_mra"
FN = "photo_mra:run_photo_job"

FRACTIONS = {"100pct": None, "10pct": 0.1, "1pct": 0.01}
DEFAULT_EPOCHS = {"100pct": 5, "10pct": 3, "1pct": 2}  # epochs of 214 steps (see --plan)
RATIOS = (0.25, 0.5, 0.75)
TUNED = ("baseline", "cutmix", "mixup")  # rows with their own learning-rate grid
KINDS = (*TUNED, "mra", "oracle")
TRAIN_PROBE = {"images": 5000, "seed": 0}  # clean top-1 on the images a row trained on
CUTMIX_CHECK = {"pairs": 4000, "seed": 0, "alpha": 1.0, "ink": 32}  # see cutmix_label_check
LR_GRID = (0.03, 0.06, 0.12)
LABEL_SEED = 0
WIDTH = 16  # resnet_tiny's width in configs/base/photo_mra.yaml (77k parameters)
VAL = {"per_class": 500, "seed": 1}
OCCLUSION = {"size": 16, "seed": 0, "fill": 0, "count": 1}
PROBE = {"images": 2000, "seed": 0}  # the MAE's test-set checks
METRICS = (
    "top1",
    "occluded_top1",
    "val_top1",
    "train_top1",
    "fg_kept",
    "images_per_s",
    "train_seconds",
)
#: s/step, one thread, 5 steps, both cores busy with two other processes (see the docstring)
STEP_SECONDS = {"baseline": 0.085, "cutmix": 0.11, "mixup": 0.10, "mra": 0.53, "oracle": 0.30,
                "mae": 0.84}  # fmt: skip
#: a classifier step at width w costs WIDTH_COST[w] times one at WIDTH (baseline row, one thread,
#: both cores busy: 0.224 / 0.602 / 1.959 s at 16 / 32 / 64, measured by --plan --measure)
WIDTH_COST = {16: 1.0, 32: 2.7, 64: 8.7}
IDLE_FACTOR, JOB_OVERHEAD = 0.7, 15.0
SMOKE = {"dataset": "photo-fmnist-mini", "epochs": dict.fromkeys(FRACTIONS, 1), "mae_epochs": 1,
         "limit_batches": 2, "val_per_class": 10, "seeds": [0, 1], "fractions": ["10pct"],
         "ratios": [0.5], "lr_grid": [0.06], "probe_images": 64}  # fmt: skip


def kind_of(row: str) -> str:
    """``mra50`` -> ``mra``, ``oracle25`` -> ``oracle``, others: themselves."""
    return row.rstrip("0123456789")


def row_name(kind: str, ratio: float | None = None) -> str:
    return kind if ratio is None else f"{kind}{round(100 * ratio)}"


def steps_per_epoch(a: argparse.Namespace) -> int:
    if a.limit_batches:
        return a.limit_batches
    n = 5000 if a.dataset.endswith("-mini") else 60000
    return (n - 10 * a.val_per_class) // 256


def _trainer(epochs: int, a: argparse.Namespace, validate: bool = False) -> dict:
    # no online evaluation for the classifiers: the job scores validation and test itself
    t = {"max_epochs": epochs, "check_val_every_n_epoch": epochs if validate else epochs + 1,
         "progress": False}  # fmt: skip
    if a.limit_batches:
        t["limit_train_batches"] = a.limit_batches
    return t


def recipe(kind: str, frac: str, a: argparse.Namespace, lr: float, ratio: float | None) -> dict:
    """The resolved recipe of a classifier row; its ``seed`` and ``out`` are the job's."""
    from vislearn.core.config import load_config

    data: dict = {"dataset": a.dataset}
    if FRACTIONS[frac] is not None:  # every batch: 256 labelled images
        data |= {"label_fraction": FRACTIONS[frac], "labelled_batch_size": 256,
                 "label_seed": LABEL_SEED}  # fmt: skip
    model: dict = {"lr": lr}
    if a.width != WIDTH:  # the default leaves the recipe (and the cached runs' keys) as they are
        model["backbone_kwargs"] = {"stem": "small_ds", "width": a.width}
    if ratio is not None:
        model["mra"] = {"mask_ratio": ratio}
    name = "mra_oracle" if kind == "oracle" else kind
    cfg = load_config(CONFIGS / f"{name}.yaml", data=data, model=model,
                      trainer=_trainer(a.epochs[frac], a))  # fmt: skip
    cfg.pop("seed")
    cfg.pop("out")
    return cfg


def val_spec(a: argparse.Namespace) -> dict:
    return {"per_class": a.val_per_class, "seed": VAL["seed"], "label_seed": LABEL_SEED,
            "outside_fraction": 0.1}  # fmt: skip


def mae_job(a: argparse.Namespace) -> Job:
    """The (one) MAE every MRA row uses (seed 0)."""
    from vislearn.core.config import load_config

    data = {"dataset": a.dataset, **({"knn_bank_size": 500} if a.limit_batches else {})}
    cfg = load_config(CONFIGS / "mae.yaml", data=data,
                      trainer=_trainer(a.mae_epochs, a, validate=True))  # fmt: skip
    cfg.pop("seed")
    cfg.pop("out")
    probe = {**PROBE, "images": a.probe_images}
    config = {"kind": "mae", "recipe": cfg, "val": val_spec(a), "probe": probe,
              "ratios": list(RATIOS)}  # fmt: skip
    return Job("mae_pretraining", 0, config, FN)


def cls_job(kind: str, frac: str, seed: int, lr: float, a: argparse.Namespace,
            mae: Job, cache: Path, ratio: float | None = None) -> Job:  # fmt: skip
    row = row_name(kind, ratio)
    config = {"kind": "cls", "row": row, "fraction": frac, "lr": lr, "ratio": ratio,
              "recipe": recipe(kind, frac, a, lr, ratio), "val": val_spec(a),
              "occlusion": OCCLUSION}  # fmt: skip
    resources = {}
    if kind in ("mra", "oracle"):  # the MAE's identity is hashed, its path is not
        config["mae_key"] = mae.key
        resources["mae"] = str(mae.run_dir(cache) / "mae.safetensors")
    return Job(f"{row}_{frac}", seed, config, FN, resources=resources)


# ---- the job --------------------------------------------------------------------------------
def run_photo_job(config: dict, seed: int, ctx: dict) -> dict:
    """Pretrain the MAE or train one classifier row, and score it; runs in a worker process."""
    import warnings

    import lightning as L
    import torch
    from torch.utils.data import Subset

    from fmnist_semi import fit_without, top1, validation_indices
    from vislearn.data.datasets import get_dataset
    from vislearn.data.synthetic.photo_items import CACHE_ENV
    from vislearn.tasks.ssl.run import evaluate_classifier

    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # the frozen MAE
    os.environ.setdefault(CACHE_ENV, str(Path(ctx["cache_dir"]) / "data"))
    t0 = time.perf_counter()
    L.seed_everything(seed, verbose=False)
    cfg = {**config["recipe"], "seed": seed}
    if "mae_key" in config:
        cfg["model"] = {**cfg["model"], "mae": ctx["resources"]["mae"]}
    dataset = cfg["data"]["dataset"]
    train = get_dataset(dataset, "train")
    val_idx = validation_indices(train.labels, **config["val"])
    model, dm, trainer, out = fit_without(cfg, val_idx, ctx["run_dir"])
    if config["kind"] == "mae":
        m = trainer.callback_metrics
        out["final_loss"] = float(m["train/loss"]) if "train/loss" in m else None
        out["knn_top1"] = 100 * float(m["val/knn_top1"]) if "val/knn_top1" in m else None
        out.update(mae_checks(Path(ctx["run_dir"]), get_dataset(dataset, "test"), config))
    else:
        head = torch.nn.Sequential(model.backbone, model.classifier).eval()
        out["val_top1"] = top1(head, Subset(train, val_idx.tolist()))
        out["train_top1"] = top1(head, Subset(train, train_probe(dm.train_set)))
        occ = config["occlusion"]
        out.update(evaluate_classifier(model, dataset, occlusion_size=occ["size"],
                                       occlusion_seed=occ["seed"], occlusion_fill=occ["fill"],
                                       occlusion_count=occ["count"]))  # fmt: skip
        for op in model.augment.ops.values():
            if getattr(op, "mean_fg_kept", None) is not None:
                out["fg_kept"] = op.mean_fg_kept
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def train_probe(train_set) -> list[int]:
    """Up to ``TRAIN_PROBE["images"]`` seeded indices, into the whole training split, of the
    labelled images a row trained on (``train_top1`` - ``val_top1`` is its generalisation
    gap: near zero, the classifier is under-fitted and a regulariser cannot pay)."""
    import numpy as np

    idx = getattr(train_set, "labelled", None)  # a label fraction's subset
    idx = train_set.indices if idx is None else idx  # all labels minus the validation split
    rng = np.random.default_rng(TRAIN_PROBE["seed"])
    return sorted(rng.choice(idx, min(TRAIN_PROBE["images"], len(idx)), replace=False).tolist())


def cutmix_label_check(masks, pairs: int, seed: int, alpha: float) -> dict:
    """Does CutMix's label (by pasted area) match the objects the mixed image shows?

    ``pairs`` seeded pairs of object masks (uint8 ``[N, H, W]``), one box each from the
    :func:`vislearn.data.mixing.cutmix_box` / ``beta_sample`` draws the ``cutmix`` row uses
    (uncropped images). CutMix gives the pasted image the weight ``w`` = the box's area; the
    objects give it ``o = p / (p + k)``, with ``p`` the share of its object inside the box and
    ``k`` the share of the anchor's object left outside. Returns the mean ``|w - o|``, how often
    a box of area >= 0.25 holds < 10 % of the pasted object (a label without its object), how
    often an anchor keeping >= 25 % of the area loses > 90 % of its object, and the mean object
    area. Mixup's label is exact by construction (both objects stay, at opacities ``lam``)."""
    import torch

    from vislearn.data.mixing import beta_sample, cutmix_box

    g = torch.Generator().manual_seed(seed)
    m = masks.bool()
    n, h, w = m.shape
    a, b = torch.randint(0, n, (2, pairs), generator=g)
    boxes = torch.tensor([cutmix_box(h, w, beta_sample(alpha, alpha, g), g) for _ in a])
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    y0, y1, x0, x1 = (boxes[:, i, None, None] for i in range(4))
    box = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)  # [P, H, W]
    ma, mb = m[a], m[b]
    area = box.float().mean((1, 2))
    pasted = (mb & box).sum((1, 2)) / mb.sum((1, 2)).clamp(min=1)
    kept = (ma & ~box).sum((1, 2)) / ma.sum((1, 2)).clamp(min=1)
    obj = pasted / (pasted + kept).clamp(min=1e-8)
    seen = (pasted + kept) > 0
    big, anchored = area >= 0.25, area <= 0.75
    return {
        "label_error": round(float((area - obj).abs()[seen].mean()), 4),
        "box_without_object": round(float((pasted[big] < 0.1).float().mean()), 4),
        "anchor_object_hidden": round(float((kept[anchored] < 0.1).float().mean()), 4),
        "object_area": round(float(m.float().mean()), 4),
        "pairs": pairs,
    }


def mae_checks(run_dir: Path, test, config: dict) -> dict:
    """The trained MAE on the first ``probe.images`` test images: masked-patch loss and PSNR
    at 75 % random masking (and the PSNR of filling hidden patches with the image's mean
    colour), the share of the object each selector keeps per ratio, and MRA grids."""
    import math

    import torch

    from vislearn.core.utils import save_png
    from vislearn.data.masking import patch_mask_to_pixels, random_keep
    from vislearn.data.mra import MaskReconstruct, mra_grid
    from vislearn.models.mae import load_mae

    mae = load_mae(run_dir / "mae.safetensors").eval()
    n, g = min(config["probe"]["images"], len(test)), config["probe"]["seed"]
    images = test.images[:n]
    fg = test.masks[:n, None].float()
    x = ((images.float() / 255.0) - mae.mean) / mae.std
    gen = torch.Generator().manual_seed(g)
    sq = {"mae": 0.0, "fill": 0.0, "loss": 0.0, "count": 0.0}
    with torch.no_grad():
        for lo in range(0, n, 256):
            xb = x[lo : lo + 256]
            keep = random_keep(len(xb), mae.grid**2, 0.75, gen)
            hidden = ~patch_mask_to_pixels(keep, mae.grid, tuple(xb.shape[-2:]))
            unit = (xb * mae.std + mae.mean).clamp(0, 1)
            rec = (mae.reconstruct(xb, keep) * mae.std + mae.mean).clamp(0, 1)
            fill = (unit * ~hidden).sum((2, 3), keepdim=True) / (~hidden).sum((2, 3), keepdim=True)
            sq["mae"] += float(((rec - unit) ** 2 * hidden).sum())
            sq["fill"] += float(((fill - unit) ** 2 * hidden).sum())
            sq["loss"] += float((((rec - unit) / mae.std) ** 2 * hidden).sum())
            sq["count"] += float(hidden.expand_as(unit).sum())
    out = {"test_loss": sq["loss"] / sq["count"],
           "test_psnr": 10 * math.log10(sq["count"] / sq["mae"]),
           "test_psnr_mean_fill": 10 * math.log10(sq["count"] / sq["fill"])}  # fmt: skip
    kept: dict = {}
    for score in ("token_dot", "attention", "oracle"):
        for r in config["ratios"]:
            mra = MaskReconstruct(mae, mask_ratio=r, prob=1.0, score=score)
            keeps = [mra.select(x[lo : lo + 256], gen, mra.patch_foreground(fg[lo : lo + 256]))
                     for lo in range(0, n, 256)]  # fmt: skip
            f = mra.patch_foreground(fg)
            share = (f * torch.cat(keeps)).sum(1) / f.sum(1).clamp_min(1e-9)
            kept.setdefault(score, {})[f"{r:g}"] = round(float(share.mean()), 4)
    out["selector_fg_kept"] = kept
    for score in ("token_dot", "oracle"):
        mra = MaskReconstruct(mae, mask_ratio=0.5, prob=1.0, score=score)
        grid = mra_grid(mra, images[:8], torch.Generator().manual_seed(g), fg[:8])
        save_png(grid, run_dir / f"mra_grid_{score}_r50.png")
    return out


# ---- selection, plan, main --------------------------------------------------------------------
def pick_lr(records: list[dict], seed: int, grid: list[float]) -> dict[tuple[str, str], float]:
    """``(row, fraction) -> lr`` with the best validation top-1 of seed ``seed`` (the smaller
    rate on a tie), for rows whose whole grid has finished."""
    best: dict = {}
    done: dict = {}
    for r in records:
        c = r["config"]
        if c["kind"] != "cls" or r["seed"] != seed or c["row"] not in TUNED:
            continue
        key, lr, v = (c["row"], c["fraction"]), c["lr"], r["metrics"]["val_top1"]
        done.setdefault(key, set()).add(lr)
        if key not in best or (v, -lr) > (best[key][0], -best[key][1]):
            best[key] = (v, lr)
    return {k: lr for k, (_, lr) in best.items() if set(grid) <= done[k]}


def pick_ratio(records: list[dict], ratios: list[float], seeds: list[int]) -> dict[str, float]:
    """``fraction -> ratio`` of the mra row with the best mean validation top-1 over ``seeds``
    (the smaller ratio on a tie), for fractions whose whole sweep has finished."""
    vals: dict = {}
    for r in records:
        c = r["config"]
        if c["kind"] == "cls" and kind_of(c["row"]) == "mra" and r["seed"] in seeds:
            vals.setdefault(c["fraction"], {}).setdefault(c["ratio"], []).append(
                r["metrics"]["val_top1"]
            )
    return {
        frac: max(sorted(v), key=lambda q: sum(v[q]) / len(v[q]))
        for frac, v in vals.items()
        if all(len(v.get(q, ())) == len(seeds) for q in ratios)
    }


def step_seconds(a: argparse.Namespace) -> dict[str, float]:
    """:data:`STEP_SECONDS` at ``--width``: every classifier row pays the baseline step's
    increase (:data:`WIDTH_COST`); the MAE's step does not change."""
    if a.width not in WIDTH_COST:
        raise SystemExit(f"--plan: no step cost known at --width {a.width} (known: "
                         f"{sorted(WIDTH_COST)}); add --measure")  # fmt: skip
    extra = STEP_SECONDS["baseline"] * (WIDTH_COST[a.width] - 1)
    return {k: round(v + (extra if k != "mae" else 0.0), 3) for k, v in STEP_SECONDS.items()}


def plan(a: argparse.Namespace, seconds: dict[str, float] | None = None) -> dict:
    """Jobs and estimated CPU seconds per phase from ``seconds`` per step (default
    :func:`step_seconds`)."""
    seconds = seconds or step_seconds(a)
    spe, ns = steps_per_epoch(a), len(a.seeds)
    n_or = 1 if a.oracle_ratios == ["best"] else len(a.oracle_ratios)
    n_mra = int("mra" in a.rows)
    n_or *= int("oracle" in a.rows)
    cost = {"phase1": [("mae", int(a.needs_mae), a.mae_epochs * spe)], "phase2": [],
            "phase3": []}  # fmt: skip
    for frac in a.fractions:
        steps = a.epochs[frac] * spe
        for kind in a.tuned:
            cost["phase1"].append((kind, len(a.lr_grid), steps))
            cost["phase2"].append((kind, ns - 1, steps))
        cost["phase2"].append(("mra", n_mra * a.ratio_seeds * len(a.ratios), steps))
        cost["phase3"].append(("mra", n_mra * (ns - a.ratio_seeds), steps))
        cost["phase3"].append(("oracle", ns * n_or, steps))
    out = {}
    for phase, items in cost.items():
        jobs = sum(n for _, n, _ in items)
        loaded = sum(seconds[k] * n * s for k, n, s in items)
        cpu = a.idle_factor * loaded + JOB_OVERHEAD * jobs
        longest = max((a.idle_factor * seconds[k] * s for k, n, s in items if n), default=0)
        wall = max(cpu / max(a.jobs, 1), longest)
        out[phase] = {"jobs": jobs, "cpu_s_loaded": round(loaded), "cpu_s": round(cpu),
                      "wall_s": round(wall)}  # fmt: skip
    out["total"] = {k: sum(p[k] for p in out.values()) for k in ("jobs", "cpu_s", "wall_s")}
    return out


def measure(a: argparse.Namespace, steps: int = 5) -> dict[str, float]:
    """Seconds per training step (median of ``steps`` after one warm-up) of every job kind on
    this machine, one thread, an untrained MAE for the MRA rows."""
    import statistics
    import tempfile

    import torch

    from vislearn.tasks.ssl.run import build_datamodule, build_from_config

    torch.set_num_threads(1)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = json.loads(json.dumps({**mae_job(a).config["recipe"], "seed": 0}))
        kinds = [("mae", cfg)]
        for k in (*TUNED, "mra", "oracle"):
            ratio = 0.5 if k in ("mra", "oracle") else None
            kinds.append((k, {**recipe(k, "100pct", a, 0.06, ratio), "seed": 0}))
        mae_file = Path(tmp) / "mae.safetensors"
        for kind, c in kinds:
            if kind in ("mra", "oracle"):
                c["model"]["mae"] = str(mae_file)
            dm = build_datamodule(c)
            model = build_from_config(c, dm).train()
            if kind == "mae":
                model.export_mae(mae_file)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            loader = iter(torch.utils.data.DataLoader(dm.train_set, batch_size=256, shuffle=True))
            times = []
            for _ in range(steps + 1):
                x, y = next(loader)
                t = time.perf_counter()
                model.ssl_step(model.augment(x), y)["loss"].backward()
                opt.step()
                opt.zero_grad()
                times.append(time.perf_counter() - t)
            res[kind] = round(statistics.median(times[1:]), 3)
            print(f"{kind}: {res[kind]} s/step", flush=True)
    return res


def parse_epochs(tokens: list[str]) -> dict[str, int]:
    """``["5"]`` (every fraction) or ``["100pct=5", "10pct=3", ...]`` -> epochs per fraction."""
    if len(tokens) == 1 and "=" not in tokens[0]:
        return dict.fromkeys(FRACTIONS, int(tokens[0]))
    out = dict(DEFAULT_EPOCHS)
    for t in tokens:
        tag, _, n = t.partition("=")
        if tag not in FRACTIONS or not n.isdigit():
            raise SystemExit(
                f"--epochs: expected N or <fraction>=N ({', '.join(FRACTIONS)}), got {t!r}"
            )
        out[tag] = int(n)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", nargs="+", default=[f"{k}={v}" for k, v in DEFAULT_EPOCHS.items()],
                   help="classifier epochs of 214 steps: N, or per fraction 100pct=N 10pct=N "
                   "1pct=N (default 100pct=5 10pct=3 1pct=2)")  # fmt: skip
    p.add_argument("--mae-epochs", type=int, default=15, help="MAE pretraining epochs (15)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fractions", nargs="+", default=list(FRACTIONS), choices=list(FRACTIONS))
    p.add_argument("--rows", nargs="+", default=list(KINDS), choices=KINDS,
                   help="the rows to run (default all; baseline always: every difference is "
                   "against it); e.g. --rows baseline cutmix for a schedule probe")  # fmt: skip
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="MRA sweep")
    p.add_argument("--ratio-seeds", type=int, default=1,
                   help="the first N seeds run the whole MRA sweep and pick the ratio by "
                   "validation top-1; the other seeds run the pick only (1)")  # fmt: skip
    p.add_argument("--oracle-ratios", nargs="+", default=["best"],
                   help="oracle rows: 'best' (the mra sweep's best validation ratio per "
                   "fraction) or ratios")  # fmt: skip
    p.add_argument("--lr-grid", type=float, nargs="+", default=list(LR_GRID))
    p.add_argument("--width", type=int, default=WIDTH,
                   help=f"the classifiers' resnet_tiny width ({WIDTH}: 77k parameters; 32: "
                   "307k, 2.7x the step time on a CPU; 64: 1.2M, 8.7x; --plan scales by "
                   "it)")  # fmt: skip
    p.add_argument("--dataset", default="photo-fmnist", help="photo-fmnist or photo-fmnist-mini")
    p.add_argument("--val-per-class", type=int, default=VAL["per_class"])
    p.add_argument("--probe-images", type=int, default=PROBE["images"], help="MAE test checks")
    p.add_argument("--limit-batches", type=int, help="smoke tests: steps per epoch")
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (1 thread each); 0: here")
    p.add_argument("--smoke", action="store_true", help="tiny data, 2 steps per run")
    p.add_argument("--plan", action="store_true", help="print the job table's cost estimate")
    p.add_argument("--measure", action="store_true", help="with --plan: measure s/step here")
    p.add_argument("--idle-factor", type=float, default=IDLE_FACTOR,
                   help="--plan: run time per step as a share of STEP_SECONDS (0.7)")  # fmt: skip
    p.add_argument("--cache", help="run cache (default benchmarks/.cache/photo_mra[_smoke])")
    p.add_argument("--out", help="results JSON (default docs/results/photo_mra.json)")
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    a = build_parser().parse_args(argv)
    a.epochs = parse_epochs(a.epochs)
    if a.smoke:
        for k, v in SMOKE.items():
            setattr(a, k, v)
    if not 1 <= a.ratio_seeds <= len(a.seeds):
        raise SystemExit(f"--ratio-seeds must be between 1 and {len(a.seeds)} (the seeds)")
    a.sweep_seeds = a.seeds[: a.ratio_seeds]  # the seeds that sweep the mask ratio
    if a.oracle_ratios != ["best"]:
        a.oracle_ratios = [float(r) for r in a.oracle_ratios]
    if a.width < 1:
        raise SystemExit(f"--width must be >= 1, got {a.width}")
    if "baseline" not in a.rows:
        raise SystemExit("--rows must include baseline (every difference is against it)")
    if "oracle" in a.rows and "mra" not in a.rows and a.oracle_ratios == ["best"]:
        raise SystemExit("--rows oracle without mra needs --oracle-ratios R (no sweep picks one)")
    a.tuned = [k for k in TUNED if k in a.rows]
    a.needs_mae = "mra" in a.rows or "oracle" in a.rows
    tag = "photo_mra_smoke" if a.smoke else "photo_mra"
    a.cache = Path(a.cache or BENCH / ".cache" / tag)
    a.out = Path(a.out or (a.cache / "photo_mra.json" if a.smoke else
                           ROOT / "docs" / "results" / "photo_mra.json"))  # fmt: skip
    return a


def phase_jobs(a: argparse.Namespace, phase: int, records: list[dict] | None = None) -> list[Job]:
    """The jobs of ``phase`` (1: the MAE and seed 0's learning-rate grids; 2: the other seeds
    at the picked rates and the MRA sweep of the first ``--ratio-seeds`` seeds; 3: the other
    seeds' MRA runs at the picked ratio and the oracle rows), given the earlier phases'
    records; longest first."""
    mae, s0, recs = mae_job(a), a.seeds[0], records or []
    rest = a.seeds[a.ratio_seeds :]  # the seeds that run the picked ratio only
    if phase == 1:
        grid = [cls_job(k, f, s0, lr, a, mae, a.cache) for k in a.tuned for f in a.fractions
                for lr in a.lr_grid]  # fmt: skip
        grid.sort(key=lambda j: -STEP_SECONDS[kind_of(j.config["row"])])
        return [mae, *grid] if a.needs_mae else grid
    lrs = pick_lr(recs, s0, a.lr_grid)
    if phase == 2:
        jobs = [
            cls_job("mra", f, s, lrs[("baseline", f)], a, mae, a.cache, r)
            for f in a.fractions
            if ("baseline", f) in lrs and "mra" in a.rows
            for r in a.ratios
            for s in a.sweep_seeds
        ]
        jobs += [cls_job(k, f, s, lrs[(k, f)], a, mae, a.cache) for k in a.tuned
                 for f in a.fractions if (k, f) in lrs for s in a.seeds[1:]]  # fmt: skip
        return jobs
    picked, jobs = pick_ratio(recs, a.ratios, a.sweep_seeds), []
    for f in (f for f in a.fractions if ("baseline", f) in lrs):
        best = [picked[f]] if f in picked and "mra" in a.rows else []  # the sweep is done
        jobs += [cls_job("mra", f, s, lrs[("baseline", f)], a, mae, a.cache, r)
                 for r in best for s in rest]  # fmt: skip
        ratios = best if a.oracle_ratios == ["best"] else a.oracle_ratios
        ratios = ratios if "oracle" in a.rows else []
        jobs += [cls_job("oracle", f, s, lrs[("baseline", f)], a, mae, a.cache, r)
                 for r in ratios for s in a.seeds]  # fmt: skip
    return jobs


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.plan:
        seconds = measure(a) if a.measure else step_seconds(a)
        print(json.dumps({"step_seconds": seconds, "steps_per_epoch": steps_per_epoch(a),
                          "epochs": a.epochs, "mae_epochs": a.mae_epochs,
                          **plan(a, seconds)}, indent=1))  # fmt: skip
        return
    t0 = time.perf_counter()
    run = {
        "n_jobs": a.jobs,
        "threads_per_job": 1,
        "report_only": a.report_only,
        "import_paths": [BENCH],
        "show": ("val_top1", "top1", "fg_kept", "test_psnr"),
    }
    from vislearn.data.synthetic.photo_items import CACHE_ENV

    os.environ.setdefault(CACHE_ENV, str(a.cache / "data"))  # the workers inherit it
    records = run_jobs(phase_jobs(a, 1), a.cache, **run)
    mae_file = mae_job(a).run_dir(a.cache) / "mae.safetensors"
    if a.needs_mae and not a.report_only and not mae_file.is_file():
        raise SystemExit(f"the MAE did not finish ({mae_file} missing); rerun to resume")
    records += run_jobs(phase_jobs(a, 2, records), a.cache, **run)
    records += run_jobs(phase_jobs(a, 3, records), a.cache, **run)
    write_results(records, a, time.perf_counter() - t0)


def write_results(records: list[dict], a: argparse.Namespace, wall: float) -> None:
    import torch

    s0 = a.seeds[0]
    lrs = pick_lr(records, s0, a.lr_grid)
    ratios = pick_ratio(records, a.ratios, a.sweep_seeds)
    results, grid = [], {}
    for r in records:
        c = r["config"]
        if c["kind"] != "cls":
            continue
        row, frac = c["row"], c["fraction"]
        picked = lrs.get((row if row in TUNED else "baseline", frac))
        if row in TUNED and r["seed"] == s0:
            grid.setdefault(f"{row}_{frac}", {})[f"{c['lr']:g}"] = {
                k: round(r["metrics"][k], 2) for k in ("val_top1", "top1")}  # fmt: skip
        if c["lr"] == picked:
            results.append({"name": r["name"], "seed": r["seed"], "metrics": r["metrics"]})
    order = {
        f"{row_name(k, q if k in ('mra', 'oracle') else None)}_{f}": (i, j, q)
        for i, f in enumerate(FRACTIONS)
        for j, k in enumerate(KINDS)
        for q in RATIOS
    }
    results.sort(key=lambda r: order.get(r["name"], (9, 9, 9)))
    rows = []
    for frac in FRACTIONS:
        group = [r for r in results if r["name"].endswith(f"_{frac}")]
        rows += aggregate(group, METRICS, baseline=f"baseline_{frac}")
    mae = [r for r in records if r["config"]["kind"] == "mae"]
    if mae:
        keys = ("final_loss", "knn_top1", "test_loss", "test_psnr", "test_psnr_mean_fill",
                "selector_fg_kept", "images_per_s", "train_seconds", "steps")  # fmt: skip
        rows.append({"name": "mae_pretraining", **{k: mae[0]["metrics"].get(k) for k in keys}})
    selection = {
        "lr": {f"{k}_{f}": {"picked": v, "at_grid_edge": v in (min(a.lr_grid), max(a.lr_grid)),
                            "seed0": grid.get(f"{k}_{f}", {})}
               for (k, f), v in sorted(lrs.items())},
        "mra_ratio": ratios,
        "mra_ratio_seeds": a.sweep_seeds,
        "oracle_ratio": ratios if a.oracle_ratios == ["best"] else a.oracle_ratios,
    }  # fmt: skip
    spe = steps_per_epoch(a)
    from vislearn.data.datasets import get_dataset

    ink = get_dataset("fmnist-mini", "train").images[:, 0] >= CUTMIX_CHECK["ink"]
    check = {k: CUTMIX_CHECK[k] for k in ("pairs", "seed", "alpha")}
    cutmix_labels = {a.dataset: cutmix_label_check(get_dataset(a.dataset, "train").masks, **check),
                     "fmnist-mini": cutmix_label_check(ink.to(torch.uint8), **check)}  # fmt: skip
    settings = {
        "protocol": "issue 22: photo backgrounds, mask-ratio sweep, oracle selector, "
        "validation-picked learning rates, seeds with 95 % intervals and paired differences",
        "data": f"{a.dataset}: Fashion-MNIST items on photo crops, 32 px RGB, train / test "
        "photos disjoint (vislearn.data.synthetic.photo_items); validation: "
        f"{a.val_per_class} images per class held out of training, outside the 10 % subset; "
        f"labelled subsets seeded and class-balanced (label_seed {LABEL_SEED})",
        "steps": {f: a.epochs[f] * spe for f in a.fractions},
        "batch_size": 256,
        "seeds": a.seeds,
        "backbone": f"resnet_tiny (stem small_ds, width {a.width})",
        "optimizer": "SGD momentum 0.9, wd 5e-4 (none on norms/biases), cosine, no warm-up",
        "selection": selection,
        "mra": "token_dot selector (mra<r>) or ground-truth oracle (oracle<r>), mask ratio r, "
        "prob 0.5, paste-back, on the normalised crop + flip view",
        "mae": f"configs/photo_mra/mae.yaml, {a.mae_epochs} epochs of {spe} steps",
        "occlusion": f"one {OCCLUSION['size']}x{OCCLUSION['size']} square of value "
        f"{OCCLUSION['fill']} per test image, seeded (seed {OCCLUSION['seed']})",
        "cutmix_labels": cutmix_labels,
        "cutmix_labels_note": "cutmix_label_check: CutMix's area label against the objects "
        "the mixed image shows, on this data set's masks and on plain Fashion-MNIST items (ink "
        f">= {CUTMIX_CHECK['ink']}: alpha >= 0.5 in photo_items' matte)",
        "train_top1": f"clean top-1 on up to {TRAIN_PROBE['images']} of the labelled images "
        "the row trained on (train_probe): train_top1 - val_top1 is the generalisation gap",
        "fg_kept": "mean share of the object's pixels in the patches MRA kept visible, over "
        "the images it rewrote during training",
        "limit_train_batches": a.limit_batches,
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{a.jobs} runs at a time, one thread each",
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval; *_diff: paired (same "
        "seed) difference against baseline_<fraction>",
        "run_seconds": run_seconds(records),  # every run's own wall clock, cached or not
        "wall_seconds_this_invocation": round(wall, 1),
    }
    write_json_results(a.out, "photo_mra", settings, rows)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
