"""Every load and save of a network: :func:`load_network` (one reader: vislearn checkpoints,
vislearn safetensors files whose metadata names the architecture, and external weights in the
layouts of :mod:`vislearn.models.state_dict`) and :func:`save_network` (one writer: the
architecture and its arguments go into the file's metadata, so a file rebuilds its network
alone). Files are never unpickled (``torch.load(weights_only=True)``, safetensors).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vislearn.core.artifacts import read_safetensors_metadata, write_safetensors
from vislearn.core.errors import VislearnError
from vislearn.models.state_dict import load_state, read_state_file, unwrap_state_dict

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


#: metadata keys of an exported backbone naming the data set it was trained on
TRAIN_DATASET_KEY, TRAIN_DATA_DIR_KEY = "train_dataset", "train_data_dir"


def training_dataset(path: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(dataset, data_dir)`` a vislearn checkpoint or exported backbone was trained on: the
    ``train_dataset`` / ``train_data_dir`` metadata of a ``.safetensors`` file, or the
    ``data`` section of the resolved config a ``.ckpt`` keeps under
    ``checkpoint["vislearn"]["config"]``; ``None`` for files that do not say (older files,
    external weights)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            return None
        meta = read_safetensors_metadata(path)
        dataset, data_dir = meta.get(TRAIN_DATASET_KEY), meta.get(TRAIN_DATA_DIR_KEY)
    else:
        obj = read_state_file(path)
        extra = obj.get("vislearn") if isinstance(obj.get("vislearn"), dict) else {}
        config = extra.get("config") if isinstance(extra.get("config"), dict) else {}
        data = config.get("data") if isinstance(config.get("data"), dict) else {}
        dataset, data_dir = data.get("dataset"), data.get("data_dir")
    if dataset in (None, ""):
        return None
    return str(dataset), None if data_dir in (None, "") else str(data_dir)
