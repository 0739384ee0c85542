"""Training curves from a Trainer's log history, written whole once a split is trained.

The history is the Trainer's own record (`trainer_state.json`); a resumed run restores it from
its checkpoint, so the curves written from it are continuous across an interruption, and a split
that was already finished writes the same curves again instead of an empty run's. Only the curves
worth looking at are kept: throughput counters (FLOPs, runtime, steps per second) are not curves.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from dvclive import Live

matplotlib.use("Agg")  # written to files, never shown; no display on servers

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

CURVES = ("loss", "learning_rate", "grad_norm", "epoch")
"""The per-step values of a Trainer log entry that are drawn (`dvclive/<K>/plots/metrics/<name>.tsv`)."""
VALIDATION_LOSS = "eval_loss"
"""The Trainer's name for the validation loss, logged at the end of each epoch (`.../eval_loss.tsv`)."""


def _entries_with(history: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    by_step = {entry["step"]: entry for entry in history if key in entry and "step" in entry}
    return [by_step[step] for step in sorted(by_step)]


def training_steps(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history's per-step entries (those with a training `loss`), in step order, one per step."""
    return _entries_with(history, "loss")


def validation_steps(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history's validation entries (those with `eval_loss`), in step order: one per epoch, if any."""
    return _entries_with(history, VALIDATION_LOSS)


def mean_loss(history: Sequence[dict[str, Any]]) -> float:
    """The mean of the logged training losses: the whole run's, however many times it was resumed."""
    losses = [entry["loss"] for entry in training_steps(history)]
    return sum(losses) / len(losses) if losses else float("nan")


def write_curves(history: Sequence[dict[str, Any]], live_dir: Path, counts: dict[str, int] | None = None) -> None:
    """Replace `live_dir` with DVCLive curves of `history` (x = optimizer step); `counts` (e.g. the pairs
    whose text was cut to the model's limit) join the run's summary, `metrics.json`."""
    values: dict[int, dict[str, float]] = {}
    for entry in training_steps(history):
        values.setdefault(int(entry["step"]), {}).update({name: float(entry[name]) for name in CURVES if name in entry})
    for entry in validation_steps(history):
        values.setdefault(int(entry["step"]), {})[VALIDATION_LOSS] = float(entry[VALIDATION_LOSS])
    shutil.rmtree(live_dir, ignore_errors=True)
    live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    for step in sorted(values):
        live.step = step
        for name, value in values[step].items():
            live.log_metric(name, value)
        live.make_summary()
    live.summary.update(counts or {})
    live.make_summary()
    live.end()


def plot_training_loss(histories: dict[str, Sequence[dict[str, Any]]], path: Path) -> None:
    """A PNG of the training loss per optimizer step over all splits: the mean, and the band from the
    lowest to the highest split, on a log scale; and the validation loss at the end of each epoch (mean
    over splits, with the same band) where the run computed it.

    Ten overlapping lines cannot be told apart; the band shows how far the splits spread and a
    diverging split stands out as its edge. The loss falls by an order of magnitude in the first
    steps; a linear axis would spend the picture on them and flatten the rest of the run. Training
    loss falling while validation loss rises is overfitting.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for select, key, name, style in ((training_steps, "loss", "training", {"linewidth": 1.2}),
                                     (validation_steps, VALIDATION_LOSS, "validation", {"marker": "o", "markersize": 4})):
        by_step: dict[int, list[float]] = {}
        for history in histories.values():
            for entry in select(history):
                by_step.setdefault(int(entry["step"]), []).append(float(entry[key]))
        if not by_step:
            continue
        steps = sorted(by_step)
        lines = ax.plot(steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], label=f"{name} loss, mean over splits", **style)
        ax.fill_between(steps, [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps], alpha=0.25,
                        linewidth=0, color=lines[0].get_color(), label=f"{name}: lowest to highest split")
    ax.set_yscale("log")
    ax.set(xlabel="optimizer step", ylabel="loss on the answer tokens (log scale)",
           title=f"LoRA fine-tuning: training and validation loss ({len(histories)} splits)")
    ax.title.set_fontsize(10)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
