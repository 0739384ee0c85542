"""Scores of the three predicted labels: per split, mean, spread and 95 % interval over splits, confusion matrices.

The paper reports accuracy and weighted F1 of the multimodal label, averaged over the splits of a
protocol; we compute those with scikit-learn for all three labels, plus macro F1, per-class
precision/recall/F1 and the rate of answers that could not be parsed. An unparsed answer is never
dropped: it becomes the label ``INVALID``, which is wrong for every pair, so it lowers accuracy and
the recall of the gold class while the pair still counts in the support of weighted F1. The intervals
are `statistics.metric_interval`'s: test pairs resampled within each split.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)

from llavac.labels import LABELS, TASKS
from llavac.split_folders import split_files, split_number
from llavac.statistics import METRICS, label_codes, metric_interval

INVALID = "invalid"
"""Stand-in for an unparsed answer: not in LABELS, so scikit-learn counts it wrong for every pair."""

SPLIT_METRICS: tuple[str, ...] = ("accuracy", "weighted_f1", "macro_f1")
"""Metrics reported per split and as mean with `<name>_std` over splits."""


PER_CLASS: tuple[str, ...] = ("precision", "recall", "f1")
"""Per-class metrics, each the mean over splits."""


def _percent(x: float) -> float:
    return 100.0 * float(x)


def rounded(tree: Any, digits: int = 2) -> Any:
    """Every float of a nested dict to `digits` decimals (2: the precision of the paper's tables), short in
    `dvc metrics show`.

    Applied once, to the finished scores, so means and deltas are computed from unrounded values.
    """
    if isinstance(tree, dict):
        return {key: rounded(value, digits) for key, value in tree.items()}
    return round(tree, digits) if isinstance(tree, float) else tree


def read_split(lines: Iterable[str], path: str) -> pd.DataFrame:
    """One predictions file (its `lines`, read from `path`) as a frame with `id`, gold `<task>_label`,
    `pred_<task>` (None if unparsed) and the `p_<task>` label probabilities.

    The file is our own predict stage's output, so a malformed record means that stage is broken;
    scoring around it would change the denominator silently, hence an error, not a skip.
    """
    columns = ["id", *(f"{t}_label" for t in TASKS), *(f"pred_{t}" for t in TASKS), *(f"p_{t}" for t in TASKS)]
    records = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e}); re-run `dvc repro predict`") from e
        missing = [c for c in columns if c not in record]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}; re-run `dvc repro predict`")
        for task in TASKS:
            if record[f"{task}_label"] not in LABELS:
                raise ValueError(f"{where}: gold {task}_label={record[f'{task}_label']!r} is not one of {LABELS}")
            if record[f"pred_{task}"] is not None and record[f"pred_{task}"] not in LABELS:
                raise ValueError(
                    f"{where}: pred_{task}={record[f'pred_{task}']!r} is neither one of {LABELS} nor null"
                )
            probs = record[f"p_{task}"]
            if not isinstance(probs, dict) or sorted(probs) != list(LABELS) or abs(sum(probs.values()) - 1) > 1e-6:
                raise ValueError(f"{where}: p_{task}={probs!r} is not a distribution over {LABELS}")
        records.append({c: record[c] for c in columns})
    if not records:
        raise ValueError(f"{path}: no predictions; re-run `dvc repro predict`")
    frame = pd.DataFrame.from_records(records, columns=columns)
    duplicated = frame["id"][frame["id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{path}: pair ids predicted more than once: {duplicated[:5]}")
    return frame


def load_predictions(pred_dir: Path) -> dict[int, pd.DataFrame]:
    """Every split's predictions, keyed by split number, from `<pred_dir>/<k>.jsonl`.

    Files whose stem is not a number are not predictions of a split and are left alone.
    """
    splits = {}
    for path in split_files(pred_dir, ".jsonl", "predict"):
        with open(path, encoding="utf-8") as f:
            splits[split_number(path)] = read_split(f, str(path))
    return splits


def invalid_as_label(predictions: pd.Series) -> pd.Series:
    """Predicted labels with every unparsed answer (null) replaced by INVALID."""
    return predictions.fillna(INVALID)


def occurring_labels(gold: pd.Series, predicted: pd.Series) -> list[str]:
    """The labels of LABELS (in its order) that occur in `gold` or in `predicted` of one split."""
    seen = set(gold) | set(predicted)
    return [label for label in LABELS if label in seen]


def task_scores(gold: pd.Series, predicted: pd.Series) -> dict[str, Any]:
    """Accuracy, weighted and macro F1, per-class P/R/F1 and invalid rate of one label on one split, in % (unrounded).

    `labels=` is the labels of LABELS that occur in this split's gold or predictions (`occurring_labels`):
    INVALID stays out of the averages as a class of its own while every gold pair stays in the support,
    so an unparsed answer costs exactly what a wrong label costs; and a label neither in the gold nor
    predicted on this split (no `negative` pair, none predicted) has undefined P/R/F1, so it is left out
    of macro F1 (perfect predictions score 100, not 66.67) and its per-class entry is None.
    `zero_division=0` remains for a label that occurs on one side only: one never predicted has precision
    0, one predicted but absent from the gold has recall 0 (scikit-learn's semantics for a real miss).
    Where all three labels occur (every committed split), this equals `labels=LABELS`.
    """
    y_pred = invalid_as_label(predicted)
    labels = occurring_labels(gold, y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(gold, y_pred, labels=labels, zero_division=0)
    found = {
        label: {"precision": _percent(p), "recall": _percent(r), "f1": _percent(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }
    absent = {"precision": None, "recall": None, "f1": None, "support": 0}
    return {
        "accuracy": _percent(accuracy_score(gold, y_pred)),
        "weighted_f1": _percent(f1_score(gold, y_pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": _percent(f1_score(gold, y_pred, labels=labels, average="macro", zero_division=0)),
        "invalid_rate": _percent((y_pred == INVALID).mean()),
        "per_class": {label: found.get(label, absent) for label in LABELS},
    }


def mean_where_defined(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None (the splits where a class occurs); None if there are none."""
    defined = [value for value in values if value is not None]
    return float(np.mean(defined)) if defined else None


def where_labels_differ(splits: Mapping[int, pd.DataFrame]) -> dict[str, Any]:
    """The test pairs whose text and image labels differ, pooled over splits: each side's accuracy there (in %)
    and how often its prediction is the other side's gold label.

    Where the two labels agree, a model can answer one side from the other (the image's colours for the
    text label) and still be right; only here does a side's accuracy show that the model reads that side.
    A model that copies the image's label into the text's scores ~0 and ~100 % here, however well it scores
    overall. An unparsed answer counts as wrong and as no copy.
    """
    frame = pd.concat(splits.values())
    differ = frame[frame["text_label"] != frame["image_label"]]
    if differ.empty:
        return {"test_pairs": 0}
    return {
        "test_pairs": len(differ),
        "text_accuracy": _percent((differ["pred_text"] == differ["text_label"]).mean()),
        "image_accuracy": _percent((differ["pred_image"] == differ["image_label"]).mean()),
        "text_predicted_as_image_label": _percent((differ["pred_text"] == differ["image_label"]).mean()),
        "image_predicted_as_text_label": _percent((differ["pred_image"] == differ["text_label"]).mean()),
    }


def _std(values: list[float]) -> float:
    """Population standard deviation (ddof=0): the spread of the splits we have, and 0 for one split."""
    return float(np.std(values, ddof=0))


def score_splits(splits: Mapping[int, pd.DataFrame]) -> dict[str, Any]:
    """The content of metrics/scores.json.

    Per label: accuracy, weighted and macro F1 as the mean over splits (the paper's averaging) with
    `<metric>_std` (population std over splits); accuracy and weighted F1 with their 95 % bootstrap
    interval `<metric>_ci_low`, `<metric>_ci_high` (`statistics.metric_interval`); per-class precision/recall/F1 as the mean over
    the splits where that class occurs in the gold or the predictions (`task_scores`; None where it occurs in
    none), with the support summed;
    `invalid_rate` over all test pairs pooled; `where_labels_differ` (`where_labels_differ`). `splits.<k>`
    keeps each split's own numbers.
    """
    per_split = {
        k: {t: task_scores(frame[f"{t}_label"], frame[f"pred_{t}"]) for t in TASKS} for k, frame in splits.items()
    }
    n_pairs = {k: len(frame) for k, frame in splits.items()}
    total = sum(n_pairs.values())
    scores: dict[str, Any] = {"n_splits": len(splits), "n_test_pairs": total}
    for task in TASKS:
        label_metrics: dict[str, Any] = {}
        for metric in SPLIT_METRICS:
            values = [s[task][metric] for s in per_split.values()]
            label_metrics[metric], label_metrics[f"{metric}_std"] = float(np.mean(values)), _std(values)
        codes = [(label_codes(frame[f"{task}_label"]), label_codes(frame[f"pred_{task}"])) for frame in splits.values()]
        for metric, function in METRICS.items():
            label_metrics[f"{metric}_ci_low"], label_metrics[f"{metric}_ci_high"] = metric_interval(codes, function)
        invalid = sum(int(frame[f"pred_{task}"].isna().sum()) for frame in splits.values())
        label_metrics["invalid_rate"] = _percent(invalid / total)
        classes = [s[task]["per_class"] for s in per_split.values()]
        label_metrics["per_class"] = {
            label: {
                **{m: mean_where_defined(c[label][m] for c in classes) for m in PER_CLASS},
                "support": sum(c[label]["support"] for c in classes),
            }
            for label in LABELS
        }
        scores[task] = label_metrics
    scores["where_labels_differ"] = where_labels_differ(splits)
    scores["splits"] = {
        str(k): {
            "n_test_pairs": n_pairs[k],
            **{t: {m: s[t][m] for m in (*SPLIT_METRICS, "invalid_rate")} for t in TASKS},
        }
        for k, s in per_split.items()
    }
    return rounded(scores)


def confusion_rows(splits: Mapping[int, pd.DataFrame], task: str) -> list[dict[str, str]]:
    """Rows of DVC's `confusion` plot template over all splits, unparsed answers as INVALID."""
    rows = []
    for frame in splits.values():
        for actual, predicted in zip(frame[f"{task}_label"], invalid_as_label(frame[f"pred_{task}"]), strict=True):
            rows.append({"actual": actual, "predicted": predicted})
    return rows
