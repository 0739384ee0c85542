"""Writing result files and folders whole or not at all.

Every JSON file the project writes (metrics, manifests, cards, the LLaVA conversation files, the
report) goes through here. The content goes to a temporary file in the target's folder, is flushed
to disk, and is then moved over the target with ``os.replace``, which is atomic: a crash, a kill or
a full disk leaves the previous file (or none), never half of one that DVC would hash and cache.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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


def staging_path(target: Path) -> Path:
    """Where a folder bound for ``target`` is written before `publish_folder`: a hidden sibling."""
    return Path(target).with_name(f".{Path(target).name}.partial")


def staging_folder(target: Path) -> Path:
    """`staging_path` of ``target``, created empty (whatever a killed run left there is removed)."""
    staging = staging_path(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish_folder(staging: Path, target: Path) -> Path:
    """Put the finished ``staging`` folder in ``target``'s place (renames only); return ``target``.

    Until this call ``target`` holds the previous content or nothing, never a half-written folder
    (an adapter holding only its README, say) that a later reader would take for a whole one.
    """
    target = Path(target)
    previous = target.with_name(f".{target.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        os.replace(target, previous)
    os.replace(staging, target)
    shutil.rmtree(previous, ignore_errors=True)
    return target


@contextmanager
def folder_written_whole(target: Path) -> Iterator[Path]:
    """Yield a fresh staging folder for ``target``'s content; publish it when the block ends.

    If the block fails, the staging folder is removed and ``target`` keeps its previous content (or
    stays absent); a block may publish early itself (what it published stays).
    """
    staging = staging_folder(target)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_folder(staging, target)
