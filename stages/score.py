"""Stage `score`: predictions of every split -> metrics/scores.json, confusion and calibration plots.

    python stages/score.py artifacts/predictions artifacts/predictions/val metrics/scores.json plots

Accuracy and weighted F1 carry 95 % bootstrap intervals (`llavac.statistics`). The label probabilities
are calibrated with one temperature per label and split, fitted on the split's validation predictions
and applied to its test predictions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common import run, stage_logger

from llavac.calibration import (
    DIAGONAL_ROWS,
    calibrate,
    calibration_scores,
    confidence_and_correct,
    coverage_rows,
    majority_share,
    reliability_rows,
)
from llavac.files import write_json, write_text
from llavac.labels import TASKS
from llavac.metrics import confusion_rows, load_predictions, rounded, score_splits
from llavac.plots import plot_confusion, plot_coverage, plot_reliability


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """A DVC plot's data file: one row per line, small and readable in a git diff."""
    write_text(path, "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="folder of <split>.jsonl test predictions")
    parser.add_argument("validation", type=Path, help="folder of <split>.jsonl validation predictions")
    parser.add_argument("scores", type=Path, help="metrics JSON to write")
    parser.add_argument("plots", type=Path, help="folder for confusion/, calibration/, coverage/ and png/")
    args = parser.parse_args()
    log = stage_logger("score")

    splits = load_predictions(args.predictions)
    validation = load_predictions(args.validation)
    temperatures, pooled = calibrate(splits, validation)
    n_pairs = sum(len(frame) for frame in splits.values())
    n_val = sum(len(frame) for frame in validation.values())
    log.info("loaded %d test and %d validation pairs in %d split(s)", n_pairs, n_val, len(splits))

    scores = score_splits(splits)
    calibration = calibration_scores(validation, temperatures, pooled)
    scores["calibration"] = rounded(
        {**calibration, "temperatures": {str(k): t for k, t in temperatures.items()}}, digits=4)
    write_json(args.scores, scores)
    for task in TASKS:
        c = calibration[task]
        s = scores[task]
        log.info(
            "%s: accuracy %.2f [%.2f, %.2f], weighted F1 %.2f [%.2f, %.2f] (95 %% intervals; std over splits %.2f, %.2f), "
            "invalid %.2f%%; test NLL %.3f -> %.3f, ECE %.1f%% -> %.1f%%",
            task, s["accuracy"], s["accuracy_ci_low"], s["accuracy_ci_high"], s["weighted_f1"], s["weighted_f1_ci_low"],
            s["weighted_f1_ci_high"], s["accuracy_std"], s["weighted_f1_std"], s["invalid_rate"], c["nll_before"],
            c["nll_after"], c["ece_before"], c["ece_after"],
        )
    log.info("wrote %s", args.scores)

    for task in TASKS:
        rows = confusion_rows(splits, task)
        write_rows(rows, args.plots / "confusion" / f"{task}.json")
        title = f"{task} label, {len(splits)} split(s): mean accuracy {scores[task]['accuracy']:.2f}%"
        plot_confusion(rows, title, args.plots / "png" / f"confusion_{task}.png")
        log.info("wrote %s (%d rows) and png/confusion_%s.png", args.plots / "confusion" / f"{task}.json", len(rows), task)

    coverage, majority = {}, {}
    write_rows(DIAGONAL_ROWS, args.plots / "calibration" / "diagonal.json")
    for task in TASKS:
        before, after, gold = pooled[task]
        curves = {name: reliability_rows(*confidence_and_correct(probs, gold))
                  for name, probs in (("before", before), ("after", after))}
        for name, rows in curves.items():
            write_rows(rows, args.plots / "calibration" / f"{task}_{name}.json")
        plot_reliability({f"{name} temperature scaling": rows for name, rows in curves.items()},
                         f"{task} label: reliability of the pooled test pairs",
                         args.plots / "png" / f"reliability_{task}.png")
        coverage[task] = coverage_rows(*confidence_and_correct(after, gold))
        majority[task] = majority_share(gold)
        write_rows(coverage[task], args.plots / "coverage" / f"{task}.json")
    plot_coverage(coverage, majority, "Selective prediction: accuracy of the most confident pairs (calibrated)",
                  args.plots / "png" / "coverage.png")
    log.info("wrote reliability diagrams and accuracy-vs-coverage curves under %s", args.plots)


if __name__ == "__main__":
    run(main, ValueError)
