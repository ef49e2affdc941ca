"""Loading local weights in the layouts people actually hand around.

Accepted: a plain ``state_dict``; dicts nesting it under ``state_dict`` / ``model`` /
``teacher`` / ``student`` / ``module``; keys prefixed by ``module.`` / ``backbone.`` /
``encoder.`` / ``model.`` (DDP, Lightning, DINO, timm wrappers); ``.safetensors`` files.
Files are read with ``torch.load(weights_only=True)`` -- a user's file is never unpickled
(DINO's full checkpoints keep their command line as an ``argparse.Namespace``: that one
plain-data class is allowed).

ViT files in timm's key names (DINO's released backbones and checkpoints, MAE, DeiT) load
into vislearn's :class:`~vislearn.models.vit.VisionTransformer`: ``patch_embed.proj.*`` ->
``patch_embed.*`` and ``blocks.N.mlp.fc1/fc2.*`` -> ``blocks.N.mlp.0/2.*`` (the renaming is
used only when it matches more of the model's keys than the file's own names, so vislearn's
files load unchanged). A ``head.*`` classifier / projection head in the file is dropped when
the model has no ``head``. :func:`load_vit_weights` is the strict entry point for such files.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from vislearn.core.artifacts import read_safetensors, read_safetensors_metadata
from vislearn.core.errors import VislearnError

NESTED_KEYS = ("state_dict", "model", "teacher", "student", "module", "network")
PREFIXES = ("", "module.", "backbone.", "module.backbone.", "encoder.", "model.", "teacher.")
#: timm / DINO ViT key names -> vislearn's VisionTransformer (regex, replacement)
VIT_KEY_RENAMES = (
    (re.compile(r"^patch_embed\.proj\."), "patch_embed."),
    (re.compile(r"(^|\.)mlp\.fc1\."), r"\1mlp.0."),
    (re.compile(r"(^|\.)mlp\.fc2\."), r"\1mlp.2."),
)
#: plain-data classes a checkpoint may hold besides tensors (DINO's ``args``)
SAFE_GLOBALS = [argparse.Namespace]
UNEXPECTED = ("ignore", "warn", "error")


def read_state_file(path: str | os.PathLike) -> dict:
    """Read a checkpoint file safely (safetensors or ``torch.load(weights_only=True)``).

    A file that pickles Python objects beyond tensors and plain data is refused (nothing in
    it runs); a truncated or foreign file is a one-line :class:`VislearnError`."""
    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything here means "not a usable checkpoint"
        raise VislearnError(_load_error(path, exc)) from None
    if not isinstance(obj, dict):
        raise VislearnError(f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict")
    return obj


def _load_error(path: Path, exc: BaseException) -> str:
    """One line for a failed ``torch.load(weights_only=True)``, without torch's advice to
    retry with ``weights_only=False`` (which would run whatever the file pickles)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"refusing to load {path}: it pickles the Python object {found.group(1)}, which "
            "could run code; vislearn reads checkpoints with weights_only=True (tensors and "
            "plain data only) -- save the state_dict or use .safetensors"
        )
    if (
        "zip archive" in text
        or isinstance(exc, (EOFError, IndexError))
        or ("Weights only load failed" in text)
    ):
        return f"cannot read checkpoint {path}: truncated, corrupted or not a PyTorch file"
    first = " ".join(text.split())[:160] or type(exc).__name__
    return f"cannot read checkpoint {path}: {first}"


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The raw string metadata of a ``.safetensors`` file (empty when it has none); see
    :func:`vislearn.core.artifacts.read_safetensors_metadata` for decoded values."""
    return read_safetensors_metadata(path, decode=False)


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


def rename_vit_keys(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """``sd`` with timm / DINO ViT key names mapped to vislearn's (:data:`VIT_KEY_RENAMES`)."""
    out = {}
    for k, v in sd.items():
        for pattern, repl in VIT_KEY_RENAMES:
            k = pattern.sub(repl, k)
        out[k] = v
    return out


