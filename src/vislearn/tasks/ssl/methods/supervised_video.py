"""Supervised training of a video backbone with cross-entropy (the reference row of video
tables): one random clip per video, the clip augmentation of
:class:`~vislearn.engine.video.VideoSSLMethod`, a linear classifier on pooled features."""

from __future__ import annotations

from vislearn.engine.video import VideoSSLMethod
from vislearn.tasks.ssl.methods.registry import register_method
from vislearn.tasks.ssl.methods.supervised import Supervised


@register_method("supervised_video")
class SupervisedVideo(VideoSSLMethod, Supervised):
    """Supervised cross-entropy on video clips (a reference row)."""

    clips_per_video = 1

    def __init__(self, lr: float = 0.05, weight_decay: float = 1e-4, **kwargs) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, **kwargs)
