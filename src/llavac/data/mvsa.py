"""The raw MVSA formats, record by record: label lines, GBK tweet texts, JPEG images.

MVSA-Single and MVSA-Multiple share the layout (``labelResultAll.txt`` + ``data/<id>.{txt,jpg}``);
they differ in the number of annotators per label line: one for MVSA-Single, three for
MVSA-Multiple (Niu et al. 2016), whose label per modality is the one at least two of the three gave
(Xu & Mao 2017).

Pure Python so each rule is unit-tested without Spark; ``llavac.data.preprocess`` applies these helpers
to whole folders. Every way a record can be unusable has a name in ``DROP_REASONS``; a record is
counted under one reason and skipped, never lost silently.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import IO, NamedTuple

from PIL import Image

from llavac.labels import LABELS

LABEL_FILE = "labelResultAll.txt"
DATA_DIR = "data"
LABEL_HEADER = "ID\ttext,image"
"""MVSA-Single's header; MVSA-Multiple's repeats ``text,image`` once per annotator."""
ANNOTATORS: dict[str, int] = {"mvsa-single": 1, "mvsa-multiple": 3}
"""Annotations (``<text label>,<image label>``) per label line, by the ``dataset`` param's value."""
RAW_FOLDERS: dict[str, str] = {"mvsa-single": "MVSA_Single", "mvsa-multiple": "MVSA_Multiple"}
"""The folder each dataset is usually unpacked into (what the preprocess stage suggests for ``data.raw_dir``)."""
DATASET_NAMES: dict[str, str] = {"mvsa-single": "MVSA-Single", "mvsa-multiple": "MVSA-Multiple"}
"""How reports and messages name each dataset."""
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
NO_MAJORITY_TEXT = "no_majority_text"
NO_MAJORITY_IMAGE = "no_majority_image"
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
    NO_MAJORITY_TEXT,
    NO_MAJORITY_IMAGE,
    LABEL_CONFLICT,
)
"""In order of precedence: a record with several problems is counted under the first one."""

MAJORITY_REASONS: tuple[str, ...] = (NO_MAJORITY_TEXT, NO_MAJORITY_IMAGE)
"""Only a layout with several annotators per line has them (``drop_reasons``)."""

MAX_TEXT_CHARS = 1000
"""A tweet has at most 280 characters (140 when MVSA was collected); a text file far longer is not a
tweet, and would crash or silently overflow the model hours later (one 1 MB text asks for 34 GB)."""

REPLACEMENT_CHARACTER = "\ufffd"
DECODED_AS_UTF8 = "decoded as utf-8"
BYTE_ORDER_MARKS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE, whose BOM is its prefix
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
"""A file that starts with one of these says its encoding; each codec consumes its BOM."""
ASCII_CONTROLS = frozenset(map(chr, [*range(0x20), 0x7F])) - frozenset("\t\n\r")
"""The control characters a tweet never holds: ASCII's (C0 and DEL) but tab and the line breaks (a tweet can
span lines). In GB18030 and in UTF-8 a byte below 0x80 is always that ASCII character, so one of these in the
decoded text was that very byte in the file: UTF-16 without a byte order mark puts a NUL beside every ASCII
letter. The C1 controls (U+0080-U+009F) are not refused: they decode from valid four-byte GB18030 sequences
(``81 30 81 30`` is U+0080, ``81 30 84 31`` U+009F) that MVSA's crawl stored for emoji and symbols it could not
map, real tweets hold them, and LLaVA keeps the text as decoded (LLaMA's vocabulary has a piece for U+0080,
id 30751, and reads the others as their UTF-8 bytes, ``<0xC2><0x85>``)."""

MAX_IMAGE_PIXELS = 300_000_000
"""The most pixels an image may have (300 MP): above the largest phone photos (a 200 MP sensor gives
16320 x 12240 = 199.8 MP), which Pillow's own bomb guard (178.9 MP) refuses. `open_image` reads up to
it; above it an image is refused with Pillow's message naming its size (a decoded 300 MP image takes
0.9 GB). Pillow refuses above twice its `Image.MAX_IMAGE_PIXELS`, which this module's import sets to half
of this bound, for the whole process."""
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS // 2

_ID = re.compile(r"\d+")
_ANNOTATION = re.compile(r"([^,\s]+),([^,\s]+)")


class LabelRow(NamedTuple):
    """One line of ``labelResultAll.txt``: per modality, the annotators' majority label or ``None``."""

    id: int
    text_label: str | None
    image_label: str | None


class ImageRefusal(NamedTuple):
    """Why an image cannot be used: one of ``DROP_REASONS`` and Pillow's own words."""

    reason: str
    detail: str


