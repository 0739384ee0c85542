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


SPARSE_BIN_PAIRS = 5
"""A reliability bin with fewer pairs is drawn hollow and not joined: its accuracy is one or two answers."""


def plot_reliability(curves: dict[str, list[dict[str, float]]], title: str, path: Path) -> None:
    """A reliability diagram: accuracy against mean confidence per bin, one curve per entry (before/after).

    `curves` maps a name to `calibration.reliability_rows` (confidence and accuracy as fractions,
    pairs as a count). A calibrated model sits on the diagonal; below it, the model is
    over-confident. Marker area is proportional to the number of pairs in the bin; a line joins only
    the bins holding at least SPARSE_BIN_PAIRS pairs, the sparser bins are hollow markers.
    """
    fig, ax = plt.subplots(figsize=(5.5, 6.2))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="calibrated (diagonal)")
    largest = max(r["pairs"] for rows in curves.values() for r in rows)
    area_per_pair = 600 / largest
    for i, (name, rows) in enumerate(curves.items()):
        color = f"C{i}"
        dense = [r for r in rows if r["pairs"] >= SPARSE_BIN_PAIRS]
        sparse = [r for r in rows if r["pairs"] < SPARSE_BIN_PAIRS]
        ax.plot([r["confidence"] for r in dense], [r["accuracy"] for r in dense], color=color, linewidth=1.2,
                label=name)
        ax.scatter([r["confidence"] for r in dense], [r["accuracy"] for r in dense], color=color, alpha=0.35,
                   s=[area_per_pair * r["pairs"] for r in dense], edgecolors=color)
        ax.scatter([r["confidence"] for r in sparse], [r["accuracy"] for r in sparse], facecolors="none",
                   edgecolors=color, s=[max(area_per_pair * r["pairs"], 12) for r in sparse], linewidths=1)
    ax.scatter([], [], facecolors="none", edgecolors="black", s=25,
               label=f"bin with < {SPARSE_BIN_PAIRS} pairs (not joined)")
    ax.set(xlim=(0, 1.04), ylim=(-0.03, 1.04), xlabel="confidence (mean top-label probability in the bin)",
           ylabel="accuracy in the bin")
    ax.set_title(f"{title}\nmarker area = number of pairs in the bin (largest: {largest})", fontsize=10)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)  # below: hides no bin
    _save(fig, path)


def plot_coverage(
    curves: dict[str, list[dict[str, float]]], majority: dict[str, float], title: str, path: Path
) -> None:
    """Selective prediction: per label, the accuracy of the most confident pairs against the share kept.

    `curves` maps a label to `calibration.coverage_rows` (fractions); `majority` maps it to the
    share of its most frequent gold label among the same pairs, drawn as the accuracy of always
    answering it. One panel per label, the accuracy axis from 0, so no curve hides another and the
    gap to the majority class is drawn to scale.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.8), sharey=True, squeeze=False)
    for ax, (name, rows) in zip(axes[0], curves.items(), strict=True):
        ax.plot([r["coverage"] for r in rows], [r["accuracy"] for r in rows], linewidth=1.4, label="most confident first")
        ax.axhline(majority[name], color="grey", linestyle="--", linewidth=1,
                   label=f"majority class ({majority[name]:.0%})")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=f"{name} label", xlabel="coverage (share of pairs answered)")
        ax.title.set_fontsize(10)
        ax.legend(fontsize="small", loc="lower left")
    axes[0][0].set_ylabel("accuracy of the answered pairs")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
