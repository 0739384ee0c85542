"""Stage `preprocess`: raw MVSA folder -> usable pairs (Parquet) and data metrics, on Apache Spark.

    python stages/preprocess.py RAW_DIR artifacts/pairs.parquet metrics/data.json

Reads params `dataset` (the label file's layout), `data.raw_dir` (passed as RAW_DIR by dvc.yaml) and `spark.*`. The pairs file is a
single Parquet file (not a Spark part-file folder): `pandas.read_parquet` reads it directly.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from common import load_params, run, stage_logger

from llavac.data import mvsa
from llavac.files import write_json
from llavac.data.preprocess import preprocess, spark_session


def no_pairs_reason(raw_dir: Path, metrics: dict, dataset: str) -> str:
    """Why a raw folder gave no pair at all: usually a label file that is not MVSA's, or the other dataset's."""
    label_file = raw_dir / mvsa.LABEL_FILE
    if not metrics["raw_label_rows"]:
        return f"{label_file} holds no label rows (an empty file, or only its header)"
    dropped = {reason: n for reason, n in metrics["dropped"].items() if n}
    annotations = "\\t".join(["<text label>,<image label>"] * mvsa.ANNOTATORS[dataset])
    return (
        f"none of the {metrics['raw_label_rows']} label rows of {label_file} gave a usable pair (dropped: {dropped}); "
        f"with dataset={dataset} each row must be `<id>\\t{annotations}`, tab-separated, with labels "
        "negative/neutral/positive"
    )


def main() -> None:
    log = stage_logger("preprocess")
    if len(sys.argv) != 4:
        sys.exit("usage: python stages/preprocess.py RAW_DIR PAIRS_PARQUET METRICS_JSON")
    raw_dir, pairs_path, metrics_path = (Path(arg) for arg in sys.argv[1:])
    params = load_params()
    try:
        mvsa.check_raw_layout(raw_dir, mvsa.ANNOTATORS[params.dataset])
    except FileNotFoundError as error:
        folder = mvsa.RAW_FOLDERS[params.dataset]
        sys.exit(
            f"error: {error}. Put the real dataset's {folder} folder under data/ and run with "
            f"`-S data.raw_dir=data/{folder}`, or run `dvc repro sample` for the synthetic sample."
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    spark_params = params.spark
    started = time.perf_counter()
    spark = spark_session(spark_params.master, spark_params.partitions)
    log.info("Spark %s on %s, %d partitions, started in %.1f s",
             spark.version, spark_params.master, spark_params.partitions, time.perf_counter() - started)
    started = time.perf_counter()
    metrics = preprocess(spark, raw_dir, pairs_path, params.dataset)
    spark.stop()
    if not metrics["valid_pairs"]:
        if pairs_path.is_dir():
            shutil.rmtree(pairs_path)
        else:
            pairs_path.unlink(missing_ok=True)
        sys.exit(f"error: {no_pairs_reason(raw_dir, metrics, params.dataset)}")
    log.info("%d label rows -> %d valid pairs in %.1f s; multimodal labels %s",
             metrics["raw_label_rows"], metrics["valid_pairs"], time.perf_counter() - started,
             metrics["pairs_by_label"]["multimodal"])
    log.info("dropped %s", {reason: n for reason, n in metrics["dropped"].items() if n})
    log.info("wrote %s", pairs_path)
    write_json(metrics_path, metrics)
    log.info("wrote %s", metrics_path)


if __name__ == "__main__":
    run(main)
