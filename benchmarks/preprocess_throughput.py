"""Throughput of the Spark preprocessing (``llavac.data.preprocess.preprocess``) in pairs per second.

    python benchmarks/preprocess_throughput.py [--sizes 1000 5000 20000] [--out benchmarks/results/preprocess-cpu.json]

For each size it writes a raw MVSA-Single folder with the sample writer, at photo-like sizes
(sides 450-550 px, ~50-80 KB JPEGs with sensor-like noise, so a full decode costs what a real
tweet photo costs), then times the library call on it. The Spark session is started once and
warmed up on a small folder first: its start-up and the warm-up (JVM JIT, Python workers) are
reported separately, not in the per-size times. The machine's load average is recorded next to
each run, since a shared machine slows every number; the code version, the machine and the versions
are in the JSON's `provenance` block (`benchmarks/provenance.py`).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, write_result  # noqa: E402

from llavac.data.preprocess import preprocess, spark_session  # noqa: E402
from llavac.data.sample import write_sample  # noqa: E402

MIN_SIDE, MAX_SIDE = 450, 550


def _generate(out_dir: Path, n_pairs: int) -> float:
    """Write one raw folder; seconds taken."""
    started = time.perf_counter()
    write_sample(out_dir, n_pairs, seed=n_pairs, min_side=MIN_SIDE, max_side=MAX_SIDE)
    return time.perf_counter() - started


def _timed_preprocess(spark: Any, raw_dir: Path, out_path: Path) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    metrics = preprocess(spark, raw_dir, out_path)
    return time.perf_counter() - started, metrics


def _java_version() -> str | None:
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.splitlines()
    return java[0] if java else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--repeats", type=int, default=2, help="runs per size; the best is reported")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--warmup-pairs", type=int, default=100, help="the untimed first run's size")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preprocess-cpu.json"))
    args = parser.parse_args()
    run = Provenance()
    logging.getLogger("llavac").setLevel(logging.ERROR)  # the per-record drop log is not what is measured here

    with tempfile.TemporaryDirectory(prefix="llavac-bench-") as tmp:
        root = Path(tmp)
        sizes = sorted({args.warmup_pairs, *args.sizes}, reverse=True)  # the largest first keeps all cores busy
        print(f"generating {sizes} pairs ({MIN_SIDE}-{MAX_SIDE} px JPEGs) in {root} ...", flush=True)
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            generate_seconds = dict(zip(sizes, pool.map(_generate, [root / str(n) for n in sizes], sizes)))

        started = time.perf_counter()
        spark = spark_session(args.master, args.partitions)
        session_seconds = time.perf_counter() - started
        warmup_seconds, _ = _timed_preprocess(spark, root / str(args.warmup_pairs) / "MVSA_Single", root / "warmup.parquet")
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
        "java": _java_version(),
        "spark": {"master": args.master, "partitions": args.partitions,
                  "session_start_seconds": round(session_seconds, 1), "warmup_seconds": round(warmup_seconds, 1),
                  "warmup_pairs": args.warmup_pairs},
        "image_sides_px": [MIN_SIDE, MAX_SIDE],
        "results": results,
    }
    write_result(args.out, report, run)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
