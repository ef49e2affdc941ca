"""Feature extraction with a frozen backbone."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vislearn.data.augment import Normalize


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Pooled features ``[N, D]`` and labels ``[N]`` of ``dataset`` (eval mode, no grad).

    The dataset yields ``(uint8 image [C, H, W], label)``; images are normalised the same
    way as in training.
    """
    was_training = backbone.training
    backbone.eval().to(device)
    channels = dataset[0][0].shape[0]
    norm = Normalize(channels).to(device)
    feats, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="features", leave=False)
    for x, y in loader:
        feats.append(backbone(norm(x.to(device))).float().cpu())
        labels.append(torch.as_tensor(y))
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)
