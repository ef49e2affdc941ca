"""Evaluation protocols: kNN, linear probe, semi-supervised fine-tuning, few-shot episodes."""

from vislearn.eval.embed import plot_embedding
from vislearn.eval.features import extract_features
from vislearn.eval.fewshot import few_shot_eval, sample_episodes
from vislearn.eval.knn import knn_accuracy, knn_predict
from vislearn.eval.linear import linear_probe
from vislearn.eval.semi import semi_supervised_finetune

__all__ = [
    "extract_features",
    "few_shot_eval",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "plot_embedding",
    "sample_episodes",
    "semi_supervised_finetune",
]
