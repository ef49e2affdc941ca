"""2-D embedding plots (t-SNE) of frozen features."""

from __future__ import annotations

import os

import numpy as np
from torch import Tensor

from vislearn.core.utils import atomic_path


def plot_embedding(
    feats: Tensor,
    labels: Tensor,
    path: str | os.PathLike,
    class_names: list[str] | None = None,
    max_points: int = 2000,
    seed: int = 0,
    title: str = "t-SNE of backbone features",
) -> None:
    """Write a t-SNE scatter plot (PNG) of up to ``max_points`` features, coloured by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(feats))[:max_points]
    x, y = feats[idx].float().numpy(), labels[idx].numpy()
    xy = TSNE(2, init="pca", random_state=seed, perplexity=30).fit_transform(x)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    for c in np.unique(y):
        name = class_names[c] if class_names and c < len(class_names) else str(c)
        ax.scatter(*xy[y == c].T, s=4, label=name)
    ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
