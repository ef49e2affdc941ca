"""Regenerate the DiT caching benchmark's assets (configs/dit_cache/fmnist.yaml):

* ``assets/dit_fmnist/``: a class-conditional pixel-space DiT trained by vislearn on full
  Fashion-MNIST at 32x32 (``vislearn dit train``; 6 blocks, 4 heads x 32, patch 4 = 64
  tokens: the size a 2-core CPU trains in about an hour), stored as a diffusers folder with
  float16 weights (half the bytes; :func:`vislearn.accel.sampling.load_transformer` loads them
  as float32);
* ``assets/dit_fmnist/classifier.safetensors``: the feature classifier for FD and class
  consistency (``vislearn dit classifier``).

    python scripts/make_dit_assets.py            # resumes an interrupted training run

The training run itself (checkpoints, logs) goes to ``runs/dit_fmnist`` (not committed).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4500, help="DiT optimiser steps (batch 64)")
    p.add_argument("--run", default=str(ROOT / "runs" / "dit_fmnist"))
    p.add_argument("--out", default=str(ROOT / "assets" / "dit_fmnist"))
    p.add_argument("--classifier-epochs", type=int, default=3)
    p.add_argument("--retrain-classifier", action="store_true")
    a = p.parse_args()
    vislearn = [sys.executable, "-m", "vislearn.cli"]
    subprocess.run(
        [*vislearn, "dit", "train", "--data", "fmnist", "--out", a.run, "--patch-size", "4",
         "--batch-size", "64", "--max-steps", str(a.steps), "--lr", "5e-4"],
        check=True,
    )  # fmt: skip
    import torch
    from diffusers import DiTTransformer2DModel

    out = Path(a.out)
    model = DiTTransformer2DModel.from_pretrained(
        Path(a.run) / "model" / "transformer", torch_dtype=torch.float16
    )
    model.save_pretrained(out / "transformer")
    shutil.copytree(Path(a.run) / "model" / "scheduler", out / "scheduler", dirs_exist_ok=True)
    if (out / "classifier.safetensors").is_file() and not a.retrain_classifier:
        print(f"kept {out / 'classifier.safetensors'} (--retrain-classifier to redo it)")
        return
    subprocess.run(
        [*vislearn, "dit", "classifier", "--data", "fmnist", "--out",
         str(out / "classifier.safetensors"), "--epochs", str(a.classifier_epochs)],
        check=True,
    )  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
