"""Calibration: ECE against a hand-computed case, Brier by its definition, temperature scaling recovering a
known distortion, selective-prediction curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from llavac.calibration import (
    brier,
    calibrate,
    coverage_rows,
    expected_calibration_error,
    fit_temperature,
    majority_share,
    nll,
    reliability_rows,
    tempered,
)
from llavac.labels import LABELS

CONFIDENCE = np.array([0.95, 0.95, 0.55, 0.55, 0.55, 0.35])
CORRECT = np.array([True, False, True, True, False, False])


def test_ece_of_a_hand_computed_case():
    # 15 bins of width 1/15: 0.95 falls in (14/15, 1], 0.55 in (8/15, 9/15], 0.35 in (5/15, 6/15].
    # bin accuracies 1/2, 2/3, 0 against confidences 0.95, 0.55, 0.35, weighted by 2, 3, 1 of 6 pairs:
    expected = (2 * abs(0.5 - 0.95) + 3 * abs(2 / 3 - 0.55) + 1 * abs(0.0 - 0.35)) / 6
    assert expected == pytest.approx(0.2666667, abs=1e-7)
    assert expected_calibration_error(CONFIDENCE, CORRECT) == pytest.approx(expected)
    rows = reliability_rows(CONFIDENCE, CORRECT)
    assert [(r["confidence"], r["accuracy"], r["pairs"]) for r in rows] == [
        (pytest.approx(0.35), 0.0, 1), (pytest.approx(0.55), pytest.approx(2 / 3), 3), (pytest.approx(0.95), 0.5, 2)]


def test_perfectly_calibrated_bins_have_zero_ece():
    confidence = np.array([0.5, 0.5, 1.0, 1.0])
    assert expected_calibration_error(confidence, np.array([True, False, True, True])) == 0.0


def test_brier_is_the_squared_distance_to_the_one_hot_gold():
    probs = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    gold = pd.Series(["positive", "neutral"])
    # (0.2² + 0.3² + 0.5²) and (0.6² + 0.7² + 0.1²), averaged
    assert brier(probs, gold) == pytest.approx(((0.04 + 0.09 + 0.25) + (0.36 + 0.49 + 0.01)) / 2)


def test_temperature_scaling_recovers_a_known_over_confidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 3))
    truth = softmax(logits, axis=1)
    gold = pd.Series([LABELS[rng.choice(3, p=p)] for p in truth])
    over_confident = softmax(3.0 * logits, axis=1)  # the model's logits are 3x too large
    temperature = fit_temperature(over_confident, gold)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert nll(tempered(over_confident, temperature), gold) < nll(over_confident, gold)
    np.testing.assert_allclose(tempered(over_confident, temperature), truth, atol=0.05)
    # scaling never changes the most probable label
    assert (tempered(over_confident, temperature).argmax(1) == over_confident.argmax(1)).all()


def test_no_temperature_is_fitted_when_every_label_is_right():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    right = pd.Series(["negative", "positive"])
    assert fit_temperature(probs, right) == 1.0  # the NLL has no minimum: it falls all the way to T -> 0
    one_wrong = pd.Series(["negative", "neutral"])
    assert fit_temperature(probs, one_wrong) > 1.0  # a confident error: flatten


def test_coverage_keeps_the_most_confident_pairs_first():
    rows = coverage_rows(np.array([0.7, 0.9, 0.6, 0.8]), np.array([True, True, True, False]))
    assert [r["coverage"] for r in rows] == [0.25, 0.5, 0.75, 1.0]
    assert [r["accuracy"] for r in rows] == [1.0, 0.5, pytest.approx(2 / 3), 0.75]


def test_the_majority_share_is_the_accuracy_of_always_answering_the_most_frequent_label():
    assert majority_share(pd.Series(["neutral", "positive", "neutral", "negative", "neutral"])) == 0.6


def test_a_split_without_validation_predictions_names_the_stage():
    frame = pd.DataFrame({"text_label": ["positive"]})
    with pytest.raises(FileNotFoundError, match=r"split\(s\) \[2\].*dvc repro predict"):
        calibrate({1: frame, 2: frame}, {1: frame})
