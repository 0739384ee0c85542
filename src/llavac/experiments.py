"""`llavac compare`: the workspace and every DVC experiment against the paper, one short row each.

`dvc exp show` and `dvc metrics diff` print every metric of every file (hundreds of columns); a
researcher comparing runs with the paper wants a handful: which protocol, model and settings, the
multimodal accuracy and weighted F1 beside the paper's, and the two unimodal accuracies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SETTINGS = ("dataset", "protocol", "model", "train.backend", "predict.mode")
"""Params shown per row, when the experiment has them."""

COLUMNS = (
    ("mm acc", "multimodal.accuracy.ours", "multimodal.accuracy_std"),
    ("paper", "multimodal.accuracy.paper", None),
    ("mm wF1", "multimodal.weighted_f1.ours", "multimodal.weighted_f1_std"),
    ("paper", "multimodal.weighted_f1.paper", None),
    ("text acc", "text.accuracy", "text.accuracy_std"),
    ("image acc", "image.accuracy", "image.accuracy_std"),
)
"""(header, metric key, std key): the keys as DVC flattens metrics/vs_paper.json and metrics/scores.json."""


def _cell(row: Mapping[str, Any], key: str, std: str | None) -> str:
    value = row.get(key)
    if not isinstance(value, (int, float)):
        return "-"
    spread = row.get(std) if std else None
    return f"{value:.2f} ± {spread:.2f}" if isinstance(spread, (int, float)) else f"{value:.2f}"


def comparison_rows(experiments: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """Header + one row per experiment of `dvc.api.exp_show()`; unnamed commits are labelled by their rev."""
    header = ["experiment", *(s.split(".")[-1] for s in SETTINGS), *(name for name, _, _ in COLUMNS)]
    rows = [header]
    for experiment in experiments:
        rev = str(experiment.get("rev", "?"))
        name = experiment.get("Experiment") or (rev[:7] if len(rev) == 40 else rev)
        settings = [str(experiment.get(key, "-")) for key in SETTINGS]
        rows.append([name, *settings, *(_cell(experiment, key, std) for _, key, std in COLUMNS)])
    return rows


def render(rows: list[list[str]]) -> str:
    """Rows as a plain aligned table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)


def compare_experiments() -> str:
    """The table for the repository in the current directory (workspace, HEAD and its experiments)."""
    import dvc.api

    return render(comparison_rows(dvc.api.exp_show()))
