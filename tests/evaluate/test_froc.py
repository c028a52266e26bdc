"""Camelyon16 lesion-level FROC on hand-built cases; every expected number is worked out by hand
in the comments from the rules of the official ``Evaluation_FROC.py`` (the score: ``np.interp``
of the curve at each FP rate; random cases against a transcription: ``test_froc_challenge.py``).

Most cases use mpp 0.25 µm/px and evaluation downsample 32, so one mask pixel is 8 µm:
dilation threshold 75 / (8·2) = 4.6875 px (a mask pixel counts when its distance to tumour is
below that); ITC when the major axis < 275 / 8 = 34.375 px.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qupath_camseg.errors import InvalidAnnotationError
from qupath_camseg.evaluate import (
    Detection,
    default_eval_downsample,
    detect_lesions,
    evaluation_mask,
    froc,
    froc_score,
    match_detections,
    read_detections_csv,
    write_detections_csv,
)

MPP = 0.25
D = 32.0


def _square(mask: np.ndarray, r0: int, c0: int, size_r: int, size_c: int | None = None) -> None:
    mask[r0 : r0 + size_r, c0 : c0 + (size_c or size_r)] = True


def _at(r: float, c: float) -> tuple[float, float]:
    """Level-0 (x, y) at the centre of mask pixel (r, c)."""
    return ((c + 0.5) * D, (r + 0.5) * D)


def _det(prob: float, r: float, c: float) -> tuple[float, float, float]:
    x, y = _at(r, c)
    return (prob, x, y)


def test_one_lesion_hit_scores_one_and_dilation_reaches_37_5_um() -> None:
    t = np.zeros((300, 300), bool)
    _square(t, 100, 100, 60)  # 480 µm square: rows/cols 100..159
    m = evaluation_mask(t, mpp=MPP, downsample=D)
    assert m.n_lesions == 1 and m.itc_labels == frozenset()
    # 2 px (16 µm) right of the edge: distance 2 < 4.6875 -> inside the lesion;
    # 7 px (56 µm) right: distance 7 >= 4.6875 -> normal tissue -> FP.
    s = match_detections([_det(0.9, 130, 130), _det(0.4, 130, 161), _det(0.3, 130, 166)], m)
    assert s.outcomes == ("tp", "duplicate", "fp")
    assert s.tp_probs == (0.9,) and s.fp_probs == (0.3,)
    # only the lesion: thresholds {0.9} -> curve (0 FP, sens 1), end (0, 0); every rate reads sens 1
    r = froc([match_detections([_det(0.9, 130, 130)], m)])
    assert list(r.fps_per_slide) == [0.0, 0.0] and list(r.sensitivity) == [1.0, 0.0]
    assert r.sensitivity_at == (1.0,) * 6 and r.score == 1.0


def test_official_constants_at_0_243_mpp_level_5() -> None:
    assert default_eval_downsample(0.243) == 32
    t = np.zeros((50, 200), bool)
    t[:, 100] = True
    m = evaluation_mask(t, mpp=0.243, downsample=32)
    # 75 / (0.243·2^5·2) = 4.8225 px: distance 4 is in, 5 is out
    assert m.labels[25, 104] == m.labels[25, 100] != 0
    assert m.labels[25, 105] == 0 and m.labels[25, 95] == 0 and m.labels[25, 96] != 0


def test_default_downsample_generalises_by_mpp() -> None:
    # nearest power of two to 7.776 µm/px
    assert default_eval_downsample(0.25) == 32  # 8 µm/px
    assert default_eval_downsample(0.5) == 16  # 8 µm/px
    assert default_eval_downsample(0.121) == 64
    assert default_eval_downsample(8.0) == 1
    with pytest.raises(ValueError):
        default_eval_downsample(0)


def test_itc_is_ignored_neither_tp_nor_fp() -> None:
    t = np.zeros((300, 300), bool)
    _square(t, 100, 100, 60)  # lesion
    _square(t, 20, 250, 3)  # 24 µm cluster: ~12 px (≈100 µm) after dilation < 34.375 px -> ITC
    m = evaluation_mask(t, mpp=MPP, downsample=D)
    assert m.n_regions == 2 and len(m.itc_labels) == 1 and m.n_lesions == 1
    s = match_detections([_det(0.95, 21, 251), _det(0.6, 130, 130)], m)
    assert s.outcomes == ("itc", "tp")
    assert s.fp_probs == () and s.tp_probs == (0.6,) and s.n_itc == 1
    # 0.95 is neither FP nor TP, so the only threshold is 0.6: sensitivity 1 at 0 FP
    r = froc([s])
    assert r.score == 1.0 and list(r.thresholds) == [0.6]
    # with ITCs included (the later script's --itc), the cluster is a lesion of its own
    m2 = evaluation_mask(t, mpp=MPP, downsample=D, include_itcs=True)
    assert m2.n_lesions == 2
    assert match_detections([_det(0.95, 21, 251)], m2).tp_probs == (0.95, 0.0)


def test_two_hits_on_one_lesion_count_once_the_best() -> None:
    t = np.zeros((300, 300), bool)
    _square(t, 100, 100, 60)
    m = evaluation_mask(t, mpp=MPP, downsample=D)
    s = match_detections([_det(0.7, 110, 110), _det(0.9, 150, 150)], m)
    assert s.outcomes == ("duplicate", "tp")
    assert s.tp_probs == (0.9,) and s.fp_probs == ()
    r = froc([s])
    # thresholds {0.9}; the 0.7 hit adds nothing: (0 FP, 1.0), end (0, 0)
    assert list(r.thresholds) == [0.9] and r.score == 1.0


def test_fp_on_normal_slide() -> None:
    t = np.zeros((300, 300), bool)
    _square(t, 100, 100, 60)
    tumour = match_detections([_det(0.6, 130, 130)], evaluation_mask(t, mpp=MPP, downsample=D))
    normal = match_detections([(0.8, 5000.0, 5000.0)], None, name="normal")
    assert normal.fp_probs == (0.8,) and normal.n_lesions == 0 and normal.outcomes == ("fp",)
    r = froc([tumour, normal])
    # thresholds 0.6, 0.8 over 2 slides:
    #   0.6: 1 FP -> 0.5 FP/slide, sens 1;  0.8: 1 FP -> 0.5, sens 0;  end: 0, 0
    assert list(r.thresholds) == [0.6, 0.8]
    assert list(r.fps_per_slide) == [0.5, 0.5, 0.0] and list(r.sensitivity) == [1.0, 0.0, 0.0]
    # increasing FP: fps [0, .5, .5], sens [0, 0, 1]; np.interp: 1/4 -> on the line (0, 0)-(.5, 0): 0;
    # 1/2 -> exactly the shared rate .5: the last of its points, 1; 1, 2, 4, 8 -> past the end: 1
    assert r.sensitivity_at == (0.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert r.score == pytest.approx(5 / 6)


def test_dilation_merges_near_regions_and_keeps_far_ones_apart() -> None:
    near = np.zeros((200, 300), bool)
    _square(near, 80, 50, 40)
    _square(near, 80, 95, 40)  # gap cols 90..94 = 5 px = 40 µm < 75 µm: gap pixels at distance <= 3
    far = np.zeros((200, 300), bool)
    _square(far, 80, 50, 40)
    _square(far, 80, 115, 40)  # gap 25 px = 200 µm: the middle is 13 px from both -> apart
    dets = [_det(0.9, 100, 60), _det(0.8, 100, 130)]

    m_near = evaluation_mask(near, mpp=MPP, downsample=D)
    assert m_near.n_lesions == 1
    s = match_detections(dets, m_near)
    assert s.outcomes == ("tp", "duplicate") and s.tp_probs == (0.9,)

    m_far = evaluation_mask(far, mpp=MPP, downsample=D)
    assert m_far.n_lesions == 2
    s = match_detections(dets, m_far)
    assert s.outcomes == ("tp", "tp") and sorted(s.tp_probs) == [0.8, 0.9]
    # only one region hit: sensitivity 1/2 everywhere
    assert froc([match_detections(dets[:1], m_far)]).score == 0.5


def test_holes_in_a_lesion_are_filled() -> None:
    t = np.zeros((300, 300), bool)
    _square(t, 100, 100, 80)
    t[120:160, 120:160] = False  # 320 µm hole of normal tissue inside the outline
    m = evaluation_mask(t, mpp=MPP, downsample=D)
    assert m.n_lesions == 1
    assert match_detections([_det(0.5, 140, 140)], m).outcomes == ("tp",)


def test_full_score_worked_by_hand() -> None:
    # Slide 1: lesions L1, L2 and an ITC; slide 2 normal.
    t = np.zeros((300, 300), bool)
    _square(t, 20, 20, 60)  # L1
    _square(t, 200, 200, 60)  # L2
    _square(t, 20, 250, 2)  # ITC
    m = evaluation_mask(t, mpp=MPP, downsample=D)
    assert m.n_lesions == 2 and len(m.itc_labels) == 1
    s1 = match_detections(
        [
            _det(0.9, 50, 50),  # L1 -> TP
            _det(0.6, 40, 40),  # L1 again -> neither
            _det(0.8, 21, 251),  # ITC -> neither
            _det(0.7, 150, 20),  # normal tissue -> FP
            _det(0.4, 230, 230),  # L2 -> TP
        ],
        m,
    )
    s2 = match_detections([(0.5, 10.0, 10.0), (0.3, 20.0, 20.0)], None)
    r = froc([s1, s2])
    # TP probs {0.9, 0.4}, FP probs {0.7, 0.5, 0.3}; 2 slides, 2 lesions.
    # thr 0.3: 3 FP (1.5/slide), 2 TP (1.0) | 0.4: 2 FP (1.0), 2 TP (1.0) | 0.5: 1.0, 0.5
    # 0.7: 0.5, 0.5 | 0.9: 0, 0.5 | end 0, 0
    assert list(r.thresholds) == [0.3, 0.4, 0.5, 0.7, 0.9]
    assert list(r.fps_per_slide) == [1.5, 1.0, 1.0, 0.5, 0.0, 0.0]
    assert list(r.sensitivity) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.0]
    # increasing FP: fps [0, 0, .5, 1, 1, 1.5], sens [0, .5, .5, .5, 1, 1]; np.interp:
    # 1/4 -> on the line (0, .5)-(.5, .5): .5 | 1/2 -> .5 | 1 -> exactly the shared rate 1.0: the
    # last of its points, 1 | 2, 4, 8 -> past the end: 1
    assert r.sensitivity_at == (0.5, 0.5, 1.0, 1.0, 1.0, 1.0)
    assert r.score == pytest.approx(5 / 6)
    assert r.n_slides == 2 and r.n_lesions == 2
    d = r.to_dict()
    assert d["score"] == pytest.approx(5 / 6) and len(d["fps_per_slide"]) == 6 and d["status"] == "scored"


def test_missed_lesions_and_outside_points() -> None:
    t = np.zeros((100, 100), bool)
    _square(t, 10, 10, 50)
    m = evaluation_mask(t, mpp=MPP, downsample=D)
    # a point outside the mask counts as FP on normal tissue (the Py2 script crashed or wrapped)
    s = match_detections([(0.5, -100.0, 50.0), (0.4, 10_000.0, 10_000.0)], m)
    assert s.outcomes == ("fp", "fp") and s.tp_probs == (0.0,)
    r = froc([s])
    assert r.score == 0.0
    # no lesions anywhere: sensitivity undefined (the official code divides by zero): "no lesions"
    r = froc([match_detections([(0.5, 1.0, 1.0)], None)])
    assert r.no_lesions and all(math.isnan(v) for v in r.sensitivity_at) and math.isnan(r.score)
    assert r.to_dict()["score"] is None and r.to_dict()["status"] == "no lesions"
    assert not froc([s]).no_lesions


def test_froc_score_interpolates_between_points() -> None:
    # curve as froc_curve returns it (FP decreasing): points (3, .9) (1, .6) (.25, .3) (0, 0)
    score, at = froc_score([3.0, 1.0, 0.25, 0.0], [0.9, 0.6, 0.3, 0.0])
    # 1/4 -> exactly .25: .3 | 1/2 -> a third of the way from (.25, .3) to (1, .6): .4 | 1 -> .6
    # 2 -> half way from (1, .6) to (3, .9): .75 | 4, 8 -> past the end: .9
    assert at == pytest.approx((0.3, 0.4, 0.6, 0.75, 0.9, 0.9))
    assert score == pytest.approx(3.85 / 6)


def test_nms_detections_from_probability_map() -> None:
    p = np.zeros((100, 100), np.float32)
    p[20, 20] = 0.9
    p[22, 23] = 0.8  # 3.6 px = 14 µm from the 0.9 peak: suppressed
    p[70, 70] = 0.6
    p[70, 90] = 0.55  # 20 px = 80 µm from the 0.6 peak: kept
    # mpp 0.25, downsample 16 -> 4 µm per map px; radius 40 µm = 10 px
    dets = detect_lesions(p, downsample=16, mpp=0.25, threshold=0.5, nms_radius_um=40.0)
    assert [d.prob for d in dets] == pytest.approx([0.9, 0.6, 0.55])
    assert dets[0] == Detection(pytest.approx(0.9), 20.5 * 16, 20.5 * 16)
    # origin shifts every point
    d2 = detect_lesions(p, downsample=16, mpp=0.25, origin_px=(1000, 2000), nms_radius_um=40.0)
    assert (d2[0].x_px, d2[0].y_px) == (1000 + 20.5 * 16, 2000 + 20.5 * 16)
    # a flat plateau yields one detection; uint8 maps are divided by 255
    q = np.zeros((50, 50), np.uint8)
    q[10:20, 10:20] = 255
    dq = detect_lesions(q, downsample=1, mpp=1.0, nms_radius_um=3.0)
    assert len(dq) == 1 and dq[0].prob == 1.0
    assert detect_lesions(np.zeros((5, 5)), downsample=1, mpp=1.0) == []


def test_component_detections() -> None:
    p = np.zeros((40, 40), np.float32)
    p[5:10, 5:10] = 0.6
    p[7, 8] = 0.95
    p[30:35, 30:35] = 0.7
    dets = detect_lesions(p, downsample=2, mpp=0.5, threshold=0.5, method="components")
    assert [(d.prob, d.x_px, d.y_px) for d in dets] == [
        (pytest.approx(0.95), 8.5 * 2, 7.5 * 2),
        (pytest.approx(0.7), 30.5 * 2, 30.5 * 2),
    ]
    with pytest.raises(ValueError):
        detect_lesions(p, downsample=2, mpp=0.5, method="blobs")


def test_detection_csv_round_trip(tmp_path) -> None:
    dets = [Detection(0.93, 1234.4, 5678.6), Detection(0.5, 0.0, 7.0)]
    path = tmp_path / "Tumor_001.csv"
    write_detections_csv(path, dets)
    assert path.read_text() == "0.93,1234,5679\n0.5,0,7\n"  # no header, integer level-0 px
    assert read_detections_csv(path) == [(0.93, 1234.0, 5679.0), (0.5, 0.0, 7.0)]
    write_detections_csv(path, dets, header=True)
    assert path.read_text().splitlines()[0] == "p,x,y"
    assert [d.prob for d in read_detections_csv(path)] == [0.93, 0.5]
    bad = tmp_path / "bad.csv"
    bad.write_text("0.5,1,2\n0.4,abc,3\n")
    with pytest.raises(InvalidAnnotationError, match="line 2"):
        read_detections_csv(bad)


def test_real_camelyon17_annotation_is_three_itcs(shared_data) -> None:
    from qupath_camseg.annotations import read_asap_xml
    from qupath_camseg.evaluate import evaluation_mask_from_polygons

    objs = read_asap_xml(shared_data / "camelyon17" / "patient_004_node_4.xml")
    geoms = [o.geometry for o in objs]
    # at 0.243 µm/px the three outlines span at most 124 µm, so even grown by 75 µm they stay
    # under 275 µm (ITC); the nearest two are 325 µm apart vertically (> 75 µm): three regions
    spans_um = [max(g.bounds[2] - g.bounds[0], g.bounds[3] - g.bounds[1]) * 0.243 for g in geoms]
    assert len(geoms) == 3 and max(spans_um) < 125
    m = evaluation_mask_from_polygons(geoms, (20000, 100000), mpp=0.243)
    assert m.downsample == 32 and m.n_regions == 3 and m.n_lesions == 0
    c = geoms[0].representative_point()
    s = match_detections([(0.9, c.x, c.y), (0.8, 1000.0, 1000.0)], m)
    assert s.outcomes == ("itc", "fp") and s.tp_probs == ()


def test_matches_the_official_recipe_on_random_masks() -> None:
    """Against the official steps transcribed literally (whole-image EDT of ``255 - mask``,
    fill holes, 8-connected labels, ITC by ``major_axis_length``) at 0.243 µm/px, level 5."""
    from scipy import ndimage
    from skimage import measure

    rng = np.random.default_rng(0)
    for k in range(25):
        t = np.zeros((120, 150), bool)
        for _ in range(int(rng.integers(1, 6))):
            r, c = int(rng.integers(0, 120)), int(rng.integers(0, 150))
            t[r : r + int(rng.integers(1, 30)), c : c + int(rng.integers(1, 30))] = True
        if k % 3 == 0:  # a ring, to exercise hole filling
            t[40:80, 40:80] = True
            t[50:70, 50:70] = False
        distance = ndimage.distance_transform_edt(255 - t.astype(np.uint8) * 255)
        ref = measure.label(ndimage.binary_fill_holes(distance < 75 / (0.243 * 2**5 * 2)), connectivity=2)
        props = measure.regionprops(ref)
        ref_itc = {i + 1 for i in range(ref.max()) if props[i].axis_major_length < 275 / (0.243 * 2**5)}
        m = evaluation_mask(t, mpp=0.243, downsample=32)
        assert (m.labels == ref).all() and m.itc_labels == ref_itc, k
