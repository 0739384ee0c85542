"""The PNG pictures of the scores (confusion matrices, calibration), for looking at results offline.

The training curves' picture is drawn by `curves.py`, so that training does not depend on this module."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # plots are written to files, never shown; no display on servers

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from llavac.labels import LABELS  # noqa: E402
from llavac.metrics import INVALID  # noqa: E402


def plot_confusion(rows: list[dict[str, str]], title: str, path: Path) -> None:
    """A PNG of the confusion counts summed over splits, for looking at results offline.

    DVC's own confusion plot renders with Vega loaded from a CDN; this picture needs nothing. The
    INVALID column is always drawn, so an empty one shows that every answer was parsed; the INVALID
    row is cut off, since gold labels are never invalid.
    """
    fig, ax = plt.subplots(figsize=(5.5, 4))
    display = ConfusionMatrixDisplay.from_predictions(
        [r["actual"] for r in rows],
        [r["predicted"] for r in rows],
        labels=[*LABELS, INVALID],
        ax=ax,
        colorbar=False,
        cmap="Blues",
    )
    for text in display.text_[len(LABELS)]:
        text.remove()
    ax.set_ylim(len(LABELS) - 0.5, -0.5)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def plot_reliability(curves: dict[str, list[dict[str, float]]], title: str, path: Path) -> None:
    """A reliability diagram: accuracy against mean confidence per bin, one line per curve (before/after).

    A calibrated model sits on the diagonal; below it, the model is over-confident. Marker area
    shows how many pairs a bin holds.
    """
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="calibrated")
    for name, rows in curves.items():
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", linewidth=1, label=name)
        ax.scatter([r["confidence"] for r in rows], [r["accuracy"] for r in rows], s=[4 * r["pairs"] for r in rows],
                   alpha=0.25)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence (top-label probability)", ylabel="accuracy", title=title)
    ax.title.set_fontsize(10)
    ax.legend(fontsize="small", loc="upper left")
    _save(fig, path)


def plot_coverage(curves: dict[str, list[dict[str, float]]], title: str, path: Path) -> None:
    """Accuracy of the most confident pairs against the share of pairs kept, one line per label."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in curves.items():
        ax.plot([r["coverage"] for r in rows], [r["accuracy"] for r in rows], linewidth=1.2, label=name)
    ax.set(xlim=(0, 1), xlabel="coverage (share of pairs answered, most confident first)", ylabel="accuracy",
           title=title)
    ax.title.set_fontsize(10)
    ax.legend(fontsize="small")
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
