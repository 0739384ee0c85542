"""Intervals and paired tests: scikit-learn's metrics, seeded scipy bootstrap, exact McNemar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn.metrics import accuracy_score, f1_score

from llavac.labels import LABELS
from llavac.statistics import (
    accuracy,
    label_codes,
    mcnemar_exact,
    metric_interval,
    paired_difference_interval,
    weighted_f1,
)


def random_split(rng: np.random.Generator, n: int, right: float) -> tuple[np.ndarray, np.ndarray]:
    """Gold codes and predictions that are right with probability `right`, else any code incl. invalid (3)."""
    gold = rng.integers(0, len(LABELS), n)
    other = rng.integers(0, len(LABELS) + 1, n)
    return gold, np.where(rng.random(n) < right, gold, other)


def test_codes_map_unparsed_and_unknown_answers_to_invalid():
    assert label_codes(pd.Series(["negative", "positive", None, "neutral"], dtype=object)).tolist() == [0, 2, 3, 1]


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    gold, predicted = random_split(rng, 57, 0.5)
    names = np.array([*LABELS, "unparsed"], dtype=object)
    expected_f1 = 100 * f1_score(names[gold], names[predicted], labels=list(LABELS), average="weighted", zero_division=0)
    assert weighted_f1(gold, predicted) == pytest.approx(expected_f1)
    assert accuracy(gold, predicted) == pytest.approx(100 * accuracy_score(names[gold], names[predicted]))
    # over a batch of resamples at once, row by row the same
    batch = rng.integers(0, 57, (4, 57))
    rows = [weighted_f1(gold[i], predicted[i]) for i in batch]
    assert weighted_f1(gold[batch], predicted[batch]) == pytest.approx(rows)


def test_interval_holds_the_mean_over_splits_and_is_seeded():
    rng = np.random.default_rng(0)
    splits = [random_split(rng, n, 0.7) for n in (45, 52, 40)]
    mean = np.mean([accuracy(g, p) for g, p in splits])
    low, high = metric_interval(splits, accuracy)
    assert low < mean < high
    assert 5 < high - low < 25  # ~137 pairs at 70 %: a standard error near 4 points
    assert metric_interval(splits, accuracy) == (low, high)
    assert metric_interval(splits, accuracy, seed=1) != (low, high)


def test_more_pairs_narrow_the_interval():
    rng = np.random.default_rng(1)
    small = metric_interval([random_split(rng, 40, 0.7)], weighted_f1)
    large = metric_interval([random_split(rng, 1600, 0.7)], weighted_f1)
    assert (large[1] - large[0]) < (small[1] - small[0]) / 3


def test_a_split_answered_all_right_gives_a_degenerate_interval():
    gold = np.array([0, 1, 2, 2, 1, 0, 2])
    assert metric_interval([(gold, gold)], accuracy) == (100.0, 100.0)
    assert metric_interval([(gold, gold)], weighted_f1) == (100.0, 100.0)
    # one perfect split among others does not break the others' spread
    rng = np.random.default_rng(2)
    low, high = metric_interval([(gold, gold), random_split(rng, 30, 0.5)], accuracy)
    assert low < high <= 100.0


def test_a_one_pair_split_is_refused():
    with pytest.raises(ValueError, match="at least 2 test pairs"):
        metric_interval([(np.array([0]), np.array([0]))], accuracy)


def test_paired_interval_is_narrower_than_the_runs_own_when_they_agree_mostly():
    rng = np.random.default_rng(3)
    gold, a = random_split(rng, 400, 0.75)
    b = a.copy()
    flip = rng.choice(400, 12, replace=False)
    b[flip] = (gold[flip] + 1) % 3  # B is A with 12 more mistakes (some were already wrong)
    difference = accuracy(gold, a) - accuracy(gold, b)
    low, high = paired_difference_interval([(gold, a, b)], accuracy)
    assert low <= difference <= high
    own_low, own_high = metric_interval([(gold, a)], accuracy)
    assert high - low < (own_high - own_low) / 2
    assert paired_difference_interval([(gold, a, a)], weighted_f1) == (0.0, 0.0)


def test_mcnemar_exact_is_the_two_sided_binomial_on_discordant_pairs():
    a = np.array([True] * 10 + [False] * 2 + [True] * 30 + [False] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 30 + [False] * 5)
    result = mcnemar_exact(a, b)
    assert (result["a_right_b_wrong"], result["a_wrong_b_right"]) == (10, 2)
    assert result["p_value"] == pytest.approx(2 * binom.cdf(2, 12, 0.5))
    assert mcnemar_exact(a, a)["p_value"] == 1.0
