"""benchmarks/fmnist_ssl_pipeline.py at a tiny setting: lightly's transforms give the views
the model expects, and the accuracy job table runs both pipelines end to end on the runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def _bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.mark.parametrize("method", ["moco_v2", "simclr", "byol"])
def test_lightly_transform_views(method):
    import fmnist_ssl_pipeline as fp
    from vislearn.data.fmnist import load_embedded_fmnist

    images, labels = load_embedded_fmnist("train")
    ds = fp.PilFashionMNIST(images[:4], labels[:4], fp.lightly_transform(method))
    views, y = ds[0]
    assert len(views) == 2 and y == int(labels[0])
    assert all(v.shape == (1, 28, 28) and v.dtype == torch.float32 for v in views)


def test_accuracy_job_table_tiny(tmp_path):
    import fmnist_ssl_pipeline as fp

    model = {"backbone_kwargs": {"stem": "small_ds", "width": 8}, "proj_hidden_dim": 32,
             "queue_size": 64}  # fmt: skip
    out = tmp_path / "res.json"
    a = fp.parse_args(["accuracy", "--dataset", "fmnist-mini", "--methods", "moco_v2",
                       "--epochs", "1", "--seeds", "0", "--jobs", "0", "--limit-batches", "2",
                       "--batch-size", "32", "--linear-epochs", "1", "--workers", "0",
                       "--contiguous",
                       "--model", json.dumps(model), "--cache", str(tmp_path / "cache"),
                       "--out", str(out)])  # fmt: skip
    rows = {r["name"]: r for r in fp.accuracy(a)}
    names = {"vislearn/moco_v2", "lightly_pipeline/moco_v2", "vislearn_contiguous/moco_v2"}
    assert set(rows) == names
    for r in rows.values():
        assert 0 <= r["knn_top1"] <= 100 and r["images_per_s"] > 0
    assert json.loads(out.read_text())["rows"]
    sys.modules.pop("fmnist_ssl_pipeline", None)
