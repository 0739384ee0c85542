"""MVSA-Multiple's three-annotator label lines, and tweet texts in unexpected encodings (issue 19, item 2).

Every fixture is written here in the real formats: ``labelResultAll.txt`` with CRLF, a UTF-8 byte
order mark before the header, three ``text,image`` annotations per line; tweets in GBK, UTF-8
(with and without a BOM), UTF-16 and UTF-32.
"""

from __future__ import annotations

import codecs
import copy
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO_PARAMS, write_params
from llavac.data import mvsa
from llavac.data.official import official_splits
from llavac.data.preprocess import preprocess
from llavac.data.sample import SAMPLE_FOLDER, write_sample
from llavac.new_pairs import problem, read_pairs
from llavac.params import ParamsError, validate

MULTIPLE_HEADER = "ID\ttext,image\ttext,image\ttext,image"


# --- label lines --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("7\tpositive,neutral\tpositive,neutral\tpositive,neutral\r\n", mvsa.LabelRow(7, "positive", "neutral")),
        # one annotator disagrees on each side: the other two decide
        ("7\tnegative,positive\tpositive,neutral\tpositive,positive", mvsa.LabelRow(7, "positive", "positive")),
        ("7\tneutral,negative\tneutral,positive\tnegative,negative\r", mvsa.LabelRow(7, "neutral", "negative")),
        # a three-way tie has no majority: that side is None
        ("7\tpositive,neutral\tneutral,neutral\tnegative,neutral", mvsa.LabelRow(7, None, "neutral")),
        ("7\tneutral,positive\tneutral,neutral\tneutral,negative", mvsa.LabelRow(7, "neutral", None)),
        ("\ufeff7\tpositive,positive\tpositive,positive\tnegative,negative\r\n", mvsa.LabelRow(7, "positive", "positive")),
    ],
)
def test_three_annotators_give_the_majority_per_modality(line: str, expected: mvsa.LabelRow) -> None:
    assert mvsa.parse_label_line(line, annotators=3) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("7\tpositive,neutral\tpositive,neutral", mvsa.MALFORMED_LABEL_LINE),  # an annotator column missing
        ("7\tpositive,neutral\tpositive,neutral\t", mvsa.MALFORMED_LABEL_LINE),  # ... or left empty
        ("7\tpositive,neutral\tpositive\tpositive,neutral", mvsa.MALFORMED_LABEL_LINE),
        ("7\tpositive,neutral\tpositive,neutral\tpositive,neutral\tneutral,neutral", mvsa.MALFORMED_LABEL_LINE),
        ("7\tpositive,neutral\tpositive,neutral\tpositive,happy", mvsa.UNKNOWN_LABEL),
        ("7\tpositive,neutral", mvsa.MALFORMED_LABEL_LINE),  # MVSA-Single's line in the MVSA-Multiple layout
    ],
)
def test_a_line_without_three_usable_annotations_names_its_reason(line: str, reason: str) -> None:
    assert mvsa.parse_label_line(line, annotators=3) == reason


def test_majority_needs_more_than_half() -> None:
    assert mvsa.majority(["neutral", "positive", "neutral"]) == "neutral"
    assert mvsa.majority(["negative", "neutral", "positive"]) is None
    assert mvsa.majority(["negative"]) == "negative"  # MVSA-Single: the one annotator


@pytest.mark.parametrize("header", [MULTIPLE_HEADER, MULTIPLE_HEADER + "\r\n", "\ufeff" + MULTIPLE_HEADER, "\ufeffID\ttext,image\r"])
def test_headers_with_a_bom_and_crlf_are_headers(header: str) -> None:
    assert mvsa.is_label_header(header)
    assert not mvsa.is_label_header("1\tpositive,positive\tpositive,positive\tpositive,positive")


