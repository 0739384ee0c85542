"""The raw MVSA-Single format rules, record by record (no Spark)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from PIL import ImageFile

from llavac.data import mvsa
from llavac.labels import label_rule


@pytest.mark.parametrize(
    ("text", "image", "expected"),
    [
        ("positive", "positive", "positive"),
        ("neutral", "neutral", "neutral"),
        ("negative", "negative", "negative"),
        ("neutral", "positive", "positive"),
        ("neutral", "negative", "negative"),
        ("positive", "neutral", "positive"),
        ("negative", "neutral", "negative"),
        ("positive", "negative", None),
        ("negative", "positive", None),
    ],
)
def test_label_rule_all_nine_combinations(text: str, image: str, expected: str | None) -> None:
    assert label_rule(text, image) == expected


@pytest.mark.parametrize("line", ["12\tpositive,neutral", "12\tpositive,neutral\r", "  12\tpositive,neutral \n"])
def test_parse_label_line_reads_lf_and_crlf_lines(line: str) -> None:
    assert mvsa.parse_label_line(line) == mvsa.LabelRow(12, "positive", "neutral")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("12\tpositive", mvsa.MALFORMED_LABEL_LINE),
        ("12 positive,neutral", mvsa.MALFORMED_LABEL_LINE),
        ("twelve\tpositive,neutral", mvsa.MALFORMED_LABEL_LINE),
        ("12\tpositive,neutral,negative", mvsa.MALFORMED_LABEL_LINE),
        ("\tpositive,neutral", mvsa.MALFORMED_LABEL_LINE),
        ("12\thappy,neutral", mvsa.UNKNOWN_LABEL),
        ("12\tpositive,Negative", mvsa.UNKNOWN_LABEL),
    ],
)
def test_parse_label_line_names_the_reason_a_line_is_unusable(line: str, reason: str) -> None:
    assert mvsa.parse_label_line(line) == reason


def test_the_header_is_recognised_and_is_not_a_record() -> None:
    assert mvsa.is_label_header("ID\ttext,image\r")
    assert not mvsa.is_label_header("1\tpositive,positive")
    assert mvsa.parse_label_line("ID\ttext,image") == mvsa.MALFORMED_LABEL_LINE


def test_decode_text_reads_gbk_with_chinese_and_the_ellipsis() -> None:
    tweet = "RT @fan: 北京 great game … http://t.co/x ??"
    assert mvsa.decode_text(f"  {tweet}\r\n".encode("gbk")) == (tweet, None)


def test_decode_text_reads_a_file_resaved_as_utf8() -> None:
    assert mvsa.decode_text("so sad…".encode("utf-8")) == ("so sad…", mvsa.DECODED_AS_UTF8)
    # Also valid GB18030 byte for byte: read as GB18030 first, it would come out as mojibake.
    tweet = "feeling awful 😡 周末"
    tweet.encode("utf-8").decode("gb18030")
    assert mvsa.decode_text(tweet.encode("utf-8")) == (tweet, mvsa.DECODED_AS_UTF8)
    assert mvsa.decode_text(b"plain ascii") == ("plain ascii", None)


def test_decode_text_keeps_a_tweet_with_an_invalid_tail_and_notes_it() -> None:
    # Like id 5084 of the real data: valid GBK, then bytes invalid even as GB18030.
    text, note = mvsa.decode_text("great day …".encode("gbk") + b"\x81")
    assert text == "great day …" + mvsa.REPLACEMENT_CHARACTER
    assert note is not None and "replaced" in note
    assert mvsa.text_drop_reason(text) is None


def test_decode_text_never_raises_on_arbitrary_bytes() -> None:
    rng = random.Random(0)
    for _ in range(500):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        text, _ = mvsa.decode_text(raw)
        assert isinstance(text, str)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", mvsa.EMPTY_TEXT),
        (b" \r\n\t", mvsa.EMPTY_TEXT),
        (b"\x81\x20" * 5, mvsa.UNDECODABLE_TEXT),
        (b"ok \x81", None),
        (b"x" * mvsa.MAX_TEXT_CHARS, None),
        (b"x" * (mvsa.MAX_TEXT_CHARS + 1), mvsa.TEXT_TOO_LONG),
    ],
)
def test_text_drop_reason(raw: bytes, reason: str | None) -> None:
    assert mvsa.text_drop_reason(mvsa.decode_text(raw)[0]) == reason


def test_inspect_image_records_size_and_sha256(jpeg) -> None:
    raw = jpeg(64, 48)
    assert mvsa.inspect_image(raw) == mvsa.ImageInfo(64, 48, hashlib.sha256(raw).hexdigest())


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_an_image"])
def test_inspect_image_rejects_what_does_not_fully_decode(jpeg, damage: str) -> None:
    raw = jpeg(64, 48)
    damaged = {"truncated": raw[: len(raw) // 2], "empty": b"", "not_an_image": b"GIF89a nonsense"}[damage]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert mvsa.inspect_image(damaged) == mvsa.CORRUPT_IMAGE


def test_check_raw_layout_names_what_is_missing(tmp_path: Path, write_mvsa) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mvsa.check_raw_layout(tmp_path / "nowhere")
    raw_dir = tmp_path / "MVSA_Single"
    (raw_dir / mvsa.DATA_DIR).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=mvsa.LABEL_FILE):
        mvsa.check_raw_layout(raw_dir)
    (raw_dir / mvsa.DATA_DIR).rmdir()
    (raw_dir / mvsa.LABEL_FILE).write_text(mvsa.LABEL_HEADER)
    with pytest.raises(FileNotFoundError, match=f"/{mvsa.DATA_DIR} not found"):
        mvsa.check_raw_layout(raw_dir)
    complete = write_mvsa(tmp_path / "complete", ["1\tpositive,positive"], {})
    mvsa.check_raw_layout(complete)
