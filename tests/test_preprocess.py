"""Spark preprocessing: every record becomes a pair or is counted under one reason; the output's shape."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.api.types import is_string_dtype

from helpers import REPO, write_params
from llavac.data import mvsa
from llavac.data.pairs import PAIRS_SCHEMA
from llavac.data.preprocess import preprocess
from llavac.data.sample import write_sample

def _raw_folder(root: Path, write_mvsa, jpeg, newline: str) -> tuple[Path, dict[str, Any]]:
    """A small raw folder with one record of every kind, and what preprocessing must make of it."""
    good = "positive news …".encode("gbk")
    image = jpeg(40, 30)
    lines, files = [], {}
    # (label line, text bytes or None for no file, image bytes or None, expected drop reason or None)
    records = [
        ("3\tpositive,positive", "RT @fan: 北京 great game … http://t.co/ab ??".encode("gbk"), jpeg(50, 20), None),
        ("1\tneutral,negative", b"the train starts at 5 pm", jpeg(31, 47, (20, 30, 120)), None),
        ("2\tnegative,neutral", b"so sad #news \x81", image, None),  # invalid tail, like id 5084: kept
        ("4\tneutral,neutral", "so sad…".encode("utf-8"), image, None),
        ("5\tpositive,negative", good, image, mvsa.LABEL_CONFLICT),
        ("6\tnegative,positive", good, image, mvsa.LABEL_CONFLICT),
        ("7\tpositive", good, image, mvsa.MALFORMED_LABEL_LINE),
        ("8\thappy,positive", good, image, mvsa.UNKNOWN_LABEL),
        ("9\tneutral,neutral", good, image, mvsa.DUPLICATE_ID),
        ("10\tneutral,positive", None, image, mvsa.MISSING_TEXT),
        ("11\tpositive,neutral", good, None, mvsa.MISSING_IMAGE),
        ("12\tpositive,neutral", None, None, mvsa.MISSING_TEXT),  # both missing: the first reason counts
        ("13\tneutral,neutral", b"", image, mvsa.EMPTY_TEXT),
        ("14\tneutral,neutral", b" \r\n", image, mvsa.EMPTY_TEXT),
        ("15\tneutral,neutral", b"\x81\x20" * 4, image, mvsa.UNDECODABLE_TEXT),
        ("16\tnegative,negative", good, image[: len(image) // 2], mvsa.CORRUPT_IMAGE),
        ("17\tnegative,negative", good, b"", mvsa.CORRUPT_IMAGE),
        ("18\tnegative,negative", good, b"not a jpeg", mvsa.CORRUPT_IMAGE),
        ("19\tnegative,negative", b"", image[:100], mvsa.EMPTY_TEXT),  # empty text comes before corrupt image
        ("9\tpositive,neutral", None, None, mvsa.DUPLICATE_ID),  # a second annotation of id 9
    ]
    for line, text, image_bytes, _ in records:
        record_id = line.split("\t")[0]
        lines.append(line)
        if text is not None:
            files[f"{record_id}.txt"] = text
        if image_bytes is not None:
            files[f"{record_id}.jpg"] = image_bytes
    lines.insert(5, "")  # a blank line is not a record
    files.update({"30.txt": good, "30.jpg": image, "notes.txt": b"not a tweet", "03.txt": good})  # no label rows
    expected = {
        "raw_label_rows": len(records),
        "valid_pairs": sum(reason is None for *_, reason in records),
        "dropped": {reason: sum(r == reason for *_, r in records) for reason in mvsa.drop_reasons(1)},
        # 30.txt, notes.txt, 03.txt (not id 3's) and the texts of the unusable lines 7 and 8;
        # 30.jpg and the images of 7 and 8.
        "unmatched_files": {"text": 5, "image": 3},
    }
    return write_mvsa(root, lines, files, newline=newline), expected


@pytest.fixture(scope="module", params=["\r\n", "\n"], ids=["crlf", "lf"])
def preprocessed(request, tmp_path_factory, spark, write_mvsa, jpeg) -> tuple[Path, Path, dict, dict]:
    root = tmp_path_factory.mktemp("raw")
    raw_dir, expected = _raw_folder(root / "MVSA_Single", write_mvsa, jpeg, request.param)
    out_path = root / "out" / "pairs.parquet"
    return raw_dir, out_path, preprocess(spark, raw_dir, out_path), expected


def test_every_record_is_a_pair_or_counted_under_its_reason(preprocessed) -> None:
    _, _, metrics, expected = preprocessed
    for key, value in expected.items():
        assert metrics[key] == value, key
    assert metrics["raw_label_rows"] == metrics["valid_pairs"] + sum(metrics["dropped"].values())
    assert metrics["synthetic_sample"] is False


def test_label_counts(preprocessed) -> None:
    _, _, metrics, _ = preprocessed
    assert metrics["pairs_by_label"] == {
        "multimodal": {"negative": 2, "neutral": 1, "positive": 1},
        "text": {"negative": 1, "neutral": 2, "positive": 1},
        "image": {"negative": 1, "neutral": 2, "positive": 1},
    }
    # Well-formed rows: all but the malformed (7) and unknown-label (8) lines.
    assert sum(metrics["raw_labels"]["text"].values()) == metrics["raw_label_rows"] - 2
    assert metrics["texts_with_replacement"] == 1
    assert metrics["texts_decoded_as_utf8"] == 1


def test_pairs_file_columns_dtypes_and_order(preprocessed) -> None:
    raw_dir, out_path, _, _ = preprocessed
    pairs = pd.read_parquet(out_path)
    assert list(pairs.columns) == PAIRS_SCHEMA.names
    for column in ("id", "image_width", "image_height"):
        assert pairs[column].dtype == "int64"
    for column in ("text", "text_label", "image_label", "multimodal_label", "image_path", "image_sha256"):
        assert is_string_dtype(pairs[column])
    assert pairs["id"].tolist() == [1, 2, 3, 4]
    assert pairs["multimodal_label"].tolist() == ["negative", "negative", "positive", "neutral"]
    first = pairs.set_index("id").loc[3]
    assert first["text"] == "RT @fan: 北京 great game … http://t.co/ab ??"
    assert (first["image_width"], first["image_height"]) == (50, 20)
    assert pairs.set_index("id").loc[2, "text"] == "so sad #news " + mvsa.REPLACEMENT_CHARACTER
    for row in pairs.itertuples():
        assert row.image_path == f"data/{row.id}.jpg"
        assert hashlib.sha256((raw_dir / row.image_path).read_bytes()).hexdigest() == row.image_sha256


def test_output_is_byte_identical_when_run_again(preprocessed, spark) -> None:
    raw_dir, out_path, metrics, _ = preprocessed
    again = out_path.with_name("again.parquet")
    assert preprocess(spark, raw_dir, again) == metrics
    assert again.read_bytes() == out_path.read_bytes()


def test_the_sample_comes_out_as_its_writer_says(tmp_path: Path, spark) -> None:
    summary = write_sample(tmp_path, 60, seed=5, min_side=16, max_side=24)
    metrics = preprocess(spark, tmp_path / "MVSA_Single", tmp_path / "pairs.parquet")
    assert metrics["dropped"] == {reason: len(ids) for reason, ids in summary.drops.items()}
    assert metrics["valid_pairs"] == summary.expected_pairs == len(pd.read_parquet(tmp_path / "pairs.parquet"))
    assert metrics["raw_labels"] == {"text": summary.text_labels, "image": summary.image_labels}
    assert metrics["texts_with_replacement"] == len(summary.replaced_text_ids)
    assert metrics["synthetic_sample"] is True


@pytest.mark.parametrize("lines", [[], ["1\tpositive", "2\thappy,neutral"]], ids=["no_rows", "no_usable_rows"])
def test_a_folder_without_usable_records_gives_an_empty_pairs_file(tmp_path: Path, spark, write_mvsa, lines) -> None:
    raw_dir = write_mvsa(tmp_path / "MVSA_Single", lines, {})
    metrics = preprocess(spark, raw_dir, tmp_path / "pairs.parquet")
    assert metrics["valid_pairs"] == 0
    assert metrics["raw_label_rows"] == sum(metrics["dropped"].values()) == len(lines)
    pairs = pd.read_parquet(tmp_path / "pairs.parquet")
    assert pairs.empty and list(pairs.columns) == PAIRS_SCHEMA.names and pairs["id"].dtype == "int64"


def test_a_missing_label_file_is_one_clear_error(tmp_path: Path, spark) -> None:
    (tmp_path / "MVSA_Single" / mvsa.DATA_DIR).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=mvsa.LABEL_FILE):
        preprocess(spark, tmp_path / "MVSA_Single", tmp_path / "pairs.parquet")


def test_stage_says_where_to_put_the_data(tmp_path: Path, run_stage) -> None:
    write_params(tmp_path)
    message = run_stage(tmp_path, "preprocess.py", tmp_path / "MVSA_Single", "p.parquet", "m.json")
    assert message.startswith("error: ") and "dvc repro sample" in message and "data/MVSA_Single" in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(
    ("label_lines", "message"),
    [
        ([], "holds no label rows (an empty file, or only its header)"),
        (["1 positive,positive", "2 negative,negative"], "none of the 2 label rows"),  # tabs replaced by spaces
    ],
)
def test_stage_fails_when_the_label_file_gives_no_pair(tmp_path: Path, write_mvsa, jpeg, label_lines, message) -> None:
    files = {f"{i}.txt": b"a tweet" for i in (1, 2)} | {f"{i}.jpg": jpeg(20, 20) for i in (1, 2)}
    raw = write_mvsa(tmp_path / "MVSA_Single", label_lines, files)
    write_params(tmp_path)
    done = subprocess.run(
        [sys.executable, str(REPO / "stages" / "preprocess.py"), str(raw), "pairs.parquet", "m.json"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert any(line.startswith("error: ") and message in line for line in done.stderr.splitlines()), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "pairs.parquet").exists() and not (tmp_path / "m.json").exists()


def test_a_folder_named_with_glob_and_shell_characters_is_read_as_itself(tmp_path: Path, spark, write_mvsa, jpeg) -> None:
    """Spark globs the paths it reads: unescaped, `[12]{a,b}*?` would read the decoy folder and not this one."""
    literal = tmp_path / 'MVSA [12]{a,b}*?, \'q\' "dq" naïve $x 新'
    decoy = tmp_path / 'MVSA 1aZ, \'q\' "dq" naïve $x 新'  # what the unescaped pattern matches
    for raw_dir, ids in ((literal, (7, 8)), (decoy, (3,))):
        write_mvsa(raw_dir, [f"{i}\tpositive,neutral" for i in ids],
                   {**{f"{i}.txt": b"a tweet" for i in ids}, **{f"{i}.jpg": jpeg(20, 30) for i in ids}})
    metrics = preprocess(spark, literal, tmp_path / "pairs.parquet")
    assert metrics["valid_pairs"] == 2
    assert pd.read_parquet(tmp_path / "pairs.parquet")["id"].tolist() == [7, 8]


def test_a_tweet_whose_gb18030_decodes_to_c1_controls_is_kept_as_decoded(tmp_path: Path, spark, write_mvsa, jpeg,
                                                                         llama_sentencepiece) -> None:
    """The real data's case (4,511 pairs need it): four-byte GB18030 sequences for U+0080, U+0085 and U+009F
    in GBK text are kept, with the text as decoded, and LLaVA's real vocabulary reads them
    (U+0080 as its own piece, the others as their UTF-8 bytes)."""
    import sentencepiece

    c1 = b"\x81\x30\x81\x30" + b"\x81\x30\x81\x35" + b"\x81\x30\x84\x31"
    tweets = {4: "开心 happy day ".encode("gbk") + c1, 5: "great \x00g\x00a\x00m\x00e".encode("utf-8")}
    write_mvsa(tmp_path / "raw", [f"{i}\tpositive,positive" for i in tweets],
               {**{f"{i}.txt": text for i, text in tweets.items()}, **{f"{i}.jpg": jpeg(20, 30) for i in tweets}})
    metrics = preprocess(spark, tmp_path / "raw", tmp_path / "pairs.parquet")
    pairs = pd.read_parquet(tmp_path / "pairs.parquet")
    assert pairs["id"].tolist() == [4] and metrics["dropped"][mvsa.UNDECODABLE_TEXT] == 1
    assert pairs.loc[0, "text"] == "开心 happy day \u0080\u0085\u009f"
    sp = sentencepiece.SentencePieceProcessor(model_file=str(llama_sentencepiece))
    pieces = sp.encode(pairs.loc[0, "text"], out_type=str)
    assert pieces[-6:] == ["▁", "\x80", "<0xC2>", "<0x85>", "<0xC2>", "<0x9F>"], pieces  # U+0080 has a piece of its own