class ImageInfo(NamedTuple):
    """What preprocessing records about a readable image."""

    width: int
    height: int
    sha256: str


def check_raw_layout(raw_dir: Path, annotators: int = 1) -> None:
    """Fail early, naming the missing piece, when ``raw_dir`` is not an MVSA folder with ``annotators``
    annotations per label line.

    Raises FileNotFoundError for a missing folder or file, ValueError for a label file in UTF-16 or
    UTF-32 (Spark's text reader reads UTF-8; a UTF-8 BOM is fine) or whose header names another
    number of annotators (MVSA-Single's folder given for MVSA-Multiple, or the reverse).
    """
    expected = f"the MVSA raw layout ({LABEL_FILE} and {DATA_DIR}/<id>.txt, {DATA_DIR}/<id>.jpg)"
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw data folder {raw_dir} does not exist; it must hold {expected}")
    for needed, is_there in ((raw_dir / LABEL_FILE, Path.is_file), (raw_dir / DATA_DIR, Path.is_dir)):
        if not is_there(needed):
            raise FileNotFoundError(f"{needed} not found; {raw_dir} must hold {expected}")
    with open(raw_dir / LABEL_FILE, "rb") as f:
        first_line = f.readline(4096)
    encoding = next((codec for bom, codec in BYTE_ORDER_MARKS if first_line.startswith(bom)), None)
    if encoding in ("utf-16", "utf-32"):
        raise ValueError(
            f"{raw_dir / LABEL_FILE} is {encoding.upper()} (its byte order mark says so); save it as UTF-8, "
            f"e.g. `iconv -f {encoding.upper()} -t UTF-8`"
        )
    header = first_line.decode("utf-8", errors="replace")
    if is_label_header(header) and (found := len(_fields(header)) - 1) != annotators:
        named = {count: dataset for dataset, count in ANNOTATORS.items()}
        raise ValueError(
            f"the header of {raw_dir / LABEL_FILE} names {found} annotator(s) per line "
            f"({named.get(found, 'neither MVSA dataset')}), but the dataset param expects {annotators} "
            f"({named.get(annotators)}): set `dataset` to the folder's dataset, or `data.raw_dir` to the other folder"
        )


def drop_reasons(annotators: int) -> tuple[str, ...]:
    """The reasons a layout with ``annotators`` annotations per line can drop a record for, in
    ``DROP_REASONS`` order: without several annotators there is always a majority."""
    return tuple(reason for reason in DROP_REASONS if annotators > 1 or reason not in MAJORITY_REASONS)


def is_synthetic(raw_dir: Path) -> bool:
    """Whether ``raw_dir`` is the embedded synthetic sample (it carries ``SYNTHETIC_MARKER``)."""
    return (raw_dir / SYNTHETIC_MARKER).is_file()


def _fields(line: str) -> list[str]:
    """A label line's tab-separated fields, without the surrounding whitespace (a CRLF's ``\\r``)
    or a UTF-8 byte order mark (which an editor may have put before the header)."""
    return line.lstrip(codecs.BOM_UTF8.decode()).strip().split("\t")


def is_label_header(line: str) -> bool:
    """The first line of ``labelResultAll.txt`` names the columns (``ID`` then ``text,image`` once
    per annotator); it is not a record."""
    fields = [field.strip().lower() for field in _fields(line)]
    return len(fields) > 1 and fields[0] == "id" and all(field == "text,image" for field in fields[1:])


def majority(labels: list[str]) -> str | None:
    """The label more than half of ``labels`` agree on (2 of MVSA-Multiple's 3), or ``None``."""
    label, count = Counter(labels).most_common(1)[0]
    return label if 2 * count > len(labels) else None


def parse_label_line(line: str, annotators: int = 1) -> LabelRow | str:
    """``"<id>\\t<text>,<image>"`` (``annotators`` times) as a ``LabelRow``, or the reason it cannot be used.

    A line without exactly ``annotators`` annotations (one missing, or an extra one) is malformed: the
    2-of-3 rule is defined on three. Labels are case-sensitive, as in the original file, so
    ``Positive`` or ``happy`` is an ``unknown_label`` rather than a guess. Per modality the row
    holds the majority label (``majority``), ``None`` where there is none (``positive/neutral/negative``).
    """
    record_id, *annotations = _fields(line)
    matches = [_ANNOTATION.fullmatch(annotation) for annotation in annotations]
    if not _ID.fullmatch(record_id) or len(matches) != annotators or None in matches:
        return MALFORMED_LABEL_LINE
    labels = [match.groups() for match in matches if match is not None]
    if any(label not in LABELS for pair in labels for label in pair):
        return UNKNOWN_LABEL
    text_labels, image_labels = zip(*labels, strict=True)
    return LabelRow(int(record_id), majority(list(text_labels)), majority(list(image_labels)))


