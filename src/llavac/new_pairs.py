"""The pairs a user hands `llavac classify`: read from a file, a folder or the command line, checked
before any model loads.

A pair that cannot be classified (its image is missing, not a regular file, not an image; its text
is empty or too long for the model) is kept with the reason and written out unclassified, so the
output has one line per input and a long run never dies on its 900th pair after the model loaded.
"""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llavac.data.mvsa import (
    CORRUPT_IMAGE, DATA_DIR, LABEL_FILE, MISSING_IMAGE, MISSING_TEXT, decode_text, inspect_image, text_drop_reason,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
FILE_KINDS = (".csv", ".jsonl", ".json", ".parquet")
JSON_WHITESPACE = " \t\r"
"""What JSON allows around a value besides the line's ``\n`` (`str.strip()` would also take U+2028)."""


class InputError(ValueError):
    """The input as a whole is unusable (absent, unreadable, empty); the message says what to do."""


def read_pairs(source: Path) -> tuple[list[dict[str, Any]], Path]:
    """Rows with `row` (1-based), `id`, `image`, `text`, and the folder relative image paths start from.

    A CSV or JSONL file (or a JSON array), or a Parquet file or dataset folder, has `image` and `text`
    columns, `id` optional; image paths are relative to the folder the file (or dataset) is in, or
    absolute. A folder holds `<name>.txt` + `<name>.<image>` files, or is an MVSA-layout folder
    (`labelResultAll.txt` + `data/`), whose `data/` is read so; texts are decoded as MVSA's.

    CSV is read by the `csv` module from the file itself, so a quoted field keeps its line breaks;
    JSON lines are split on ``\n`` only, so a U+2028 inside a string (legal JSON, and what
    `write_jsonl` writes) stays in its line. Raises `InputError` for an input that cannot be read.
    """
    if not source.exists():
        raise InputError(f"{source} does not exist: give a folder of <name>.jpg + <name>.txt, or a {'/'.join(FILE_KINDS)} file")
    if source.is_dir() and not _is_parquet_dataset(source):
        if (source / LABEL_FILE).is_file() and (source / DATA_DIR).is_dir():
            return _folder_rows(source / DATA_DIR, f"{DATA_DIR}/"), source
        return _folder_rows(source), source
    if source.suffix not in FILE_KINDS and not source.is_dir():
        raise InputError(f"{source}: give a folder, or a file ending in {', '.join(FILE_KINDS)}")
    try:
        rows = _file_rows(source)
    except UnicodeDecodeError as error:
        raise InputError(f"{source} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{source}: not valid JSON at line {error.lineno}: {error.msg}") from None
    except (pa.ArrowException, csv.Error) as error:
        raise InputError(f"{source}: not a readable {source.suffix or 'Parquet'} file ({error})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(f"{source}: expected one object per pair with `image` and `text`")
    if rows and not {"image", "text"} <= set(rows[0]):
        raise InputError(f"{source}: the first row has the columns {sorted(rows[0])}; `image` and `text` are required")
    return [_row(number, row) for number, row in enumerate(rows, 1)], source.parent


def _is_parquet_dataset(folder: Path) -> bool:
    return any(folder.glob("*.parquet"))


def _file_rows(source: Path) -> Any:
    """The rows of a CSV, JSONL, JSON or Parquet input, as parsed (checked by the caller)."""
    if source.is_dir() or source.suffix == ".parquet":
        return pq.read_table(source).to_pylist()
    if source.suffix == ".csv":
        with open(source, encoding="utf-8-sig", newline="") as f:  # newline="": the csv module sees the file's own
            return list(csv.DictReader(f))
    content = source.read_text(encoding="utf-8-sig")
    if source.suffix == ".json":
        return json.loads(content)
    rows = []
    for number, line in enumerate(content.split("\n"), 1):
        if line.strip(JSON_WHITESPACE):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise InputError(f"{source}: not valid JSON at line {number}: {error.msg}") from None
    return rows


def one_pair(image: Path, text: str) -> tuple[list[dict[str, Any]], Path]:
    """The single pair given on the command line (`--image`, `--text`)."""
    return [_row(1, {"id": image.stem, "image": image.name, "text": text})], image.parent


def _row(number: int, row: dict[str, Any]) -> dict[str, Any]:
    """A pair as classify carries it; a row without an id (absent, null or empty) takes its row number."""
    pair_id = row.get("id")
    return {"row": number, "id": number if pair_id is None or pair_id == "" else pair_id, "image": row.get("image") or "", "text": row.get("text")}


def _folder_rows(folder: Path, prefix: str = "") -> list[dict[str, Any]]:
    """One row per name that has an image or a text in `folder` (sorted); a missing half is the row's problem."""
    images = {p.stem: p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    texts = {p.stem: p for p in folder.glob("*.txt")}
    rows = []
    for name in sorted(images.keys() | texts.keys()):
        text = decode_text(texts[name].read_bytes())[0] if name in texts else None
        image = prefix + images[name] if name in images else ""
        rows.append(_row(len(rows) + 1, {"id": name, "image": image, "text": text}))
    return rows


def problem(row: dict[str, Any], folder: Path) -> str | None:
    """Why `row` cannot be classified (``"<reason>: <detail>"`` or just the reason), or None.

    The reason is one of MVSA's drop reasons (`llavac.data.mvsa`). Decodes the image: cheap next to
    the model, and a truncated file shows here.
    """
    text = row["text"]
    if not isinstance(text, str):
        return f"{MISSING_TEXT}: no text"
    if reason := text_drop_reason(text):
        return reason
    if not row["image"]:
        return f"{MISSING_IMAGE}: no image path"
    path = folder / row["image"]
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"{MISSING_IMAGE}: image {path}: {error.strerror}"
    if not stat.S_ISREG(mode):
        return f"{MISSING_IMAGE}: image {path} is not a regular file"
    if isinstance(decoded := inspect_image(path.read_bytes()), str):  # the preprocessing's own full decode
        return f"{CORRUPT_IMAGE}: image {path} is not a readable image ({decoded})"
    return None


def error_reason(error: str) -> str:
    """The reason of a row's `error` (its text before the first colon), for counting errors by reason."""
    return error.split(":", 1)[0]
