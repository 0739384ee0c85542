"""The preprocess stage's library: a raw MVSA folder -> one row per usable pair, and counts, on Spark.

Spark does the heavy, parallel part: it reads the label file with its text reader and every tweet and
image with the ``binaryFile`` source, decodes and validates them in ``mapInPandas`` (Arrow batches,
one Python worker per core; the rules are ``llavac.data.mvsa``'s), and joins the three on the id.
What comes back to the driver is one small row per label line (no image bytes), so the
bookkeeping — the drop reason of each record, the label rule, the counts — is plain pandas, and the
pairs are written as ONE Parquet file with pyarrow: byte-identical across runs and partition
counts (Spark's own writer names part files with a random UUID), and what ``pandas.read_parquet``
and DVC see is a file, not a folder of parts.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from llavac.data import mvsa
from llavac.data.pairs import PAIRS_SCHEMA
from llavac.labels import LABELS, label_rule

log = logging.getLogger(__name__)

_LABELS_SCHEMA = "line string, id long, text_label string, image_label string, label_reason string"
_TEXTS_SCHEMA = "id long, text string, text_note string, text_reason string"
_IMAGES_SCHEMA = (
    "id long, image_path string, image_width long, image_height long, image_sha256 string, image_reason string"
)
_SHOWN_IDS = 20


def spark_session(
    master: str | None, partitions: int, app: str = "llavac-preprocess", conf: Mapping[str, str] | None = None
) -> SparkSession:
    """A quiet Spark session sized for small data: no UI, ``partitions`` shuffle partitions and file splits.

    Each image is tiny next to Spark's default 4 MB "cost of opening a file", which would cut a few
    thousand files into hundreds of tasks; a 64 KB cost and at least ``partitions`` splits keep
    every core busy with few tasks. In local mode the one JVM compiles with the quick C1 JIT only:
    the job is short and its work is done in Python, so the optimising compiler would just compete
    for the cores (this halves the session start on 2 busy cores); a cluster's JVM options are left
    to its own config. Python workers run this interpreter unless ``PYSPARK_PYTHON`` says otherwise
    (a cluster's executors may need their own). ``master`` None keeps the one `spark-submit` set;
    ``conf`` entries are set last (they override these defaults).
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder if master is None else SparkSession.builder.master(master)
    if master is not None and master.startswith("local"):
        builder = builder.config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # one machine: loopback, not a guessed interface
    builder = (
        builder.appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.sql.files.minPartitionNum", str(partitions))
        .config("spark.sql.files.openCostInBytes", str(64 * 1024))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def preprocess(spark: SparkSession, raw_dir: Path, out_path: Path, dataset: str = "mvsa-single") -> dict[str, Any]:
    """Write the usable pairs of ``raw_dir`` to the Parquet file ``out_path``; return the counts.

    ``dataset`` (a key of ``mvsa.ANNOTATORS``) says how many annotations each label line holds;
    MVSA-Multiple's three give one label per modality by majority (``mvsa.parse_label_line``) before
    the combination rule. Every label row ends up either as a pair or under exactly one reason of
    ``mvsa.drop_reasons`` (the first that applies). An id with several label rows is ambiguous, so all its rows are
    dropped as ``duplicate_id``. Texts whose invalid bytes were replaced are kept and counted.
    The counts start with ``synthetic_sample``: whether ``raw_dir`` is the embedded sample (it
    carries ``mvsa.SYNTHETIC_MARKER``), so that what is built from the counts can say so.
    """
    annotators = mvsa.ANNOTATORS[dataset]
    mvsa.check_raw_layout(raw_dir, annotators)
    data_dir = (raw_dir / mvsa.DATA_DIR).resolve()
    labels = spark.read.text(literal_path(raw_dir / mvsa.LABEL_FILE)).mapInPandas(
        partial(_parse_labels, annotators=annotators), _LABELS_SCHEMA
    )
    texts = _data_files(spark, data_dir, "txt").mapInPandas(_decode_texts, _TEXTS_SCHEMA)
    images = _data_files(spark, data_dir, "jpg").mapInPandas(_inspect_images, _IMAGES_SCHEMA)
    rows = labels.join(texts, "id", "left").join(images, "id", "left").toPandas()
    rows["id"] = rows["id"].astype("Int64")
    # Spark's file scans skip zero-byte files, so the driver lists data/ itself (it sees raw_dir
    # anyway; DataFrame.inputFiles() would cross py4j once per file): a listed file not read is empty.
    listed = {kind: _file_ids(pd.Series(sorted(path.name for path in data_dir.glob(f"*.{extension}")), dtype="str"))
              for kind, extension in (("text", "txt"), ("image", "jpg"))}
    log.info("read %d label rows, %d text files, %d image files from %s",
             len(rows), len(listed["text"]), len(listed["image"]), raw_dir)

    rows["multimodal_label"] = [
        label_rule(text, image) if isinstance(text, str) and isinstance(image, str) else None
        for text, image in zip(rows["text_label"], rows["image_label"])
    ]
    reasons = mvsa.drop_reasons(annotators)
    rows["drop_reason"] = _drop_reasons(rows, listed, reasons)
    pairs = rows[rows["drop_reason"].isna()].sort_values("id").reset_index(drop=True)
    table = pa.Table.from_pandas(pairs[PAIRS_SCHEMA.names], schema=PAIRS_SCHEMA, preserve_index=False)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(), out_path)  # plain Arrow types, not the pandas nullable ones
    _log_details(rows)
    return {"synthetic_sample": mvsa.is_synthetic(raw_dir), **_metrics(rows, pairs, listed, reasons)}


HADOOP_GLOB = re.compile(r"([\\\[\]{}*?])")
"""Characters Spark's file readers take as a Hadoop glob pattern (`org.apache.hadoop.fs.GlobPattern`)."""


def literal_path(path: Path) -> str:
    """`path`, absolute, with Hadoop's glob characters escaped, so Spark reads that file or folder and no other.

    Spark globs every path it is given: ``MVSA [copy]`` would match ``MVSA c`` or nothing, ``a{1,2}``
    two folders, ``*`` and ``?`` anything. Spaces, commas, quotes, ``:``, ``%`` and non-ASCII need no escape.
    """
    return HADOOP_GLOB.sub(r"\\\1", str(path.resolve()))


def _data_files(spark: SparkSession, data_dir: Path, extension: str) -> DataFrame:
    """``path`` and ``content`` of ``data_dir/*.<extension>``."""
    files = spark.read.format("binaryFile").option("pathGlobFilter", f"*.{extension}").load(literal_path(data_dir))
    return files.select("path", "content")


def _file_ids(paths: pd.Series) -> pd.Series:
    """The id in ``<id>.<ext>`` or ``.../data/<id>.<ext>``; null for any other name.

    Only canonical ids (``12``, not ``012``), so two files never claim one id and double a label row in the join.
    """
    ids = paths.str.extract(r"(?:^|/)(0|[1-9]\d*)\.[^./]+$", expand=False)
    return pd.to_numeric(ids, errors="coerce").astype("Int64")


def _parse_labels(batches: Iterator[pd.DataFrame], annotators: int) -> Iterator[pd.DataFrame]:
    """Label lines -> id and (majority) labels, or the reason the line is unusable. Header and blank
    lines are not records."""
    for batch in batches:
        lines = batch["value"][[not mvsa.is_label_header(line) and line.strip() != "" for line in batch["value"]]]
        if lines.empty:  # an untyped empty frame would not convert to the schema
            continue
        parsed = [mvsa.parse_label_line(line, annotators) for line in lines]
        rows = [row if isinstance(row, mvsa.LabelRow) else mvsa.LabelRow(None, None, None) for row in parsed]
        yield pd.DataFrame(
            {
                "line": lines.to_numpy(),
                "id": pd.array([row.id for row in rows], dtype="Int64"),
                "text_label": [row.text_label for row in rows],
                "image_label": [row.image_label for row in rows],
                "label_reason": [None if isinstance(row, mvsa.LabelRow) else row for row in parsed],
            }
        )


def _decode_texts(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Tweet files -> decoded text, how it was decoded, and why it is unusable (empty, undecodable)."""
    for batch in batches:
        decoded = [mvsa.decode_text(raw) for raw in batch["content"]]
        yield pd.DataFrame(
            {
                "id": _file_ids(batch["path"]),
                "text": [text for text, _ in decoded],
                "text_note": [note for _, note in decoded],
                "text_reason": [mvsa.text_drop_reason(text) for text, _ in decoded],
            }
        )


def _inspect_images(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Image files -> relative path, size and SHA-256 after a full decode, or ``corrupt_image``."""
    for batch in batches:
        inspected = [mvsa.inspect_image(raw) for raw in batch["content"]]
        infos = [info if isinstance(info, mvsa.ImageInfo) else mvsa.ImageInfo(None, None, None) for info in inspected]
        yield pd.DataFrame(
            {
                "id": _file_ids(batch["path"]),
                "image_path": f"{mvsa.DATA_DIR}/" + batch["path"].str.rsplit("/", n=1).str[-1],
                "image_width": pd.array([info.width for info in infos], dtype="Int64"),
                "image_height": pd.array([info.height for info in infos], dtype="Int64"),
                "image_sha256": [info.sha256 for info in infos],
                "image_reason": [None if isinstance(info, mvsa.ImageInfo) else info for info in inspected],
            }
        )


def _drop_reasons(rows: pd.DataFrame, listed: dict[str, pd.Series], reasons: tuple[str, ...]) -> pd.Series:
    """The first of ``reasons`` (in ``mvsa.DROP_REASONS`` order) that applies to each label row, or null.

    A well-formed line without a majority label for a modality holds null there (``no_majority_*``).

    ``listed`` holds the ids of every file in data/: a listed text that was not read is a
    zero-byte file (empty), a listed image that was not read is a zero-byte (corrupt) image.
    """
    checks = {
        mvsa.MALFORMED_LABEL_LINE: rows["label_reason"] == mvsa.MALFORMED_LABEL_LINE,
        mvsa.UNKNOWN_LABEL: rows["label_reason"] == mvsa.UNKNOWN_LABEL,
        mvsa.DUPLICATE_ID: rows["id"].notna() & rows["id"].duplicated(keep=False),
        mvsa.MISSING_TEXT: ~rows["id"].isin(listed["text"]),
        mvsa.MISSING_IMAGE: ~rows["id"].isin(listed["image"]),
        mvsa.EMPTY_TEXT: rows["text"].isna() | (rows["text_reason"] == mvsa.EMPTY_TEXT),
        mvsa.UNDECODABLE_TEXT: rows["text_reason"] == mvsa.UNDECODABLE_TEXT,
        mvsa.TEXT_TOO_LONG: rows["text_reason"] == mvsa.TEXT_TOO_LONG,
        mvsa.CORRUPT_IMAGE: rows["image_path"].isna() | (rows["image_reason"] == mvsa.CORRUPT_IMAGE),
        mvsa.NO_MAJORITY_TEXT: rows["label_reason"].isna() & rows["text_label"].isna(),
        mvsa.NO_MAJORITY_IMAGE: rows["label_reason"].isna() & rows["image_label"].isna(),
        mvsa.LABEL_CONFLICT: rows["multimodal_label"].isna(),
    }
    drop_reason = pd.Series(None, index=rows.index, dtype=object)
    for reason in reversed(reasons):  # the first reason that applies is written last
        drop_reason[checks[reason].fillna(False).astype(bool)] = reason
    return drop_reason


def _counts(values: pd.Series) -> dict[str, int]:
    """Count per label, zeros included, in ``LABELS`` order."""
    return {label: int((values == label).sum()) for label in LABELS}


def _metrics(
    rows: pd.DataFrame, pairs: pd.DataFrame, listed: dict[str, pd.Series], reasons: tuple[str, ...]
) -> dict[str, Any]:
    """``metrics/data.json``: rows in, pairs out, each drop by reason, and the label distributions.

    ``raw_labels`` counts, per modality, the labels of the well-formed rows (MVSA-Multiple's
    majority labels; a row without one is not counted for that modality).

    ``unmatched_files`` counts files in data/ that no well-formed label row names (the real data
    has files for ids missing from the label file, and the files of malformed rows end up here).
    """
    well_formed = rows[rows["label_reason"].isna()]
    return {
        "raw_label_rows": len(rows),
        "valid_pairs": len(pairs),
        "pairs_by_label": {task: _counts(pairs[f"{task}_label"]) for task in ("multimodal", "text", "image")},
        "raw_labels": {task: _counts(well_formed[f"{task}_label"]) for task in ("text", "image")},
        "dropped": {reason: int((rows["drop_reason"] == reason).sum()) for reason in reasons},
        "texts_with_replacement": int(pairs["text"].str.contains(mvsa.REPLACEMENT_CHARACTER, regex=False).sum()),
        "texts_decoded_as_utf8": int((pairs["text_note"] == mvsa.DECODED_AS_UTF8).sum()),
        "unmatched_files": {kind: int((~ids.isin(well_formed["id"])).sum()) for kind, ids in listed.items()},
    }


def _log_details(rows: pd.DataFrame) -> None:
    """Which records were dropped and which texts needed a fallback, by id (the counts go to the metrics)."""
    for reason, group in rows[rows["drop_reason"].notna()].sort_values("id").groupby("drop_reason", sort=True):
        shown = [str(i) if pd.notna(i) else repr(line) for i, line in zip(group["id"], group["line"])]
        more = f" and {len(shown) - _SHOWN_IDS} more" if len(shown) > _SHOWN_IDS else ""
        log.warning("dropped %d label row(s) as %s: %s%s", len(group), reason, ", ".join(shown[:_SHOWN_IDS]), more)
    for note, group in rows[rows["text_note"].notna() & rows["drop_reason"].isna()].groupby("text_note", sort=True):
        log.info("kept %d text(s) %s: ids %s", len(group), note, ", ".join(map(str, group["id"].head(_SHOWN_IDS))))
