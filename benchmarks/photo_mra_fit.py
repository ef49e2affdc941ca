"""How well do the cached ``photo_mra`` classifiers fit their own training images?

``photo_mra.py`` records ``train_top1`` (clean top-1 on up to 5,000 of the labelled images a
row trained on) for every run it trains. Runs cached before that metric existed have their
final weights (``<run>/checkpoints/last.ckpt``); this script rebuilds each one's classifier from
its recorded recipe, loads those weights (``weights_only``: nothing is unpickled) and scores
the same images with the same function (:func:`photo_mra.train_probe`), next to the run's own
validation and test top-1. ``train_top1 - val_top1`` is the generalisation gap: near zero, the
classifier is under-fitted and a regulariser (CutMix, Mixup, MRA) has nothing to remove.

    python benchmarks/photo_mra_fit.py --cache /path/to/photo_mra/cache --rows baseline cutmix \
        --fractions 100pct --seeds 0 --out docs/results/photo_mra_fit.json

Nothing is trained; ~5 s per run on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from vislearn.core.utils import write_json

ROWS = ("baseline", "cutmix", "mixup")
FRACTIONS = ("100pct", "10pct", "1pct")


def fit_of_run(result_file: Path, train) -> dict:
    """``train_top1`` of one cached classifier run, from its ``last.ckpt``."""
    import torch
    from torch.utils.data import Subset

    from fmnist_semi import top1, validation_indices
    from photo_mra import train_probe
    from vislearn.models.state_dict import read_state_file, unwrap_state_dict
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config

    rec = json.loads(result_file.read_text())
    c = rec["config"]
    cfg = {**c["recipe"], "seed": rec["seed"]}
    dm = build_datamodule(cfg, exclude=validation_indices(train.labels, **c["val"]))
    model = build_from_config(cfg, dm)
    ckpt = result_file.with_suffix(".run") / "checkpoints" / "last.ckpt"
    state = unwrap_state_dict(read_state_file(ckpt), "state_dict")
    head = torch.nn.Sequential(model.backbone, model.classifier)
    # the module's backbone and classifier are the head's "0" and "1"
    rename = {"backbone": "0", "classifier": "1"}
    own = {f"{rename[k.split('.')[0]]}.{k.split('.', 1)[1]}": v for k, v in state.items()
           if k.split(".")[0] in rename}  # fmt: skip
    head.load_state_dict(own)  # strict: every weight of the classifier must be there
    m = rec["metrics"]
    return {"name": rec["name"], "seed": rec["seed"], "lr": c["lr"], "steps": m["steps"],
            "train_top1": round(top1(head.eval(), Subset(train, train_probe(dm.train_set))), 2),
            **{k: round(m[k], 2) for k in ("val_top1", "top1", "occluded_top1")}}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, required=True, help="photo_mra.py's run cache")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS,
                   help="rows without a frozen MAE")  # fmt: skip
    p.add_argument("--fractions", nargs="+", default=list(FRACTIONS), choices=FRACTIONS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, help="results JSON (default: print only)")
    a = p.parse_args(argv)
    if not a.cache.is_dir():
        raise SystemExit(f"no such cache folder: {a.cache}")
    import torch

    from vislearn.data.datasets import get_dataset
    from vislearn.data.synthetic.photo_items import CACHE_ENV

    os.environ.setdefault(CACHE_ENV, str(a.cache / "data"))
    torch.set_num_threads(1)
    files = sorted(
        f
        for row in a.rows
        for frac in a.fractions
        for f in (a.cache / f"{row}_{frac}").glob("*.json")
        if (f.with_suffix(".run") / "checkpoints" / "last.ckpt").is_file()
    )
    rows, train = [], None
    for f in files:
        rec = json.loads(f.read_text())
        if rec["seed"] not in a.seeds or "train_top1" in rec["metrics"]:
            continue  # a run that recorded train_top1 itself needs no rescoring
        if train is None:
            train = get_dataset(rec["config"]["recipe"]["data"]["dataset"], "train")
        rows.append(fit_of_run(f, train))
        print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: (r["name"], r["steps"], r["lr"], r["seed"]))
    if a.out:
        settings = {
            "what": "clean top-1 of cached photo_mra classifiers on up to 5,000 of their own "
            "labelled training images (photo_mra.train_probe), from each run's last.ckpt",
            "rows": a.rows, "fractions": a.fractions, "seeds": a.seeds}  # fmt: skip
        write_json(a.out, {"benchmark": "photo_mra_fit", "settings": settings, "rows": rows})
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
