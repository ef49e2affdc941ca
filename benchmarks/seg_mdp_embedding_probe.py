"""Diagnostic for the MDP benchmark: where does MDP's pretrained representation live?

``benchmarks/seg_mdp.py``'s linear probe reads the decoder output, which is the classifier's
input for the cross-entropy rows but, for MDP, only the projection head's input: MDP's loss
shapes the L2-normalised embedding *after* the projector, which transfer drops. This script
probes both layers of the same MDP pretrainings (and the decoder output of the other rows as
the reference) with one per-pixel linear classifier trained on cached frozen features ->
docs/results/seg_mdp_embedding_probe.json.

Setting: the pretrainings cached by ``seg_mdp.py`` (``--cache``), the target's seeded labelled
fraction (the images its probe trains on there; the probe here uses all of them, no model
selection: fixed AdamW lr 1e-2, ``--steps`` full-batch steps, the same for every layer), mIoU
(%) on its test split.

    python benchmarks/seg_mdp_embedding_probe.py --targets heldout fine --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vislearn.bench.stats import mean_ci95, paired_diff
from vislearn.core.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
ROWS = ("single_dataset", "naive_multi", "mdp")


def _pretrained(jobs: dict, cache: Path, row: str, target: str, seed: int) -> Path:
    """The ``pretrained.safetensors`` of seg_mdp.py's pretraining job (row, target, seed)."""
    import seg_mdp

    job = jobs[(row, seg_mdp._source(row, target), seed)]
    path = job.run_dir(cache / "pretrain") / "pretrained.safetensors"
    if not path.is_file():
        raise SystemExit(f"missing pretraining {job.name} seed {seed}: run seg_mdp.py first")
    return path