def match_prefix(sd: dict[str, Tensor], model_keys: set[str]) -> dict[str, Tensor]:
    """Strip the prefix (of :data:`PREFIXES`) under which ``sd`` best matches ``model_keys``,
    with timm's ViT key names renamed to vislearn's when that matches more keys."""
    best, best_hits = {}, -1
    for prefix in PREFIXES:
        cand = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        for variant in (cand, rename_vit_keys(cand)):  # ties keep the file's own names
            hits = len(model_keys & variant.keys())
            if hits > best_hits:
                best, best_hits = variant, hits
    return best


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    nested: str | None = None,
    strict: bool = True,
    interpolate_pos: bool = False,
    unexpected: str = "warn",
) -> nn.Module:
    """Load local weights into ``model``, failing with the offending key names.

    With ``strict=True`` every model parameter/buffer must be present with the right shape;
    entries of the file outside the matched prefix (heads, momentum copies) are ignored, and
    ``head.*`` entries are dropped when the model has no ``head``. Keys of the matched part
    that the model lacks are ``unexpected``: ``"warn"`` (default, with ``strict``),
    ``"ignore"`` or ``"error"``.

    ``interpolate_pos=True`` resizes a ViT's ``pos_embed`` whose patch grid differs from the
    model's (bicubic, class token kept; e.g. 224 px weights into a 448 px model); otherwise
    such a file is a shape mismatch. A file that matches no key, misses keys (``strict``) or
    has tensors of other shapes raises :class:`VislearnError` naming them.
    """
    sd = unwrap_state_dict(read_state_file(path), nested)
    return load_state(model, sd, path, strict, interpolate_pos, unexpected)


def load_state(
    model: nn.Module,
    sd: dict[str, Tensor],
    source: str | os.PathLike = "weights",
    strict: bool = True,
    interpolate_pos: bool = False,
    unexpected: str = "warn",
) -> nn.Module:
    """:func:`load_weights` on a state_dict already read (``source`` names it in errors)."""
    path = source
    if unexpected not in UNEXPECTED:
        raise VislearnError(f"unexpected must be one of {UNEXPECTED}, got {unexpected!r}")
    own = model.state_dict()
    sd = match_prefix(sd, set(own))
    if not any(k.startswith("head.") for k in own):
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    if interpolate_pos:
        sd = _interpolate_pos_embed(sd, own)
    missing = sorted(set(own) - sd.keys())
    extra = sorted(sd.keys() - set(own))
    shape = sorted(k for k in own.keys() & sd.keys() if own[k].shape != sd[k].shape)

    if not (own.keys() & sd.keys()):
        raise VislearnError(
            f"{path}: no key matches the model (file keys like {_few(sorted(sd))}; "
            f"model keys like {_few(sorted(own))})"
        )
    if shape:
        details = "; ".join(
            f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in shape[:3]
        )
        hint = ""
        if shape == ["pos_embed"]:
            hint = " -- another image size or patch grid: pass interpolate_pos=True to resize it"
        raise VislearnError(f"{path}: shape mismatch for {len(shape)} tensors ({details}){hint}")
    if strict and missing:
        raise VislearnError(f"{path}: missing {len(missing)} keys: {_few(missing)}")
    if extra and unexpected == "error":
        raise VislearnError(
            f"{path}: {len(extra)} unexpected keys (the file's network is not this model's): "
            f"{_few(extra)}"
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    if extra and strict and unexpected == "warn":
        warnings.warn(f"{path}: ignored {len(extra)} unexpected keys: {_few(extra)}", stacklevel=2)
    return model


def _interpolate_pos_embed(sd: dict[str, Tensor], own: dict[str, Tensor]) -> dict[str, Tensor]:
    """``sd`` with its ``pos_embed`` resized to the model's grid (same width only)."""
    pos, target = sd.get("pos_embed"), own.get("pos_embed")
    if pos is None or target is None or pos.shape == target.shape:
        return sd
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != target.shape[2]:
        return sd  # a width mismatch stays a shape error
    from vislearn.models.vit import resize_pos_embed

    g = math.isqrt(target.shape[1] - 1)
    if g * g != target.shape[1] - 1:
        raise VislearnError(f"model pos_embed {tuple(target.shape)} is not a square grid")
    resized = resize_pos_embed(pos.float(), g, g).to(pos.dtype)
    return {**sd, "pos_embed": resized}


def load_vit_weights(
    model: nn.Module,
    path: str | os.PathLike,
    nested: str | None = None,
    interpolate_pos: bool = False,
) -> nn.Module:
    """Load a ViT's weights strictly: DINO's backbone ``.pth`` (plain state_dict), DINO's full
    checkpoint (``teacher`` preferred over ``student``; ``module.`` / ``backbone.``
    prefixes; its ``head.*`` and other entries dropped), timm-named or vislearn ``.pth`` /
    ``.safetensors`` files.

    Every model key must be present with the model's shape and no key of the matched part
    may be left over (e.g. blocks the model does not have), so a load can never leave part
    of the network at its random initialisation. ``interpolate_pos``: see
    :func:`load_weights`. ``nested="student"`` picks the student of a DINO checkpoint.
    """
    return load_weights(model, path, nested, True, interpolate_pos, unexpected="error")
