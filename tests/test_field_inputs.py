"""Inputs a reviewer found in the field: each test builds the input itself and fails without its fix."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import ExifTags, Image

from llavac.data import mvsa
from llavac.data.mvsa import inspect_image, read_image
from llavac.labels import LABELS, TASKS
from llavac.metrics import score_splits, task_scores
from llavac.model.adapter_card import CARD_FILE, AdapterCard, read_card
from llavac.model.inputs import LARGE_SIDE, REDUCED_SIDE, load_images, pad_to_square
from llavac import new_pairs
from llavac.new_pairs import problem, read_pairs, turned_images
from llavac.train import TRAINER_STATE, last_complete_checkpoint

BACKGROUND = (122, 116, 104)
"""CLIP's mean colour, LLaVA's padding."""


class AnyText(str):
    """Equal to any string: a SHA-256 the test does not recompute."""

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, str)

    __hash__ = str.__hash__


ANY_SHA = AnyText()


def card_facts() -> dict:
    return {"base": "llava-hf/llava-1.5-7b-hf", "image_position": "before", "tokenizer_rule": "sentencepiece",
            "precision": "fp32", "recipe": {"lr": 0.0002}}


# 1. The adapter card across versions


def test_a_card_with_a_field_from_a_newer_version_is_read_and_the_field_named(tmp_path, caplog):
    AdapterCard(**card_facts()).write(tmp_path)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    (tmp_path / CARD_FILE).write_text(json.dumps({**card, "vision_resolution": 672, "zz_note": "x"}))
    with caplog.at_level(logging.WARNING, logger="llavac.model.adapter_card"):
        read = read_card(tmp_path)
    assert read == AdapterCard(**card_facts())
    notes = [r.getMessage() for r in caplog.records if "vision_resolution" in r.getMessage()]
    assert len(notes) == 1 and "zz_note" in notes[0]


def test_a_card_missing_a_required_field_is_one_error_naming_it_and_the_folder(tmp_path):
    facts = card_facts()
    del facts["tokenizer_rule"]
    (tmp_path / CARD_FILE).write_text(json.dumps(facts))
    with pytest.raises(ValueError, match=r"tokenizer_rule") as error:
        read_card(tmp_path)
    assert str(tmp_path) in str(error.value)


# 2. Stray folders among checkpoints


def test_a_stray_folder_beside_the_checkpoints_is_skipped_and_named(tmp_path, caplog):
    for name in ("checkpoint-14", "checkpoint-28", "checkpoint-28.bak", "checkpoint-old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / TRAINER_STATE).write_text("{}")
    with caplog.at_level(logging.WARNING, logger="llavac.train"):
        assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-28"
    assert (tmp_path / "checkpoint-28.bak").is_dir()  # left alone, not deleted as torn
    notes = [r.getMessage() for r in caplog.records if "checkpoint-28.bak" in r.getMessage()]
    assert len(notes) == 1 and "checkpoint-old" in notes[0]


# 3. A label absent from a split


def split_without_negative(predicted: list[str] | None = None) -> pd.DataFrame:
    gold = ["positive", "positive", "neutral", "neutral", "positive"]
    predicted = gold if predicted is None else predicted
    frame = {"id": range(len(gold))}
    for task in TASKS:
        frame[f"{task}_label"] = gold
        frame[f"pred_{task}"] = predicted
    return pd.DataFrame(frame)


def test_perfect_predictions_on_a_split_without_a_label_score_100_macro_f1():
    scores = task_scores(split_without_negative()["text_label"], split_without_negative()["pred_text"])
    assert scores["macro_f1"] == 100.0 and scores["weighted_f1"] == 100.0
    assert scores["per_class"]["negative"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert scores["per_class"]["positive"]["f1"] == 100.0


def test_a_label_predicted_but_absent_from_the_gold_still_counts_as_a_miss():
    frame = split_without_negative(["positive", "positive", "neutral", "negative", "positive"])
    scores = task_scores(frame["text_label"], frame["pred_text"])
    assert scores["per_class"]["negative"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert len([label for label in LABELS if scores["per_class"][label]["f1"] is not None]) == 3


def test_a_class_is_averaged_over_the_splits_where_it_occurs():
    with_negative = split_without_negative()
    with_negative.loc[0, [f"{t}_label" for t in TASKS] + [f"pred_{t}" for t in TASKS]] = "negative"
    scores = score_splits({1: split_without_negative(), 2: with_negative})
    assert scores["text"]["per_class"]["negative"] == {"precision": 100.0, "recall": 100.0, "f1": 100.0, "support": 1}
    assert scores["text"]["macro_f1"] == 100.0


# 4. EXIF orientation


def stripes(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """An image whose left half is red and right half blue: turned, the halves move."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


