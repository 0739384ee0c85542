"""Result files are written whole or not at all."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from llavac.files import write_json


def test_write_json_creates_the_folder_and_ends_with_a_newline(tmp_path: Path) -> None:
    path = write_json(tmp_path / "metrics" / "scores.json", {"accuracy": 80.5, "label": "neutral"})
    assert path.read_text(encoding="utf-8") == '{\n  "accuracy": 80.5,\n  "label": "neutral"\n}\n'
    write_json(path, ["表情"], indent=None, ensure_ascii=False)
    assert path.read_bytes() == '["表情"]\n'.encode()
    assert [p.name for p in path.parent.iterdir()] == ["scores.json"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = write_json(tmp_path / "scores.json", {"accuracy": 1.0})

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_json(path, {"accuracy": 2.0, "padding": "x" * 100_000})
    assert json.loads(path.read_text(encoding="utf-8")) == {"accuracy": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_a_stage_that_fills_the_disk_says_so_in_one_line_and_keeps_its_previous_output(tmp_path, run_stage,
                                                                                        monkeypatch, write_mvsa, jpeg):
    """The format stage writes one JSON file per split part; the disk fills up on the fourth."""
    import pandas as pd

    from helpers import write_params
    from llavac import files

    splits = tmp_path / "splits"
    pair = {"id": 1, "text": "hi", "image_path": "data/1.jpg", "text_label": "positive", "image_label": "positive",
            "multimodal_label": "positive"}
    for number in (1, 2):
        (splits / str(number)).mkdir(parents=True)
        for part in ("train", "val", "test"):
            pd.DataFrame([pair]).to_parquet(splits / str(number) / f"{part}.parquet")
    write_params(tmp_path)
    assert run_stage(tmp_path, "format.py", splits, "llava") is None
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "llava").rglob("*.json")}

    real_write, calls = files.write_text, []

    def fills_up(path, text):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, text)

    monkeypatch.setattr(files, "write_text", fills_up)
    write_params(tmp_path, prompt__image_position="inline")
    message = run_stage(tmp_path, "format.py", splits, "llava")
    assert message.startswith("error: cannot write ") and "the disk is full" in message and "\n" not in message
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "llava").rglob("*.json")}
    assert after == before  # the previous output, whole; not three new files and three old ones
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llava", "params.yaml", "splits"]  # no staging left
