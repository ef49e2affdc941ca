"""Evaluation protocols on frozen features: kNN, linear probe, embeddings."""

from vislearn.eval.embed import plot_embedding
from vislearn.eval.features import extract_features
from vislearn.eval.knn import knn_accuracy, knn_predict
from vislearn.eval.linear import linear_probe

__all__ = ["extract_features", "knn_accuracy", "knn_predict", "linear_probe", "plot_embedding"]
