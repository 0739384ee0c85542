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

from dvclive import Live

CURVES = ("loss", "learning_rate", "grad_norm", "epoch")
"""The per-step values of a Trainer log entry that are drawn (`dvclive/<K>/plots/metrics/<name>.tsv`)."""


def training_steps(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history's per-step entries (those with a training `loss`), in step order, one per step."""
    by_step = {entry["step"]: entry for entry in history if "loss" in entry and "step" in entry}
    return [by_step[step] for step in sorted(by_step)]


def mean_loss(history: Sequence[dict[str, Any]]) -> float:
    """The mean of the logged training losses: the whole run's, however many times it was resumed."""
    losses = [entry["loss"] for entry in training_steps(history)]
    return sum(losses) / len(losses) if losses else float("nan")


def write_curves(history: Sequence[dict[str, Any]], live_dir: Path) -> None:
    """Replace `live_dir` with DVCLive curves of `history` (x = optimizer step)."""
    shutil.rmtree(live_dir, ignore_errors=True)
    live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    for entry in training_steps(history):
        live.step = int(entry["step"])
        for name in CURVES:
            if name in entry:
                live.log_metric(name, float(entry[name]))
        live.make_summary()
    live.end()
