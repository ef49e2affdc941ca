"""Trainer factory: Lightning with vislearn's logging, checkpointing and throughput."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def save_atomic(
    trainer: L.Trainer, filepath: str | os.PathLike, weights_only: bool = False
) -> None:
    """``trainer.save_checkpoint`` to a temporary file renamed into place (collective: call it
    on every rank; rank 0 renames), so a run killed while saving keeps its previous
    checkpoint intact."""
    tmp = f"{filepath}.tmp"
    trainer.save_checkpoint(tmp, weights_only)
    if trainer.is_global_zero:
        os.replace(tmp, filepath)
    trainer.strategy.barrier()


class AtomicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes to a temporary file and renames it into place, so a run
    killed while saving keeps its previous ``last.ckpt`` intact."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        save_atomic(trainer, filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    @property
    def last_path(self) -> Path:
        """Where this callback keeps the run's checkpoint (``<dirpath>/<filename>.ckpt``)."""
        return Path(self.dirpath or ".") / f"{self.filename}.ckpt"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Also keep the final step: a run stopped by ``max_steps`` inside an epoch would
        otherwise end with the checkpoint of the previous epoch end."""
        super().on_train_end(trainer, pl_module)
        if self._last_global_step_saved != trainer.global_step and self.dirpath is not None:
            self._save_checkpoint(trainer, str(self.last_path))


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but keeping an existing ``metrics.csv`` (its rows and columns)
    instead of deleting it, when ``append`` is set."""

    def __init__(self, log_dir: str, append: bool) -> None:
        self._append = append
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not (self._append and path.is_file()):
            super()._check_log_dir_exists()
            return
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        self.metrics_keys = sorted(header)  # new columns rewrite the header, rows kept


class ResumableCSVLogger(CSVLogger):
    """``csv/metrics.csv`` that grows across resumes: with :attr:`append` set (what
    :func:`vislearn.engine.run.fit` does when it resumes a run) the rows of the earlier
    attempts stay and new rows are appended (Lightning's CSVLogger deletes the file)."""

    append = False

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self.append)
        return self._experiment


class Throughput(Callback):
    """Training images per second over the wall time of the training batches only: from the
    start of each training epoch to its end, less the validation inside it (which is
    reported separately, :attr:`val_seconds` and ``train/val_seconds``)."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0  # training time (validation excluded)
        self.val_seconds = 0.0
        self._t0 = self._v0 = 0.0
        self._n0 = 0
        self._epoch_val = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._n0 = self.images
        self._epoch_val = 0.0

    on_train_start = on_train_epoch_start  # a run resumed mid-epoch starts without the latter

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += int(batch[0].shape[0]) * trainer.world_size

    def on_validation_start(self, trainer, pl_module) -> None:
        self._v0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        dt = time.perf_counter() - self._v0
        self.val_seconds += dt
        self._epoch_val += dt

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dt = max(time.perf_counter() - self._t0 - self._epoch_val, 1e-9)
        self.seconds += dt
        pl_module.log("train/images_per_s", (self.images - self._n0) / dt, sync_dist=True)
        pl_module.log("train/val_seconds", self._epoch_val, sync_dist=True)

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def build_trainer(
    out_dir: str | os.PathLike,
    max_epochs: int = 10,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str = "32-true",
    sync_batchnorm: bool = False,
    log_every_n_steps: int = 10,
    check_val_every_n_epoch: int = 1,
    limit_train_batches: int | float | None = None,
    max_steps: int = -1,
    progress: bool = True,
    callbacks: list[Callback] | None = None,
    checkpoint_every_n_steps: int | None = None,
) -> L.Trainer:
    """A Lightning Trainer writing TensorBoard + CSV logs and ``checkpoints/last.ckpt``
    (atomically, every epoch -- or every ``checkpoint_every_n_steps`` optimiser steps -- and
    at the last step) under ``out_dir``; ``csv/metrics.csv`` keeps its rows when
    :func:`vislearn.engine.run.fit` resumes (:class:`ResumableCSVLogger`). Multi-GPU /
    multi-node / mixed precision are Lightning's: ``devices=8, strategy="ddp",
    precision="bf16-mixed"``."""
    out = Path(out_dir)
    # One file rewritten every epoch. (save_last=True with save_top_k=0 writes last.ckpt only
    # when fit() ends in Lightning 2.x, so an interrupted run had nothing to resume from; and
    # without save_on_train_epoch_end, ModelCheckpoint saves only after validation, i.e. every
    # check_val_every_n_epoch epochs.)
    cbs = [
        AtomicCheckpoint(
            dirpath=out / "checkpoints",
            filename="last",
            save_top_k=1,
            every_n_epochs=None if checkpoint_every_n_steps else 1,
            every_n_train_steps=checkpoint_every_n_steps or None,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
    ]
    cbs += [LearningRateMonitor("step"), *(callbacks or [])]
    return L.Trainer(
        default_root_dir=out,
        max_epochs=max_epochs,
        max_steps=max_steps,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        sync_batchnorm=sync_batchnorm,
        logger=[
            TensorBoardLogger(out, name="tensorboard", version=""),
            ResumableCSVLogger(out, name="csv", version=""),
        ],
        callbacks=cbs,
        log_every_n_steps=log_every_n_steps,
        check_val_every_n_epoch=check_val_every_n_epoch,
        limit_train_batches=limit_train_batches,
        enable_progress_bar=progress,
        enable_model_summary=False,
        use_distributed_sampler=False,  # ImageDataModule brings its own seeded sampler
        num_sanity_val_steps=0,
    )