def test_an_image_stored_turned_is_fed_upright_and_the_turn_is_noted(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # a phone held upright: stored sideways, shown turned 90 degrees clockwise
    stripes().save(tmp_path / "phone.png", exif=exif)  # PNG: lossless, so pixels compare exactly
    upright = stripes().transpose(Image.Transpose.ROTATE_270)
    (tmp_path / "phone.txt").write_text("upright")
    [loaded] = load_images([{"image": "phone.png"}], tmp_path, BACKGROUND)
    assert loaded.size == (40, 40)
    assert loaded.tobytes() == pad_to_square(upright, BACKGROUND).tobytes()
    rows, folder = read_pairs(tmp_path)
    errors = {row["row"]: problem(row, folder) for row in rows}
    assert errors == {1: None} and turned_images(rows, folder, errors) == {1: 6}


def test_an_image_without_orientation_keeps_llavas_exact_pixels(tmp_path):
    path = tmp_path / "tweet.jpg"
    stripes((64, 48)).save(path, quality=90)  # as MVSA's: a JPEG without EXIF
    [loaded] = load_images([{"image": "tweet.jpg"}], tmp_path, BACKGROUND)
    with Image.open(path) as image:  # LLaVA's `Image.open(...).convert("RGB")`, then its pad-to-square
        llava = pad_to_square(image.convert("RGB"), BACKGROUND)
    assert loaded.tobytes() == llava.tobytes()
    assert turned_images([{"row": 1, "image": "tweet.jpg"}], tmp_path, {1: None}) == {}


# 5. Very large photos


def test_a_200_megapixel_photo_is_read_and_one_above_the_limit_refused_with_pillows_reason(tmp_path):
    Image.new("1", (16320, 12240), 1).save(tmp_path / "camera.png")  # mode "1": 25 MB in memory, not 600
    assert read_image((tmp_path / "camera.png").read_bytes()) == mvsa.ImageInfo(16320, 12240, ANY_SHA)
    assert inspect_image((tmp_path / "camera.png").read_bytes()) == mvsa.ImageInfo(16320, 12240, ANY_SHA)
    Image.new("1", (20000, 16000), 1).save(tmp_path / "poster.png")  # 320 MP, over MAX_IMAGE_PIXELS
    (tmp_path / "poster.txt").write_text("huge")
    refused = read_image((tmp_path / "poster.png").read_bytes())
    assert refused.reason == mvsa.CORRUPT_IMAGE and "320000000 pixels" in refused.detail
    assert inspect_image((tmp_path / "poster.png").read_bytes()) == mvsa.CORRUPT_IMAGE  # the preprocess stage
    error = problem({"row": 1, "image": "poster.png", "text": "huge"}, tmp_path)
    assert error.startswith("corrupt_image:") and "320000000 pixels" in error and "300000000" in error


# 6. Extreme aspect ratio


def test_a_long_strip_is_reduced_before_padding_and_a_twitter_size_image_is_not(tmp_path):
    Image.new("RGB", (2, 20000), (255, 0, 0)).save(tmp_path / "strip.png")
    [loaded] = load_images([{"image": "strip.png"}], tmp_path, BACKGROUND)
    assert loaded.size == (REDUCED_SIDE, REDUCED_SIDE)  # not a 20000 x 20000 canvas (1.2 GB)
    assert loaded.getpixel(((REDUCED_SIDE - 1) // 2, 10)) == (255, 0, 0)  # the strip, 1 pixel wide now, is there
    Image.new("RGB", (LARGE_SIDE, 100), (0, 255, 0)).save(tmp_path / "banner.png")
    [banner] = load_images([{"image": "banner.png"}], tmp_path, BACKGROUND)
    with Image.open(tmp_path / "banner.png") as image:
        assert banner.tobytes() == pad_to_square(image.convert("RGB"), BACKGROUND).tobytes()


# 7. Hugging Face image columns


def test_a_parquet_image_struct_is_read_from_its_bytes_or_else_its_path(tmp_path, monkeypatch):
    monkeypatch.setattr(new_pairs, "EMBEDDED_IMAGES", tmp_path / "embedded")
    buffer = io.BytesIO()
    stripes().save(buffer, "PNG")
    stripes((30, 10)).save(tmp_path / "on_disk.png")
    images = [{"bytes": buffer.getvalue(), "path": "embedded.png"}, {"bytes": None, "path": "on_disk.png"},
              {"bytes": None, "path": None}]
    pq.write_table(pa.table({"image": images, "text": ["a", "b", "c"]}), tmp_path / "hf.parquet")
    rows, folder = read_pairs(tmp_path / "hf.parquet")
    assert [problem(row, folder) for row in rows][:2] == [None, None]
    assert problem(rows[2], folder).startswith("missing_image:")
    assert rows[0]["image"].startswith(str(tmp_path / "embedded"))
    first, second = load_images(rows[:2], folder, BACKGROUND)
    assert first.tobytes() == pad_to_square(stripes(), BACKGROUND).tobytes()
    assert second.size == (30, 30)


# 8. Non-string values


def test_a_number_as_text_is_read_as_its_text_and_a_list_is_refused(tmp_path):
    stripes().save(tmp_path / "a.png")
    lines = [{"image": "a.png", "text": 2024}, {"image": "a.png", "text": 3.5}, {"image": "a.png", "text": ["x"]},
             {"image": "a.png", "text": True}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    rows, folder = read_pairs(tmp_path / "pairs.jsonl")
    assert [row["text"] for row in rows[:2]] == ["2024", "3.5"]
    errors = [problem(row, folder) for row in rows]
    assert errors[:2] == [None, None]
    assert errors[2].startswith("missing_text:") and "list" in errors[2]
    assert errors[3].startswith("missing_text:") and "bool" in errors[3]


# 9. Image suffixes in a folder


def test_a_gif_in_a_folder_is_read_and_an_unreadable_suffix_is_named(tmp_path):
    stripes().save(tmp_path / "anim.gif")
    (tmp_path / "anim.txt").write_text("a gif")
    (tmp_path / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "phone.txt").write_text("a heic")
    rows, folder = read_pairs(tmp_path)
    by_id = {row["id"]: row for row in rows}
    assert by_id["anim"]["image"] == "anim.gif" and problem(by_id["anim"], folder) is None
    error = problem(by_id["phone"], folder)
    assert error.startswith("missing_image:") and ".heic is not an image suffix" in error and ".jpg" in error
