"""Regenerate the embedded Fashion-MNIST subset shipped inside the package.

Draws a class-balanced, seeded subset from the full data set (by default the Debian copy at
/usr/share/datasets/fashion-mnist): 500 images per class from train (5,000) and 100 per class
from test (1,000), kept in their original order, and writes them with ``np.savez_compressed``
to ``src/vislearn/data/assets/fmnist_subset.npz``. Keys: ``train_images`` / ``test_images``
(uint8 [N, 28, 28]), ``train_labels`` / ``test_labels`` (uint8 [N]) and
``train_source_index`` / ``test_source_index`` (int32 positions in the full split).

Usage: python scripts/make_embedded_subset.py [--data-dir DIR] [--out FILE] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path
from vislearn.data.fmnist import load_fashion_mnist
from vislearn.data.subsets import balanced_subset

DEFAULT_OUT = (
    Path(__file__).resolve().parents[1]
    / "src"
    / "vislearn"
    / "data"
    / "assets"
    / "fmnist_subset.npz"
)


def build_subset(
    data_dir: str | None, seed: int, train_per_class: int, test_per_class: int
) -> dict[str, np.ndarray]:
    """Return the arrays of the embedded subset, drawn from the full data set."""
    arrays: dict[str, np.ndarray] = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = load_fashion_mnist(split, data_dir=data_dir)
        idx = balanced_subset(labels, per_class=per_class, seed=seed)
        arrays[f"{split}_images"] = images[idx]
        arrays[f"{split}_labels"] = labels[idx].astype(np.uint8)
        arrays[f"{split}_source_index"] = idx.astype(np.int32)
    return arrays


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with the four IDX files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        arrays = build_subset(args.data_dir, args.seed, args.train_per_class, args.test_per_class)
    except VislearnError as exc:
        print(f"make_embedded_subset: error: {exc}", file=sys.stderr)
        return 1
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # a file object: numpy adds no ".npz" suffix
        tmp.chmod(0o644)  # mkstemp creates 0600; a package asset must be world-readable
    size = args.out.stat().st_size
    print(
        f"wrote {args.out} ({size / 1e6:.2f} MB): "
        f"{len(arrays['train_images'])} train, {len(arrays['test_images'])} test images"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
