"""Data: Fashion-MNIST (full and embedded subset), image folders, labelled subsets."""

from vislearn.data.datasets import (
    BUILTIN_DATASETS,
    IMAGE_EXTENSIONS,
    ArrayImageDataset,
    ImageFolderDataset,
    get_dataset,
)
from vislearn.data.fmnist import (
    FMNIST_CLASSES,
    find_fashion_mnist,
    load_embedded_fmnist,
    load_fashion_mnist,
    read_idx,
)
from vislearn.data.subsets import balanced_subset, split_labelled_unlabelled

__all__ = [
    "BUILTIN_DATASETS",
    "FMNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "ArrayImageDataset",
    "ImageFolderDataset",
    "balanced_subset",
    "find_fashion_mnist",
    "get_dataset",
    "load_embedded_fmnist",
    "load_fashion_mnist",
    "read_idx",
    "split_labelled_unlabelled",
]
