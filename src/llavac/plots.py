"""The PNG pictures of a run (confusion matrices, training loss), for looking at results offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_loss(histories: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Training loss per optimizer step, one line per split (the Trainer's log history)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, history in histories.items():
        logged = [h for h in history if "loss" in h]
        ax.plot([h["step"] for h in logged], [h["loss"] for h in logged], label=f"split {split}", linewidth=1)
    ax.set(xlabel="optimizer step", ylabel="training loss (answer tokens)", title="LoRA fine-tuning")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
