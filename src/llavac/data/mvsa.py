"""The raw MVSA-Single format, record by record: label lines, GBK tweet texts, JPEG images.

Pure Python so each rule is unit-tested without Spark; ``llavac.data.preprocess`` applies these helpers
to whole folders. Every way a record can be unusable has a name in ``DROP_REASONS``; a record is
counted under one reason and skipped, never lost silently.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from llavac.labels import LABELS

LABEL_FILE = "labelResultAll.txt"
DATA_DIR = "data"
LABEL_HEADER = "ID\ttext,image"
SYNTHETIC_MARKER = "SYNTHETIC.json"
"""Written by the ``sample`` stage beside the label file; the real dataset has no such file. The data
says what it is: preprocessing records it in metrics/data.json, and the report takes it from there."""

MALFORMED_LABEL_LINE = "malformed_label_line"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE_ID = "duplicate_id"
MISSING_TEXT = "missing_text"
MISSING_IMAGE = "missing_image"
EMPTY_TEXT = "empty_text"
UNDECODABLE_TEXT = "undecodable_text"
TEXT_TOO_LONG = "text_too_long"
CORRUPT_IMAGE = "corrupt_image"
LABEL_CONFLICT = "label_conflict"

DROP_REASONS: tuple[str, ...] = (
    MALFORMED_LABEL_LINE,
    UNKNOWN_LABEL,
    DUPLICATE_ID,
    MISSING_TEXT,
    MISSING_IMAGE,
    EMPTY_TEXT,
    UNDECODABLE_TEXT,
    TEXT_TOO_LONG,
    CORRUPT_IMAGE,
    LABEL_CONFLICT,
)
"""In order of precedence: a record with several problems is counted under the first one."""

MAX_TEXT_CHARS = 1000
"""A tweet has at most 280 characters (140 when MVSA was collected); a text file far longer is not a
tweet, and would crash or silently overflow the model hours later (one 1 MB text asks for 34 GB)."""

REPLACEMENT_CHARACTER = "\ufffd"
DECODED_AS_UTF8 = "decoded as utf-8"

_LABEL_LINE = re.compile(r"(\d+)\t([^,\s]+),([^,\s]+)")


class LabelRow(NamedTuple):
    """One annotation of ``labelResultAll.txt``."""

    id: int
    text_label: str
    image_label: str


class ImageInfo(NamedTuple):
    """What preprocessing records about a readable image."""

    width: int
    height: int
    sha256: str


def check_raw_layout(raw_dir: Path) -> None:
    """Fail early, naming the missing piece, when ``raw_dir`` is not an MVSA-Single folder."""
    expected = f"the MVSA-Single raw layout ({LABEL_FILE} and {DATA_DIR}/<id>.txt, {DATA_DIR}/<id>.jpg)"
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw data folder {raw_dir} does not exist; it must hold {expected}")
    for needed, is_there in ((raw_dir / LABEL_FILE, Path.is_file), (raw_dir / DATA_DIR, Path.is_dir)):
        if not is_there(needed):
            raise FileNotFoundError(f"{needed} not found; {raw_dir} must hold {expected}")


def is_synthetic(raw_dir: Path) -> bool:
    """Whether ``raw_dir`` is the embedded synthetic sample (it carries ``SYNTHETIC_MARKER``)."""
    return (raw_dir / SYNTHETIC_MARKER).is_file()


def is_label_header(line: str) -> bool:
    """The first line of ``labelResultAll.txt`` names the columns; it is not a record."""
    return line.strip().lower() == LABEL_HEADER.lower()


def parse_label_line(line: str) -> LabelRow | str:
    """``"<id>\\t<text_label>,<image_label>"`` as a ``LabelRow``, or the reason it cannot be used.

    Surrounding whitespace (a CRLF's ``\\r``) is ignored. Labels are case-sensitive, as in the
    original file, so ``Positive`` or ``happy`` is an ``unknown_label`` rather than a guess.
    """
    match = _LABEL_LINE.fullmatch(line.strip())
    if match is None:
        return MALFORMED_LABEL_LINE
    text_label, image_label = match.group(2), match.group(3)
    if text_label not in LABELS or image_label not in LABELS:
        return UNKNOWN_LABEL
    return LabelRow(int(match.group(1)), text_label, image_label)


def decode_text(raw: bytes) -> tuple[str, str | None]:
    """Decode a tweet file and strip it; the note says how, when it was not clean GB18030.

    The files are GBK bytes, decoded as GB18030 (its superset). Strict UTF-8 is tried first all the
    same: almost any UTF-8 byte string is also valid GB18030, so a re-saved UTF-8 file would
    otherwise be silently garbled (``😡 周末`` -> ``馃槨 鍛ㄦ湯``), while GBK text with non-ASCII
    characters is practically never valid UTF-8 (none of MVSA-Single's is). Anything valid in
    neither (id 5084 of the real data ends in such bytes) is decoded as GB18030 with each bad
    sequence replaced by U+FFFD, keeping the readable part of the tweet. Never raises.
    """
    for encoding in ("utf-8", "gb18030"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text.strip(), DECODED_AS_UTF8 if encoding == "utf-8" and not raw.isascii() else None
    text = raw.decode("gb18030", errors="replace")
    return text.strip(), f"gb18030 with {text.count(REPLACEMENT_CHARACTER)} undecodable byte sequence(s) replaced"


def text_drop_reason(text: str) -> str | None:
    """Why a decoded tweet cannot be used, or ``None`` when it can.

    Replaced bytes alone do not drop a tweet (its readable words still carry the sentiment); a
    tweet with nothing but replacement characters and whitespace carries none and is dropped.
    """
    if not text:
        return EMPTY_TEXT
    if not text.replace(REPLACEMENT_CHARACTER, "").strip():
        return UNDECODABLE_TEXT
    if len(text) > MAX_TEXT_CHARS:
        return TEXT_TOO_LONG
    return None


def inspect_image(raw: bytes) -> ImageInfo | str:
    """Size and SHA-256 of an image that fully decodes, or ``corrupt_image``.

    ``Image.load()`` decodes every pixel, so a truncated JPEG fails here (PIL's
    ``LOAD_TRUNCATED_IMAGES`` is left False) instead of failing later inside training.
    """
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return CORRUPT_IMAGE
    return ImageInfo(width, height, hashlib.sha256(raw).hexdigest())
