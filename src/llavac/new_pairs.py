"""The pairs a user hands `llavac classify`: read from a file, a folder or the command line, checked
before any model loads.

A pair that cannot be classified (its image is missing, not a regular file, not an image; its text
is empty or too long for the model) is kept with the reason and written out unclassified, so the
output has one line per input and a long run never dies on its 900th pair after the model loaded.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import stat
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import ExifTags, Image

from llavac.data.mvsa import (
    DATA_DIR, LABEL_FILE, MISSING_IMAGE, MISSING_TEXT, ImageRefusal, decode_text, open_image, read_image,
    text_drop_reason,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
"""The usual image suffixes: in a folder, a name's image with one of these is preferred to any other file."""
FILE_KINDS = (".csv", ".jsonl", ".json", ".parquet")
JSON_WHITESPACE = " \t\r"
"""What JSON allows around a value besides the line's ``\n`` (`str.strip()` would also take U+2028)."""


@functools.cache
def readable_suffixes() -> frozenset[str]:
    """The file suffixes Pillow opens images by (`Image.registered_extensions`, readable formats only):
    `.jpg`, `.png`, `.webp`, `.gif` (its first frame), `.bmp`, `.tiff` and more; not `.heic` or `.svg`."""
    return frozenset(suffix for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN)


class InputError(ValueError):
    """The input as a whole is unusable (absent, unreadable, empty); the message says what to do."""


