"""Semantic segmentation subsystem: multi-dataset pretraining across taxonomies (MDP; Shi et
al., arXiv 2106.04121), naive multi-dataset and single-dataset baselines, fine-tuning per
target data set, mIoU evaluation and colourised predictions (``vislearn seg ...``).

Pieces live in the shared layers: data (:mod:`vislearn.data.segmentation`, synthetic sets in
:mod:`vislearn.data.synthetic`, mixing in :mod:`vislearn.data.mixing`), models
(:mod:`vislearn.models.segmentation`), losses (:mod:`vislearn.losses.segmentation`), engine
(:mod:`vislearn.engine.prototypes`) and eval (:mod:`vislearn.eval.segmentation`); this package
holds the Lightning modules (:mod:`vislearn.tasks.seg.modules`), data sets by name and the data
module (:mod:`vislearn.tasks.seg.data`), the jobs (:mod:`vislearn.tasks.seg.run`) and the CLI
(:mod:`vislearn.tasks.seg.cli`). Importing it is cheap; the heavy modules load on first use.
"""

from __future__ import annotations

from vislearn.core.lazy import lazy_exports

_EXPORTS = {
    "SegFinetuneModule": "modules",
    "SegPretrainModule": "modules",
    "evaluate_seg": "run",
    "finetune_seg": "run",
    "load_seg_model": "run",
    "predict_seg": "run",
    "pretrain_seg": "run",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
