"""Small shared helpers: atomic file writes, seeding."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: Lightning / torch notices that every vislearn run triggers and that say nothing to a user
LIGHTNING_NOTICES: tuple[str, ...] = (
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*LeafSpec.*",
)


def ignore_warnings(patterns: Iterable[str]) -> None:
    """Hide warnings whose message matches one of ``patterns`` (regexes) from now on."""
    for pattern in patterns:
        warnings.filterwarnings("ignore", message=pattern)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    A crash or kill while writing never leaves a half-written file at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; use normal permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as pretty JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_png(image: Any, path: str | os.PathLike) -> None:
    """Write a float image ``[C, H, W]`` in [0, 1] (e.g. a ``make_grid`` result) as PNG,
    atomically."""
    from torchvision.utils import save_image

    with atomic_path(path) as tmp:
        save_image(image, tmp, format="png")
