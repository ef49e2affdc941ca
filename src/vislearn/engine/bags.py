"""On-disk cache of kNN bags, keyed by the epoch they were computed at.

A bag refresh is a full pass over the training set, so a resumed run must not repeat it. Each
refresh is written to ``<root>/bags_epoch<EEEE>.pt`` with what is needed to check that a file
belongs to the current run:

* ``fingerprint``: SHA-1 of the encoder's ``state_dict`` used to compute the bags. At a refresh
  epoch the encoder is exactly the one of the checkpoint the run resumed from, so equal
  fingerprints prove the file holds the bags this run would compute.
* ``digest``: SHA-1 of the bag tensor itself. A checkpoint records the digest of the bags in
  use, so a run resumed between refreshes can verify the older file it reloads.

Files are written by global rank 0 only, atomically. :func:`all_ranks_agree` lets every rank
take the same load-or-compute decision (a rank on another node may not see the file).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vislearn.core.distributed import gather_no_grad
from vislearn.core.utils import atomic_path

__all__ = ["BagCache", "all_ranks_agree", "module_fingerprint", "tensor_digest"]


def tensor_digest(t: Tensor) -> str:
    """SHA-1 of a tensor's dtype, shape and bytes."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def module_fingerprint(module: nn.Module) -> str:
    """SHA-1 over the names and exact values of ``module.state_dict()``."""
    h = hashlib.sha1()
    for name, value in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor_digest(value).encode())
    return h.hexdigest()


def all_ranks_agree(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True only if ``flag`` is true on every rank (the flag itself when not distributed)."""
    flags = gather_no_grad(torch.tensor([1.0 if flag else 0.0], device=device))
    return bool(flags.min() > 0)


class BagCache:
    """Bags ``[N, k]`` saved per epoch under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, epoch: int) -> Path:
        return self.root / f"bags_epoch{int(epoch):04d}.pt"

    def save(self, epoch: int, bags: Tensor, fingerprint: str) -> dict[str, Any]:
        """Write the bags of ``epoch`` (call on global rank 0 only); returns the entry."""
        entry = {
            "epoch": int(epoch),
            "bags": bags.detach().cpu().long(),
            "fingerprint": fingerprint,
            "digest": tensor_digest(bags.long()),
        }
        with atomic_path(self.path(epoch)) as tmp:
            torch.save(entry, tmp)
        return entry

    def load(self, epoch: int, num_samples: int, k: int) -> dict[str, Any] | None:
        """The entry of ``epoch`` if present, readable and shaped ``[num_samples, k]``."""
        path = self.path(epoch)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            bags = entry["bags"]
            ok = (
                isinstance(bags, Tensor)
                and tuple(bags.shape) == (num_samples, k)
                and entry["digest"] == tensor_digest(bags)
                and int(entry["epoch"]) == int(epoch)
            )
        except Exception:  # a corrupt or foreign file is simply recomputed
            return None
        return entry if ok else None
