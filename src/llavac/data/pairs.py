"""The pairs table: the one declaration of its schema, and its reader.

The preprocess stage writes it (one row per usable MVSA-Single pair, sorted by id); the split stage
and everything downstream read it. Both sides take the columns from here, so they cannot drift.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

PAIRS_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("text", pa.string()),
        ("text_label", pa.string()),
        ("image_label", pa.string()),
        ("multimodal_label", pa.string()),
        ("image_path", pa.string()),
        ("image_sha256", pa.string()),
        ("image_width", pa.int64()),
        ("image_height", pa.int64()),
    ]
)
"""One row per usable pair, sorted by id; ``image_path`` is relative to the raw folder (``data/12.jpg``)."""

PAIR_COLUMNS: tuple[str, ...] = tuple(PAIRS_SCHEMA.names)


def read_pairs(path: Path) -> pd.DataFrame:
    """The preprocess stage's pairs (a Parquet file or a Spark output folder), checked and sorted by id."""
    pairs = pd.read_parquet(path)
    missing = [column for column in PAIR_COLUMNS if column not in pairs.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; it should be the preprocess stage's pairs table")
    duplicated = pairs.loc[pairs["id"].duplicated(), "id"].unique().tolist()
    if duplicated:
        raise ValueError(f"{path} holds ids {duplicated[:10]} more than once; one row per pair is expected")
    return pairs.sort_values("id", ignore_index=True)


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files behind ``path``: itself, or the part files of a Spark output folder."""
    return sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
