"""Lazily imported package exports (PEP 562), so importing a subsystem's package (e.g. for
its CLI parser) imports neither torch nor its heavy dependencies."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: name ``n`` is imported from
    ``package.<exports[n]>`` (or from ``exports[n]`` itself when it is an absolute
    ``vislearn.`` module path) on first access and then cached in ``namespace`` (the
    package's ``globals()``)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            module = exports[name]
            if not module.startswith("vislearn."):
                module = f"{package}.{module}"
            value = getattr(importlib.import_module(module), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