def _features(path: Path, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Frozen decoder features (and, for an MDP file, the normalised embedding)."""
    from safetensors.torch import load_file

    from vislearn.core.artifacts import read_safetensors_metadata
    from vislearn.data.augment import Normalize
    from vislearn.models.segmentation import PixelProjection, SegmentationNet

    meta = read_safetensors_metadata(path)
    tensors = load_file(str(path))
    arch = meta["arch"]
    net = SegmentationNet([], **{k: v for k, v in arch.items() if k != "num_classes"})
    net.load_state_dict(
        {k: v for k, v in tensors.items() if k.startswith(("backbone.", "decoder."))}
    )
    net.eval()
    proj = None
    if meta.get("method") == "mdp":
        w = {k[len("projector.") :]: v for k, v in tensors.items() if k.startswith("projector.")}
        first = next(v for k, v in w.items() if k.endswith("weight") and v.dim() == 4)
        last = [v for k, v in w.items() if k.endswith("weight") and v.dim() == 4][-1]
        proj = PixelProjection(net.out_channels, last.shape[0], first.shape[0]).eval()
        proj.load_state_dict(w)
    norm = Normalize(images.shape[1])
    out: dict[str, list[torch.Tensor]] = {"decoder": [], "embedding": []}
    with torch.no_grad():
        for batch in images.split(100):
            f = net.features(norm(batch))
            out["decoder"].append(f)
            if proj is not None:
                out["embedding"].append(F.normalize(proj(f), dim=1))
    return {k: torch.cat(v) for k, v in out.items() if v}


def _probe(train_f, train_y, test_f, test_y, k, ign, steps, seed) -> float:
    from vislearn.eval.segmentation import confusion_matrix, segmentation_scores

    g = torch.Generator().manual_seed(seed)
    clf = torch.nn.Conv2d(train_f.shape[1], k, 1)
    with torch.no_grad():
        clf.weight.copy_(torch.randn(clf.weight.shape, generator=g) * 0.01)
        clf.bias.zero_()
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-2, weight_decay=1e-4)
    size = train_y.shape[-2:]
    for _ in range(steps):
        logits = F.interpolate(clf(train_f), size=size, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, train_y, ignore_index=ign)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = F.interpolate(clf(test_f), size=size, mode="bilinear", align_corners=False)
    conf = confusion_matrix(pred.argmax(1), test_y, k, ign)
    return 100 * segmentation_scores(conf)["miou"]


def main() -> None:
    import sys

    sys.path.insert(0, str(BENCH))
    import seg_mdp
    from vislearn.data.segmentation import fraction_subset
    from vislearn.tasks.seg.data import build_segmentation_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", default=["heldout", "fine"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--cache", default=str(BENCH / ".cache" / "seg_mdp"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "seg_mdp_embedding_probe.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    cache = Path(a.cache)
    # seg_mdp.py's settings (its defaults, this run's seeds, fraction and cache) name the jobs
    ns = seg_mdp.build_parser().parse_args(
        ["--seeds", *map(str, a.seeds), "--fraction", str(a.fraction), "--cache", a.cache]
    )
    jobs = seg_mdp.pretrain_jobs(ns)
    data = seg_mdp.data_section(ns)
    t0 = time.perf_counter()
    values: dict[str, dict[int, float]] = {}
    for t in a.targets:
        train = fraction_subset(
            build_segmentation_dataset(f"synthetic:{t}", "train", data), a.fraction, 0
        )
        test = build_segmentation_dataset(f"synthetic:{t}", "test", data)
        tx = torch.stack([train[i][0] for i in range(len(train))])
        ty = torch.stack([train[i][1] for i in range(len(train))]).long()
        sx = torch.stack([test[i][0] for i in range(len(test))])
        sy = torch.stack([test[i][1] for i in range(len(test))]).long()
        for row in ROWS:
            for seed in a.seeds:
                path = _pretrained(jobs, cache, row, t, seed)
                ftr, fte = _features(path, tx), _features(path, sx)
                for layer in ftr:
                    v = _probe(ftr[layer], ty, fte[layer], sy, train.num_classes,
                               train.ignore_index, a.steps, seed)  # fmt: skip
                    values.setdefault(f"{t}|{row}|{layer}", {})[seed] = v
                    print(t, row, layer, seed, round(v, 2), flush=True)
    rows = []
    for key, vals in values.items():
        t, row, layer = key.split("|")
        mean, ci = mean_ci95(list(vals.values()))
        rows.append({"name": f"{row}/{layer}", "target": t, "miou": round(mean, 2),
                     "miou_seeds": [round(v, 2) for v in vals.values()],
                     "miou_ci95": None if ci is None else [round(c, 2) for c in ci]})  # fmt: skip
    pairs = []
    for t in a.targets:
        emb = values.get(f"{t}|mdp|embedding", {})
        for other in ("mdp|decoder", "single_dataset|decoder", "naive_multi|decoder"):
            d = paired_diff(emb, values[f"{t}|{other}"])
            ci = None if d["ci95"] is None else [round(c, 2) for c in d["ci95"]]
            pairs.append({"a": "mdp/embedding", "b": other.replace("|", "/"), "target": t,
                          "miou_diff": round(d["mean"], 2), "ci95": ci})  # fmt: skip
    settings = {
        "question": "does a linear probe on MDP's projected embedding (which its loss shapes) "
        "read more than one on the decoder output (what transfer keeps)?",
        "pretrainings": "benchmarks/seg_mdp.py's cached runs (same keys), 1,000 steps",
        "probe": f"1x1 conv on frozen features, logits bilinearly upsampled, cross-entropy "
        f"(ignore 255), AdamW lr 1e-2 wd 1e-4, {a.steps} full-batch steps on the target's "
        f"{a.fraction:.0%} labelled subset, no model selection; mIoU % on the test split",
        "seeds": a.seeds,
        "paired_differences": pairs,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(a.out, {"benchmark": "seg_mdp_embedding_probe", "settings": settings, "rows": rows})
    print(json.dumps(pairs, indent=1))


if __name__ == "__main__":
    main()
