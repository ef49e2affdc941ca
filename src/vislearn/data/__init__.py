"""Data: Fashion-MNIST (full and embedded subset), image folders, labelled subsets, video
folders and files, synthetic moving-sprite videos, FAME."""

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
from vislearn.data.synthetic import (
    MotionClipDataset,
    MotionVideos,
    load_backgrounds,
    motion_splits,
    moving_sprite_videos,
    write_video_folders,
)
from vislearn.data.video.augment import ClipAugment
from vislearn.data.video.dataset import VideoFolderDataset, clip_indices
from vislearn.data.video.fame import FAME, fame, fame_mask
from vislearn.data.video.io import read_clip, read_video, write_video

__all__ = [
    "BUILTIN_DATASETS",
    "FAME",
    "FMNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "ArrayImageDataset",
    "ClipAugment",
    "ImageFolderDataset",
    "MotionClipDataset",
    "MotionVideos",
    "VideoFolderDataset",
    "balanced_subset",
    "clip_indices",
    "fame",
    "fame_mask",
    "find_fashion_mnist",
    "get_dataset",
    "load_embedded_fmnist",
    "load_backgrounds",
    "load_fashion_mnist",
    "motion_splits",
    "moving_sprite_videos",
    "read_clip",
    "read_idx",
    "read_video",
    "split_labelled_unlabelled",
    "write_video",
    "write_video_folders",
]
