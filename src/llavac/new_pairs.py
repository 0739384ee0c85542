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

from llavac.data.mvsa import decode_text, inspect_image, text_drop_reason

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
FILE_KINDS = (".csv", ".jsonl", ".json")


class InputError(ValueError):
    """The input as a whole is unusable (absent, unreadable, empty); the message says what to do."""


def read_pairs(source: Path) -> tuple[list[dict[str, Any]], Path]:
    """Rows with `row` (1-based), `id`, `image`, `text`, and the folder relative image paths start from.

    A CSV or JSONL file (or a JSON array) has `image` and `text` columns, `id` optional; image paths
    are relative to the file's folder, or absolute. A folder holds MVSA-style `<name>.txt` +
    `<name>.<image>` files (texts decoded as MVSA's, UTF-8 or GBK).
    """
    if not source.exists():
        raise InputError(f"{source} does not exist: give a folder of <name>.jpg + <name>.txt, or a {'/'.join(FILE_KINDS)} file")
    if source.is_dir():
        return _folder_rows(source), source
    if source.suffix not in FILE_KINDS:
        raise InputError(f"{source}: give a folder, or a file ending in {', '.join(FILE_KINDS)}")
    try:
        content = source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{source} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8") from None
    try:
        if source.suffix == ".csv":
            rows = list(csv.DictReader(content.splitlines()))
        elif source.suffix == ".jsonl":
            rows = [json.loads(line) for line in content.splitlines() if line.strip()]
        else:
            rows = json.loads(content)
    except json.JSONDecodeError as error:
        raise InputError(f"{source}: not valid JSON at line {error.lineno}: {error.msg}") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(f"{source}: expected one object per pair with `image` and `text`")
    if rows and not {"image", "text"} <= set(rows[0]):
        raise InputError(f"{source}: the first row has the columns {sorted(rows[0])}; `image` and `text` are required")
    return [_row(number, row) for number, row in enumerate(rows, 1)], source.parent


def one_pair(image: Path, text: str) -> tuple[list[dict[str, Any]], Path]:
    """The single pair given on the command line (`--image`, `--text`)."""
    return [_row(1, {"id": image.stem, "image": image.name, "text": text})], image.parent


def _row(number: int, row: dict[str, Any]) -> dict[str, Any]:
    return {"row": number, "id": row.get("id") or number, "image": row.get("image") or "", "text": row.get("text")}


def _folder_rows(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        text_file = image.with_suffix(".txt")
        text = decode_text(text_file.read_bytes())[0] if text_file.is_file() else None
        rows.append(_row(len(rows) + 1, {"id": image.stem, "image": image.name, "text": text}))
    return rows


def problem(row: dict[str, Any], folder: Path) -> str | None:
    """Why `row` cannot be classified, or None. Decodes the image: cheap next to the model, and a truncated file shows here."""
    text = row["text"]
    if not isinstance(text, str):
        return "no text"
    if reason := text_drop_reason(text):
        return reason
    if not row["image"]:
        return "no image path"
    path = folder / row["image"]
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"image {path}: {error.strerror}"
    if not stat.S_ISREG(mode):
        return f"image {path} is not a regular file"
    if isinstance(decoded := inspect_image(path.read_bytes()), str):  # the preprocessing's own full decode
        return f"image {path} is not a readable image ({decoded})"
    return None
