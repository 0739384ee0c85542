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
