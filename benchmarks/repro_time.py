"""How long the README's first command takes from a fresh clone: `make repro`, the install included.

    python benchmarks/repro_time.py [--out benchmarks/results/repro-time-cpu.json]

Clones this checkout's HEAD into a temporary folder and runs, there, `make .venv/.installed-stamp`
(the environment: a new venv and `pip install -e '.[test]'`, from pip's cache where it has the
wheels) and then `make repro` (`dvc repro` of the whole DAG on the embedded default, the paper tags,
`llavac compare`), timing each. Each stage's wall time is read from DVC's log (`Running stage` lines
between timestamps the script takes as the lines arrive). The code version, the machine, its load
and the versions are in the JSON's `provenance` block; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import REPO, Provenance, write_result

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def timed(cmd: list[str], cwd: Path) -> tuple[float, dict[str, float]]:
    """Run `cmd` in `cwd`; its wall seconds and, from DVC's `Running stage` lines, each stage's seconds."""
    start = time.perf_counter()
    stages: dict[str, float] = {}
    current, since = None, start
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            match = STAGE_LINE.match(line)
            if match:
                now = time.perf_counter()
                if current:
                    stages[current] = round(now - since, 1)
                current, since = match[1], now
        if process.wait() != 0:
            sys.exit(f"error: {' '.join(cmd)} failed in {cwd}")
    end = time.perf_counter()
    if current:
        stages[current] = round(end - since, 1)  # the last stage, with what make runs after dvc repro
    return round(end - start, 1), stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/repro-time-cpu.json"))
    args = parser.parse_args()
    run = Provenance()
    with tempfile.TemporaryDirectory() as work:
        clone = Path(work) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        install, _ = timed(["make", ".venv/.installed-stamp"], clone)
        repro, stages = timed(["make", "repro"], clone)
    results = {
        "what": __doc__.splitlines()[0],
        "commands": ["git clone", "make .venv/.installed-stamp", "make repro"],
        "install_seconds": install,
        "make_repro_seconds": repro,
        "total_seconds": round(install + repro, 1),
        "stage_seconds": stages,
    }
    write_result(args.out, results, run)
    print(results)


if __name__ == "__main__":
    main()
