"""Count the lines of a run's output that mention a warning, as a person scanning `make repro` sees them.

    make repro 2>&1 | tee repro.log
    python benchmarks/warning_lines.py repro.log --command "make repro" --out benchmarks/results/warning-lines.json

pip's notes about the package indexes configured on this machine ("Location 'file:///...' is ignored")
are counted apart: they come from the environment's pip configuration, not from the project.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

WARNING = re.compile(r"warning", re.IGNORECASE)
PIP_INDEX_NOTE = re.compile(r"WARNING: Location '.*' is ignored: it is neither a file nor a directory")


def count(lines: list[str]) -> dict[str, object]:
    """Lines containing "warning" (case-insensitive): the total, pip's index notes apart, and each distinct line's count."""
    hits = [line.rstrip() for line in lines if WARNING.search(line)]
    project = [line for line in hits if not PIP_INDEX_NOTE.search(line)]
    return {
        "warning_lines": len(project),
        "pip_index_notes": len(hits) - len(project),
        "lines": dict(Counter(project).most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="the run's combined stdout and stderr")
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    parser.add_argument("--command", required=True, help="what produced the log, recorded in the results")
    args = parser.parse_args()
    result = {"command": args.command, **count(args.log.read_text(encoding="utf-8", errors="replace").splitlines())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{result['warning_lines']} warning lines ({result['pip_index_notes']} pip index notes apart) -> {args.out}")


if __name__ == "__main__":
    main()
