"""`llavac classify`: the input readers, the shared orchestration, and the Spark job (local[2] and a real
standalone cluster): the same labels as the single-process command, bad rows as rows, resuming after a kill."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from helpers import free_port
from test_model import ARCHITECTURE, RECIPE, TEXTS

from llavac.classify import ClassifySettings, classify_to_jsonl, default_adapter, open_adapter
from llavac.classify_spark import JOB_FILE, claim_output, classify_spark, job_identity
from llavac.data import mvsa
from llavac.labels import TASKS
from llavac.model.adapter_card import AdapterCard
from llavac.new_pairs import InputError, read_pairs
from llavac.predict import write_jsonl

REPO = Path(__file__).resolve().parents[1]
ODD_TEXTS = ["line\u2028separator happy", "paragraph\u2029separator", "next\x85line", "form\x0cfeed", "multi\nline happy"]
"""Characters `str.splitlines` breaks on (JSON and CSV do not), and a real line break."""


# ---- readers -------------------------------------------------------------------------------------------


def test_our_own_jsonl_output_reads_back_with_every_text_intact(tmp_path):
    rows = [{"id": i, "image": f"{i}.jpg", "text": text} for i, text in enumerate(ODD_TEXTS)]
    write_jsonl(rows, tmp_path / "pairs.jsonl")
    read, folder = read_pairs(tmp_path / "pairs.jsonl")
    assert [r["text"] for r in read] == ODD_TEXTS and [r["id"] for r in read] == list(range(len(ODD_TEXTS)))
    assert folder == tmp_path


def test_csv_keeps_quoted_line_breaks_and_makes_no_phantom_rows(tmp_path):
    with open(tmp_path / "pairs.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image", "text"])
        writer.writerows([i, f"{i}.jpg", text] for i, text in enumerate(ODD_TEXTS))
    # the csv module quotes only the real line break; U+2028 and friends stay unquoted inside their field
    assert "\u2028" in (tmp_path / "pairs.csv").read_text(encoding="utf-8").split("\n")[1]
    read, _ = read_pairs(tmp_path / "pairs.csv")
    assert [r["text"] for r in read] == ODD_TEXTS and [r["row"] for r in read] == [1, 2, 3, 4, 5]


def test_a_broken_jsonl_line_is_named(tmp_path):
    (tmp_path / "pairs.jsonl").write_text('{"image": "a.jpg", "text": "hi"}\n{"image": "b.jpg", "text": "hi\n')
    with pytest.raises(InputError, match="pairs.jsonl: not valid JSON at line 2"):
        read_pairs(tmp_path / "pairs.jsonl")


def test_parquet_file_and_dataset_folder_inputs(tmp_path):
    table = pa.table({"id": [0, 7], "image": ["a.jpg", "b.jpg"], "text": ["one", "two"]})
    pq.write_table(table, tmp_path / "pairs.parquet")
    (tmp_path / "dataset").mkdir()
    pq.write_table(table.slice(0, 1), tmp_path / "dataset" / "part-0.parquet")
    pq.write_table(table.slice(1), tmp_path / "dataset" / "part-1.parquet")
    for source in (tmp_path / "pairs.parquet", tmp_path / "dataset"):
        rows, folder = read_pairs(source)
        assert [(r["row"], r["id"], r["image"], r["text"]) for r in rows] == [(1, 0, "a.jpg", "one"), (2, 7, "b.jpg", "two")]
        assert folder == tmp_path


def test_mvsa_layout_folder_reads_data_and_keeps_a_text_without_image(tmp_path, write_mvsa, jpeg):
    raw = write_mvsa(tmp_path / "raw", ["1\tpositive,positive", "2\tneutral,neutral"],
                     {"1.jpg": jpeg(8, 8), "1.txt": "\ufeffgood day".encode(), "2.txt": "no picture".encode("gbk")})
    rows, folder = read_pairs(raw)
    assert folder == raw
    assert [(r["id"], r["image"]) for r in rows] == [("1", "data/1.jpg"), ("2", "")]
    from llavac.classify import check_rows

    errors = check_rows(rows, folder)
    assert errors[1] is None and errors[2].startswith(mvsa.MISSING_IMAGE)


# ---- adapter lookup and the synthetic warning -----------------------------------------------------------


def test_default_adapter_is_found_in_the_checkout_from_any_folder(tmp_path):
    """The nearest enclosing checkout that holds the adapter; a checkout without one is passed over; outside any,
    the checkout these tests run in (the package is installed from it, editable)."""
    checkout = tmp_path / "checkout"
    (checkout / "artifacts" / "adapters" / "1").mkdir(parents=True)
    (checkout / "dvc.yaml").write_text("stages: {}\n")
    (checkout / "deep" / "inside").mkdir(parents=True)
    assert default_adapter(checkout / "deep" / "inside") == checkout / "artifacts" / "adapters" / "1"
    untrained = checkout / "deep" / "untrained"  # a checkout inside the other, its train stage never run
    (untrained / "artifacts").mkdir(parents=True)
    (untrained / "dvc.yaml").write_text("stages: {}\n")
    assert default_adapter(untrained) == checkout / "artifacts" / "adapters" / "1"
    (tmp_path / "elsewhere").mkdir()
    assert default_adapter(tmp_path / "elsewhere") == REPO / "artifacts" / "adapters" / "1"


def test_an_adapter_trained_on_the_synthetic_sample_is_warned_about_once(tmp_path, caplog):
    facts = {"base": "org/hub-model", "image_position": "front", "tokenizer_rule": "sentencepiece", "precision": "fp32", "recipe": {}}
    AdapterCard(**facts, synthetic_sample=True).write(tmp_path / "synthetic")
    AdapterCard(**facts).write(tmp_path / "real")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            open_adapter(tmp_path / "synthetic")
        open_adapter(tmp_path / "real")
    assert [r.getMessage().count("SYNTHETIC") for r in caplog.records] == [1]


# ---- the classifier: shared fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """A trained adapter (one short run) and a CSV of 16 pairs, four of them bad in four ways."""
    from llavac.model.build import build_llava
    from llavac.prompt import llava_record
    from llavac.train import train_split

    root = tmp_path_factory.mktemp("classify")
    (root / "data").mkdir()
    records = []
    for i in range(12):
        Image.new("RGB", (20 + 5 * i, 24), (20 * i, 180 - 10 * i, 90)).save(root / "data" / f"{i}.jpg")
        labels = ("positive", "negative", "neutral")[i % 3]
        pair = {"id": i, "text": TEXTS[i % 4], "text_label": labels, "image_label": labels, "multimodal_label": labels,
                "image_path": f"data/{i}.jpg"}
        records.append(llava_record(pair, "front"))
    base = build_llava(root / "base", TEXTS * 5, ARCHITECTURE, seed=0)
    train_split(str(base), records[:8], root, root / "adapter", root / "ckpt", root / "live",
                replace(RECIPE, epochs=1), seed=0, image_position="front")
    (root / "data" / "cut.jpg").write_bytes((root / "data" / "0.jpg").read_bytes()[:100])
    pairs = [(f"p{i}", f"data/{i}.jpg", TEXTS[i % 4] + f" #{i}") for i in range(12)]
    pairs += [("gone", "data/absent.jpg", "hello"), ("cut", "data/cut.jpg", "meh"), ("empty", "data/1.jpg", ""),
              ("long", "data/2.jpg", "x" * (mvsa.MAX_TEXT_CHARS + 1))]
    with open(root / "pairs.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("id", "image", "text"), *pairs])
    settings = ClassifySettings(root / "adapter", batch_size=3)
    plain = classify_to_jsonl(settings, read_pairs(root / "pairs.csv"), root / "plain.jsonl")
    return {"root": root, "settings": settings, "plain_summary": plain,
            "plain": [json.loads(line) for line in (root / "plain.jsonl").read_text().splitlines()]}


BAD = {"gone": mvsa.MISSING_IMAGE, "cut": mvsa.CORRUPT_IMAGE, "empty": mvsa.EMPTY_TEXT, "long": mvsa.TEXT_TOO_LONG}


def spark_rows(out: Path) -> list[dict]:
    rows = sorted(pq.read_table(out).to_pylist(), key=lambda r: r["row"])
    for row in rows:
        for key in [f"p_{t}" for t in TASKS] + ["p_answers"]:
            row[key] = dict(row[key]) if row[key] is not None else None
    return rows


def assert_same_results(spark_out: list[dict], plain: list[dict]) -> None:
    """The Spark rows are the plain command's rows: labels equal, probabilities equal up to batch padding."""
    assert [r["row"] for r in spark_out] == [r["row"] for r in plain] == list(range(1, len(plain) + 1))
    for got, expected in zip(spark_out, plain, strict=True):
        assert got["id"] == str(expected["id"]) and got["error"] == expected.get("error")
        if expected.get("error"):
            assert got["pred_text"] is None and got["p_answers"] is None
            continue
        assert [got[f"pred_{t}"] for t in TASKS] == [expected[f"pred_{t}"] for t in TASKS]
        assert got["best_answer"] == expected["best_answer"] and got["raw"] == expected["raw"]
        for key in [f"p_{t}" for t in TASKS] + ["p_answers"]:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-7)
        assert got["template_mass"] == pytest.approx(expected["template_mass"], rel=1e-4)


