"""Calibration of the label probabilities: one temperature per label, fitted on validation, and its measures.

A fine-tuned classifier's probabilities are often over- or under-confident. Temperature scaling
(Guo et al., 2017) divides each label's log-probabilities by one number fitted on held-out data; it
never changes the most probable label, only how sure the model says it is. Here the logits are the
log marginals of each label (text, image, multimodal), one temperature per label and per split,
fitted on the split's validation pairs and applied to its test pairs. The measures: NLL and Brier
score (scikit-learn) and expected calibration error (ECE, 15 equal-width bins of top-label
confidence, computed here: scikit-learn has no multiclass ECE).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import softmax
from sklearn.metrics import brier_score_loss, log_loss

from llavac.labels import LABELS, TASKS

N_BINS = 15
LOG_TEMPERATURE_BOUNDS = (-4.0, 4.0)
"""Temperatures from e^-4 (sharpen 55x) to e^4 (flatten 55x): wide enough for any trained model."""
TINY = 1e-300
"""Floor for a probability before its log: a probability that underflowed to 0 stays finite."""


def probabilities(frame: pd.DataFrame, task: str) -> np.ndarray:
    """The `p_<task>` marginals of a predictions frame as an (n, 3) array, columns in `LABELS` order."""
    return np.array([[row[label] for label in LABELS] for row in frame[f"p_{task}"]], dtype=np.float64)


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """`probs` with their log-probabilities divided by `temperature`, renormalised."""
    return softmax(np.log(np.maximum(probs, TINY)) / temperature, axis=1)


def nll(probs: np.ndarray, gold: pd.Series) -> float:
    """Mean negative log-likelihood of the gold labels (nats), scikit-learn's `log_loss`."""
    return float(log_loss(gold, probs, labels=list(LABELS)))


def brier(probs: np.ndarray, gold: pd.Series) -> float:
    """Multiclass Brier score: mean over pairs of the squared distance to the one-hot gold, in [0, 2]."""
    return float(brier_score_loss(gold, probs, labels=list(LABELS)))


def fit_temperature(probs: np.ndarray, gold: pd.Series) -> float:
    """The temperature that minimises the NLL of `gold` under `tempered(probs, T)` (searched on log T).

    When the most probable label is right for every pair, the NLL keeps falling as T goes to 0: there
    is no minimum, and no evidence of miscalibration either, so the probabilities are left as they are
    (T = 1) rather than sharpened to the search bound.
    """
    if confidence_and_correct(probs, gold)[1].all():
        return 1.0
    result = minimize_scalar(lambda log_t: nll(tempered(probs, float(np.exp(log_t))), gold),
                             bounds=LOG_TEMPERATURE_BOUNDS, method="bounded")
    return float(np.exp(result.x))


def confidence_and_correct(probs: np.ndarray, gold: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's top-label probability, and whether that label is the gold one."""
    predicted = np.array(LABELS)[probs.argmax(axis=1)]
    return probs.max(axis=1), predicted == np.asarray(gold)


def bin_index(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """The equal-width bin of each confidence: bin b holds (b/n, (b+1)/n], bin 0 also holds 0."""
    return np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE: the pair-weighted mean over bins of |accuracy - mean confidence|, as a fraction."""
    bins = bin_index(confidence, n_bins)
    gap = 0.0
    for b in np.unique(bins):
        members = bins == b
        gap += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(gap / len(confidence))


def reliability_rows(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, float]]:
    """One row per non-empty bin: mean confidence, accuracy and pair count (a reliability diagram)."""
    bins = bin_index(confidence, n_bins)
    return [
        {"confidence": float(confidence[bins == b].mean()), "accuracy": float(correct[bins == b].mean()),
         "pairs": int((bins == b).sum())}
        for b in np.unique(bins)
    ]


def coverage_rows(confidence: np.ndarray, correct: np.ndarray) -> list[dict[str, float]]:
    """Accuracy of the most confident pairs against the share kept (selective prediction), one row per share."""
    order = np.argsort(-confidence, kind="stable")
    kept_correct = np.cumsum(correct[order])
    n = len(order)
    return [{"coverage": (k + 1) / n, "accuracy": float(kept_correct[k] / (k + 1))} for k in range(n)]


def majority_share(gold: pd.Series) -> float:
    """The share of the most frequent gold label: the accuracy of always answering it (a fraction)."""
    return float(gold.value_counts(normalize=True).max())


DIAGONAL_ROWS: list[dict[str, float]] = [{"confidence": 0.0, "accuracy": 0.0}, {"confidence": 1.0, "accuracy": 1.0}]
"""A perfectly calibrated model's reliability curve, as a plot data file DVC's plots can draw."""


def calibrate(
    test: Mapping[int, pd.DataFrame], validation: Mapping[int, pd.DataFrame]
) -> tuple[dict[int, dict[str, float]], dict[str, tuple[np.ndarray, np.ndarray, pd.Series]]]:
    """Each split's temperatures (fitted on its validation pairs), and per label the test probabilities
    of all splits pooled, before and after, with their gold labels."""
    missing = sorted(set(test) - set(validation))
    if missing:
        raise FileNotFoundError(f"no validation predictions for split(s) {missing}: re-run `dvc repro predict`")
    temperatures = {
        k: {t: fit_temperature(probabilities(validation[k], t), validation[k][f"{t}_label"]) for t in TASKS}
        for k in test
    }
    pooled = {}
    for task in TASKS:
        before = np.concatenate([probabilities(frame, task) for frame in test.values()])
        after = np.concatenate([tempered(probabilities(frame, task), temperatures[k][task]) for k, frame in test.items()])
        gold = pd.concat([frame[f"{task}_label"] for frame in test.values()], ignore_index=True)
        pooled[task] = (before, after, gold)
    return temperatures, pooled


def calibration_scores(
    validation: Mapping[int, pd.DataFrame],
    temperatures: Mapping[int, Mapping[str, float]],
    pooled: Mapping[str, tuple[np.ndarray, np.ndarray, pd.Series]],
) -> dict[str, dict[str, float]]:
    """Per label: test NLL, Brier and ECE (%) before and after, and the validation NLL the fit lowered."""
    scores = {}
    for task in TASKS:
        before, after, gold = pooled[task]
        val_before = np.concatenate([probabilities(frame, task) for frame in validation.values()])
        val_after = np.concatenate([tempered(probabilities(f, task), temperatures[k][task]) for k, f in validation.items()])
        val_gold = pd.concat([frame[f"{task}_label"] for frame in validation.values()], ignore_index=True)
        block = {}
        for name, probs in (("before", before), ("after", after)):
            block[f"nll_{name}"] = nll(probs, gold)
            block[f"brier_{name}"] = brier(probs, gold)
            block[f"ece_{name}"] = 100.0 * expected_calibration_error(*confidence_and_correct(probs, gold))
        block["validation_nll_before"] = nll(val_before, val_gold)
        block["validation_nll_after"] = nll(val_after, val_gold)
        scores[task] = block
    return scores
