"""The base of video methods: :class:`SSLMethod` on clips.

What changes from the image engine, and nothing else:

* the batch is uint8 ``[B, K, T, C, H, W]`` (``K = clips_per_video`` clips of each video; the
  data module reads this class attribute) or ``[B, T, C, H, W]`` for ``K = 1``;
* ``self.augment`` is a :class:`~vislearn.data.video.views.ClipViews` (crop/flip, optional FAME
  on the first clip, colour jitter, grayscale, blur -- the same parameters for every frame of
  a clip) returning normalised ``[B, C, T, S, S]`` views; its generator is checkpointed by the
  engine like the image one;
* ``self.normalize`` is a :class:`~vislearn.data.video.views.ClipNormalize`, so ``forward`` and
  the engine's online kNN / linear-probe validation take uint8 clips ``[B, T, C, H, W]``
  (the video data module serves one centre clip per video for validation).

``image_size`` is the crop side ``S`` of the views; ``backbone`` must be a video backbone.
"""

from __future__ import annotations

from typing import ClassVar

from vislearn.core.errors import VislearnError
from vislearn.data.augment import ViewConfig
from vislearn.data.video.views import ClipNormalize, ClipViews
from vislearn.engine.ssl import SSLMethod
from vislearn.models import backbone_modality


class VideoSSLMethod(SSLMethod):
    """Base of video methods (see the module docstring).

    Args (besides :class:`SSLMethod`'s): the clip augmentation, FAME's recipe by default --
        crop_scale, crop_ratio: random resized crop (area fraction, aspect ratio);
        hflip_p: horizontal flip probability. **Set it to 0 when a flip changes the label**
            (the synthetic motion set: left <-> right, clockwise <-> anticlockwise); the
            pipeline does so by default for ``synthetic-motion``;
        jitter, jitter_p: colour jitter strengths (brightness, contrast, saturation, hue) and
            probability; gray_p: grayscale probability; blur_p, blur_sigma: Gaussian blur.
    """

    modality: ClassVar[str] = "video"
    clips_per_video: ClassVar[int] = 2

    def __init__(
        self,
        backbone: str = "r2plus1d_tiny",
        in_chans: int = 3,
        image_size: int = 112,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip_p: float = 0.5,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        **kwargs,
    ) -> None:
        if backbone_modality(backbone) != "video":
            raise VislearnError(
                f"{type(self).__name__} needs a video backbone (e.g. r2plus1d_tiny, r3d_18); "
                f"{backbone!r} is an image backbone"
            )
        if kwargs.get("augment") is not None:
            raise VislearnError(
                "video methods take the clip augmentation arguments (crop_scale, hflip_p, "
                "jitter, ...), not an image augmentation preset"
            )
        super().__init__(backbone=backbone, in_chans=in_chans, image_size=image_size, **kwargs)
        self.save_hyperparameters()
        self.augment = self.clip_views()
        self.normalize = ClipNormalize(in_chans)

    def clip_views(self, **fame_options) -> ClipViews:
        """The :class:`ClipViews` of this method's hyper-parameters (``fame_options``: the
        ``fame*`` arguments of :class:`ClipViews`)."""
        h = self.hparams
        cfg = ViewConfig(
            crop_scale=tuple(h.crop_scale),
            crop_ratio=tuple(h.crop_ratio),
            hflip_p=h.hflip_p,
            jitter=tuple(h.jitter),
            jitter_p=h.jitter_p,
            gray_p=h.gray_p,
            blur_p=h.blur_p,
            blur_sigma=tuple(h.blur_sigma),
        )
        return ClipViews(cfg, h.image_size, h.in_chans, h.seed, **fame_options)
