"""Semantic segmentation data: label spaces, data sets, the VOC folder reader, multi-dataset
concatenation and device-side joint augmentation.

Every segmentation data set serves ``(image, mask)``: ``image`` uint8 ``[C, H, W]`` and
``mask`` int64 ``[H, W]`` holding class ids of its :class:`LabelSpace` ``label_space`` or the
space's ``ignore_index`` (255 by default, the PASCAL VOC convention for "void" pixels).

* :class:`ArraySegmentationDataset`: images and masks in memory (the synthetic sets).
* :class:`SegmentationFolder`: the common folder layout (PASCAL VOC)::

      root/JPEGImages/<id>.jpg            (any image extension)
      root/SegmentationClass/<id>.png     (palette or 8-bit gray PNG: pixel value = class id)
      root/ImageSets/Segmentation/<split>.txt   (one id per line)
      root/classes.txt                    (optional: one class name per line)

  :func:`write_segmentation_folder` writes that layout (palette PNG masks), e.g. to hand a
  synthetic set to other tools.
* :class:`MultiDatasetSegmentation`: several data sets over their *concatenated* label spaces
  (class ``c`` of data set ``d`` becomes ``offset[d] + c``), served ``(image, mask, d)`` with
  per-dataset balanced indexing.
* :class:`SegmentationAugment`: random scale, crop and flip of an image batch and its label
  maps on the training device (labels by nearest neighbour, pixels from outside the image get
  the ignore index).

Masks are read and written with :mod:`vislearn.data.video.davis`'s label PNG helpers (palette
indices of a "P" PNG, values of an "L" PNG; colour images are rejected).
Modules: :mod:`.labels`, :mod:`.datasets`, :mod:`.folder`, :mod:`.samplers`,
:mod:`.augment`; every public name is re-exported here.
"""

from vislearn.data.segmentation.augment import SegmentationAugment
from vislearn.data.segmentation.datasets import (
    ArraySegmentationDataset,
    MultiDatasetSegmentation,
    SegmentationDataset,
    SegmentationSubset,
    fraction_subset,
    validation_from_rest,
    validation_split,
)
from vislearn.data.segmentation.folder import SegmentationFolder, write_segmentation_folder
from vislearn.data.segmentation.labels import (
    IGNORE_INDEX,
    VOC_CLASSES,
    LabelSpace,
    downsample_labels,
)
from vislearn.data.segmentation.samplers import EpochSliceSampler

__all__ = [
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "ArraySegmentationDataset",
    "LabelSpace",
    "MultiDatasetSegmentation",
    "EpochSliceSampler",
    "SegmentationAugment",
    "SegmentationDataset",
    "SegmentationFolder",
    "SegmentationSubset",
    "downsample_labels",
    "fraction_subset",
    "validation_from_rest",
    "validation_split",
    "write_segmentation_folder",
]