def test_check_raw_layout_refuses_the_other_datasets_folder(tmp_path: Path, write_mvsa) -> None:
    single = write_mvsa(tmp_path / "MVSA_Single", ["1\tpositive,positive"], {})
    multiple = write_mvsa(tmp_path / "MVSA_Multiple", [], {}, header="\ufeff" + MULTIPLE_HEADER)
    mvsa.check_raw_layout(single, 1)
    mvsa.check_raw_layout(multiple, 3)
    with pytest.raises(ValueError, match=r"names 1 annotator\(s\) per line \(mvsa-single\).*expects 3 \(mvsa-multiple\)"):
        mvsa.check_raw_layout(single, 3)
    with pytest.raises(ValueError, match=r"names 3 annotator\(s\).*expects 1"):
        mvsa.check_raw_layout(multiple, 1)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_a_label_file_in_utf16_or_utf32_is_refused_in_one_line(tmp_path: Path, write_mvsa, codec: str) -> None:
    raw_dir = write_mvsa(tmp_path / "MVSA_Multiple", [], {}, header=MULTIPLE_HEADER)
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE}[codec]
    (raw_dir / mvsa.LABEL_FILE).write_bytes(bom + f"{MULTIPLE_HEADER}\r\n".encode(codec))
    with pytest.raises(ValueError, match=r"is UTF-(16|32).*save it as UTF-8"):
        mvsa.check_raw_layout(raw_dir, 3)


# --- tweet texts in unexpected encodings ------------------------------------------------------------

TWEET = "so happy 😊 周末 …"


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (codecs.BOM_UTF8 + TWEET.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF16_LE + TWEET.encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + TWEET.encode("utf-16-be"), "utf-16"),
        (codecs.BOM_UTF32_LE + TWEET.encode("utf-32-le"), "utf-32"),
        (codecs.BOM_UTF32_BE + TWEET.encode("utf-32-be"), "utf-32"),
    ],
)
def test_a_byte_order_mark_says_the_encoding_and_is_removed(raw: bytes, encoding: str) -> None:
    text, note = mvsa.decode_text(raw)
    assert text == TWEET
    assert note == f"decoded as {encoding} by its byte order mark"
    assert mvsa.text_drop_reason(text) is None


def test_a_damaged_utf16_tweet_keeps_its_readable_part_and_says_so() -> None:
    text, note = mvsa.decode_text(codecs.BOM_UTF16_LE + "sad day".encode("utf-16-le") + b"\x00\xd8")  # a lone surrogate
    assert text == "sad day" + mvsa.REPLACEMENT_CHARACTER
    assert note == "decoded as utf-16 by its byte order mark, 1 invalid sequence(s) replaced"


@pytest.mark.parametrize(
    "raw",
    [
        "great game".encode("utf-16-le"),  # UTF-16 without its mark: a NUL after every letter
        "great game".encode("utf-16-be"),
        b"great\x00game",
        b"great \x1b[31mgame",  # ESC
        b"great \x7f game",  # DEL
        b"great \x01\x02 game",
    ],
)
def test_ascii_control_characters_never_pass_as_tweet_text(raw: bytes) -> None:
    text, _ = mvsa.decode_text(raw)
    assert mvsa.text_drop_reason(text) == mvsa.UNDECODABLE_TEXT


@pytest.mark.parametrize("raw", [b"\x81\x30\x81\x30", b"\x81\x30\x81\x35", b"\x81\x30\x84\x31", "\u0085".encode("utf-8")])
def test_a_c1_control_from_a_valid_sequence_is_tweet_text(raw: bytes) -> None:
    """GB18030's four-byte U+0080, U+0085 and U+009F (what MVSA's crawl stored for some emoji), and UTF-8's NEL."""
    text, note = mvsa.decode_text(b"great " + raw + b" game")
    assert mvsa.text_drop_reason(text) is None
    assert 0x80 <= ord(text[6]) <= 0x9F and text == f"great {text[6]} game"