def test_plain_classify_writes_bad_rows_with_their_reason_and_a_summary(corpus):
    errors = {r["id"]: r["error"].split(":")[0] for r in corpus["plain"] if "error" in r}
    assert errors == BAD
    summary = json.loads((corpus["root"] / "plain.jsonl.summary.json").read_text())
    assert summary["rows"] == 16 and summary["classified"] == 12
    assert summary["errors"] == {reason: 1 for reason in BAD.values()}
    again, _ = read_pairs(corpus["root"] / "plain.jsonl")  # our own output reads back as an input
    assert [(r["id"], r["image"], r["text"]) for r in again] == [(r["id"], r["image"], r["text"]) for r in corpus["plain"]]


def test_spark_local_equals_plain_classify_and_reruns_as_a_no_op(corpus, spark, tmp_path):
    root, settings = corpus["root"], corpus["settings"]
    out = tmp_path / "out.parquet"
    result = classify_spark(spark, settings, root / "pairs.csv", read_pairs(root / "pairs.csv"), out, rows_per_task=5)
    assert len(list(out.glob("*.parquet"))) == 4  # 16 rows, 5 per task
    assert_same_results(spark_rows(out), corpus["plain"])
    assert result["classified"] == 12 and result["errors"] == {reason: 1 for reason in BAD.values()}
    as_input, _ = read_pairs(out)  # the Parquet output reads back as an input too
    assert sorted((r["id"], r["text"]) for r in as_input) == sorted((str(r["id"]), r["text"]) for r in corpus["plain"])
    again = classify_spark(spark, settings, root / "pairs.csv", read_pairs(root / "pairs.csv"), out, rows_per_task=5)
    assert (again["skipped_done"], again["classified_now"]) == (16, 0)
    assert_same_results(spark_rows(out), corpus["plain"])


