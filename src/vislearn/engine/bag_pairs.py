"""Training on (anchor, bag member) pairs: the data side shared by CsMl and BINGO.

Every training sample gets a *bag* of ``bag_k`` related samples (its nearest neighbours in
some encoder's feature space, or members of its cluster / class). Each epoch every sample is
paired with one bag member drawn uniformly (seeded by ``(seed, epoch)``), through
:meth:`BagPairs.wrap_train_dataset`, a hook :class:`~vislearn.data.datamodule.ImageDataModule`
calls when it builds the training loader; batches are ``(anchor, neighbour, label)`` and
:meth:`BagPairs.training_step` stacks them as ``[anchors; neighbours]`` for the method.

Bags are recomputed at every ``bag_refresh_epochs``-th epoch (CsMl: a moving momentum
encoder) or once (``bag_refresh_epochs = None``: BINGO's static bags from a frozen teacher).
They are cached under ``<default_root_dir>/bags/bags_epochEEEE.pt``
(:class:`~vislearn.engine.bags.BagCache`), so a resumed run reloads instead of recomputing,
after proving the file belongs to it (the encoder's fingerprint at a refresh epoch, the bag
digest the checkpoint recorded between refreshes).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vislearn.core.errors import VislearnError
from vislearn.data.pairs import NeighbourPairDataset, draw_partners
from vislearn.engine.bags import BagCache, all_ranks_agree, module_fingerprint, tensor_digest
from vislearn.ops.neighbours import dataset_knn_bags

__all__ = ["BagPairs"]


class BagPairs:
    """Mixin for an :class:`~vislearn.engine.ssl.SSLMethod` trained on bag pairs.

    The method's hyper-parameters must include ``bag_k``, ``bag_batch_size``,
    ``bag_num_workers``, ``bag_cache`` and ``seed`` (and ``bag_refresh_epochs`` unless it
    overrides :attr:`bag_refresh_every`). It provides :attr:`bag_encoder` (the network whose
    pooled features define the kNN bags) and may override :attr:`uses_neighbours`,
    :meth:`bag_fingerprint` and :meth:`compute_bags`.
    """

    def _init_bag_pairs(self) -> None:
        self._pairs: NeighbourPairDataset | None = None
        self._bags: Tensor | None = None
        self._bags_epoch: int | None = None
        self._bag_digest: str | None = None
        self._resumed_bag_digest: str | None = None
        self._resume_epoch: int | None = None
        self._prepared_epoch: int | None = None
        self._loader_fresh = False
        self._bag_purity: float | None = None
        self.bag_events: list[tuple[str, int]] = []  # ("computed" | "loaded", bag epoch)

    @property
    def uses_neighbours(self) -> bool:
        return True

    @property
    def bag_encoder(self) -> nn.Module:
        raise NotImplementedError

    @property
    def bag_refresh_every(self) -> int | None:
        """Epochs between bag refreshes (``hparams.bag_refresh_epochs``); None: computed once."""
        return self.hparams.bag_refresh_epochs

    def bag_fingerprint(self) -> str:
        """Identifies the encoder the bags of the current refresh are computed with."""
        return module_fingerprint(self.bag_encoder)

    def compute_bags(self, dataset: Dataset) -> Tensor:
        """Bags ``[N, bag_k]`` of ``dataset``: by default the ``bag_k`` nearest other samples
        in :attr:`bag_encoder`'s space (:func:`~vislearn.ops.neighbours.dataset_knn_bags`)."""
        h = self.hparams
        return dataset_knn_bags(
            self.bag_encoder, dataset, h.bag_k, self.device, h.bag_batch_size, h.bag_num_workers
        )

    # ---- data: bags and anchor/neighbour pairs ---------------------------------------------
    def wrap_train_dataset(self, dataset: Dataset) -> Dataset:
        """``ImageDataModule`` hook: pair every training sample with a bag member."""
        if not self.uses_neighbours:
            return dataset
        if len(dataset) <= self.hparams.bag_k:
            raise VislearnError(
                f"{self.method_name} bag_k={self.hparams.bag_k} needs more than "
                f"{self.hparams.bag_k} training images, got {len(dataset)}"
            )
        self._pairs = NeighbourPairDataset(dataset)
        self._prepared_epoch = None
        self._loader_fresh = True
        # The epoch about to run. Lightning builds the loader (and its first batches) while
        # configuring the optimiser, before it restores the loops of a resumed run, so the
        # epoch comes from the checkpoint (on_load_checkpoint) when there is one.
        processed = self.trainer.fit_loop.epoch_progress.current.processed
        self._prepare_epoch(max(processed, self._resume_epoch or 0))
        return self._pairs

    def on_train_epoch_start(self) -> None:
        if self._pairs is None:
            return
        fresh, self._loader_fresh = self._loader_fresh, False
        if fresh and self._prepared_epoch != self.current_epoch:
            # the loader's first batches were drawn already (Lightning creates the iterator of
            # a fit's first epoch early); only strategies that restore the checkpoint after
            # building the loader (FSDP, DeepSpeed) get here
            warnings.warn(
                f"{self.method_name}: the training loader was prepared for epoch "
                f"{self._prepared_epoch} but epoch {self.current_epoch} starts; its first "
                "batches may use other pairs",
                stacklevel=2,
            )
        self._prepare_epoch(self.current_epoch)
        if self._bag_purity is not None:
            self.log("train/bag_purity", self._bag_purity, on_step=False, on_epoch=True)

    def _bag_epoch(self, epoch: int) -> int:
        every = self.bag_refresh_every
        return 0 if every is None else epoch - epoch % every

    def _prepare_epoch(self, epoch: int) -> None:
        """Refresh the bags if ``epoch`` is a refresh epoch (or they are missing), then draw
        this epoch's partners. Idempotent per epoch."""
        if epoch == self._prepared_epoch:
            return
        bag_epoch = self._bag_epoch(epoch)
        if self._bags is None or self._bags_epoch != bag_epoch:
            self._bags = self._bags_for(bag_epoch, refresh=epoch == bag_epoch)
            self._bags_epoch = bag_epoch
            labels = getattr(self._pairs.base, "labels", None)
            if labels is not None:
                y = torch.as_tensor(labels)
                self._bag_purity = (y[self._bags] == y.unsqueeze(1)).float().mean().item()
        self._pairs.set_partners(draw_partners(self._bags, self.hparams.seed, epoch))
        self._prepared_epoch = epoch

    def _bags_for(self, bag_epoch: int, refresh: bool) -> Tensor:
        """Load the bags of ``bag_epoch`` from the cache if they provably belong to this run,
        else compute them (all ranks take the same decision)."""
        h = self.hparams
        n = len(self._pairs)
        cache = BagCache(Path(self.trainer.default_root_dir) / "bags") if h.bag_cache else None
        entry = cache.load(bag_epoch, n, h.bag_k) if cache is not None else None
        fingerprint = self.bag_fingerprint()
        if refresh:  # the encoder now is the one the bags of this epoch are computed with
            ok = entry is not None and entry["fingerprint"] == fingerprint
        else:  # resumed between refreshes: the checkpoint names the bags it was using
            ok = entry is not None and entry["digest"] == self._resumed_bag_digest
        if all_ranks_agree(ok, self.device):
            self.bag_events.append(("loaded", bag_epoch))
            self._bag_digest = entry["digest"]
            return entry["bags"]
        if not refresh:
            warnings.warn(
                f"{self.method_name}: the bags of epoch {bag_epoch} are not in the cache; "
                f"recomputing them with the current encoder (epoch {self.current_epoch})",
                stacklevel=2,
            )
        bags = self.compute_bags(self._pairs.base)
        if cache is not None and self.trainer.is_global_zero:
            cache.save(bag_epoch, bags, fingerprint)
        self._bag_digest = tensor_digest(bags)
        self.bag_events.append(("computed", bag_epoch))
        return bags

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._bags is not None:
            checkpoint["bags"] = {"epoch": self._bags_epoch, "digest": self._bag_digest}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("bags") or checkpoint.get("csml_bags") or {}  # csml_bags: <= 0.1
        self._resumed_bag_digest = saved.get("digest")
        try:
            progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
            self._resume_epoch = int(progress["processed"])
        except (KeyError, TypeError):
            self._resume_epoch = None

    def on_train_end(self) -> None:
        self._resume_epoch = None

    # ---- training -------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        if self.uses_neighbours:
            if len(batch) != 3:
                raise VislearnError(
                    f"{self.method_name} trains on (anchor, neighbour, label) batches; use "
                    "ImageDataModule (as `vislearn pretrain` does), which applies "
                    "wrap_train_dataset"
                )
            anchor, neighbour, labels = batch
            batch = (torch.cat([anchor, neighbour]), labels)
        return super().training_step(batch, batch_idx)