def test_tabs_and_line_breaks_inside_a_tweet_are_text() -> None:
    text, _ = mvsa.decode_text(b"first line\r\nsecond\tline")
    assert mvsa.text_drop_reason(text) is None


def test_classify_folder_input_reads_tweets_with_the_same_decoder(tmp_path: Path, jpeg) -> None:
    for name, raw in {
        "bom16": codecs.BOM_UTF16_LE + TWEET.encode("utf-16-le"),
        "bom8": codecs.BOM_UTF8 + TWEET.encode("utf-8"),
        "nobom16": TWEET.encode("utf-16-le"),
    }.items():
        (tmp_path / f"{name}.txt").write_bytes(raw)
        (tmp_path / f"{name}.jpg").write_bytes(jpeg(20, 16))
    rows, folder = read_pairs(tmp_path)
    by_id = {row["id"]: row for row in rows}
    assert by_id["bom16"]["text"] == by_id["bom8"]["text"] == TWEET
    assert problem(by_id["bom16"], folder) is None
    assert problem(by_id["nobom16"], folder) == mvsa.UNDECODABLE_TEXT


# --- preprocessing an MVSA-Multiple folder -------------------------------------------------------------


def _multiple_folder(root: Path, write_mvsa, jpeg) -> tuple[Path, dict[int, str | None], dict[str, int]]:
    """A raw MVSA-Multiple folder (BOM before the header, CRLF) with one line of each kind; the
    multimodal label each id must get (None: dropped), and the drop counts."""
    good, image = "lovely sunny day …".encode("gbk"), jpeg(40, 30)
    records = [
        # (id, annotations, multimodal label or drop reason)
        (1, "positive,positive\tpositive,neutral\tpositive,positive", "positive"),
        (2, "neutral,negative\tneutral,negative\tpositive,negative", "negative"),  # dissent on both sides
        (3, "neutral,neutral\tneutral,positive\tnegative,neutral", "neutral"),
        (4, "positive,neutral\tneutral,neutral\tnegative,neutral", mvsa.NO_MAJORITY_TEXT),  # pos/neu/neg tie
        (5, "neutral,positive\tneutral,neutral\tneutral,negative", mvsa.NO_MAJORITY_IMAGE),
        (6, "positive,negative\tneutral,neutral\tnegative,positive", mvsa.NO_MAJORITY_TEXT),  # both: text first
        (7, "positive,negative\tpositive,negative\tneutral,negative", mvsa.LABEL_CONFLICT),  # majorities conflict
        (8, "positive,positive\tpositive,positive", mvsa.MALFORMED_LABEL_LINE),  # an annotator column missing
        (9, "positive,positive\tpositive,positive\tpositive,glad", mvsa.UNKNOWN_LABEL),
        (10, "negative,negative\tnegative,negative\tnegative,negative", mvsa.UNDECODABLE_TEXT),  # UTF-16, no BOM
        (11, "negative,neutral\tnegative,neutral\tnegative,neutral", "negative"),  # UTF-16 with its BOM
    ]
    texts = {10: "sad".encode("utf-16-le"), 11: codecs.BOM_UTF16_BE + "so sad".encode("utf-16-be")}
    files = {f"{i}.txt": texts.get(i, good) for i, *_ in records} | {f"{i}.jpg": image for i, *_ in records}
    raw_dir = write_mvsa(root, [f"{i}\t{cells}" for i, cells, _ in records], files, header="\ufeff" + MULTIPLE_HEADER)
    labels = {i: outcome if outcome in ("positive", "neutral", "negative") else None for i, _, outcome in records}
    drops = {reason: sum(outcome == reason for *_, outcome in records) for reason in mvsa.drop_reasons(3)}
    return raw_dir, labels, drops