def read_pairs(source: Path) -> tuple[list[dict[str, Any]], Path]:
    """Rows with `row` (1-based), `id`, `image`, `text`, and the folder relative image paths start from.

    A CSV or JSONL file (or a JSON array), or a Parquet file or dataset folder, has `image` and `text`
    columns, `id` optional; image paths are relative to the folder the file (or dataset) is in, or
    absolute; a Parquet `image` column may instead be Hugging Face `datasets`' ``struct<bytes, path>``
    (`_embedded_image`); a number in `text` is read as its text. A folder holds `<name>.txt` +
    `<name>.<image>` files (`_folder_rows`), or is an MVSA-layout folder
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
        return [{**row, "image": _embedded_image(row["image"])} if isinstance(row.get("image"), dict) else row
                for row in pq.read_table(source).to_pylist()]
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


EMBEDDED_IMAGES = Path(tempfile.gettempdir()) / "llavac-embedded-images"
"""Where the bytes of a Parquet image column are written, one file per content (named by its SHA-256), for the
model's loader and Spark's local workers to open by path. A Spark cluster's workers on other machines do not
see this folder: give them image paths on a shared disk instead."""


def _embedded_image(image: dict[str, Any]) -> Any:
    """A Hugging Face `datasets` image cell (``struct<bytes, path>``) as a path: its bytes written to
    `EMBEDDED_IMAGES` (keeping the path's suffix), or its `path` when the bytes are null; a struct without
    either field is returned as it is, for `problem` to refuse."""
    data, path = image.get("bytes"), image.get("path")
    if not data:
        return path if path is not None else image
    suffix = Path(path).suffix.lower() if path else ""
    name = hashlib.sha256(data).hexdigest() + (suffix if suffix in readable_suffixes() else "")
    target = EMBEDDED_IMAGES / name
    if not target.is_file():
        EMBEDDED_IMAGES.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)  # whole or absent, whoever reads it
    return str(target)


def one_pair(image: Path, text: str) -> tuple[list[dict[str, Any]], Path]:
    """The single pair given on the command line (`--image`, `--text`)."""
    return [_row(1, {"id": image.stem, "image": image.name, "text": text})], image.parent


def _row(number: int, row: dict[str, Any]) -> dict[str, Any]:
    """A pair as classify carries it; a row without an id (absent, null or empty) takes its row number.

    A text or an image path that is a number (JSON's ``"text": 2024``) is read as its text, ``"2024"``,
    as Spark's string column reads it; any other value that is not a string stays as it is, for
    `problem` to refuse.
    """
    pair_id = row.get("id")
    return {"row": number, "id": number if pair_id is None or pair_id == "" else pair_id,
            "image": _as_text(row.get("image")) or "", "text": _as_text(row.get("text"))}


def _as_text(value: Any) -> Any:
    """A number (not a boolean) as its text; anything else unchanged."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _folder_rows(folder: Path, prefix: str = "") -> list[dict[str, Any]]:
    """One row per name that has an image or a text in `folder` (sorted); a missing half is the row's problem.

    A name's image is its file with a suffix Pillow reads (`readable_suffixes`; one of `IMAGE_SUFFIXES`
    first). A text whose only other file has another suffix (`.heic`) is paired with that file, so that
    `problem` names it and the accepted suffixes instead of reporting no image at all.
    """
    texts = {p.stem: p for p in folder.glob("*.txt")}
    readable = readable_suffixes()
    chosen: dict[str, tuple[int, str]] = {}  # per name: (2 usual suffix, 1 readable, 0 other; the file's name)
    for path in folder.iterdir():
        suffix = path.suffix.lower()
        rank = 2 if suffix in IMAGE_SUFFIXES else 1 if suffix in readable else 0
        if suffix != ".txt" and (rank or path.stem in texts) and rank > chosen.get(path.stem, (-1, ""))[0]:
            chosen[path.stem] = (rank, path.name)
    images = {name: file_name for name, (_, file_name) in chosen.items()}
    rows = []
    for name in sorted(images.keys() | texts.keys()):
        text = decode_text(texts[name].read_bytes())[0] if name in texts else None
        image = prefix + images[name] if name in images else ""
        rows.append(_row(len(rows) + 1, {"id": name, "image": image, "text": text}))
    return rows


def problem(row: dict[str, Any], folder: Path) -> str | None:
    """Why `row` cannot be classified (``"<reason>: <detail>"`` or just the reason), or None.

    The reason is one of MVSA's drop reasons (`llavac.data.mvsa`). Decodes the image: cheap next to
    the model, and a truncated file shows here. A text that is neither a string nor None (a number was
    already read as its text by `_row`) is `missing_text` naming its type; an image that does not decode
    and whose suffix Pillow does not read (`.heic`) is `missing_image` naming the suffix and the accepted
    ones; one that does not decode otherwise, or is above `MAX_IMAGE_PIXELS`, is `corrupt_image` with
    Pillow's message.
    """
    text = row["text"]
    if text is None:
        return f"{MISSING_TEXT}: no text"
    if not isinstance(text, str):
        return f"{MISSING_TEXT}: the text is a {type(text).__name__} ({text!r:.40}), not a string or a number"
    if reason := text_drop_reason(text):
        return reason
    if not row["image"]:
        return f"{MISSING_IMAGE}: no image path"
    if not isinstance(row["image"], str):
        return (f"{MISSING_IMAGE}: the image is a {type(row['image']).__name__} ({row['image']!r:.60}), not a path "
                "(or a Hugging Face image struct with `bytes` or `path`)")
    path = folder / row["image"]
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"{MISSING_IMAGE}: image {path}: {error.strerror}"
    if not stat.S_ISREG(mode):
        return f"{MISSING_IMAGE}: image {path} is not a regular file"
    if isinstance(checked := read_image(path.read_bytes()), ImageRefusal):  # the preprocessing's own full decode
        if path.suffix and path.suffix.lower() not in readable_suffixes():  # a HEIC photo, say: the suffix says why
            return (f"{MISSING_IMAGE}: image {path}: {path.suffix} is not an image suffix Pillow reads "
                    f"(accepted: {', '.join(IMAGE_SUFFIXES)}, .gif, .bmp, .tiff and the others of "
                    "PIL.Image.registered_extensions()); convert it, e.g. to .jpg")
        return f"{checked.reason}: image {path} is not a readable image ({checked.detail})"
    return None


def turned_images(rows: list[dict[str, Any]], folder: Path, errors: dict[int, str | None]) -> dict[int, int]:
    """The EXIF orientation (2-8) of each usable row's image that the model's loader turns upright
    (`llavac.model.inputs.open_upright`), by row number; rows whose image has no such tag are absent."""
    turned = {}
    for row in rows:
        if not errors[row["row"]]:
            with open_image(folder / row["image"]) as image:
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            if orientation != 1:
                turned[row["row"]] = orientation
    return turned


def error_reason(error: str) -> str:
    """The reason of a row's `error` (its text before the first colon), for counting errors by reason."""
    return error.split(":", 1)[0]
