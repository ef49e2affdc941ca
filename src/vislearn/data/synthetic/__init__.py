"""Seeded synthetic scenes and videos: Fashion-MNIST sprites over real photo backgrounds.

Ground truth that no local data set has (per-pixel object masks, object identities, motion
classes) is made here by compositing real Fashion-MNIST items on real photos. The module is
shared by the video methods (FAME's background-bias benchmark), segmentation pretraining
(MDP) and unsupervised video object segmentation (SSL-UVOS); its pieces are usable alone:

* :func:`list_background_photos` / :func:`load_backgrounds`: a pool of background images,
  from the Debian ``opencv-doc`` sample photos (:data:`DEFAULT_PHOTO_DIR`) or, where they
  are missing, generated smooth colour fields and textures (:func:`generated_background`);
* :func:`load_sprites` / :func:`tint`: Fashion-MNIST items as alpha mattes (alpha from
  intensity) with a colour;
* :func:`composite`: renders any number of sprites with per-frame position, rotation and
  size over a background, returning frames and an object-identity mask per frame (a single
  frame is a still image with an instance mask);
* :func:`moving_sprite_videos` / :func:`motion_splits`: labelled motion clips (translation
  directions, rotation, scaling) with an optional *background bias*: in the training split
  the background is spuriously predictive of the motion class, in the test split it is not;
* :func:`segmentation_scenes` / :func:`synthetic_segmentation_sets`: still canvases of several
  items with per-pixel class labels in one of several taxonomies (:data:`SEG_TAXONOMIES`:
  the 10 fine classes, a coarse grouping, a partial labelling), rendered as data sets that
  differ in taxonomy and style (:data:`SEG_DATASETS`) for multi-dataset segmentation (MDP);
* :class:`PhotoItemsDataset` (``photo-fmnist``): still images of one item on a photo crop,
  labelled by the item's class, with the item's mask (MRA's benchmark data);
* :class:`MotionClipDataset` serves ``(clip, label[, masks])``; :func:`write_video_folders`
  writes a set as UCF101-style class folders of frame folders (or video files) for the
  readers of :mod:`vislearn.data.video.io`.

Everything is a function of an explicit integer seed (NumPy ``SeedSequence``), so the same
arguments give the same bytes on every machine.

Conventions: a clip is a uint8 tensor ``[T, C, H, W]``; masks are uint8 ``[T, H, W]`` with 0
for background and ``k`` for the ``k``-th object (1 = the object whose motion defines the
class, 2... = distractors); image coordinates are ``x`` to the right and ``y`` down, so a
positive rotation angle turns clockwise on screen.

Modules: :mod:`.common` (seeding, checks), :mod:`.backgrounds`, :mod:`.sprites`,
:mod:`.motion` (moving-sprite videos), :mod:`.swap` (appearance-swap videos: one trajectory
and background rendered twice with different sprites), :mod:`.clips` (clip data set, video
folders), :mod:`.scenes` (segmentation scenes) and :mod:`.photo_items` (items on photo
crops); every public name is re-exported here.
"""

from vislearn.data.synthetic.backgrounds import (
    DEFAULT_PHOTO_DIR,
    DEFAULT_PHOTOS,
    generated_background,
    list_background_photos,
    load_backgrounds,
)
from vislearn.data.synthetic.clips import MotionClipDataset, write_video_folders
from vislearn.data.synthetic.motion import (
    DEFAULT_MOTION_CLASSES,
    MOTION_CLASSES,
    MotionVideos,
    motion_splits,
    moving_sprite_videos,
)
from vislearn.data.synthetic.photo_items import (
    PHOTO_DATASETS,
    PhotoItemsDataset,
    load_photo_items,
    photo_items_dataset,
    render_photo_items,
)
from vislearn.data.synthetic.scenes import (
    SEG_DATASETS,
    SEG_TAXONOMIES,
    SegScenes,
    label_boundaries,
    segmentation_scenes,
    synthetic_segmentation_sets,
)
from vislearn.data.synthetic.sprites import Sprites, composite, load_sprites, tint
from vislearn.data.synthetic.swap import (
    DIRECTION_CLASSES,
    appearance_swap_videos,
    direction_bin,
)

__all__ = [
    "DEFAULT_MOTION_CLASSES",
    "DEFAULT_PHOTO_DIR",
    "DEFAULT_PHOTOS",
    "DIRECTION_CLASSES",
    "MOTION_CLASSES",
    "MotionClipDataset",
    "MotionVideos",
    "PHOTO_DATASETS",
    "PhotoItemsDataset",
    "SEG_DATASETS",
    "SEG_TAXONOMIES",
    "SegScenes",
    "Sprites",
    "appearance_swap_videos",
    "composite",
    "direction_bin",
    "generated_background",
    "label_boundaries",
    "list_background_photos",
    "load_backgrounds",
    "load_photo_items",
    "load_sprites",
    "motion_splits",
    "moving_sprite_videos",
    "photo_items_dataset",
    "render_photo_items",
    "segmentation_scenes",
    "synthetic_segmentation_sets",
    "tint",
    "write_video_folders",
]
