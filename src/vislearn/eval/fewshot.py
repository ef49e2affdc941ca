"""Few-shot evaluation on frozen features: seeded N-way K-shot episodes, scored by a prototype
(nearest class mean, cosine) or a logistic-regression classifier fitted on the support set.

Protocol (the common one of few-shot papers): each episode draws ``ways`` classes, then
``shots + queries`` distinct images of each (support and query sets are disjoint); the
classifier sees the support features only and is scored on the ``ways · queries`` query images.
The report is the mean episode accuracy and its 95 % interval ``1.96 · std / √episodes``
(population ``std`` over episodes).

The episode pool is a labelled split (``vislearn eval fewshot`` uses the test split by default).
On a data set whose classes the backbone was trained on (Fashion-MNIST for every vislearn
recipe), this measures how few labelled examples the representation needs, not generalisation
to novel classes (which needs a class split such as miniImageNet's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.data.subsets import LabelsLike, as_labels

__all__ = [
    "FEW_SHOT_CLASSIFIERS",
    "Episode",
    "episode_classes",
    "few_shot_eval",
    "logistic_predict",
    "mean_ci95",
    "prototype_predict",
    "sample_episodes",
]

FEW_SHOT_CLASSIFIERS = ("prototype", "logistic")


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot task: data set indices and episode labels ``0..ways-1`` (the position
    of the class in ``classes``); support and query rows are grouped by class."""

    classes: np.ndarray  # [ways] data set classes
    support: np.ndarray  # [ways * shots] indices
    support_labels: np.ndarray  # [ways * shots]
    query: np.ndarray  # [ways * queries] indices
    query_labels: np.ndarray  # [ways * queries]


def episode_classes(
    labels: LabelsLike, ways: int, shots: int, queries: int, episodes: int = 1
) -> np.ndarray:
    """The classes with at least ``shots + queries`` images, checked to be ``>= ways`` of them
    (and the counts to be sensible integers); a :class:`VislearnError` otherwise."""
    arr = as_labels(labels)
    for name, value, low in (
        ("ways", ways, 2),
        ("shots", shots, 1),
        ("queries", queries, 1),
        ("episodes", episodes, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise VislearnError(f"{name} must be an integer >= {low}, got {value!r}")
    classes, counts = np.unique(arr, return_counts=True)
    need = shots + queries
    eligible = classes[counts >= need]
    if len(eligible) < ways:
        raise VislearnError(
            f"{ways}-way {shots}-shot episodes with {queries} queries need {need} images in each "
            f"of {ways} classes, but only {len(eligible)} of {len(classes)} classes have that "
            f"many (the largest has {int(counts.max())}); lower --shots/--queries/--ways"
        )
    return eligible


def sample_episodes(
    labels: LabelsLike,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> list[Episode]:
    """Draw ``episodes`` seeded episodes from the classes that have ``shots + queries`` images.

    Classes are drawn uniformly without replacement among those eligible
    (:func:`episode_classes`), images uniformly without replacement within each class (so
    support and query never share an image). Deterministic for a given ``seed`` (a
    :class:`numpy.random.Generator`).
    """
    eligible = episode_classes(labels, ways, shots, queries, episodes)
    arr = as_labels(labels)
    members = {int(c): np.flatnonzero(arr == c) for c in eligible}
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        chosen = rng.choice(eligible, size=ways, replace=False)
        picks = [rng.choice(members[int(c)], size=shots + queries, replace=False) for c in chosen]
        picks = np.stack(picks)
        out.append(
            Episode(
                classes=chosen,
                support=picks[:, :shots].reshape(-1),
                support_labels=np.repeat(np.arange(ways), shots),
                query=picks[:, shots:].reshape(-1),
                query_labels=np.repeat(np.arange(ways), queries),
            )
        )
    return out


def prototype_predict(support: Tensor, support_labels: Tensor, query: Tensor, ways: int) -> Tensor:
    """Nearest class mean under cosine similarity: features are L2-normalised, the prototype of
    class ``c`` is the mean of its normalised support features, a query takes the class of the
    most cosine-similar prototype."""
    s = F.normalize(support.float(), dim=1)
    one_hot = F.one_hot(support_labels.long(), ways).to(s)  # [S, ways]
    prototypes = F.normalize(one_hot.T @ s, dim=1)  # sum ∝ mean; cosine ignores the scale
    return (F.normalize(query.float(), dim=1) @ prototypes.T).argmax(dim=1)


def logistic_predict(
    support: Tensor, support_labels: Tensor, query: Tensor, ways: int, c: float = 1.0
) -> Tensor:
    """Multinomial logistic regression (scikit-learn, L2 penalty ``1/c``, lbfgs) fitted on the
    L2-normalised support features; ``ways`` is implied by the labels."""
    from sklearn.linear_model import LogisticRegression

    s = F.normalize(support.float(), dim=1).numpy()
    q = F.normalize(query.float(), dim=1).numpy()
    clf = LogisticRegression(C=c, max_iter=1000).fit(s, support_labels.numpy())
    return torch.from_numpy(clf.predict(q))


def mean_ci95(accuracies: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and 95 % half-interval ``1.96 · std / √n`` (population std) of episode scores."""
    acc = np.asarray(accuracies, dtype=np.float64)
    return float(acc.mean()), float(1.96 * acc.std() / np.sqrt(len(acc)))


def few_shot_eval(
    features: Tensor,
    labels: LabelsLike,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    classifiers: tuple[str, ...] = FEW_SHOT_CLASSIFIERS,
) -> dict[str, float]:
    """Episode accuracy of each classifier on frozen ``features`` ``[N, D]``.

    Every classifier sees the same episodes. Returns ``<classifier>_top1`` and
    ``<classifier>_ci95`` in %, for each of ``classifiers`` (``prototype``, ``logistic``).
    """
    unknown = sorted(set(classifiers) - set(FEW_SHOT_CLASSIFIERS))
    if unknown or not classifiers:
        raise VislearnError(
            f"few-shot classifiers must be among {FEW_SHOT_CLASSIFIERS}, got {list(classifiers)}"
        )
    arr = as_labels(labels)
    if features.dim() != 2 or features.shape[0] != len(arr):
        raise VislearnError(
            f"features must be [N, D] for {len(arr)} labels, got {tuple(features.shape)}"
        )
    predict = {"prototype": prototype_predict, "logistic": logistic_predict}
    scores: dict[str, list[float]] = {name: [] for name in classifiers}
    for ep in sample_episodes(arr, ways, shots, queries, episodes, seed):
        support, query = features[ep.support], features[ep.query]
        support_y, query_y = torch.from_numpy(ep.support_labels), torch.from_numpy(ep.query_labels)
        for name in classifiers:
            pred = predict[name](support, support_y, query, ways)
            scores[name].append((pred == query_y).float().mean().item())
    result: dict[str, float] = {}
    for name, accs in scores.items():
        mean, ci = mean_ci95(accs)
        result[f"{name}_top1"], result[f"{name}_ci95"] = 100 * mean, 100 * ci
    return result
