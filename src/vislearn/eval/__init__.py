"""Evaluation protocols: kNN, linear probe, semi-supervised fine-tuning, few-shot episodes,
video protocols (multi-clip linear probe, fine-tuning, clip retrieval)."""

from vislearn.eval.embed import plot_embedding
from vislearn.eval.fewshot import few_shot_eval, sample_episodes
from vislearn.eval.linear import linear_probe
from vislearn.eval.semi import semi_supervised_finetune
from vislearn.eval.video import clip_retrieval, extract_clip_features, video_finetune
from vislearn.ops.features import extract_features
from vislearn.ops.knn import knn_accuracy, knn_predict

__all__ = [
    "clip_retrieval",
    "extract_clip_features",
    "extract_features",
    "few_shot_eval",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "plot_embedding",
    "sample_episodes",
    "semi_supervised_finetune",
    "video_finetune",
]
