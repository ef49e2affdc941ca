"""LightningDataModule serving ``uint8`` batches for SSL training and online evaluation."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from vislearn.core.errors import VislearnError
from vislearn.data.datasets import get_dataset
from vislearn.data.resume import SeededDistributedSampler, TrainLoader
from vislearn.data.semi import LabelledSubset, PartiallyLabelledDataset, SemiSupervisedSampler
from vislearn.data.subsets import split_labelled_unlabelled


class ImageDataModule(L.LightningDataModule):
    """Train split (for the SSL views) plus two validation loaders for online kNN / probe.

    Validation loader 0 is the kNN *bank* (``knn_bank_size`` training images, seeded) and
    loader 1 the *query* set (the test split). Both exist only for labelled data with a test
    split; for unlabelled folders online evaluation is switched off automatically.

    Training order is driven by a seeded ``DistributedSampler`` (also on one device) whose
    epoch Lightning sets, and the training loader's position is saved in every checkpoint
    (:mod:`vislearn.data.resume`), so a resumed run -- also one stopped mid-epoch -- sees
    exactly the batches it would have seen.

    **Semi-supervised training** (``label_fraction``, the config's ``data.label_fraction``): only
    a seeded class-balanced fraction of the training labels is kept
    (:func:`~vislearn.data.subsets.split_labelled_unlabelled` with ``label_seed``); every other
    training sample is served with label ``-1`` (:class:`~vislearn.data.semi.
    PartiallyLabelledDataset`), and each batch holds ``labelled_batch_size`` labelled rows
    followed by unlabelled ones (:class:`~vislearn.data.semi.SemiSupervisedSampler`; default a
    quarter of the batch, i.e. FixMatch's ratio ``μ = 3``; set it to ``batch_size`` for
    supervised training on the labelled subset alone). The epoch length stays
    ``len(train) // batch_size``. The online kNN bank keeps the true labels: it only monitors.
    ``label_fraction=None`` (default) keeps all labels; ``labelled_batch_size`` without a
    ``label_fraction`` is an error.

    **Held-out images** (``exclude``, not a config field): indices of the training split that
    are never served for training, e.g. a validation split carved from it for model selection
    (``benchmarks/fmnist_semi.py``). With a label fraction they must lie outside the labelled
    subset and are dropped from the unlabelled stream; without one the training set is the rest
    (:class:`~vislearn.data.semi.LabelledSubset`). The epoch length counts the served images
    only. The online kNN bank may still draw them: it only monitors.

    **Foreground masks** (``mask_channel``, the config's ``data.mask_channel``): training images
    are served with their ground-truth foreground as one extra channel (0 / 255), for data sets
    that have masks (``photo-fmnist``: :class:`~vislearn.data.synthetic.photo_items.
    PhotoItemsDataset`); :class:`~vislearn.data.augment.MultiViewAugment` crops it along with
    the pixels, drops it from the views and hands it to the ops that use it (MRA's oracle
    selector and its ``train/mra_fg_kept`` metric). The kNN bank and the test split come
    without it; ``channels`` is the images'.
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
        label_fraction: float | None = None,
        labelled_batch_size: int | None = None,
        label_seed: int = 0,
        exclude: np.ndarray | None = None,
        mask_channel: bool = False,
    ) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.knn_bank_size, self.seed = knn_bank_size, seed
        self.train_set: Dataset = get_dataset(dataset, "train", data_dir, image_size, channels)
        self.bank_source = self.train_set  # with all its labels: the online kNN bank
        self.mask_channel = bool(mask_channel)
        if self.mask_channel:
            if not hasattr(self.train_set, "with_mask_channel"):
                raise VislearnError(
                    f"data.mask_channel needs a data set with foreground masks (photo-fmnist), "
                    f"not {dataset!r}"
                )
            self.train_set = self.train_set.with_mask_channel()
        self.label_fraction, self.label_seed = label_fraction, label_seed
        self.labelled_batch_size = labelled_batch_size
        if label_fraction is None and labelled_batch_size is not None:
            raise VislearnError("data.labelled_batch_size needs a data.label_fraction")
        if label_fraction is not None:
            labels = getattr(self.train_set, "labels", None)
            if labels is None:
                raise VislearnError(f"dataset {dataset!r} has no labels for data.label_fraction")
            labelled, self.unlabelled_idx = split_labelled_unlabelled(
                labels, fraction=label_fraction, seed=label_seed
            )
            if exclude is not None:
                held_out = self._held_out(exclude, len(labels))
                if np.isin(labelled, held_out).any():
                    raise VislearnError("held-out (exclude) images overlap the labelled subset")
                self.unlabelled_idx = np.setdiff1d(self.unlabelled_idx, held_out)
            self.train_set = PartiallyLabelledDataset(self.train_set, labelled)
            if labelled_batch_size is None:
                self.labelled_batch_size = batch_size // 4
            self._semi_sampler(1, 0)  # bad batch composition: an error now, not at fit time
        elif exclude is not None:
            held_out = self._held_out(exclude, len(self.train_set))
            keep = np.setdiff1d(np.arange(len(self.train_set)), held_out)
            self.train_set = LabelledSubset(self.train_set, keep)
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
        first = self.bank_source[0][0]  # without the mask channel
        self.channels, self.image_size = int(first.shape[0]), int(first.shape[-1])
        self.num_classes = int(getattr(self.train_set, "num_classes", 0) or 0)

    @staticmethod
    def _held_out(exclude: np.ndarray, n: int) -> np.ndarray:
        held_out = np.unique(np.asarray(exclude, dtype=np.int64))
        if held_out.size and (held_out[0] < 0 or held_out[-1] >= n):
            raise VislearnError(f"held-out (exclude) indices must be in [0, {n})")
        return held_out

    def _world_rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer else (1, 0)

    def _loader(
        self,
        ds: Dataset,
        shuffle: bool,
        drop_last: bool,
        sampler: Sampler | None = None,
        train: bool = False,
    ) -> DataLoader:
        world, rank = self._world_rank()
        sampler = sampler or SeededDistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed, drop_last=drop_last
        )
        workers = self.num_workers
        extra = {"position": lambda: self._train_position(sampler), "seed": self.seed}
        extra = extra if train else {}
        return (TrainLoader if train else DataLoader)(
            ds,
            **extra,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def bank_set(self) -> Dataset:
        n = len(self.bank_source)
        size = min(self.knn_bank_size, n)
        idx = np.random.default_rng(self.seed).permutation(n)[:size]
        return Subset(self.bank_source, np.sort(idx).tolist())

    def _semi_sampler(self, world: int, rank: int) -> SemiSupervisedSampler:
        return SemiSupervisedSampler(
            self.train_set.labelled,
            self.unlabelled_idx,
            self.batch_size,
            self.labelled_batch_size,
            (len(self.train_set.labelled) + len(self.unlabelled_idx)) // (self.batch_size * world),
            self.seed,
            rank,
            world,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = None
        if self.label_fraction is not None:
            sampler = self._semi_sampler(*self._world_rank())
        return self._loader(
            self._train_dataset(), shuffle=True, drop_last=True, sampler=sampler, train=True
        )

    def _train_position(self, sampler: Sampler) -> tuple[int, int]:
        """``(epoch, batches done in it)`` of the training loop, for the loader's state:
        a finished epoch is the next one at batch 0."""
        trainer = self.trainer
        epoch = int(getattr(sampler, "epoch", 0))
        if trainer is None:
            return epoch, 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:
            return epoch + 1, 0
        return epoch, int(done)

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
