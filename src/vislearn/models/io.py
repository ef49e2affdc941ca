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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vislearn.core.artifacts import read_safetensors, read_safetensors_metadata, write_safetensors
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


# ----------------------------------------------------------------------------- networks
#: metadata keys of a :func:`save_network` file
NETWORK_KEY, KWARGS_KEY, MODULE_KEY = "network", "network_kwargs", "network_module"
_MODULE_NAME = re.compile(r"^vislearn(\.[A-Za-z_]\w*)+$")


@dataclass(frozen=True)
class NetworkBuilder:
    """How :func:`load_network` rebuilds a registered network ``name``.

    ``build(**kwargs)`` makes the untrained network. For a vislearn Lightning checkpoint,
    ``from_hparams(hyper_parameters)`` gives those kwargs (or None: the checkpoint holds no
    such network) and ``ckpt_keys`` maps the module's key prefixes to the network's
    (e.g. ``{"backbone.": "encoder."}``)."""

    name: str
    build: Callable[..., nn.Module]
    from_hparams: Callable[[dict], dict | None] | None = None
    ckpt_keys: dict[str, str] | None = None
    home: str | None = None


_NETWORKS: dict[str, NetworkBuilder] = {}


def register_network(
    name: str,
    from_hparams: Callable[[dict], dict | None] | None = None,
    ckpt_keys: dict[str, str] | None = None,
    home: str | None = None,
) -> Callable:
    """Decorator: ``build`` (a class or function ``**kwargs -> nn.Module``) rebuilds the
    networks that :func:`save_network` wrote under ``arch=name``. Names of the backbone
    registry need no registration. ``home``: the module that registers it (default:
    ``build``'s), recorded in saved files so that loading one imports it."""

    def deco(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        where = home or build.__module__
        _NETWORKS[name] = NetworkBuilder(name, build, from_hparams, ckpt_keys, where)
        return build

    return deco


def _builder(arch: str, module: str | None = None) -> NetworkBuilder | None:
    """The registered builder of ``arch`` (importing the vislearn module a file names as its
    home when needed); None for a backbone name."""
    if arch not in _NETWORKS and module and _MODULE_NAME.match(module):
        import contextlib
        import importlib

        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    return _NETWORKS.get(arch)


def build_network(arch: str, kwargs: dict | None = None, module: str | None = None) -> nn.Module:
    """An untrained network: a registered network ``arch`` or a registry backbone."""
    from vislearn.models.registry import create_backbone, list_backbones

    kwargs = dict(kwargs or {})
    builder = _builder(arch, module)
    if builder is None and arch not in list_backbones():
        raise VislearnError(
            f"unknown network {arch!r} (registered: {', '.join(sorted(_NETWORKS)) or 'none'}; "
            f"or a backbone such as resnet18)"
        )
    try:
        if builder is not None:
            return builder.build(**kwargs)
        return create_backbone(arch, **kwargs)
    except TypeError as exc:
        raise VislearnError(f"bad arguments for network {arch!r} {kwargs}: {exc}") from None


@dataclass
class NetworkSpec:
    """What a vislearn file says about its network: ``arch``, its ``kwargs``, the module that
    registers it, and the file's other (decoded) metadata."""

    arch: str
    kwargs: dict[str, Any]
    module: str | None = None
    metadata: dict[str, Any] | None = None


def _legacy_spec(meta: dict[str, Any]) -> NetworkSpec | None:
    """The network of files written before :func:`save_network` (their own metadata)."""
    fmt = meta.get("format")
    if fmt == "vislearn-mae":
        kwargs = {k: meta.get(k) for k in ("backbone", "backbone_kwargs", "in_chans", "decoder")}
        kwargs["norm_pix_loss"] = bool(meta.get("norm_pix_loss", False))
        return NetworkSpec("mae", kwargs, "vislearn.models.mae", meta)
    if fmt in ("vislearn-seg-model", "vislearn-seg-pretrained") and isinstance(
        meta.get("arch"), dict
    ):
        kwargs = dict(meta["arch"])
        if fmt == "vislearn-seg-model" and isinstance(meta.get("classes"), list):
            kwargs["num_classes"] = len(meta["classes"])
        return NetworkSpec("segmentation_net", kwargs, "vislearn.models.segmentation", meta)
    if isinstance(meta.get("backbone"), str):
        kwargs = dict(meta.get("backbone_kwargs") or {})
        kwargs["in_chans"] = int(meta.get("in_chans") or 3)
        return NetworkSpec(meta["backbone"], kwargs, None, meta)
    return None


def network_spec(path: str | os.PathLike, kind: str | None = None) -> NetworkSpec | None:
    """The network a vislearn file describes: a :func:`save_network` (or older vislearn)
    ``.safetensors`` or a Lightning ``.ckpt`` whose hyper-parameters name a backbone (with
    ``kind="mae"`` etc.: the registered network its ``from_hparams`` finds). None for
    external weights."""
    path = Path(path)
    if path.suffix == ".safetensors":
        meta = read_safetensors_metadata(path)
        if isinstance(meta.get(NETWORK_KEY), str):
            kwargs = meta.get(KWARGS_KEY) or {}
            if not isinstance(kwargs, dict):
                raise VislearnError(f"{path}: corrupt {KWARGS_KEY} metadata")
            return NetworkSpec(meta[NETWORK_KEY], kwargs, meta.get(MODULE_KEY), meta)
        return _legacy_spec(meta)
    return _ckpt_spec(read_state_file(path), kind)


def _ckpt_spec(obj: dict, kind: str | None) -> NetworkSpec | None:
    hp = obj.get("hyper_parameters")
    if not isinstance(hp, dict) or "backbone" not in hp:
        return None
    builder = _NETWORKS.get(kind) if kind not in (None, "backbone") else None
    if builder is not None and builder.from_hparams is not None:
        kwargs = builder.from_hparams({**hp, "state_dict": obj.get("state_dict") or {}})
        return None if kwargs is None else NetworkSpec(kind, kwargs, None, {})
    kwargs = dict(hp.get("backbone_kwargs") or {})
    kwargs["in_chans"] = int(hp.get("in_chans") or 3)
    return NetworkSpec(str(hp["backbone"]), kwargs, None, {})


def load_network(
    path: str | os.PathLike,
    kind: str | None = None,
    *,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    in_chans: int | None = None,
    nested: str | None = None,
    interpolate_pos: bool = False,
    exact: bool = False,
) -> nn.Module:
    """The one way to get a network from a local file (on the CPU, in the mode it is built in).

    Accepted:

    * a :func:`save_network` ``.safetensors`` (or one written by an older vislearn): the
      metadata names the architecture and its arguments, so the file rebuilds alone (backbone,
      MAE, segmentation net, SSL-UVOS block, FD classifier);
    * a vislearn Lightning ``.ckpt``: its ``hyper_parameters`` rebuild the backbone (or, with
      ``kind="mae"``, the MAE);
    * external weights (timm / torchvision names, DINO ``teacher`` / ``student`` entries,
      ``module.`` / ``backbone.`` prefixes; see :func:`load_weights`): pass ``arch`` (a
      registry backbone or a registered network) and its ``arch_kwargs``.

    Args:
        kind: the kind of network expected (``"backbone"``, ``"mae"``, ``"segmentation_net"``,
            ``"uvos_block"``, ``"fd_classifier"``); a file holding another is an error.
        arch, arch_kwargs: the architecture, overriding the file's (its kwargs then are only
            ``arch_kwargs``); ``arch_kwargs`` alone update the file's kwargs.
        in_chans: input channels of a backbone (default: the file's, else 3).
        nested, interpolate_pos: see :func:`load_weights`.
        exact: no key of the matched part may be left over (:func:`load_vit_weights`).

    Checkpoints are read with ``torch.load(weights_only=True)`` only; a file that pickles
    code is refused. Every error is a one-line :class:`VislearnError`.
    """
    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        spec, obj = network_spec(path, kind), None
    else:
        obj = read_state_file(path)
        spec = _ckpt_spec(obj, kind)
    if arch is not None:
        module = spec.module if spec is not None and spec.arch == arch else None
        spec = NetworkSpec(arch, dict(arch_kwargs or {}), module, spec.metadata if spec else {})
    elif spec is None:
        raise VislearnError(
            f"{path} does not say which network it holds; pass its architecture (--backbone NAME)"
        )
    elif arch_kwargs:
        spec.kwargs = {**spec.kwargs, **arch_kwargs}
    builder = _builder(spec.arch, spec.module)
    found = spec.arch if builder is not None else "backbone"
    if kind is not None and kind != found:
        held = "a backbone" if found == "backbone" else f"a {found!r} network"
        raise VislearnError(f"{path} holds {held} ({spec.arch}), not a {kind!r}")
    if builder is None:
        spec.kwargs["in_chans"] = int(in_chans or spec.kwargs.get("in_chans") or 3)
    model = build_network(spec.arch, spec.kwargs, spec.module)
    if obj is None:
        obj = read_state_file(path)
    if builder is not None and builder.ckpt_keys and path.suffix != ".safetensors":
        sd = unwrap_state_dict(obj, nested)
        sd = {
            new + k[len(old) :]: v
            for k, v in sd.items()
            for old, new in builder.ckpt_keys.items()
            if k.startswith(old)
        }
        unexpected = "ignore"
    else:
        sd = unwrap_state_dict(obj, nested)
        # a vislearn file rebuilt its own architecture: tensors beside it (a projector,
        # prototypes) are not this network's; external weights must fit exactly when asked
        unexpected = "error" if exact else ("ignore" if builder is not None else "warn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if unexpected == "ignore" else "default")
        load_state(model, sd, path, True, interpolate_pos, unexpected)
    return model


def save_network(
    module: nn.Module | dict[str, Tensor],
    path: str | os.PathLike,
    arch: str,
    arch_kwargs: dict | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``module``'s weights (or a state_dict) as ``.safetensors`` whose metadata names
    ``arch`` and its ``arch_kwargs`` (plus ``extra`` entries), so that :func:`load_network`
    rebuilds it from the file alone. ``arch`` is a registry backbone or a name registered
    with :func:`register_network`."""
    builder = _builder(arch)
    if builder is None:
        from vislearn.models.registry import list_backbones

        if arch not in list_backbones():
            raise VislearnError(f"cannot save network {arch!r}: not registered, not a backbone")
    state = module.state_dict() if isinstance(module, nn.Module) else dict(module)
    meta = dict(extra or {})
    for key in (NETWORK_KEY, KWARGS_KEY, MODULE_KEY):
        meta.pop(key, None)
    meta[NETWORK_KEY] = arch
    meta[KWARGS_KEY] = dict(arch_kwargs or {})
    if builder is not None:
        meta[MODULE_KEY] = builder.home
    return write_safetensors(path, state, meta)


def load_backbone(
    path: str | os.PathLike,
    backbone: str | None = None,
    backbone_kwargs: dict | None = None,
    in_chans: int | None = None,
) -> nn.Module:
    """A backbone from a vislearn ``.ckpt`` / exported ``.safetensors`` (it rebuilds itself)
    or external weights (pass ``backbone`` and its kwargs): :func:`load_network`."""
    return load_network(
        path, "backbone", arch=backbone, arch_kwargs=backbone_kwargs, in_chans=in_chans
    )
