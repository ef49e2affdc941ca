"""LightningDataModule serving ``uint8`` batches for SSL training and online evaluation."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from vislearn.data.datasets import get_dataset
from vislearn.errors import VislearnError


class ImageDataModule(L.LightningDataModule):
    """Train split (for the SSL views) plus two validation loaders for online kNN / probe.

    Validation loader 0 is the kNN *bank* (``knn_bank_size`` training images, seeded) and
    loader 1 the *query* set (the test split). Both exist only for labelled data with a test
    split; for unlabelled folders online evaluation is switched off automatically.

    Training order is driven by a seeded ``DistributedSampler`` (also on one device) whose
    epoch Lightning sets, so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(
        self,
        dataset: str = "fmnist-mini",
        data_dir: str | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        knn_bank_size: int = 10_000,
        seed: int = 0,
        online_eval: bool = True,
    ) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.knn_bank_size, self.seed = knn_bank_size, seed
        self.train_set: Dataset = get_dataset(dataset, "train", data_dir, image_size, channels)
        if len(self.train_set) < batch_size:
            raise VislearnError(
                f"dataset {dataset!r} has {len(self.train_set)} training images, fewer than "
                f"one batch ({batch_size}); lower --batch-size"
            )
        self.test_set: Dataset | None = None
        if online_eval and getattr(self.train_set, "labels", None) is not None:
            try:
                self.test_set = get_dataset(dataset, "test", data_dir, image_size, channels)
            except VislearnError:
                self.test_set = None
        first = self.train_set[0][0]
        self.channels, self.image_size = int(first.shape[0]), int(first.shape[-1])
        self.num_classes = int(getattr(self.train_set, "num_classes", 0) or 0)

    def _loader(self, ds: Dataset, shuffle: bool, drop_last: bool) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = DistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed, drop_last=drop_last
        )
        workers = self.num_workers
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def bank_set(self) -> Dataset:
        n = len(self.train_set)
        size = min(self.knn_bank_size, n)
        idx = np.random.default_rng(self.seed).permutation(n)[:size]
        return Subset(self.train_set, np.sort(idx).tolist())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._train_dataset(), shuffle=True, drop_last=True)

    def _train_dataset(self) -> Dataset:
        """The training set, passed through the model's optional hook
        ``wrap_train_dataset(dataset) -> Dataset`` when it defines one (CsMl pairs each image
        with a kNN neighbour); unchanged for every other method."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        wrap = getattr(module, "wrap_train_dataset", None)
        return wrap(self.train_set) if callable(wrap) else self.train_set

    def val_dataloader(self) -> list[DataLoader]:
        if self.test_set is None:
            return []
        return [
            self._loader(self.bank_set(), False, False),
            self._loader(self.test_set, False, False),
        ]
