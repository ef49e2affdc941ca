"""vislearn's weight files: the one ``.safetensors`` writer and metadata reader.

Every file vislearn writes (exported backbones, MAEs, segmentation networks, SSL-UVOS blocks,
FD classifiers) goes through :func:`write_safetensors`: tensors are stored contiguous and on the
CPU, metadata values that are not strings are JSON-encoded, and the file appears atomically
(a crash never leaves half a file). :func:`read_safetensors_metadata` reads the metadata back
(decoding the JSON values), :func:`read_safetensors` the tensors. A missing or unreadable file
is a one-line :class:`~vislearn.core.errors.VislearnError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path

__all__ = ["read_safetensors", "read_safetensors_metadata", "write_safetensors"]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise VislearnError(f"weights file not found: {path}")


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``tensors`` (detached, contiguous, on the CPU) with ``metadata`` (strings as
    they are, anything else as JSON; ``None`` values left out) to ``path``, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {}
    for k, v in tensors.items():
        if not isinstance(v, Tensor):
            raise VislearnError(f"cannot save {k!r}: a {type(v).__name__}, not a tensor")
        state[k] = v.detach().cpu().contiguous()
    meta = {
        str(k): v if isinstance(v, str) else json.dumps(v)
        for k, v in (metadata or {}).items()
        if v is not None
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def read_safetensors_metadata(path: str | os.PathLike, decode: bool = True) -> dict[str, Any]:
    """The metadata of a ``.safetensors`` file (empty when it has none). With ``decode``, JSON
    values are decoded (``"3"`` -> ``3``, ``'{"a": 1}'`` -> ``{"a": 1}``) and other strings
    kept; ``decode=False`` gives the raw strings."""
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any failure means "not a readable file"
        raise VislearnError(f"cannot read safetensors file {path}: {_one_line(exc)}") from None
    return {k: _decode(v) for k, v in meta.items()} if decode else dict(meta)


def read_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file, on the CPU."""
    from safetensors.torch import load_file

    path = Path(path)
    _check_file(path)
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means "not a readable file"
        raise VislearnError(f"cannot read safetensors file {path}: {_one_line(exc)}") from None