def test_the_model_loads_once_per_python_worker(corpus, spark):
    from pyspark import cloudpickle

    settings = corpus["settings"]

    def models(frames):
        from llavac.classify_spark import worker_classifier

        for _ in frames:
            yield pd.DataFrame({"pid": [os.getpid()], "model": [id(worker_classifier(settings).model)]})

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        seen = spark.range(0, 8, numPartitions=8).mapInPandas(models, "pid long, model long").collect()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    by_worker: dict[int, set[int]] = {}
    for row in seen:
        by_worker.setdefault(row["pid"], set()).add(row["model"])
    assert len(seen) == 8 and len(by_worker) < 8  # Spark reused its Python workers across the 8 tasks
    assert all(len(loaded) == 1 for loaded in by_worker.values())  # ... and each kept its one model


def test_an_output_folder_of_another_input_is_refused(corpus, tmp_path):
    root, settings = corpus["root"], corpus["settings"]
    rows, _ = read_pairs(root / "pairs.csv")
    claim_output(tmp_path / "out", job_identity(root / "pairs.csv", rows, settings))
    assert (tmp_path / "out" / JOB_FILE).is_file()
    with pytest.raises(InputError, match=r"another input or settings \(differs in: rows, rows_sha256\)"):
        claim_output(tmp_path / "out", job_identity(root / "pairs.csv", rows[:3], settings))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not the output of `llavac classify --spark`"):
        claim_output(tmp_path / "foreign", job_identity(root / "pairs.csv", rows, settings))


def classify_args(corpus: dict, out: Path, master: str, *extra: str) -> list[str]:
    """`llavac classify`'s arguments for the corpus's pairs on `master`, results to `out`."""
    return ["classify", str(corpus["root"] / "pairs.csv"), "--spark", master, "--out", str(out),
            "--adapter", str(corpus["settings"].adapter), "--batch-size", "3", *extra]


def classify_command(corpus: dict, out: Path, master: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llavac.cli", *classify_args(corpus, out, master, *extra)]


STOP_ROW = 11
"""The row whose Spark task the killed job never finishes: at 2 rows per task, one at a time, rows 1-10 are committed."""
STOPPING_JOB = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import test_classify; "
                "test_classify.classify_stopping_at(Path(sys.argv[2]), sys.argv[3:])")
"""`python -c STOPPING_JOB TESTS_FOLDER MARKER ARGS...`: `classify_stopping_at` in a fresh process."""


