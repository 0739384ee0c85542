"""`llavac classify --spark MASTER`: the classifier in Spark's Python workers, Parquet out, resumable.

The driver reads the input's rows (id, image path, text: the shared readers of `llavac.new_pairs`) and
hands them to Spark; the images never pass through the driver: each worker reads its rows' images
from their paths (so the input and the output must be on a file system every node sees). The job is
`mapInPandas`: a Python worker loads the model on its first batch and keeps it for every later task
(Spark reuses Python workers, `spark.python.worker.reuse`), and each Arrow batch is checked, labelled
`batch_size` pairs per forward pass and returned as rows by `llavac.classify`, the code the
single-process command runs. On a GPU cluster each task holds one GPU (`spark.task.resource.gpu.amount=1`)
and its worker runs the model on the CUDA device of the address Spark gave the task; elsewhere it uses
`spark.task.cpus` CPU threads.

Resuming: each task's Parquet file is moved into the output folder when the task finishes (Hadoop's
file output committer, algorithm 2), so a killed job leaves the finished tasks' rows; a rerun with the
same input and settings leaves out the rows already written (their `row` numbers, one integer column
read from the output's files), says how many, and classifies the rest. `_llavac_job.json` in the
output folder (hidden from Parquet readers by its `_`) ties the folder to its input and settings, so
rows of another input are never mixed in.

    spark-submit --master spark://HOST:7077 src/llavac/classify_spark.py INPUT --out OUT [classify options]
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from llavac.classify import Classifier, ClassifySettings, check_rows, open_adapter, write_summary
from llavac.files import write_json
from llavac.labels import TASKS
from llavac.new_pairs import InputError, error_reason

log = logging.getLogger(__name__)

INPUT_FIELDS = (("row", "long"), ("id", "string"), ("image", "string"), ("text", "string"))
PROBABILITIES = "map<string, double>"
RESULT_FIELDS = (
    *INPUT_FIELDS, ("raw", "string"), *((f"pred_{t}", "string") for t in TASKS), *((f"p_{t}", PROBABILITIES) for t in TASKS),
    ("p_answers", PROBABILITIES), ("best_answer", "string"), ("p_best_answer", "double"), ("template_mass", "double"),
    ("truncated_tokens", "long"), ("abstained", "array<string>"), ("error", "string"),
)
"""One output row per input row: the input's row number, id, image and text, then the labels (null
for a withheld one), their probabilities, or the `error` that kept the row from being classified."""
INPUT_SCHEMA, RESULT_SCHEMA = (", ".join(f"{name} {kind}" for name, kind in fields) for fields in (INPUT_FIELDS, RESULT_FIELDS))
RESULT_COLUMNS = [name for name, _ in RESULT_FIELDS]
JOB_FILE = "_llavac_job.json"
ROWS_PER_TASK = 512
"""Rows per Spark task: the unit of progress and of what a killed job loses (at most one task's rows per worker)."""
COMMIT_EACH_TASK = {"mapreduce.fileoutputcommitter.algorithm.version": "2"}
"""Hadoop's committer moves each finished task's file into the output at once (v1 waits for the whole job)."""
CLASSIFY_CONF = {
    "spark.ui.showConsoleProgress": "true",  # the stage's task count, live, on the console
    "spark.speculation": "false",  # a second attempt of a task would write its rows twice
    "spark.executorEnv.TQDM_DISABLE": "1",  # per-batch bars of many workers would interleave; Spark shows tasks
}

_loaded: dict[tuple[ClassifySettings, str | None], Classifier] = {}
"""The model of this Python worker, kept across tasks (one entry per settings and device)."""


def task_device() -> tuple[str | None, int]:
    """The CUDA device of the GPU Spark assigned to this task (None without one) and its CPU count."""
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu")
    return (f"cuda:{gpus.addresses[0]}" if gpus and gpus.addresses else None), context.cpus()


def worker_classifier(settings: ClassifySettings) -> Classifier:
    """This worker's classifier for `settings`, loaded on the first call, on the task's GPU if it has one."""
    import torch

    device, cpus = task_device()
    torch.set_num_threads(cpus)  # `spark.task.cpus` threads, not every core of the node for each of its tasks
    if (settings, device) not in _loaded:
        _loaded[(settings, device)] = Classifier(settings, device)
    return _loaded[(settings, device)]


def result_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """`llavac.classify` result rows as a frame in `RESULT_SCHEMA`'s columns (a missing field is null)."""
    return pd.DataFrame([{column: result.get(column) for column in RESULT_COLUMNS} for result in results],
                        columns=RESULT_COLUMNS)


def classify_batches(settings: ClassifySettings, image_folder: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The `mapInPandas` function: each batch of input rows checked, labelled and returned as result rows."""
    folder = Path(image_folder)

    def classify(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            rows = [{**row, "row": int(row["row"])} for row in frame.to_dict("records")]
            errors = check_rows(rows, folder)
            classifier = worker_classifier(settings) if not all(errors.values()) else None
            results = classifier.label(rows, folder, errors) if classifier else [{**r, "error": errors[r["row"]]} for r in rows]
            yield result_frame(results)

    return classify


def job_identity(source: Path, rows: list[dict[str, Any]], settings: ClassifySettings) -> dict[str, Any]:
    """What an output folder's rows depend on: the input's rows and the settings that change a label."""
    digest = hashlib.sha256(json.dumps([[r["row"], str(r["id"]), r["image"], r["text"]] for r in rows]).encode())
    return {"input": str(source), "rows": len(rows), "rows_sha256": digest.hexdigest(), "adapter": str(settings.adapter.resolve()),
            **{key: value for key, value in asdict(settings).items() if key not in ("adapter", "batch_size")}}


def claim_output(out: Path, identity: dict[str, Any]) -> None:
    """Make `out` this job's folder: new, or holding rows of this same job; refuse another job's rows.

    Whatever a killed job left uncommitted (`_temporary/`) is removed; committed task files stay.
    """
    job_file = out / JOB_FILE
    if out.exists():
        if not job_file.is_file():
            if any(out.iterdir()):
                raise InputError(f"{out} exists and is not the output of `llavac classify --spark`: give another --out")
        elif (previous := json.loads(job_file.read_text(encoding="utf-8"))) != identity:
            changed = sorted(key for key in identity if previous.get(key) != identity[key])
            raise InputError(f"{out} holds the results of another input or settings (differs in: {', '.join(changed)}); "
                             "give another --out, or delete it to start over")
    shutil.rmtree(out / "_temporary", ignore_errors=True)
    write_json(job_file, identity)


def classify_spark(
    spark: Any, settings: ClassifySettings, source: Path, pairs: tuple[list[dict[str, Any]], Path], out: Path,
    rows_per_task: int = ROWS_PER_TASK,
) -> dict[str, Any]:
    """Classify `pairs` (read from `source`) on `spark`, appending result rows to the Parquet folder `out`.

    Rows already in `out` (from a killed or finished run of the same job) are skipped. Returns the
    summary of the whole output: rows, classified, errors by reason, skipped_done (rows this run
    found written), classified_now, seconds of this run. Raises `InputError` for an empty input or
    an `out` holding another job's rows.
    """
    from llavac.data.preprocess import literal_path

    start = time.perf_counter()
    open_adapter(settings.adapter)
    rows, image_folder = pairs
    if not rows:
        raise InputError("the input holds no pairs")
    claim_output(out, job_identity(source, rows, settings))
    done = written_rows(out)
    todo = [(row["row"], str(row["id"]), row["image"], row["text"]) for row in rows if row["row"] not in done]
    if done:
        log.info("%d of %d rows are already in %s: skipped; classifying the other %d", len(done), len(rows), out, len(todo))
    if todo:
        tasks = max(spark.sparkContext.defaultParallelism, math.ceil(len(todo) / rows_per_task))
        log.info("classifying %d rows in %d Spark tasks of at most %d rows", len(todo), tasks, rows_per_task)
        # Consecutive rows per task, no shuffle; only ids, paths and texts travel, each worker reads its images.
        (spark.createDataFrame(spark.sparkContext.parallelize(todo, tasks), INPUT_SCHEMA)
         .mapInPandas(classify_batches(settings, str(image_folder.resolve())), RESULT_SCHEMA)
         .write.options(**COMMIT_EACH_TASK).mode("append").parquet(str(out)))
    reasons = (spark.read.schema(RESULT_SCHEMA).parquet(literal_path(out))
               .selectExpr("substring_index(error, ':', 1) as reason").groupBy("reason").count().collect())
    total = sum(row["count"] for row in reasons)
    if total != len(rows):
        raise RuntimeError(f"{out} holds {total} rows for {len(rows)} input rows: it was written by something else as well")
    errors = Counter({row["reason"]: row["count"] for row in reasons if row["reason"] is not None})
    return write_summary(total, errors, time.perf_counter() - start, out, skipped_done=len(done), classified_now=len(todo))


def written_rows(out: Path) -> set[int]:
    """The `row` numbers already in `out` (Parquet readers skip its `_` files): a column of integers, read on the driver."""
    if not any(out.glob("*.parquet")):
        return set()
    return set(pq.read_table(out, columns=["row"]).column("row").to_pylist())


def run(master: str | None, settings: ClassifySettings, source: Path, pairs: tuple[list[dict[str, Any]], Path], out: Path,
        conf: Mapping[str, str] | None = None, rows_per_task: int = ROWS_PER_TASK) -> dict[str, Any]:
    """`classify_spark` in a session on `master` (None: the one `spark-submit` set), with `conf` on top."""
    from llavac.data.preprocess import spark_session

    spark = spark_session(master, partitions=2, app="llavac-classify", conf={**CLASSIFY_CONF, **(conf or {})})
    try:
        return classify_spark(spark, settings, source, pairs, out, rows_per_task)
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> None:
    """The `spark-submit` entry point: `llavac classify`'s arguments, the master and conf from spark-submit."""
    from llavac import cli

    cli.main(["classify", *(sys.argv[1:] if argv is None else argv)], spark_submit=True)


if __name__ == "__main__":
    # Run through the imported module, not this `__main__` copy: Spark pickles a function of `__main__`
    # by value, and each task would then get a fresh `_loaded` and load the model again.
    from llavac import classify_spark

    classify_spark.main()
