"""Video object segmentation scores: region similarity J and boundary F-measure, DAVIS-17
conventions, with the matching protocols used to score unsupervised (object-discovery) output.

Measures (per object, per frame)
--------------------------------
* **J** (:func:`region_j`): IoU of the predicted and GT masks over non-void pixels (GT value
  255 is void); 1 when the union is empty.
* **F** (:func:`boundary_f`): F-measure of boundary pixels (:func:`boundary_map`) matched
  within a tolerance disk, after removing void pixels from both masks.
* Per-object statistics (:func:`stats`): mean, recall (fraction of frames > 0.5) and decay.
* Global numbers pool *objects* across sequences: ``J_mean`` is the mean over all objects of
  their frame-mean J (likewise recall and decay), and
  ``JF_mean = (J_mean + F_mean) / 2``.

Protocols (how predicted ids are matched to GT objects; :func:`evaluate_sequences`)
----------------------------------------------------------------------------------
* ``"davis"`` -- the official DAVIS-2017 *unsupervised* protocol. Candidates are the
  predicted ids ``1..max_proposals`` (20); a higher id is an error, as in the official
  script (``strict=False`` instead ignores such ids, treating them as background -- which
  silently drops proposals, so it is off by default). One Hungarian assignment
  per sequence maximises the frame-averaged (J+F)/2. When there are fewer candidates than GT
  objects, empty proposals are added (the official zero-padding): a GT object left with an
  empty proposal scores 0 in every frame where it is visible (and 1 in a frame where it is
  absent, as an empty prediction of an absent object is correct).
* ``"per_frame"`` -- **not the official protocol**: the modified evaluator shipped with
  SSL-UVOS (inherited from motiongrouping) runs a separate Hungarian assignment in *every
  frame* on J+F over up to ``max_proposals`` (300) ids. It is an oracle: the best cluster is
  chosen for each object in each frame, so identity switches and background clusters are not
  penalised. Use it only to compare with numbers produced that way.
* ``"identity"`` -- predicted id k is GT object k (the semi-supervised convention; ids
  present in the prediction but not in the GT are ignored).

Conventions and choices
-----------------------
* Only frames with a GT annotation are scored (sparse annotation as in FBMS is fine); a
  scored frame without a prediction is an error.
* GT objects of a sequence are the ids 1..254 present in any of its annotated frames (the
  official script counts ids 1..max of the *first* frame; they agree when every object is
  in the first frame, as in DAVIS). Each object is scored in every annotated frame.
* A prediction whose size differs from the GT is resized to the GT size with
  nearest-neighbour sampling (pixel centres) before scoring.
* ``drop_first_last=True`` skips the first and last annotated frames (the DAVIS
  semi-supervised convention); the unsupervised task scores every frame (default).
* ``single_object=True`` (DAVIS-16, SegTrack-v2, FBMS: one merged foreground): all GT ids
  1..254 become one object. Predictions are either merged by ``foreground_ids`` (a list of
  ids, a mapping sequence -> ids, or ``"all"`` for every id > 0) into one mask, or, when
  ``foreground_ids`` is None, the best single predicted id of each sequence is chosen by the
  protocol's matching (``"davis"``: one id for the whole sequence; ``"per_frame"``: the best
  id in each frame, an oracle).
Modules: :mod:`.measures` (J, F, statistics) and :mod:`.protocols` (frame, sequence and
folder scoring); every public name is re-exported here.
"""

from vislearn.eval.vos.measures import (
    VOID_LABEL,
    boundary_f,
    boundary_map,
    boundary_tolerance,
    disk,
    region_j,
    stats,
)
from vislearn.eval.vos.protocols import (
    DEFAULT_MAX_PROPOSALS,
    PROTOCOLS,
    evaluate_folder,
    evaluate_sequence,
    evaluate_sequences,
    summarize,
)

__all__ = [
    "VOID_LABEL",
    "PROTOCOLS",
    "DEFAULT_MAX_PROPOSALS",
    "region_j",
    "boundary_map",
    "boundary_tolerance",
    "disk",
    "boundary_f",
    "stats",
    "evaluate_sequence",
    "summarize",
    "evaluate_sequences",
    "evaluate_folder",
]