def classify_stopping_at(marker: Path, argv: list[str]) -> None:
    """`llavac argv` whose Spark task holding row STOP_ROW touches `marker`, then waits for good before classifying
    it: the job stops at a known row, where a test can see it on disk and kill it."""
    from pyspark import cloudpickle

    from llavac import classify_spark, cli

    plain = classify_spark.classify_batches

    def stopping(settings: ClassifySettings, image_folder: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
        classify = plain(settings, image_folder)

        def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for frame in frames:
                if STOP_ROW in frame["row"].tolist():
                    marker.touch()
                    threading.Event().wait()  # never set: the worker waits until the job is killed
                yield from classify(iter([frame]))

        return run

    classify_spark.classify_batches = stopping
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers get `run` whole, without this module
    cli.main(argv)


@pytest.mark.slow
def test_a_killed_spark_job_resumes_and_writes_every_row_exactly_once(corpus, spark, tmp_path):
    """The job is killed (its driver, JVM and Python workers) once its task of row 11 has started, so exactly the
    tasks before it, rows 1-10, are in the output; the rerun skips them, classifies the other 6 and the output
    is the plain command's, every row once."""
    out, marker, log = tmp_path / "out.parquet", tmp_path / "stopped", tmp_path / "job.log"
    with open(log, "wb") as sink:
        job = subprocess.Popen([sys.executable, "-c", STOPPING_JOB, str(Path(__file__).parent), str(marker),
                                *classify_args(corpus, out, "local[1]", "--rows-per-task", "2")],
                               start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert job.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the driver and its JVM; the workers' daemon ends them when the JVM goes
        job.wait()
    assert sorted(pq.read_table(out).column("row").to_pylist()) == list(range(1, STOP_ROW))
    root, settings = corpus["root"], corpus["settings"]
    result = classify_spark(spark, settings, root / "pairs.csv", read_pairs(root / "pairs.csv"), out, rows_per_task=2)
    assert (result["skipped_done"], result["classified_now"], result["rows"]) == (STOP_ROW - 1, 17 - STOP_ROW, 16)
    assert_same_results(spark_rows(out), corpus["plain"])


def wait_for(log: Path, text: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{log.name}: no {text!r}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


@pytest.fixture
def standalone_cluster(tmp_path):
    """A Spark standalone master and one 2-core worker on 127.0.0.1, from the pyspark wheel; both are
    stopped when the test ends, whatever its outcome."""
    import pyspark

    spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_WORKER_DIR": str(tmp_path / "work")}
    port = free_port()
    master_url = f"spark://127.0.0.1:{port}"
    processes = []
    try:
        for name, args in (
            ("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                        "--webui-port", str(free_port())]),
            ("worker", ["org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1", "--cores", "2",
                        "--memory", "2g", "--webui-port", str(free_port())]),
        ):
            log = tmp_path / f"{name}.log"
            with open(log, "wb") as sink:
                processes.append(subprocess.Popen([spark_class, *args], env=env, stdout=sink, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
            wait_for(log, "Starting Spark master" if name == "master" else "Successfully registered with master", processes[-1])
        yield master_url, env
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.slow
def test_a_standalone_cluster_writes_the_plain_labels(corpus, standalone_cluster, tmp_path):
    master_url, env = standalone_cluster
    out = tmp_path / "out.parquet"
    done = subprocess.run(classify_command(corpus, out, master_url, "--rows-per-task", "4"), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "classified 12 pairs, skipped 4" in done.stdout
    assert_same_results(spark_rows(out), corpus["plain"])


@pytest.mark.slow
def test_the_spark_benchmark_runs_at_its_smallest_scale(corpus, tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "benchmarks/classify_spark.py", "--rows", "24", "--small-rows", "20", "--rounds", "1",
                    "--adapter", str(corpus["settings"].adapter), "--out", str(out)], cwd=REPO, check=True, capture_output=True)
    results = json.loads(out.read_text())
    configs = {"plain_1_thread", "plain_2_threads", "spark_local_2"}
    assert set(results["rows_per_second_median"]) == set(results["runs"]["rows"]) == set(results["runs"]["small_rows"]) == configs
    assert all(isinstance(rate["marginal"], float | None) for rate in results["rows_per_second_median"].values())
    assert all(rate[kind] > 0 for rate in results["rows_per_second_median"].values() for kind in ("wall", "run"))
    assert all(isinstance(results[key][kind], float) for key in ("spark_vs_plain_1_thread", "spark_vs_plain_2_threads")
               for kind in ("wall", "run"))
    assert (results["rows"], results["small_rows"]) == (24, 20)
    assert all(len(runs) == 1 for by_name in results["runs"].values() for runs in by_name.values())
    assert isinstance(results["load_average_1min"]["max"], float) and results["machine"]["cores"] >= 1
    assert len(results["git_commit"].split("+")[0]) == 40
