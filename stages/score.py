"""Stage `score`: predictions of every split -> metrics/scores.json and confusion plots.

    python stages/score.py artifacts/predictions metrics/scores.json plots
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import run, stage_logger

from llavac.files import write_json, write_text
from llavac.labels import TASKS
from llavac.metrics import confusion_rows, load_predictions, score_splits
from llavac.plots import plot_confusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="folder of <split>.jsonl files from the predict stage")
    parser.add_argument("scores", type=Path, help="metrics JSON to write")
    parser.add_argument("plots", type=Path, help="folder for confusion/<task>.json and png/confusion_<task>.png")
    args = parser.parse_args()
    log = stage_logger("score")

    try:
        splits = load_predictions(args.predictions)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    n_pairs = sum(len(frame) for frame in splits.values())
    log.info("loaded %d test pairs in %d split(s) from %s", n_pairs, len(splits), args.predictions)

    scores = score_splits(splits)
    write_json(args.scores, scores)
    for task in TASKS:
        log.info(
            "%s: accuracy %.2f ± %.2f, weighted F1 %.2f ± %.2f, invalid %.2f%%",
            task,
            scores[task]["accuracy"],
            scores[task]["accuracy_std"],
            scores[task]["weighted_f1"],
            scores[task]["weighted_f1_std"],
            scores[task]["invalid_rate"],
        )
    log.info("wrote %s", args.scores)

    for task in TASKS:
        rows = confusion_rows(splits, task)
        rows_path = args.plots / "confusion" / f"{task}.json"
        # one row per line: small, and readable in a git diff
        write_text(rows_path, "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
        png_path = args.plots / "png" / f"confusion_{task}.png"
        title = f"{task} label, {len(splits)} split(s): mean accuracy {scores[task]['accuracy']:.2f}%"
        plot_confusion(rows, title, png_path)
        log.info("wrote %s (%d rows) and %s", rows_path, len(rows), png_path)


if __name__ == "__main__":
    run(main)
