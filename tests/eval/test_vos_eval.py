"""DAVIS data layout, palette PNGs, and J & F scoring with its matching protocols.

Expected values are worked out by hand in the comments, not taken from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vislearn.core.errors import VislearnError
from vislearn.data.video.davis import (
    davis_palette,
    read_annotations,
    read_davis,
    read_label_png,
    read_predictions,
    write_label_png,
)
from vislearn.eval.vos.measures import (
    boundary_f,
    boundary_map,
    boundary_tolerance,
    disk,
    region_j,
    stats,
)
from vislearn.eval.vos.protocols import evaluate_folder, evaluate_sequence, evaluate_sequences


def box(shape, r0, r1, c0, c1):
    """Boolean mask with rows r0..r1 and columns c0..c1 (inclusive) set."""
    m = np.zeros(shape, dtype=bool)
    m[r0 : r1 + 1, c0 : c1 + 1] = True
    return m


# ----------------------------------------------------------------------------- J


def test_region_j_offset_squares():
    # A: rows 0-3, cols 0-3; B: rows 2-5, cols 0-3. Overlap 2x4 = 8, union 16 + 16 - 8 = 24.
    a, b = box((10, 10), 0, 3, 0, 3), box((10, 10), 2, 5, 0, 3)
    assert region_j(b, a) == pytest.approx(8 / 24)


def test_region_j_empty_and_void():
    z = np.zeros((5, 5), dtype=bool)
    assert region_j(z, z) == 1.0  # empty union
    a, b = box((10, 10), 0, 3, 0, 3), box((10, 10), 2, 5, 0, 3)
    # void rows 4-5 remove B's part outside A: B' = rows 2-3 (8 px, inside A), union = A = 16
    void = box((10, 10), 4, 5, 0, 9)
    assert region_j(b, a, void) == pytest.approx(8 / 16)
    with pytest.raises(VislearnError, match="sizes differ"):
        region_j(a, np.zeros((4, 4), bool))


# ----------------------------------------------------------------------------- boundaries


def test_boundary_map_rectangle():
    # 3x5 rectangle, rows 2-4, cols 3-7: boundary = ring of rows 1-4, cols 2-7
    # (4 x 6 box ring = 2*4 + 2*6 - 4 = 16 = 2 * (3 + 5)).
    m = box((10, 12), 2, 4, 3, 7)
    b = boundary_map(m)
    assert b.sum() == 16
    ring = box((10, 12), 1, 4, 2, 7) & ~box((10, 12), 2, 3, 3, 6)
    assert np.array_equal(b, ring)


def test_boundary_map_image_border_is_not_boundary():
    # 4x4 square in the bottom-right corner (rows/cols 6-9 of 10x10): marked are row 5
    # cols 5-9 (5 px) and col 5 rows 6-9 (4 px) = 9; the object's own right column and
    # bottom row touch only the image border.
    b = boundary_map(box((10, 10), 6, 9, 6, 9))
    assert b.sum() == 9
    assert not b[6:, 6:].any()
    assert boundary_map(np.ones((6, 7), bool)).sum() == 0


def test_tolerance_formula():
    # hypot(480, 854) = sqrt(230400 + 729316) = 979.65; * 0.008 = 7.84 -> ceil 8
    assert boundary_tolerance((480, 854)) == 8
    assert boundary_tolerance((480, 854), bound_th=3) == 3
    # 20x20: hypot 28.28 * 0.008 = 0.23 -> 1
    assert boundary_tolerance((20, 20)) == 1
    # disk(1) is the plus shape: 5 pixels; disk(2): 13 pixels (5x5 minus 4 corners and 8
    # more with dy^2 + dx^2 = 5 > 4)
    assert disk(1).sum() == 5 and disk(2).sum() == 13


def test_boundary_f_shift_inside_tolerance():
    # 8x8 squares, B shifted right by 1 px: every ring pixel is within 1 px of the other ring
    a, b = box((20, 20), 5, 12, 5, 12), box((20, 20), 5, 12, 6, 13)
    assert boundary_f(b, a) == 1.0  # default tolerance on 20x20 is 1 px
    assert boundary_f(b, a, bound_th=1) == 1.0


def test_boundary_f_shift_outside_tolerance():
    # A: rows/cols 5-12 -> ring rows 4-12, cols 4-12 (32 px).
    # B: cols 8-15 (shift 3) -> ring rows 4-12, cols 7-15 (32 px). Radius 1 (plus shape).
    # B ring pixels near A's ring: top row cols 7-12 (on A's top row) + col 13 (next to
    # (4, 12)) = 7, bottom row 7, left column rows 5 and 11 (next to A's top/bottom rows) = 2,
    # right column 0 -> 16 / 32: P = 0.5. By symmetry R = 0.5, so F = 0.5.
    a, b = box((24, 24), 5, 12, 5, 12), box((24, 24), 5, 12, 8, 15)
    assert boundary_f(b, a, bound_th=1) == pytest.approx(0.5)
    assert boundary_f(a, b, bound_th=1) == pytest.approx(0.5)


def test_boundary_f_edge_cases():
    z = np.zeros((10, 10), dtype=bool)
    a = box((10, 10), 2, 5, 2, 5)
    assert boundary_f(z, z) == 1.0  # both empty
    assert boundary_f(z, a) == 0.0  # P = 1, R = 0
    assert boundary_f(a, z) == 0.0  # P = 0, R = 1
    # an extra predicted blob entirely inside void pixels is removed before scoring
    void = box((10, 10), 7, 9, 7, 9)
    pred = a | box((10, 10), 8, 9, 8, 9)
    assert boundary_f(pred, a, void) == 1.0
    assert region_j(pred, a, void) == 1.0


def reference_f(pred, gt, radius):
    """The DAVIS recipe written out with image dilation: boundary maps, binary_dilation by
    the disk of offsets with dy^2 + dx^2 <= radius^2, matched-pixel fractions."""
    r = int(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    selem = dy * dy + dx * dx <= radius * radius
    bp, bg = boundary_map(pred), boundary_map(gt)
    if not bp.any() or not bg.any():
        return float(bp.any() == bg.any())
    p = (bp & ndimage.binary_dilation(bg, structure=selem)).sum() / bp.sum()
    r_ = (bg & ndimage.binary_dilation(bp, structure=selem)).sum() / bg.sum()
    return 0.0 if p + r_ == 0 else 2 * p * r_ / (p + r_)


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5])
def test_boundary_f_matches_disk_dilation(radius):
    # the evaluator finds matches by nearest-neighbour distance; it must equal the dilation
    rng = np.random.default_rng(radius)
    for _ in range(5):
        pred = ndimage.binary_opening(rng.random((30, 40)) < 0.5)
        gt = ndimage.binary_opening(rng.random((30, 40)) < 0.5)
        expect = reference_f(pred, gt, radius)
        assert boundary_f(pred, gt, bound_th=radius if radius else 0.0) == pytest.approx(expect)


# ----------------------------------------------------------------------------- statistics


def test_stats_mean_recall_decay():
    v = np.array([1.0, 0.8, 0.6, 0.5, 0.5, 0.4, 0.2, 0.0])
    s = stats(v)
    assert s["mean"] == pytest.approx(4.0 / 8)  # sum = 4.0
    assert s["recall"] == pytest.approx(3 / 8)  # 1.0, 0.8, 0.6 (> 0.5 strictly)
    # n = 8: bin edges round(i * 7 / 4) = 0, 2, 4, 5, 7 -> first bin frames 0-2 (mean 0.8),
    # last bin frames 5-7 (mean 0.2): decay 0.6
    assert s["decay"] == pytest.approx(0.6)
    # n = 4: edges 0, 1, 2, 2, 3 -> first frames 0-1, last frames 2-3
    assert stats(np.array([1.0, 1.0, 0.0, 0.0]))["decay"] == pytest.approx(1.0)
    assert stats(np.array([0.7]))["decay"] == 0.0


# ----------------------------------------------------------------------------- matching

SHAPE = (24, 32)
A = box(SHAPE, 2, 7, 2, 7)  # 6x6 square
B = box(SHAPE, 12, 19, 18, 25)  # 8x8 square, far from A
C = box(SHAPE, 14, 20, 2, 6)  # spurious blob, far from both


def labels(*pairs):
    out = np.zeros(SHAPE, dtype=np.uint8)
    for value, mask in pairs:
        out[mask] = value
    return out


def test_hungarian_swapped_ids():
    # GT: 1 = A, 2 = B. Prediction: 1 = B, 2 = C (spurious), 3 = A, in 4 frames.
    gt = {t: labels((1, A), (2, B)) for t in range(4)}
    pred = {t: labels((1, B), (2, C), (3, A)) for t in range(4)}
    res = evaluate_sequences({"s": pred}, {"s": gt}, protocol="davis", bound_th=1)
    by_obj = {r["object"]: r for r in res["objects"]}
    assert list(by_obj[1]["pred_ids"]) == [3, 3, 3, 3]
    assert list(by_obj[2]["pred_ids"]) == [1, 1, 1, 1]
    assert res["J_mean"] == 1.0 and res["F_mean"] == 1.0 and res["JF_mean"] == 1.0
    assert res["J_recall"] == 1.0 and res["J_decay"] == 0.0
    assert res["num_objects"] == 2 and res["num_sequences"] == 1


def test_unmatched_gt_scores_zero():
    # One proposal (A) for two GT objects visible in every frame: B gets the empty proposal.
    gt = {t: labels((1, A), (2, B)) for t in range(3)}
    pred = {t: labels((1, A)) for t in range(3)}
    res = evaluate_sequences({"s": pred}, {"s": gt})
    by_obj = {r["object"]: r for r in res["objects"]}
    assert np.array_equal(by_obj[2]["J"], [0, 0, 0]) and np.array_equal(by_obj[2]["F"], [0, 0, 0])
    assert list(by_obj[2]["pred_ids"]) == [0, 0, 0]
    assert res["J_mean"] == pytest.approx(0.5)  # objects pooled: (1 + 0) / 2
    assert res["JF_mean"] == pytest.approx(0.5)


def test_id_switch_per_frame_vs_davis():
    # GT: 1 = A, 2 = B in 4 frames. Prediction ids swap after frame 1.
    gt = {t: labels((1, A), (2, B)) for t in range(4)}
    pred = {t: labels((1, A), (2, B)) if t < 2 else labels((2, A), (1, B)) for t in range(4)}
    oracle = evaluate_sequences({"s": pred}, {"s": gt}, protocol="per_frame", bound_th=1)
    assert oracle["JF_mean"] == 1.0  # a fresh assignment each frame hides the switch
    by_obj = {r["object"]: r for r in oracle["objects"]}
    assert list(by_obj[1]["pred_ids"]) == [1, 1, 2, 2]
    # davis: one assignment per sequence; each object is right in 2 of 4 frames. A and B
    # are disjoint and their boundaries > 1 px apart, so the wrong frames score J = F = 0.
    official = evaluate_sequences({"s": pred}, {"s": gt}, protocol="davis", bound_th=1)
    assert official["J_mean"] == pytest.approx(0.5)
    assert official["F_mean"] == pytest.approx(0.5)
    assert official["J_recall"] == pytest.approx(0.5)
    assert official["J_decay"] == pytest.approx(1.0)  # frames 0-1 all 1, frames 2-3 all 0


def test_max_proposals_and_strict():
    gt = {0: labels((1, A))}
    pred = {0: labels((21, A))}
    # davis scores ids 1..20: id 21 is an error, as in the official script (strict default)
    with pytest.raises(VislearnError, match="exceeds"):
        evaluate_sequences({"s": pred}, {"s": gt})
    # strict=False ignores it instead, and A scores 0
    assert evaluate_sequences({"s": pred}, {"s": gt}, strict=False)["J_mean"] == 0.0
    # the per-frame protocol accepts up to 300 ids
    assert evaluate_sequences({"s": pred}, {"s": gt}, protocol="per_frame")["J_mean"] == 1.0


def test_void_sparse_frames_and_resize():
    # GT annotated only in frames 0 and 2 (sparse); frame 1 has a prediction but no GT.
    gt0 = labels((1, A))
    gt0[B] = 255  # void region: whatever is predicted there is ignored
    gt = {0: gt0, 2: labels((1, A))}
    small = np.zeros((12, 16), dtype=np.uint8)  # half size; A = rows/cols 2-7 -> 1-3
    small[1:4, 1:4] = 1
    pred = {0: labels((1, A), (1, B)), 1: np.zeros(SHAPE, np.uint8), 2: small}
    rows = evaluate_sequence("s", pred, gt)
    assert rows[0]["frames"] == [0, 2]
    assert np.array_equal(rows[0]["J"], [1.0, 1.0]) and np.array_equal(rows[0]["F"], [1.0, 1.0])
    with pytest.raises(VislearnError, match="no prediction"):
        evaluate_sequence("s", {0: pred[0]}, gt)


def test_single_object():
    # GT ids 1 (A) and 2 (B) merge into one foreground A | B.
    gt = {t: labels((1, A), (2, B)) for t in range(2)}
    pred = {t: labels((4, A), (7, B), (9, C)) for t in range(2)}
    merged = evaluate_sequences(
        {"s": pred}, {"s": gt}, single_object=True, foreground_ids=[4, 7], bound_th=1
    )
    assert merged["num_objects"] == 1 and merged["JF_mean"] == 1.0
    # best single id: id 7 (B, 64 px) beats id 4 (A, 36 px): J = 64 / 100 per frame
    best = evaluate_sequences({"s": pred}, {"s": gt}, single_object=True, bound_th=1)
    assert list(best["objects"][0]["pred_ids"]) == [7, 7]
    assert best["J_mean"] == pytest.approx(64 / 100)


def test_fast_pairwise_path_matches_direct_measures():
    # The evaluator scores pairs on cropped windows; compare with the whole-frame functions.
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, size=(30, 40)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.05] = 255
    pred = rng.integers(0, 3, size=(30, 40)).astype(np.uint8)
    rows = evaluate_sequence("s", {0: pred}, {0: gt}, protocol="identity", bound_th=2)
    void = gt == 255
    for r in rows:
        k = r["object"]
        assert r["J"][0] == pytest.approx(region_j(pred == k, gt == k, void))
        assert r["F"][0] == pytest.approx(boundary_f(pred == k, gt == k, void, bound_th=2))


# ----------------------------------------------------------------------------- PNGs, layout


def test_palette_values():
    pal = davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert tuple(pal[0]) == (0, 0, 0)
    assert tuple(pal[1]) == (128, 0, 0)  # bit 0 -> red MSB
    assert tuple(pal[2]) == (0, 128, 0)
    assert tuple(pal[3]) == (128, 128, 0)
    assert tuple(pal[8]) == (64, 0, 0)  # bit 3 -> red's second bit
    assert tuple(pal[255]) == (224, 224, 192)  # 128+64+32 for r, g; 128+64 for b


def test_label_png_round_trip(tmp_path):
    lab = np.zeros((6, 9), dtype=np.uint8)
    lab[1:3, 2:5] = 1
    lab[4, :] = 17
    lab[0, 0] = 255
    path = tmp_path / "sub" / "00000.png"
    write_label_png(path, lab)
    with Image.open(path) as img:
        assert img.mode == "P"
        assert img.getpalette()[3:6] == [128, 0, 0]
    assert np.array_equal(read_label_png(path), lab)
    assert [p.name for p in path.parent.iterdir()] == ["00000.png"]  # no temp file left
    Image.fromarray(lab).save(tmp_path / "grey.png")  # "L" mode
    assert np.array_equal(read_label_png(tmp_path / "grey.png"), lab)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(VislearnError, match="rgb.png"):
        read_label_png(tmp_path / "rgb.png")
    with pytest.raises(VislearnError, match="0..255"):
        write_label_png(tmp_path / "x.png", np.full((2, 2), 300))


def make_davis(root, frames=3, sparse=False):
    """Tiny DAVIS tree: seqA (fully annotated), seqB (frames 0 and 2 annotated if sparse)."""
    for seq in ("seqA", "seqB"):
        jpg = root / "JPEGImages" / "480p" / seq
        jpg.mkdir(parents=True)
        for t in range(frames):
            Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(jpg / f"{t:05d}.jpg")
        for folder, value in (("Annotations_unsupervised", 1), ("Annotations", 2)):
            for t in range(frames):
                if seq == "seqB" and sparse and t % 2:
                    continue
                write_label_png(root / folder / "480p" / seq / f"{t:05d}.png", labels((value, A)))
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("seqA\nseqB\n")


def test_read_davis_layout(tmp_path):
    make_davis(tmp_path, frames=3, sparse=True)
    seqs = read_davis(tmp_path)
    assert [s.name for s in seqs] == ["seqA", "seqB"]
    assert seqs[0].frame_names == ["00000", "00001", "00002"]
    assert sorted(seqs[0].annotations) == [0, 1, 2]
    assert sorted(seqs[1].annotations) == [0, 2]  # sparse
    ann = read_annotations(seqs[1])
    assert set(np.unique(ann[2])) == {0, 1}  # unsupervised folder holds id 1
    semi = read_davis(tmp_path, task="semi-supervised", sequences=["seqA"])
    assert set(np.unique(read_annotations(semi[0])[0])) == {0, 2}


def test_read_davis_errors(tmp_path):
    make_davis(tmp_path)
    with pytest.raises(VislearnError, match="ImageSets"):
        read_davis(tmp_path, year="2019")
    with pytest.raises(VislearnError, match="frame folder"):
        read_davis(tmp_path, sequences=["nope"])
    with pytest.raises(VislearnError, match="does not exist"):
        read_davis(tmp_path / "missing")
    write_label_png(
        tmp_path / "Annotations_unsupervised" / "480p" / "seqA" / "00009.png", labels((1, A))
    )
    with pytest.raises(VislearnError, match="00009.png matches no frame"):
        read_davis(tmp_path)
    (tmp_path / "JPEGImages" / "480p" / "seqC").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(
        tmp_path / "JPEGImages" / "480p" / "seqC" / "00000.jpg"
    )
    with pytest.raises(VislearnError, match="annotation folder"):
        read_davis(tmp_path, sequences=["seqC"])
    seq_c = read_davis(tmp_path, sequences=["seqC"], require_annotations=False)[0]
    assert seq_c.annotations is None


def test_evaluate_folder(tmp_path):
    root, results = tmp_path / "davis", tmp_path / "results"
    make_davis(root, frames=3)
    for seq in ("seqA", "seqB"):  # GT id 1 = A; predict A as id 5 plus a spurious id 2
        for t in range(3):
            write_label_png(results / seq / f"{t:05d}.png", labels((5, A), (2, C)))
    res = evaluate_folder(results, root)
    assert res["num_objects"] == 2 and res["JF_mean"] == 1.0
    assert all(list(r["pred_ids"]) == [5, 5, 5] for r in res["objects"])
    seq = read_davis(root, sequences=["seqA"])[0]
    assert sorted(read_predictions(results, seq)) == [0, 1, 2]
    (results / "seqB" / "00001.png").unlink()
    with pytest.raises(VislearnError, match="00001"):
        evaluate_folder(results, root)
