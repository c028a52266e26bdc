"""Calibration after training: the class priors a run saw vs. the tissue's, and the temperature fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qupath_camseg.annotations import QPObject
from qupath_camseg.train.calibrate import EXHAUSTIVE_FRACTION, fit_temperature, fit_temperature_and_bias
from qupath_camseg.train.datasets import TrainTileDataset
from qupath_camseg.train.images import IGNORE_INDEX, annotated_fraction, prepare_image
from qupath_camseg.train.priors import (
    sampled_label_counts,
    tissue_label_counts,
    training_priors,
)
from qupath_camseg.wsi import TissueMask

MPP = 2.0
TILE = 64  # = the priors' label raster, so their counts are the training labels' exactly


@pytest.fixture(scope="module")
def slide_image(tmp_path_factory: pytest.TempPathFactory):
    from qupath_camseg.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("cal") / "s.tif"
    truth = write_synthetic_slide(path, width=1024, height=1024, seed=4, mpp=MPP, tile_px=256)
    objs = [QPObject(g, classification="Tumor") for g in truth.tumor.geoms]
    img = prepare_image(name="s.tif", entry_id="1", path=path, objs=objs, class_to_label={"Tumor": 1},
                        background_classes=[], unannotated="negative", mpp=MPP, tile_px=TILE, min_tissue=0.25)
    return img, truth


def test_sampled_prior_counts_the_labels_training_drew(slide_image) -> None:
    img, _ = slide_image
    ds = TrainTileDataset([img], mpp=MPP, tile_px=TILE, seed=3)  # default augmentation: dihedral too
    per_epoch, epochs = 24, 3
    want = np.zeros(2)
    for g in range(per_epoch * epochs):  # every tile the run drew, read as training reads it
        label = ds[divmod(g, per_epoch)][1].numpy()
        want += np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=2)[:2]
    got, n = sampled_label_counts(ds, tiles_drawn=per_epoch * epochs, tiles_per_epoch=per_epoch, n_channels=2,
                                  max_tiles=10_000, seed=3)
    assert n == per_epoch * epochs and got.tolist() == want.tolist()
    # a subset of the keys estimates the same fractions
    part, n_part = sampled_label_counts(ds, tiles_drawn=per_epoch * epochs, tiles_per_epoch=per_epoch,
                                        n_channels=2, max_tiles=40, seed=3)
    assert n_part == 40 and abs(part[1] / part.sum() - want[1] / want.sum()) < 0.12


def test_oversampling_shows_in_the_priors_and_the_shift_follows_the_formula(slide_image) -> None:
    img, truth = slide_image
    ds = TrainTileDataset([img], mpp=MPP, tile_px=TILE, seed=0)
    priors = training_priors(ds, tiles_drawn=400, tiles_per_epoch=100, n_channels=2)
    assert priors is not None
    # tumour-centred tiles: the sampled tumour share is far above the tissue's
    assert priors.sampled[1] > 2 * priors.true[1]
    # the tissue prior: the tumour share of the tissue tiles (glass at their edges included)
    counts, n = tissue_label_counts([img], n_channels=2, max_tiles=10_000, seed=0)
    assert n == len(img.tissue_xy) and priors.true_tiles == min(n, 2048)
    share = truth.tumor.area / truth.tissue.area
    assert 0.5 * share < counts[1] / counts.sum() < 1.1 * share
    # log(true prior odds / sampled prior odds) = the shift of the tumour-vs-background logit
    def odds(p: list[float]) -> float:
        return p[1] / p[0]

    assert priors.logit_bias[1] - priors.logit_bias[0] == pytest.approx(np.log(odds(priors.true) / odds(priors.sampled)))


@pytest.mark.parametrize(("t_true", "bias"), [(0.2, [0.0, 0.0]), (2.5, [0.3, -1.1]), (1.0, [0.0, -0.5, 0.4])])
def test_fit_temperature_recovers_the_temperature_that_made_the_labels(t_true: float, bias: list[float]) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(60_000, len(bias), generator=gen) * 3
    probs = torch.softmax(logits / t_true + torch.tensor(bias), dim=1)
    labels = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    t = fit_temperature(logits, labels, bias)
    assert t == pytest.approx(t_true, rel=0.05)


@pytest.mark.parametrize(("t_true", "bias"), [(0.2, [0.0, -1.9]), (2.5, [0.0, 1.1]), (1.0, [0.0, -0.5, 0.4])])
def test_fit_temperature_and_bias_recovers_both(t_true: float, bias: list[float]) -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(60_000, len(bias), generator=gen) * 3
    probs = torch.softmax(logits / t_true + torch.tensor(bias), dim=1)
    labels = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    t, b = fit_temperature_and_bias(logits, labels)
    assert t == pytest.approx(t_true, rel=0.05)
    assert b[0] == 0.0 and b[1:] == pytest.approx(bias[1:], abs=0.1)
    # the temperature alone cannot move the threshold: its fit leaves a worse likelihood
    t_only = fit_temperature(logits, labels, [0.0] * len(bias))

    def nll(temp: float, b_: list[float]) -> float:
        return float(torch.nn.functional.cross_entropy(logits.double() / temp + torch.tensor(b_).double(), labels))

    assert nll(t, b) <= nll(t_only, [0.0] * len(bias)) + 1e-9


def test_annotated_fraction_tells_a_complete_outline_from_a_partial_one(slide_image) -> None:
    img, truth = slide_image
    tissue = TissueMask(np.zeros((4, 4), bool), 256.0)
    assert annotated_fraction([], tissue) == 1.0  # no tissue: nothing left to outline
    mask = _tissue(img)
    tumour = [(g, 1) for g in truth.tumor.geoms]
    normal = [(truth.tissue.buffer(64).difference(truth.tumor), 0)]
    share = truth.tumor.area / truth.tissue.area
    assert annotated_fraction([], mask) == 0.0
    assert annotated_fraction(tumour, mask) == pytest.approx(share, abs=0.1)
    assert annotated_fraction(tumour + normal, mask) >= EXHAUSTIVE_FRACTION
    assert img.annotated_fraction == pytest.approx(annotated_fraction(img.shapes, mask))


def _tissue(img) -> TissueMask:
    from qupath_camseg.wsi import detect_tissue, open_slide

    with open_slide(img.path) as slide:
        return detect_tissue(slide)
