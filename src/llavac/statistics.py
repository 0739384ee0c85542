"""How sure a score is: bootstrap intervals over test pairs, and paired comparisons of two runs.

The unit of resampling is the test pair, resampled within its own split (a stratified bootstrap:
each split keeps its size and its own pairs), and the statistic is the mean over splits of the
split's metric: exactly how the tables average (`metrics.score_splits`). Intervals are
percentile intervals (Efron & Tibshirani 1993, ch. 13) from `scipy.stats.bootstrap`; the
percentile method, unlike BCa, stays defined when every resample gives the same value (a split
answered all right yields the degenerate interval [100, 100]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest, bootstrap

from llavac.labels import LABELS

CONFIDENCE = 0.95
"""Coverage of every interval we report."""

N_RESAMPLES = 9999
"""Bootstrap resamples (scipy's default). With five other seeds the bounds moved by at most 0.15 point on the
embedded default's 390 test pairs: far below the interval's width."""

BOOTSTRAP_SEED = 2024
"""The resampling is seeded, so the same predictions always give the same interval."""

BATCH = 500
"""Resamples evaluated at once: bounds memory at 10 splits x 500 x ~450 pairs of indices."""

Metric = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(gold codes, predicted codes), each (..., n) -> the metric in % over the last axis, shape (...)."""


def label_codes(labels: pd.Series) -> np.ndarray:
    """Labels as integer codes: the index in LABELS, and len(LABELS) for an unparsed answer (None) or any other
    value, which is wrong for every gold label (as `metrics.INVALID` is)."""
    index = {label: code for code, label in enumerate(LABELS)}
    return np.array([index.get(label, len(LABELS)) for label in labels], dtype=np.int64)


def accuracy(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Accuracy in % over the last axis (scikit-learn's `accuracy_score`, vectorised over resamples)."""
    return 100.0 * (gold == predicted).mean(axis=-1)


def weighted_f1(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Weighted F1 in % over the last axis, as scikit-learn's `f1_score(labels=LABELS, average="weighted",
    zero_division=0)`: each class's F1 = 2 TP / (2 TP + FP + FN), weighted by its gold support; an
    invalid prediction (code len(LABELS)) is a false negative of its gold class only."""
    total = np.zeros(gold.shape[:-1])
    for code in range(len(LABELS)):
        is_gold, is_predicted = gold == code, predicted == code
        support = is_gold.sum(axis=-1)
        true_positive = (is_gold & is_predicted).sum(axis=-1)
        denominator = support + is_predicted.sum(axis=-1)
        total += support * np.where(denominator > 0, 2.0 * true_positive / np.maximum(denominator, 1), 0.0)
    return 100.0 * total / gold.shape[-1]


METRICS: Mapping[str, Metric] = {"accuracy": accuracy, "weighted_f1": weighted_f1}
"""The metrics that get intervals: the two the paper's tables report."""


def _split_mean_interval(
    splits: Sequence[Sequence[np.ndarray]], per_split: Callable[..., np.ndarray], seed: int
) -> tuple[float, float]:
    """Percentile interval of mean_k per_split(*columns of split k), test pairs resampled within each split.

    `splits[k]` holds aligned per-pair columns of split k (all resampled with the same indices).
    Each split is passed to `scipy.stats.bootstrap` as a sample of its own pair indices, which it
    resamples independently of the other splits' (`paired=False` across splits, of unequal sizes).
    """
    too_small = [len(columns[0]) for columns in splits if len(columns[0]) < 2]
    if too_small:
        raise ValueError(f"a bootstrap interval needs at least 2 test pairs per split; a split has {too_small[0]}")

    def statistic(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        values = [per_split(*(column[i] for column in columns)) for columns, i in zip(splits, indices, strict=True)]
        return np.mean(values, axis=0)

    result = bootstrap(
        [np.arange(len(columns[0])) for columns in splits], statistic, n_resamples=N_RESAMPLES, batch=BATCH,
        vectorized=True, confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def metric_interval(
    splits: Sequence[tuple[np.ndarray, np.ndarray]], metric: Metric, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95 % bootstrap interval of a metric's mean over splits, in %.

    `splits`: per split, (gold codes, predicted codes) of its test pairs (`label_codes`). Unit:
    the test pair, resampled within its split. All pairs right gives (100.0, 100.0).
    """
    return _split_mean_interval(splits, metric, seed)


def paired_difference_interval(
    splits: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], metric: Metric, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95 % paired-bootstrap interval of mean_k [metric(A) - metric(B)] over splits, in points.

    `splits`: per split, (gold, A's predictions, B's predictions) on the same test pairs in the same
    order. Unit: the test pair, resampled within its split; A and B are scored on the same
    resampled pairs (paired bootstrap), so what the two runs get right together cancels out.
    """
    return _split_mean_interval(splits, lambda gold, a, b: metric(gold, a) - metric(gold, b), seed)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, float | int]:
    """McNemar's exact test (McNemar 1947) of two runs' right/wrong answers on the same pairs.

    Only the discordant pairs count: b = A right and B wrong, c = A wrong and B right. Under the
    null hypothesis of equal accuracy b ~ Binomial(b + c, 1/2); the exact two-sided p-value is
    `scipy.stats.binomtest`'s (the exact McNemar test). With no discordant pair p = 1.
    """
    a_only = int(np.sum(a_correct & ~b_correct))
    b_only = int(np.sum(~a_correct & b_correct))
    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_right_b_wrong": a_only, "a_wrong_b_right": b_only, "p_value": float(p)}
