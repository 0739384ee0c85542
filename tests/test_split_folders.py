"""The K split folders: listed in numeric order, other entries ignored, a missing stage named;
and the format stage's library writes one LLaVA JSON file per part of each split folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from llavac.data.llava_json import format_splits
from llavac.prompt import llava_record
from llavac.split_folders import split_files, split_folders, split_number


def test_split_folders_are_numbered_and_in_numeric_order(tmp_path: Path) -> None:
    for name in ("10", "2", "1", "checkpoints", "3.bak"):
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file, not a folder")
    assert [p.name for p in split_folders(tmp_path, "split")] == ["1", "2", "10"]
    for name in ("11.jsonl", "9.jsonl", "all.jsonl", "5.json"):
        (tmp_path / name).write_text("")
    assert [split_number(p) for p in split_files(tmp_path, ".jsonl", "predict")] == [9, 11]


def test_no_split_folder_names_the_stage_to_run(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"run `dvc repro split` first"):
        split_folders(tmp_path, "split")
    with pytest.raises(FileNotFoundError, match=r"expected <split>\.jsonl files\): run `dvc repro predict` first"):
        split_files(tmp_path / "absent", ".jsonl", "predict")


def test_format_writes_each_part_of_each_split_as_llava_records(tmp_path: Path) -> None:
    pairs = pd.DataFrame(
        {
            "id": [3, 8],
            "text": ["so happy 表情 today", "bus at 5 pm"],
            "text_label": ["positive", "neutral"],
            "image_label": ["positive", "negative"],
            "multimodal_label": ["positive", "negative"],
            "image_path": ["data/3.jpg", "data/8.jpg"],
        }
    )
    for number in (1, 2):
        for part, rows in (("train", pairs), ("val", pairs.iloc[:1]), ("test", pairs.iloc[1:])):
            (tmp_path / "splits" / str(number)).mkdir(parents=True, exist_ok=True)
            rows.to_parquet(tmp_path / "splits" / str(number) / f"{part}.parquet", index=False)
    (tmp_path / "llava" / "7").mkdir(parents=True)  # left by an earlier run

    counts = format_splits(tmp_path / "splits", tmp_path / "llava", "inline")

    assert counts == {"1/train": 2, "1/val": 1, "1/test": 1, "2/train": 2, "2/val": 1, "2/test": 1}
    assert sorted(p.name for p in (tmp_path / "llava").iterdir()) == ["1", "2"]
    written = json.loads((tmp_path / "llava" / "2" / "train.json").read_text(encoding="utf-8"))
    assert written == [llava_record(row, "inline") for row in pairs.to_dict("records")]
    assert "表情" in (tmp_path / "llava" / "2" / "train.json").read_text(encoding="utf-8")