def test_preprocessing_applies_the_majority_then_the_combination_rule(tmp_path: Path, spark, write_mvsa, jpeg) -> None:
    raw_dir, labels, drops = _multiple_folder(tmp_path / "MVSA_Multiple", write_mvsa, jpeg)
    metrics = preprocess(spark, raw_dir, tmp_path / "pairs.parquet", "mvsa-multiple")
    pairs = pd.read_parquet(tmp_path / "pairs.parquet").set_index("id")
    assert pairs["multimodal_label"].to_dict() == {i: label for i, label in labels.items() if label}
    assert pairs.loc[2, ["text_label", "image_label"]].tolist() == ["neutral", "negative"]
    assert pairs.loc[11, "text"] == "so sad"
    assert metrics["dropped"] == drops
    assert metrics["raw_label_rows"] == len(labels)  # the header, BOM and all, is not a row
    # Majority labels of the well-formed lines: none for a side without one.
    assert sum(metrics["raw_labels"]["text"].values()) == len(labels) - 2 - 2  # ids 4 and 6
    assert sum(metrics["raw_labels"]["image"].values()) == len(labels) - 2 - 2  # ids 5 and 6


def test_mvsa_single_metrics_keep_their_reasons(tmp_path: Path, spark, write_mvsa, jpeg) -> None:
    """MVSA-Single's data metrics count the reasons they counted before MVSA-Multiple, in the same order, zeros
    included: one annotator always gives a majority, so no `no_majority_*` count appears."""
    lines = ["1\tpositive,neutral", "2\tpositive,negative", "3\tpositive,glad", "4\tpositive"]
    files = {f"{i}.{kind}": data for i in (1, 2) for kind, data in (("txt", b"fun"), ("jpg", jpeg(20, 30)))}
    raw_dir = write_mvsa(tmp_path / "MVSA_Single", lines, files, header="\ufeff" + mvsa.LABEL_HEADER)
    metrics = preprocess(spark, raw_dir, tmp_path / "pairs.parquet")
    assert list(metrics["dropped"].items()) == [
        (mvsa.MALFORMED_LABEL_LINE, 1), (mvsa.UNKNOWN_LABEL, 1), (mvsa.DUPLICATE_ID, 0), (mvsa.MISSING_TEXT, 0),
        (mvsa.MISSING_IMAGE, 0), (mvsa.EMPTY_TEXT, 0), (mvsa.UNDECODABLE_TEXT, 0), (mvsa.TEXT_TOO_LONG, 0),
        (mvsa.CORRUPT_IMAGE, 0), (mvsa.LABEL_CONFLICT, 1),
    ]
    assert (metrics["raw_label_rows"], metrics["valid_pairs"]) == (4, 1)


def test_the_multiple_sample_comes_out_as_its_writer_says(tmp_path: Path, spark) -> None:
    summary = write_sample(tmp_path, 120, seed=3, min_side=16, max_side=24, dataset="mvsa-multiple")
    raw_dir = tmp_path / SAMPLE_FOLDER
    lines = (raw_dir / mvsa.LABEL_FILE).read_bytes().decode("ascii").split("\r\n")
    assert lines[0] == MULTIPLE_HEADER and lines[-1] == ""
    cells = [line.split("\t")[1:] for line in lines[1:-1]]
    assert sum(len(annotations) == 3 for annotations in cells) == len(cells) - 1  # one with a column missing
    votes = [{cell.split(",")[side] for cell in annotations} for annotations in cells for side in (0, 1)]
    assert sum(len(labels) == 3 for labels in votes) >= 2  # three-way ties ...
    assert sum(len(labels) == 2 for labels in votes) >= 20  # ... and dissenting annotators
    assert summary.drops[mvsa.NO_MAJORITY_TEXT] and summary.drops[mvsa.NO_MAJORITY_IMAGE]

    metrics = preprocess(spark, raw_dir, tmp_path / "pairs.parquet", "mvsa-multiple")
    assert metrics["dropped"] == {reason: len(ids) for reason, ids in summary.drops.items()}
    assert metrics["valid_pairs"] == summary.expected_pairs
    assert metrics["raw_labels"] == {"text": summary.text_labels, "image": summary.image_labels}


