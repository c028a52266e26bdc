"""Our FROC against the Camelyon16 evaluation script on random multi-slide cases.

``_official_*`` below transcribe ``Evaluation_FROC.py`` (Babak Ehteshami Bejnordi, 2016, the
challenge's published evaluation code): ``compute_FP_TP_Probs``, ``computeFROC`` and the score's
``np.interp(eval_threshold, total_FPs[::-1], total_sensitivity[::-1])``, statement by statement
(file reading and plotting left out; the evaluation mask is the one ``evaluation_mask`` builds,
checked against the script's recipe in ``test_froc.py``). Its two quirks our code fixes on purpose
(``lesion_froc``'s docstring) are kept here, and the random cases stay where they do not matter:
probabilities are multiples of 1/64 (exact in float32, the script's TP dtype) and every case has
a missed lesion or an ITC, so the script's ``all_probs[1:]`` drops the 0.0 and nothing else.
"""

from __future__ import annotations

import bisect

import numpy as np
import pytest

from qupath_camseg.evaluate import evaluation_mask, froc, match_detections

LEVEL = 5
MPP = 0.243  # the script's L0_RESOLUTION: downsample 2**5 = 32
FP_RATES = [0.25, 0.5, 1, 2, 4, 8]


# ---------------------------------------------------------------- the script, transcribed
def _official_fp_tp_probs(ycorr, xcorr, probs, is_tumor, evaluation_mask, isolated_tumor_cells, level):
    """``compute_FP_TP_Probs`` (summaries left out: they do not enter the score)."""
    max_label = np.amax(evaluation_mask)
    fp_probs = []
    tp_probs = np.zeros((max_label,), dtype=np.float32)
    if is_tumor:
        for i in range(0, len(xcorr)):  # noqa: PIE808 - as written in the script
            hitted_label = evaluation_mask[int(ycorr[i] / pow(2, level)), int(xcorr[i] / pow(2, level))]
            if hitted_label == 0:
                fp_probs.append(probs[i])
            elif hitted_label not in isolated_tumor_cells:  # noqa: SIM102 - as written in the script
                if probs[i] > tp_probs[hitted_label - 1]:  # noqa: PLR1730
                    tp_probs[hitted_label - 1] = probs[i]
    else:
        for i in range(0, len(xcorr)):  # noqa: PIE808
            fp_probs.append(probs[i])
    num_of_tumors = max_label - len(isolated_tumor_cells)
    return fp_probs, tp_probs, num_of_tumors


def _official_froc(froc_data, *, drop_lowest=True):
    """``computeFROC``; ``drop_lowest=False`` keeps ``all_probs[0]`` (our fix, for one test)."""
    unlisted_fps = [item for sublist in froc_data[1] for item in sublist]
    unlisted_tps = [item for sublist in froc_data[2] for item in sublist]
    total_fps, total_tps = [], []
    all_probs = sorted(set(unlisted_fps + unlisted_tps))
    for thresh in all_probs[1:] if drop_lowest else all_probs:
        total_fps.append((np.asarray(unlisted_fps) >= thresh).sum())
        total_tps.append((np.asarray(unlisted_tps) >= thresh).sum())
    total_fps.append(0)
    total_tps.append(0)
    total_fps = np.asarray(total_fps) / float(len(froc_data[0]))
    total_sensitivity = np.asarray(total_tps) / float(sum(froc_data[3]))
    return total_fps, total_sensitivity


def _official_score(total_fps, total_sensitivity):
    eval_tps = np.interp(FP_RATES, total_fps[::-1], total_sensitivity[::-1])
    return float(np.mean(eval_tps)), eval_tps