def decode_text(raw: bytes) -> tuple[str, str | None]:
    """Decode a tweet file and strip it; the note says how, when it was not clean GB18030.

    A file that starts with a byte order mark (UTF-8, UTF-16 LE/BE, UTF-32) is decoded as the mark
    says, the mark removed; invalid sequences after it are replaced by U+FFFD and counted in the
    note. Without a mark, the files are GBK bytes, decoded as GB18030 (its superset). Strict UTF-8
    is tried first all the same: almost any UTF-8 byte string is also valid GB18030, so a re-saved UTF-8 file would
    otherwise be silently garbled (``😡 周末`` -> ``馃槨 鍛ㄦ湯``), while GBK text with non-ASCII
    characters is practically never valid UTF-8 (none of MVSA-Single's is). Anything valid in
    neither (id 5084 of the real data ends in such bytes) is decoded as GB18030 with each bad
    sequence replaced by U+FFFD, keeping the readable part of the tweet. Never raises. What is
    decoded may still hold control characters (UTF-16 without a mark decodes as UTF-8 with a NUL
    in every other place): ``text_drop_reason`` refuses those. The preprocess stage and
    ``llavac classify``'s folder input both read tweets with this function.
    """
    encoding = next((codec for bom, codec in BYTE_ORDER_MARKS if raw.startswith(bom)), None)
    if encoding is not None:
        text = raw.decode(encoding, errors="replace")
        replaced = text.count(REPLACEMENT_CHARACTER) - raw.decode(encoding, errors="ignore").count(REPLACEMENT_CHARACTER)
        note = f"decoded as {encoding.removesuffix('-sig')} by its byte order mark"
        return text.strip(), note + (f", {replaced} invalid sequence(s) replaced" if replaced else "")
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
    tweet with nothing but replacement characters and whitespace carries none and is dropped as
    ``undecodable_text``. So is one holding an ASCII control character other than tab and line
    breaks (NUL, ESC, DEL, ``ASCII_CONTROLS``): no tweet holds one, so its bytes were in an encoding
    we could not identify (UTF-16 without a byte order mark), and what was decoded is not the tweet.
    A C1 control (U+0080-U+009F, from a valid GB18030 sequence) is kept, as LLaVA keeps it.
    """
    if not text:
        return EMPTY_TEXT
    if not text.replace(REPLACEMENT_CHARACTER, "").strip() or has_control_characters(text):
        return UNDECODABLE_TEXT
    if len(text) > MAX_TEXT_CHARS:
        return TEXT_TOO_LONG
    return None


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds one of ``ASCII_CONTROLS`` (NUL, ESC, DEL, ...; not tab or a line break)."""
    return not ASCII_CONTROLS.isdisjoint(text)


def open_image(file: Path | IO[bytes]) -> Image.Image:
    """``Image.open`` under ``MAX_IMAGE_PIXELS``: the preprocess stage, ``llavac classify``'s checks and
    the model's image loader all open images with it, so they accept and refuse the same ones.

    Raises ``Image.DecompressionBombError`` for an image above ``MAX_IMAGE_PIXELS`` (Pillow's message,
    naming the image's pixels and the bound), and what ``Image.open`` raises for a file that is not an image.
    Pillow's warning at half the bound is silenced here: the bound itself is the refusal.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(file)
        except Image.DecompressionBombError as error:
            raise Image.DecompressionBombError(f"{error} (llavac.data.mvsa.MAX_IMAGE_PIXELS): downscale it") from None


def read_image(raw: bytes) -> ImageInfo | ImageRefusal:
    """Size and SHA-256 of an image that fully decodes, or why not (``corrupt_image`` with Pillow's message).

    ``Image.load()`` decodes every pixel, so a truncated JPEG fails here (PIL's
    ``LOAD_TRUNCATED_IMAGES`` is left False) instead of failing later inside training. An image above
    ``MAX_IMAGE_PIXELS`` is refused before it is decoded, Pillow's message naming its pixels and the limit.
    """
    try:
        with open_image(io.BytesIO(raw)) as image:
            image.load()
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return ImageRefusal(CORRUPT_IMAGE, f"{type(error).__name__}: {error}")
    return ImageInfo(width, height, hashlib.sha256(raw).hexdigest())


def inspect_image(raw: bytes) -> ImageInfo | str:
    """``read_image`` for the preprocess stage, which counts a refused image by its reason alone."""
    checked = read_image(raw)
    return checked.reason if isinstance(checked, ImageRefusal) else checked
