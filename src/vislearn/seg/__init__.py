"""Semantic segmentation subsystem: multi-dataset pretraining across taxonomies (MDP; Shi et
al., arXiv 2106.04121), naive multi-dataset and single-dataset baselines, fine-tuning per
target data set, mIoU evaluation and colourised predictions (``vislearn seg ...``).

Pieces live in the shared layers: data (:mod:`vislearn.data.segmentation`, synthetic sets in
:mod:`vislearn.data.synthetic`, mixing in :mod:`vislearn.data.mixing`), models
(:mod:`vislearn.models.segmentation`), losses (:mod:`vislearn.losses.segmentation`), engine
(:mod:`vislearn.engine.prototypes`) and eval (:mod:`vislearn.eval.segmentation`); this package
holds the Lightning modules (:mod:`vislearn.seg.modules`), data sets by name and the data
module (:mod:`vislearn.seg.data`), the jobs (:mod:`vislearn.seg.run`) and the CLI
(:mod:`vislearn.seg.cli`). Importing it is cheap; the heavy modules load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SegFinetuneModule",
    "SegPretrainModule",
    "evaluate_seg",
    "finetune_seg",
    "load_seg_model",
    "predict_seg",
    "pretrain_seg",
]

_WHERE = {
    "SegFinetuneModule": "vislearn.seg.modules",
    "SegPretrainModule": "vislearn.seg.modules",
    "evaluate_seg": "vislearn.seg.run",
    "finetune_seg": "vislearn.seg.run",
    "load_seg_model": "vislearn.seg.run",
    "predict_seg": "vislearn.seg.run",
    "pretrain_seg": "vislearn.seg.run",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vislearn.seg' has no attribute {name!r}")
