"""Throughput of the Spark preprocessing (``llavac.data.preprocess.preprocess``) in pairs per second.

    python benchmarks/preprocess_throughput.py [--sizes 1000 5000 20000] [--out benchmarks/results/preprocess-cpu.json]

For each size it writes a raw MVSA-Single folder with the sample writer, at photo-like sizes
(sides 450-550 px, ~50-80 KB JPEGs with sensor-like noise, so a full decode costs what a real
tweet photo costs), then times the library call on it. The Spark session is started once and
warmed up on a small folder first: its start-up and the warm-up (JVM JIT, Python workers) are
reported separately, not in the per-size times. The machine's load average is recorded next to
each run, since a shared machine slows every number.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyspark

from llavac.data.sample import write_sample
from llavac.files import write_json
from llavac.data.preprocess import preprocess, spark_session

MIN_SIDE, MAX_SIDE = 450, 550
WARMUP_PAIRS = 100


def _generate(out_dir: Path, n_pairs: int) -> float:
    """Write one raw folder; seconds taken."""
    started = time.perf_counter()
    write_sample(out_dir, n_pairs, seed=n_pairs, min_side=MIN_SIDE, max_side=MAX_SIDE)
    return time.perf_counter() - started


def _timed_preprocess(spark: Any, raw_dir: Path, out_path: Path) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    metrics = preprocess(spark, raw_dir, out_path)
    return time.perf_counter() - started, metrics


def _machine() -> dict[str, Any]:
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.splitlines()
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "java": java[0] if java else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--repeats", type=int, default=2, help="runs per size; the best is reported")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preprocess-cpu.json"))
    args = parser.parse_args()
    logging.getLogger("llavac").setLevel(logging.ERROR)  # the per-record drop log is not what is measured here

    with tempfile.TemporaryDirectory(prefix="llavac-bench-") as tmp:
        root = Path(tmp)
        sizes = sorted({WARMUP_PAIRS, *args.sizes}, reverse=True)  # the largest first keeps all cores busy
        print(f"generating {sizes} pairs ({MIN_SIDE}-{MAX_SIDE} px JPEGs) in {root} ...", flush=True)
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            generate_seconds = dict(zip(sizes, pool.map(_generate, [root / str(n) for n in sizes], sizes)))

        started = time.perf_counter()
        spark = spark_session(args.master, args.partitions)
        session_seconds = time.perf_counter() - started
        warmup_seconds, _ = _timed_preprocess(spark, root / str(WARMUP_PAIRS) / "MVSA_Single", root / "warmup.parquet")
        print(f"Spark session {session_seconds:.1f} s, warm-up run {warmup_seconds:.1f} s", flush=True)

        results = []
        for n_pairs in args.sizes:
            raw_dir = root / str(n_pairs) / "MVSA_Single"
            runs = []
            for _ in range(args.repeats):
                load = os.getloadavg()[0]
                seconds, metrics = _timed_preprocess(spark, raw_dir, root / f"{n_pairs}.parquet")
                runs.append({"seconds": round(seconds, 2), "load_average_1m_before": round(load, 2)})
            best = min(run["seconds"] for run in runs)
            data_bytes = sum(path.stat().st_size for path in (raw_dir / "data").iterdir())
            results.append({
                "pairs": metrics["raw_label_rows"],
                "valid_pairs": metrics["valid_pairs"],
                "data_mb": round(data_bytes / 2**20, 1),
                "generate_seconds": round(generate_seconds[n_pairs], 1),
                "runs": runs,
                "seconds": best,
                "pairs_per_s": round(metrics["raw_label_rows"] / best, 1),
            })
            print(f"{n_pairs:>6} pairs ({results[-1]['data_mb']} MB): {best:.1f} s, "
                  f"{results[-1]['pairs_per_s']} pairs/s (runs: {runs})", flush=True)
        spark.stop()

    report = {
        "benchmark": "llavac.data.preprocess.preprocess on synthetic raw MVSA-Single folders",
        "pairs_per_s": "label rows processed per second: read, decode every text, fully decode and hash "
                       "every image, join, label rule, Parquet written; best of the runs",
        "machine": _machine(),
        "spark": {"master": args.master, "partitions": args.partitions,
                  "session_start_seconds": round(session_seconds, 1), "warmup_seconds": round(warmup_seconds, 1),
                  "warmup_pairs": WARMUP_PAIRS},
        "image_sides_px": [MIN_SIDE, MAX_SIDE],
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
