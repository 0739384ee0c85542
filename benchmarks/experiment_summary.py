"""A finished DVC experiment's scores beside the majority class of its test pairs, as one JSON file.

    python benchmarks/experiment_summary.py REV OUT_JSON --command "dvc exp run ..." [--note "..."]

REV is any git revision holding the experiment's results (an experiment ref such as
``refs/exps/.../mvsa-multiple-sample``, or a commit). The majority-class baseline is the share of the
most frequent label among the pooled test pairs; it is computed from metrics/data.json's label counts
and is only defined when the test sets cover every valid pair exactly once (``cheema``'s folds):
the script refuses other runs rather than guess.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

TASKS = ("multimodal", "text", "image")


def at_rev(rev: str, path: str) -> str:
    """The content of ``path`` in git revision ``rev``."""
    return subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout


def summary(rev: str, command: str, note: str | None) -> dict:
    scores = json.loads(at_rev(rev, "metrics/scores.json"))
    data = json.loads(at_rev(rev, "metrics/data.json"))
    params = yaml.safe_load(at_rev(rev, "params.yaml"))
    if scores["n_test_pairs"] != data["valid_pairs"]:
        sys.exit(f"error: {scores['n_test_pairs']} test pairs but {data['valid_pairs']} valid pairs: the test sets "
                 "do not cover every pair once, so the pooled majority class is not known from the label counts")
    tasks = {}
    for task in TASKS:
        counts = data["pairs_by_label"][task]
        majority = max(counts, key=counts.get)
        rate = round(100 * counts[majority] / data["valid_pairs"], 2)
        tasks[task] = {
            "accuracy": scores[task]["accuracy"],
            "accuracy_std": scores[task]["accuracy_std"],
            "weighted_f1": scores[task]["weighted_f1"],
            "majority_class": majority,
            "majority_class_accuracy": rate,
            "points_above_majority": round(scores[task]["accuracy"] - rate, 2),
        }
    commit = subprocess.run(["git", "rev-parse", f"{rev}^"], capture_output=True, text=True, check=True).stdout.strip()
    return {
        "command": command,
        "experiment_rev": subprocess.run(["git", "rev-parse", rev], capture_output=True, text=True, check=True).stdout.strip(),
        "code_commit": commit,
        "note": note,
        "params": {key: params[key] for key in ("dataset", "protocol", "model", "seed")} | {"splits.source": params["splits"]["source"]},
        "n_splits": scores["n_splits"],
        "n_test_pairs": scores["n_test_pairs"],
        "data": {key: data[key] for key in ("raw_label_rows", "valid_pairs", "dropped", "pairs_by_label")},
        "tasks": tasks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev")
    parser.add_argument("out", type=Path)
    parser.add_argument("--command", required=True, help="the command that ran the experiment")
    parser.add_argument("--note", help="where and how it ran (machine load, wall time)")
    args = parser.parse_args()
    result = summary(args.rev, args.command, args.note)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for task, block in result["tasks"].items():
        print(f"{task}: {block['accuracy']:.2f} vs majority class {block['majority_class_accuracy']:.2f} "
              f"({block['points_above_majority']:+.2f})")


if __name__ == "__main__":
    main()
