"""Loading local weights in the layouts people actually hand around.

Accepted: a plain ``state_dict``; dicts nesting it under ``state_dict`` / ``model`` /
``teacher`` / ``student`` / ``module``; keys prefixed by ``module.`` / ``backbone.`` /
``encoder.`` / ``model.`` (DDP, Lightning, DINO, timm wrappers); ``.safetensors`` files.
Files are read with ``torch.load(weights_only=True)`` -- a user's file is never unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from vislearn.errors import VislearnError

NESTED_KEYS = ("state_dict", "model", "teacher", "student", "module", "network")
PREFIXES = ("", "module.", "backbone.", "module.backbone.", "encoder.", "model.", "teacher.")


def read_state_file(path: str | os.PathLike) -> dict:
    """Read a checkpoint file safely (safetensors or ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise VislearnError(f"cannot read safetensors file {path}: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything here means "not a usable checkpoint"
        msg = str(exc).splitlines()[0][:200]
        raise VislearnError(f"cannot read checkpoint {path} (weights_only=True): {msg}") from None
    if not isinstance(obj, dict):
        raise VislearnError(f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict")
    return obj


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (empty when it has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any failure means "not a readable file"
        raise VislearnError(f"cannot read {path}: {exc}") from None


def _tensors(d: dict) -> dict[str, Tensor]:
    return {k: v for k, v in d.items() if isinstance(v, Tensor)}


def unwrap_state_dict(obj: dict, nested: str | None = None) -> dict[str, Tensor]:
    """Find the tensor dict inside a checkpoint: ``obj[nested]`` or the first known key."""
    if nested is not None:
        if nested not in obj:
            raise VislearnError(f"checkpoint has no {nested!r} entry; it has {sorted(obj)[:10]}")
        obj = obj[nested]
    for _ in range(3):  # e.g. {"teacher": {"state_dict": {...}}}
        # descend even when tensors sit next to the nested dict: a Lightning checkpoint keeps
        # its weights in "state_dict" beside top-level tensors such as RNG states
        key = next((k for k in NESTED_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj = obj[key]
    tensors = _tensors(obj)
    if not tensors:
        raise VislearnError("checkpoint contains no tensors")
    return tensors


def match_prefix(sd: dict[str, Tensor], model_keys: set[str]) -> dict[str, Tensor]:
    """Strip the prefix (of :data:`PREFIXES`) under which ``sd`` best matches ``model_keys``."""
    best, best_hits = {}, -1
    for prefix in PREFIXES:
        cand = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        hits = len(model_keys & cand.keys())
        if hits > best_hits:
            best, best_hits = cand, hits
    return best


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    nested: str | None = None,
    strict: bool = True,
) -> nn.Module:
    """Load local weights into ``model``, failing with the offending key names.

    With ``strict=True`` every model parameter/buffer must be present with the right shape;
    entries of the file outside the matched prefix (heads, momentum copies) are ignored.
    """
    sd = unwrap_state_dict(read_state_file(path), nested)
    own = model.state_dict()
    sd = match_prefix(sd, set(own))
    missing = sorted(set(own) - sd.keys())
    unexpected = sorted(sd.keys() - set(own))
    shape = sorted(k for k in own.keys() & sd.keys() if own[k].shape != sd[k].shape)

    def _few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    if not (own.keys() & sd.keys()):
        raise VislearnError(
            f"{path}: no key matches the model (file keys like {_few(sorted(sd))}; "
            f"model keys like {_few(sorted(own))})"
        )
    if shape:
        details = "; ".join(
            f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in shape[:3]
        )
        raise VislearnError(f"{path}: shape mismatch for {len(shape)} tensors ({details})")
    if strict and missing:
        raise VislearnError(f"{path}: missing {len(missing)} keys: {_few(missing)}")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    if unexpected and strict:
        import warnings

        warnings.warn(
            f"{path}: ignored {len(unexpected)} unexpected keys: {_few(unexpected)}", stacklevel=2
        )
    return model
