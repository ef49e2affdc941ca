"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests with one intra-op thread.

    The tiny models of the tests gain nothing from two threads, and when other jobs share the
    two cores of the test machine OpenMP's spinning threads make them 10-40x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_evaluator(tmp_path_factory) -> dict:
    """A label-free evaluator for SaGe: a tiny BYOL (ResNet-tiny width 8, 28 px, 1 channel)
    trained 2 steps on the embedded Fashion-MNIST. ``ckpt``: its Lightning ``last.ckpt``
    (with the projector head), ``safetensors``: the exported backbone (no head)."""
    import lightning as L

    from vislearn.data.datamodule import ImageDataModule
    from vislearn.engine import build_trainer
    from vislearn.tasks.ssl.methods import build_method
    from vislearn.tasks.ssl.run import export_backbone

    out = tmp_path_factory.mktemp("evaluator")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        L.seed_everything(1, verbose=False)
        model = build_method(
            "byol",
            backbone="resnet_tiny",
            backbone_kwargs={"stem": "small_ds", "width": 8},
            proj_hidden_dim=32,
            proj_dim=16,
            pred_hidden_dim=32,
        )
        trainer = build_trainer(
            out, max_epochs=1, limit_train_batches=2, progress=False, accelerator="cpu", devices=1
        )
        trainer.fit(model, datamodule=ImageDataModule(batch_size=32, knn_bank_size=200))
        export_backbone(model, out / "backbone.safetensors")
    finally:
        torch.set_num_threads(before)
    return {"ckpt": out / "checkpoints" / "last.ckpt", "safetensors": out / "backbone.safetensors"}