# ---------------------------------------------------------------- random cases
def _random_slide(rng: np.random.Generator):
    """``(truth mask or None, detections [(prob, x, y)])`` at level 0 (x, y integers, as the
    script's CSV reader makes them), on a 96 × 128 evaluation-mask grid (32 level-0 px each)."""
    h, w = 96, 128
    truth = None
    if rng.random() < 0.7:
        truth = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 6))):
            r, c = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
            size = int(rng.choice([1, 2, 20, 30, 45]))  # small ones become ITCs
            truth[r:r + size, c:c + size] = True
    dets = []
    for _ in range(int(rng.integers(0, 12))):
        prob = int(rng.integers(1, 65)) / 64  # exact in float32
        if truth is not None and truth.any() and rng.random() < 0.5:  # aim at tumour
            rr, cc = np.argwhere(truth)[int(rng.integers(truth.sum()))]
        else:
            rr, cc = int(rng.integers(0, h)), int(rng.integers(0, w))
        dets.append((prob, int(cc * 32 + rng.integers(0, 32)), int(rr * 32 + rng.integers(0, 32))))
    return truth, dets


def _both(slides):
    """Our FROC result and the script's ``FROC_data`` for the same slides."""
    ours, froc_data = [], [[], [], [], []]
    for k, (truth, dets) in enumerate(slides):
        mask = evaluation_mask(truth, mpp=MPP, downsample=32) if truth is not None else None
        ours.append(match_detections(dets, mask, name=str(k)))
        labels = mask.labels if mask is not None else 0
        itc = sorted(mask.itc_labels) if mask is not None else []
        fp, tp, n = _official_fp_tp_probs([d[2] for d in dets], [d[1] for d in dets], [d[0] for d in dets],
                                          mask is not None, labels, itc, LEVEL)
        for lst, v in zip(froc_data, (str(k), fp, tp, n)):
            lst.append(v)
    return froc(ours), froc_data


def _step_reading(fps_decreasing, sens_decreasing):
    """The reading ``froc_score`` used before (first point at or above each rate, ``bisect_left``)."""
    fps, sens = list(fps_decreasing[::-1]), list(sens_decreasing[::-1])
    return float(np.mean([sens[min(bisect.bisect_left(fps, r), len(fps) - 1)] for r in FP_RATES]))


def test_curve_and_score_equal_the_challenge_script_on_random_multi_slide_cases() -> None:
    rng = np.random.default_rng(2016)
    compared = step_differs = 0
    for case in range(300):
        slides = [_random_slide(rng) for _ in range(int(rng.integers(1, 7)))]
        result, froc_data = _both(slides)
        all_tps = [p for tps in froc_data[2] for p in tps]
        if sum(froc_data[3]) == 0 or 0.0 not in all_tps:
            continue  # no lesion at all (the script divides by zero), or nothing missed (its [1:] quirk)
        fps, sens = _official_froc(froc_data)
        score, at = _official_score(fps, sens)
        assert np.array_equal(result.fps_per_slide, fps) and np.array_equal(result.sensitivity, sens), case
        assert result.sensitivity_at == pytest.approx(tuple(at), abs=1e-12), case
        assert result.score == pytest.approx(score, abs=1e-12), case
        compared += 1
        step_differs += abs(_step_reading(fps, sens) - score) > 1e-9
    assert compared >= 150, compared
    # the cases exercise the interpolation: the old step reading scores them differently
    assert step_differs >= 20, step_differs


def test_when_no_lesion_is_missed_the_lowest_threshold_is_kept() -> None:
    """The script's ``all_probs[1:]`` drops the lowest probability even when it is a real
    detection; we drop only 0.0 (``lesion_froc`` docstring), i.e. the script without that slice."""
    t = np.zeros((96, 128), bool)
    t[10:50, 10:50] = True  # one lesion, hit at 0.5; one FP at 0.25 on another slide
    slides = [(t, [(0.5, 30 * 32, 30 * 32)]), (None, [(0.25, 100, 100)])]
    result, froc_data = _both(slides)
    fps_script, _ = _official_froc(froc_data)
    assert list(fps_script) == [0.0, 0.0]  # the FP's threshold 0.25 was dropped
    fps, sens = _official_froc(froc_data, drop_lowest=False)
    assert list(result.fps_per_slide) == list(fps) == [0.5, 0.0, 0.0]
    assert result.score == pytest.approx(_official_score(fps, sens)[0])