def test_the_single_sample_does_not_change_with_the_multiple_layout(tmp_path: Path) -> None:
    write_sample(tmp_path / "a", 40, seed=2, min_side=16, max_side=24)
    write_sample(tmp_path / "b", 40, seed=2, min_side=16, max_side=24, dataset="mvsa-multiple")
    for name in ("a", "b"):
        assert (tmp_path / name / SAMPLE_FOLDER / "data").is_dir()
    a_files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    b_files = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    assert a_files == b_files
    for relative in a_files:
        same = (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
        assert same == (relative.name not in (mvsa.LABEL_FILE, "README.txt")), relative


def test_stage_refuses_a_folder_of_the_other_dataset(tmp_path: Path, run_stage, write_mvsa) -> None:
    raw_dir = write_mvsa(tmp_path / "MVSA_Single", ["1\tpositive,positive"], {})
    write_params(tmp_path, dataset="mvsa-multiple")
    message = run_stage(tmp_path, "preprocess.py", raw_dir, "p.parquet", "m.json")
    assert message.startswith("error: ") and "expects 3 (mvsa-multiple)" in message and "data.raw_dir" in message


def test_official_cheema_files_of_mvsa_multiple_meet_our_majority_labels(tmp_path: Path, spark, write_mvsa, jpeg) -> None:
    """Cheema's MVSA-Multiple format (codes 0 neutral / 1 positive / 2 negative, row indices) read
    against the pairs of a three-annotator folder: the published memberships, no mismatch."""
    raw_dir, labels, _ = _multiple_folder(tmp_path / "MVSA_Multiple", write_mvsa, jpeg)
    preprocess(spark, raw_dir, tmp_path / "pairs.parquet", "mvsa-multiple")
    pairs = pd.read_parquet(tmp_path / "pairs.parquet")
    # What the authors' pair list states for the kept ids, written out by hand from the lines above.
    published = [(1, 1, 1, 1), (2, 2, 0, 2), (3, 0, 0, 0), (11, 2, 2, 0)]  # id, multimodal, text, image
    folder = tmp_path / "splits" / "cheema"
    folder.mkdir(parents=True)
    (folder / "valid_pairlist.txt").write_text("".join(",".join(map(str, row)) + "\n" for row in published))
    for number in range(1, 11):
        test_row = (number - 1) % 4
        for part, rows in {"test": [test_row], "val": [(test_row + 1) % 4], "train": [(test_row + 2) % 4, (test_row + 3) % 4]}.items():
            (folder / f"{part}_{number}.txt").write_text("".join(f"{row}\n" for row in rows))
    splits, mismatches = official_splits(pairs, "cheema", tmp_path / "splits", "mvsa-multiple")
    assert mismatches == []
    assert splits[0].test["id"].tolist() == [1] and splits[0].val["id"].tolist() == [2]
    assert splits[0].train["id"].tolist() == [3, 11]
    assert sorted(i for split in splits[:4] for i in split.test["id"]) == [1, 2, 3, 11]
    published[1] = (2, 2, 1, 2)  # an author's text label that our majority (neutral) does not give
    (folder / "valid_pairlist.txt").write_text("".join(",".join(map(str, row)) + "\n" for row in published))
    _, mismatches = official_splits(pairs, "cheema", tmp_path / "splits", "mvsa-multiple")
    assert [(m.id, m.problem) for m in mismatches] == [(2, "text_label: published positive, ours neutral")]


def test_an_unknown_dataset_names_the_allowed_values() -> None:
    params = copy.deepcopy(REPO_PARAMS) | {"dataset": "mvsa-triple"}
    with pytest.raises(ParamsError, match=r"dataset='mvsa-triple': Input should be 'mvsa-single' or 'mvsa-multiple'"):
        validate(params)
