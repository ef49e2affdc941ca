"""Methods by name."""

from __future__ import annotations

from vislearn.core.errors import VislearnError
from vislearn.engine.ssl import SSLMethod

_METHODS: dict[str, type[SSLMethod]] = {}


def register_method(name: str):
    """Class decorator registering a :class:`SSLMethod` subclass under ``name``."""

    def deco(cls: type[SSLMethod]) -> type[SSLMethod]:
        cls.method_name = name
        _METHODS[name] = cls
        return cls

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type[SSLMethod]:
    if name not in _METHODS:
        raise VislearnError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    return _METHODS[name]


def build_method(name: str, **kwargs) -> SSLMethod:
    """Instantiate a method by name, e.g. ``build_method("moco_v2", backbone="resnet18")``."""
    cls = get_method(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise VislearnError(f"method {name!r}: {exc}") from None
