"""DAVIS-style video segmentation data: palette label PNGs, the folder layout, predictions.

Layout (DAVIS 2016/2017, and FBMS / SegTrack-v2 once converted to it)::

    ROOT/JPEGImages/<resolution>/<seq>/00000.jpg ...
    ROOT/Annotations_unsupervised/<resolution>/<seq>/00000.png ...   task="unsupervised"
    ROOT/Annotations/<resolution>/<seq>/00000.png ...                task="semi-supervised"
    ROOT/ImageSets/<year>/<split>.txt                                one sequence name a line

Label maps are indexed ("P" mode) PNGs whose pixel values are object ids: 0 background,
1..K objects, 255 void (not scored). They are read as palette *indices*
(``np.array(Image.open(p))``), never as colours; a greyscale ("L") PNG is read as its values.
Predictions use the same format under ``RESULTS/<seq>/<frame>.png`` with frame names matching
the frames' stems (DAVIS submission format).

Frames are sorted in natural order (the same as name order for DAVIS's zero-padded names).
Annotations may be sparse (FBMS labels every 20th frame): :class:`DavisSequence` keeps a
mapping from frame index to annotation file, and an annotation whose name matches no frame is
an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vislearn.core.errors import VislearnError
from vislearn.core.utils import atomic_path
from vislearn.data.video.io import list_frames

TASK_FOLDERS = {"unsupervised": "Annotations_unsupervised", "semi-supervised": "Annotations"}
VOID_LABEL = 255
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


def davis_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC / DAVIS colour map as a uint8 array ``[n, 3]``.

    Colour of index ``i``: the bits of ``i`` are dealt out in turn to red, green and blue
    (bit 0 -> red, bit 1 -> green, bit 2 -> blue, bit 3 -> red, ...), each colour channel
    filling from its most significant bit down. Index 1 is (128, 0, 0), 2 is (0, 128, 0),
    255 (void) is (224, 224, 192).
    """
    palette = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        rgb = [0, 0, 0]
        value = index
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << bit
            value >>= 3
        palette[index] = rgb
    return palette


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map PNG as uint8 ``[H, W]`` ids (palette indices of a "P" PNG, values of
    an "L" PNG, 0/1 of a "1" PNG). Colour images are rejected: their ids are ambiguous."""
    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"label file does not exist: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in ("P", "L", "1"):
                raise VislearnError(
                    f"label file {path} is a {mode!r} image; expected an indexed ('P') or "
                    "greyscale ('L') PNG of object ids"
                )
            labels = np.array(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise VislearnError(f"cannot read label file {path}: {exc}") from exc
    return labels.astype(np.uint8)


def write_label_png(
    path: str | os.PathLike, labels: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Write ``labels`` (integer ``[H, W]`` with values 0..255) as an indexed "P" PNG with the
    DAVIS palette (or ``palette``, ``[N, 3]`` uint8), atomically (a temporary file in the same
    folder, then ``os.replace``); parent folders are created."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise VislearnError(f"label map for {path} must be 2-D [H, W], got shape {labels.shape}")
    if labels.dtype.kind not in "biu":
        raise VislearnError(f"label map for {path} must hold integer ids, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise VislearnError(
            f"label map for {path} has ids outside 0..255 ({labels.min()}..{labels.max()}); "
            "a palette PNG holds at most 256 ids"
        )
    pal = davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    if pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= pal.shape[0] <= 256:
        raise VislearnError(f"palette must have shape [N<=256, 3], got {pal.shape}")
    img = Image.fromarray(labels.astype(np.uint8))  # mode "L"; putpalette turns it into "P"
    img.putpalette(pal.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


@dataclass
class DavisSequence:
    """One video: its name, its frame files in order, and its annotation files by frame index
    (``None`` when the sequence has no annotations, e.g. a test set)."""

    name: str
    frames: list[Path]
    annotations: dict[int, Path] | None = None

    @property
    def frame_names(self) -> list[str]:
        """Frame file stems (``"00000"``, ...), the names predictions must use."""
        return [f.stem for f in self.frames]

    def __len__(self) -> int:
        return len(self.frames)


def _read_list(root: Path, year: str, split: str) -> list[str]:
    list_file = root / "ImageSets" / year / f"{split}.txt"
    if not list_file.is_file():
        raise VislearnError(f"DAVIS sequence list does not exist: {list_file}")
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    if not names:
        raise VislearnError(f"DAVIS sequence list is empty: {list_file}")
    return names


def _frame_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise VislearnError(f"frame folder does not exist: {folder}")
    frames = [p for p in list_frames(folder) if p.suffix.lower() in FRAME_EXTENSIONS]
    if not frames:
        raise VislearnError(f"no frames (.jpg/.png) in {folder}")
    return frames


def _annotation_files(folder: Path, frames: list[Path]) -> dict[int, Path]:
    index = {f.stem: i for i, f in enumerate(frames)}
    annotations: dict[int, Path] = {}
    for path in list_frames(folder):
        if path.suffix.lower() != ".png":
            continue
        if path.stem not in index:
            raise VislearnError(
                f"annotation {path} matches no frame of the sequence (frame names are "
                f"{frames[0].stem} ... {frames[-1].stem})"
            )
        annotations[index[path.stem]] = path
    if not annotations:
        raise VislearnError(f"no annotation PNGs in {folder}")
    return dict(sorted(annotations.items()))


def read_davis(
    root: str | os.PathLike,
    split: str = "val",
    year: str | int = "2017",
    task: str = "unsupervised",
    resolution: str = "480p",
    sequences: Sequence[str] | None = None,
    require_annotations: bool = True,
) -> list[DavisSequence]:
    """List the sequences of a DAVIS-layout data set (see the module docstring).

    ``sequences`` (names) replaces the ``ImageSets/<year>/<split>.txt`` list, which is then
    not read. ``task`` picks the annotation folder: ``"unsupervised"`` ->
    ``Annotations_unsupervised``, ``"semi-supervised"`` -> ``Annotations`` (their object ids
    differ). A sequence without an annotation folder is an error unless
    ``require_annotations=False`` (its ``annotations`` is then ``None``).
    """
    root = Path(root)
    if task not in TASK_FOLDERS:
        raise VislearnError(f"unknown DAVIS task {task!r}; use one of {sorted(TASK_FOLDERS)}")
    if not root.is_dir():
        raise VislearnError(f"DAVIS root folder does not exist: {root}")
    names = list(sequences) if sequences is not None else _read_list(root, str(year), split)
    if not names:
        raise VislearnError("no sequences given")
    out = []
    for name in names:
        frames = _frame_files(root / "JPEGImages" / resolution / name)
        ann_dir = root / TASK_FOLDERS[task] / resolution / name
        if ann_dir.is_dir():
            annotations: dict[int, Path] | None = _annotation_files(ann_dir, frames)
        elif require_annotations:
            raise VislearnError(f"annotation folder does not exist: {ann_dir}")
        else:
            annotations = None
        out.append(DavisSequence(name=name, frames=frames, annotations=annotations))
    return out


def read_annotations(seq: DavisSequence) -> dict[int, np.ndarray]:
    """The annotated frames of ``seq``: frame index -> uint8 ids ``[H, W]`` (255 = void).
    All annotations of a sequence must have one size."""
    if not seq.annotations:
        raise VislearnError(f"sequence {seq.name} has no annotations")
    out = {i: read_label_png(p) for i, p in seq.annotations.items()}
    shapes = {a.shape for a in out.values()}
    if len(shapes) > 1:
        raise VislearnError(f"annotations of sequence {seq.name} differ in size: {sorted(shapes)}")
    return out


def read_predictions(
    results_dir: str | os.PathLike,
    seq: DavisSequence,
    frames: Sequence[int] | None = None,
) -> dict[int, np.ndarray]:
    """Read predicted label maps ``results_dir/<seq>/<frame stem>.png`` as frame index ->
    uint8 ids. ``frames`` (indices) defaults to the annotated frames, or all frames when the
    sequence has no annotations. A missing folder or file is an error naming it."""
    folder = Path(results_dir) / seq.name
    if not folder.is_dir():
        raise VislearnError(f"prediction folder does not exist: {folder}")
    if frames is None:
        frames = list(seq.annotations) if seq.annotations else list(range(len(seq.frames)))
    out = {}
    for i in frames:
        if not 0 <= i < len(seq.frames):
            raise VislearnError(f"frame index {i} is outside sequence {seq.name}")
        path = folder / f"{seq.frames[i].stem}.png"
        if not path.is_file():
            raise VislearnError(f"prediction for frame {seq.frames[i].stem} is missing: {path}")
        out[i] = read_label_png(path)
    return out
