"""Methods: one module each, composed from losses, heads and the engine."""

from vislearn.tasks.ssl.methods import (  # noqa: F401  (register)
    bingo,
    byol,
    csml,
    dino,
    kscl,
    mae,
    moco_v2,
    sage,
    simclr,
    sscl,
    supervised,
    supervised_video,
    video_moco,
)
from vislearn.tasks.ssl.methods.registry import (
    build_method,
    get_method,
    list_methods,
    register_method,
)

__all__ = ["build_method", "get_method", "list_methods", "register_method"]
