"""Data sets by name for ``vislearn seg`` and the Lightning data module that serves them.

A data set *spec* is either ``synthetic:<name>`` (a set of
:data:`vislearn.data.synthetic.SEG_DATASETS`: ``fine``, ``coarse``, ``partial``) or the path of
a folder in the VOC layout (:class:`vislearn.data.segmentation.SegmentationFolder`, split
lists ``train``/``val`` or ``test``). Synthetic sets are rendered from the config's seed and
sizes; with ``cache_dir`` each rendered set is stored once as a tensor file (written
atomically, read with ``weights_only=True``) so later runs and benchmark workers skip the
rendering.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path
from vislearn.data.segmentation import (
    ArraySegmentationDataset,
    EpochSliceSampler,
    LabelSpace,
    SegmentationDataset,
    SegmentationFolder,
)

__all__ = [
    "SYNTHETIC_PREFIX",
    "SegDataModule",
    "build_segmentation_dataset",
    "check_spec",
    "describe_sets",
    "spec_name",
    "validation_settings",
]

SYNTHETIC_PREFIX = "synthetic:"


def spec_name(spec: str) -> str:
    """A short name for a data set spec (``synthetic:fine`` -> ``fine``, folder -> its name)."""
    if spec.startswith(SYNTHETIC_PREFIX):
        return spec[len(SYNTHETIC_PREFIX) :]
    return Path(spec).expanduser().name or str(spec)


def _synthetic(name: str, split: str, data: dict[str, Any]) -> SegmentationDataset:
    from vislearn.data.synthetic import SEG_DATASETS, segmentation_scenes

    if name not in SEG_DATASETS:
        raise VislearnError(
            f"unknown synthetic segmentation data set {name!r}; choose from "
            f"{', '.join(SYNTHETIC_PREFIX + n for n in SEG_DATASETS)}"
        )
    n = int(data["num_train"] if split == "train" else data["num_test"])
    kwargs = {
        **SEG_DATASETS[name],
        "size": int(data["image_size"]),
        "seed": int(data["synthetic_seed"]),
        "sprite_source": data["sprite_source"],
        "data_dir": data["data_dir"],
        "background_dir": data["background_dir"],
    }
    if data["background_dir"] is not None:
        kwargs["background_names"] = None  # every image of the user's folder
    cache = data.get("cache_dir")
    path = None
    if cache:
        key = json.dumps(
            {"name": name, "split": split, "n": n, **kwargs}, sort_keys=True, default=str
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        path = Path(cache).expanduser() / f"seg_{name}_{split}_{n}_{digest}.pt"
        if path.is_file():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                space = LabelSpace(name, tuple(blob["classes"]), int(blob["ignore_index"]))
                return ArraySegmentationDataset(blob["images"], blob["masks"], space, name)
            except (OSError, RuntimeError, KeyError, ValueError):
                pass  # unreadable cache file: render again and overwrite it
    scenes = segmentation_scenes(n, split=split, name=name, **kwargs)
    space = LabelSpace(name, scenes.classes, scenes.ignore_index)
    ds = ArraySegmentationDataset(scenes.images, scenes.masks, space, name)
    if path is not None:
        with atomic_path(path) as tmp:
            torch.save(
                {
                    "images": scenes.images,
                    "masks": scenes.masks,
                    "classes": list(scenes.classes),
                    "ignore_index": scenes.ignore_index,
                },
                tmp,
            )
    return ds


#: where a fine-tuning run's validation images come from (``data.val_from``)
VAL_FROM = ("labelled", "rest")


def validation_settings(data: dict[str, Any]) -> tuple[float, str]:
    """``(data.val_fraction, data.val_from)`` of a fine-tuning config, checked: a one-line
    error for a share outside [0, 1) or an unknown source."""
    share = float(data.get("val_fraction") or 0.0)
    if not 0.0 <= share < 1.0:
        raise VislearnError(f"data.val_fraction must be in [0, 1), got {share}")
    source = data.get("val_from") or "labelled"
    if source not in VAL_FROM:
        raise VislearnError(f"data.val_from must be one of {', '.join(VAL_FROM)}, got {source!r}")
    return share, source


def check_spec(spec: str) -> None:
    """A one-line error for a data set spec that names no synthetic set and no folder, found
    without rendering or reading anything (run before the first data set is built)."""
    from vislearn.data.synthetic import SEG_DATASETS

    spec = str(spec).strip()
    if spec.startswith(SYNTHETIC_PREFIX):
        if spec_name(spec) not in SEG_DATASETS:
            raise VislearnError(
                f"unknown synthetic segmentation data set {spec_name(spec)!r}; choose from "
                f"{', '.join(SYNTHETIC_PREFIX + n for n in SEG_DATASETS)}"
            )
    elif not Path(spec).expanduser().is_dir():
        raise VislearnError(
            f"segmentation data set {spec!r} is neither synthetic:<name> nor a folder"
        )


def build_segmentation_dataset(spec: str, split: str, data: dict[str, Any]) -> SegmentationDataset:
    """The data set ``spec`` (see the module docstring), split ``"train"`` or ``"test"``.

    ``data`` is the config's ``data`` section (``image_size``, ``num_train``, ``num_test``,
    ``synthetic_seed``, ``sprite_source``, ``data_dir``, ``background_dir``, ``cache_dir``,
    ``folder_test_split``).
    """
    spec = str(spec).strip()
    if spec.startswith(SYNTHETIC_PREFIX):
        return _synthetic(spec_name(spec), split, data)
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise VislearnError(
            f"segmentation data set {spec!r} is neither synthetic:<name> nor a folder"
        )
    list_split = split if split == "train" else data.get("folder_test_split") or "val"
    size = data["image_size"]
    return SegmentationFolder(root, list_split, image_size=None if size is None else int(size))


class SegDataModule(L.LightningDataModule):
    """Serves a training set (and optionally a validation set) with seeded
    ``DistributedSampler`` s (also on one device), so a resumed run sees the same batches.

    ``steps_per_epoch`` (optional) makes every epoch that many batches per rank
    (:class:`~vislearn.data.segmentation.EpochSliceSampler`), which keeps epochs -- and
    checkpoints -- regular on small labelled subsets and large multi-dataset pools alike.
    Under DDP the validation sampler pads the last batch by repeating a few images (as
    ``DistributedSampler`` does); the final scores of ``vislearn seg eval`` run in one process.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), seed
        self.steps_per_epoch = steps_per_epoch
        if len(train) == 0:
            raise VislearnError("training set is empty")
        if steps_per_epoch is None and len(train) < self.batch_size:
            raise VislearnError(
                f"the training set has {len(train)} images, fewer than one batch "
                f"({self.batch_size}); lower data.batch_size or set data.steps_per_epoch"
            )

    def _world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.world_size, t.global_rank) if t is not None else (1, 0)

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        world, rank = self._world()
        if train and self.steps_per_epoch:
            per_rank = int(self.steps_per_epoch) * self.batch_size
            sampler = EpochSliceSampler(len(ds), per_rank, self.seed, rank, world)
        else:
            sampler = DistributedSampler(
                ds, num_replicas=world, rank=rank, shuffle=train, seed=self.seed, drop_last=train
            )
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None else self._loader(self.val_set, False)


def describe_sets(sets: list[SegmentationDataset]) -> list[dict[str, Any]]:
    """Name, size and classes of each data set (stored in run folders)."""
    return [{"name": d.name, "images": len(d), "classes": list(d.classes)} for d in sets]
