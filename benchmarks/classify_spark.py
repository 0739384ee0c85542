"""Rows per second of `llavac classify --spark local[2]` against the plain command, one and two threads.

    python benchmarks/classify_spark.py [--rows 2000] [--small-rows 200] [--rounds 3] [--adapter artifacts/adapters/1]
                                        [--out benchmarks/results/classify-spark-cpu.json]

The rows are a synthetic sample in the MVSA-Single layout written by the `sample` stage's own code
(seed 0, `--rows` pairs plus its few deliberately broken records, images of the default 40-96 px);
every configuration classifies the same folder with the same adapter, batch size and precision. Each
run is the whole command in a fresh process, as a user runs it; the configurations take turns within
each round, so load that comes and goes on a shared machine falls on all of them. Two rates per run:
`wall` (process start to exit: interpreter, imports, Spark's start) and `run` (the command's own
summary: reading rows to the written output, model loads included). Every configuration also runs
on `--small-rows` pairs, so the fixed costs (interpreter, Spark's start, the workers' imports and
model loads) cancel in the marginal rate, (rows - small rows) / (run seconds - small run seconds):
what each configuration sustains once started, the rate a large corpus sees. The load average is
recorded before and after every run: on a shared machine the figures are only comparable within one file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llavac.data.sample import write_sample
from llavac.files import write_json

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "plain_1_thread": ([], {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),  # the stages' one-thread pin
    "plain_2_threads": ([], {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}),
    "spark_local_2": (["--spark", "local[2]"], {}),  # two Python workers, one thread each (spark.task.cpus)
}


def run_once(name: str, raw: Path, adapter: Path, out: Path, batch_size: int) -> dict[str, float]:
    """One whole `llavac classify` run of configuration `name`: its wall and run seconds, and the load around it."""
    args, env = CONFIGS[name]
    command = [sys.executable, "-m", "llavac.cli", "classify", str(raw), "--adapter", str(adapter), "--out", str(out),
               "--batch-size", str(batch_size), *args]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    return {"rows": summary["rows"], "classified": summary["classified"], "wall_s": round(wall, 3),
            "run_s": summary["seconds"], "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def marginal_rate(extra_rows: int, extra_seconds: float) -> float | None:
    """Rows per second of the extra rows; None when noise made the larger run no slower (a too-small benchmark)."""
    return round(extra_rows / extra_seconds, 3) if extra_seconds > 0 else None


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000, help="synthetic pairs to classify")
    parser.add_argument("--small-rows", type=int, default=200, help="the smaller run that the marginal rate subtracts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--adapter", type=Path, default=REPO / "artifacts" / "adapters" / "1")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "classify-spark-cpu.json")
    args = parser.parse_args()
    sizes = {"rows": args.rows, "small_rows": args.small_rows}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {size: {name: [] for name in CONFIGS} for size in sizes}
    with tempfile.TemporaryDirectory() as scratch:
        folders = {}
        for size, n in sizes.items():
            write_sample(Path(scratch) / size, n, seed=0, min_side=40, max_side=96)
            folders[size] = Path(scratch) / size / "MVSA_Single"
        for round_number in range(args.rounds):
            for size in sizes:
                for name in CONFIGS:
                    out = Path(scratch) / f"{size}-{name}-{round_number}.out"
                    result = run_once(name, folders[size], args.adapter.resolve(), out, args.batch_size)
                    runs[size][name].append(result)
                    print(f"round {round_number + 1}/{args.rounds} {size} {name}: {result}", flush=True)

    def median(size: str, name: str, kind: str) -> float:
        return statistics.median(r[f"{kind}_s"] for r in runs[size][name])

    rows, small = (runs[size]["plain_1_thread"][0]["rows"] for size in sizes)
    rates = {name: {"wall": round(rows / median("rows", name, "wall"), 3), "run": round(rows / median("rows", name, "run"), 3),
                    "marginal": marginal_rate(rows - small, median("rows", name, "run") - median("small_rows", name, "run"))}
             for name in CONFIGS}
    spark = rates["spark_local_2"]
    write_json(args.out, {
        "what": "rows/s of llavac classify: --spark local[2] vs the plain command with 1 and 2 threads, same rows and adapter",
        "rows": rows, "small_rows": small, "rounds": args.rounds, "batch_size": args.batch_size,
        "rows_per_second_median": rates,
        **{f"spark_vs_{name}": {kind: round(spark[kind] / rates[name][kind], 3) if spark[kind] and rates[name][kind] else None
                                for kind in spark}
           for name in ("plain_1_thread", "plain_2_threads")},
        "runs": runs,
        "load_average_1min": {"start": runs["rows"]["plain_1_thread"][0]["load_before"],
                              "max": max(r["load_after"] for by_name in runs.values() for rs in by_name.values() for r in rs)},
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
