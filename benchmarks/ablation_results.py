"""Collect the ablations queued by benchmarks/ablations.sh into benchmarks/results/ablations-cpu.json.

    python benchmarks/ablation_results.py [--paired A B]... [--out JSON] [--note TEXT]

Reads every finished experiment of HEAD and the 49 commits before it (experiments stay on the commit
they were queued from) with `dvc.api.exp_show()`, keeps its settings and its scores (accuracy with the 95 %
interval and weighted F1 of each label, invalid answers), adds `llavac compare --num 50` (with its seed
groups) and `llavac compare --paired A B` for each pair given, writes them with the provenance block
(benchmarks/provenance.py) and prints the Markdown table of docs/statistics.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dvc.api

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, write_result  # noqa: E402

from llavac.experiments import compare_experiments, compare_paired, finished, metric  # noqa: E402
from llavac.labels import TASKS  # noqa: E402

OUT = Path("benchmarks/results/ablations-cpu.json")
SETTINGS = ("train.method", "prompt.modalities", "seed", "predict.mode", "protocol", "model")


def minutes(name: str) -> float | None:
    """Wall minutes of a queued experiment: from its first to its last timestamped log line (`dvc queue logs`)."""
    logs = subprocess.run(["dvc", "queue", "logs", name], capture_output=True, text=True).stdout
    stamps = [datetime.strptime(t, "%H:%M:%S") for t in re.findall(r"^(\d\d:\d\d:\d\d) ", logs, re.MULTILINE)]
    return round((stamps[-1] - stamps[0]).total_seconds() / 60, 1) if len(stamps) > 1 else None


def scores(row: dict) -> dict:
    """The run's scores in %, as metrics/scores.json holds them."""
    return {
        task: {
            name: metric(row, f"{task}.{name}")
            for name in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "weighted_f1", "invalid_rate")
        }
        for task in TASKS
    }


def markdown(runs: list[dict]) -> str:
    """The table of docs/statistics.md: one row per run, what it changes from the default, accuracy [95 % CI] of
    each label, multimodal weighted F1 and invalid answers."""
    default = next(run["settings"] for run in runs if run["name"] == "workspace")
    lines = ["| run | changed from the default | test pairs / splits | text acc | image acc | multimodal acc | "
             "multimodal wF1 | invalid % (mm) | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        s = run["scores"]
        cell = {t: f"{s[t]['accuracy']:.1f} [{s[t]['accuracy_ci_low']:.1f}, {s[t]['accuracy_ci_high']:.1f}]" for t in TASKS}
        changed = ", ".join(f"`{k}={v}`" for k, v in run["settings"].items() if v != default[k]) or "(the default)"
        lines.append(f"| {run['name']} | {changed} | {run['test_pairs']} / {run['splits']} | {cell['text']} | "
                     f"{cell['image']} | {cell['multimodal']} | {s['multimodal']['weighted_f1']:.1f} | "
                     f"{s['multimodal']['invalid_rate']:.1f} | {run['minutes'] if run['minutes'] is not None else '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paired", nargs=2, action="append", default=[], metavar=("A", "B"),
                        help="two experiments to pair (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--note", help="where and how the experiments ran (the machine and its load then)")
    args = parser.parse_args()
    provenance = Provenance()
    runs = []
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    for row in dvc.api.exp_show(revs=head, num=50):  # as `llavac compare --num 50` below
        if not (row.get("Experiment") or row.get("rev") == "workspace") or not finished(row):
            continue  # commits' own rows are history; the workspace holds the default's `dvc repro`
        settings = {key: (int(row[key]) if isinstance(row.get(key), float) else row.get(key)) for key in SETTINGS}
        runs.append({"name": row.get("Experiment") or "workspace", "rev": row["rev"], "settings": settings,
                     "test_pairs": int(row["n_test_pairs"]), "splits": int(row["n_splits"]), "scores": scores(row),
                     "minutes": minutes(row["Experiment"]) if row.get("Experiment") else None})
    runs.sort(key=lambda run: (run["name"] != "workspace", run["name"]))
    result = {
        "what": "Ablations, each a DVC experiment run from the queue, beside the workspace's run; scores in %, mean "
                "over splits [95 % bootstrap interval]; `minutes` are wall times, first to last queue log line.",
        "head": head,
        "note": args.note,
        "commands": ["bash benchmarks/ablations.sh",
                     "python benchmarks/ablation_results.py " + " ".join(f"--paired {a} {b}" for a, b in args.paired)],
        "runs": runs,
        "compare": compare_experiments(num=50).splitlines(),  # `llavac compare --num 50`: the seed groups
        "paired": [{"a": a, "b": b, "output": compare_paired(a, b).splitlines()} for a, b in args.paired],
    }
    write_result(args.out, result, provenance)
    print(markdown(runs))
    for paired in result["paired"]:
        print("\n" + "\n".join(paired["output"]))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
