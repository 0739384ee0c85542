"""Writing result files whole or not at all.

Every JSON file the project writes (metrics, manifests, cards, the LLaVA conversation files, the
report) goes through here. The content goes to a temporary file in the target's folder, is flushed
to disk, and is then moved over the target with ``os.replace``, which is atomic: a crash, a kill or
a full disk leaves the previous file (or none), never half of one that DVC would hash and cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def json_text(obj: Any, *, indent: int | None = 2, ensure_ascii: bool = True) -> str:
    """``obj`` as the project's JSON files hold it: ``indent`` spaces, one newline at the end."""
    return json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii) + "\n"


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` newlines) to ``path`` atomically, creating its folder; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: os.replace cannot cross disks
    try:
        with open(temporary, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any, *, indent: int | None = 2, ensure_ascii: bool = True) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`write_text`); return ``path``."""
    return write_text(path, json_text(obj, indent=indent, ensure_ascii=ensure_ascii))
