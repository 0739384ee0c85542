"""The K split folders: one numbered entry per split under each stage's output folder.

Every stage from ``split`` on writes one entry per split, named by its 1-based number:
``artifacts/splits/<K>/``, ``artifacts/llava/<K>/``, ``artifacts/adapters/<K>/``,
``artifacts/predictions/<K>.jsonl``. This module is the one place that names and lists them, so
that a stage finds exactly the splits the stage before it wrote, in numeric order (10 after 9).
"""

from __future__ import annotations

from pathlib import Path


def split_folder(parent: Path, number: int) -> Path:
    """Where split ``number`` lives under ``parent``."""
    return Path(parent) / str(number)


def _numbered(entries: dict[str, Path]) -> list[Path]:
    """The entries whose number (the key) is all digits, in numeric order."""
    return [entries[number] for number in sorted((n for n in entries if n.isdigit()), key=int)]


def split_folders(parent: Path, produced_by: str) -> list[Path]:
    """The split folders ``1``, ``2``, ... under ``parent``, in numeric order.

    Raises FileNotFoundError naming the stage to run (``produced_by``) when there are none.
    """
    folders = _numbered({entry.name: entry for entry in Path(parent).glob("*") if entry.is_dir()})
    if not folders:
        raise FileNotFoundError(f"no split folders under {parent}: run `dvc repro {produced_by}` first")
    return folders


def split_files(parent: Path, suffix: str, produced_by: str) -> list[Path]:
    """The per-split files ``1<suffix>``, ``2<suffix>``, ... under ``parent``, in numeric order.

    Other files (a stem that is not a number) are not a split's and are left out. Raises
    FileNotFoundError naming the stage to run (``produced_by``) when there are none.
    """
    entries = (entry for entry in Path(parent).glob(f"*{suffix}") if entry.is_file())
    files = _numbered({entry.name[: -len(suffix)]: entry for entry in entries})
    if not files:
        raise FileNotFoundError(
            f"no split files in {parent} (expected <split>{suffix} files): run `dvc repro {produced_by}` first"
        )
    return files


def split_number(entry: Path) -> int:
    """The split number of a folder or file listed above (``3`` for ``3/`` and for ``3.jsonl``)."""
    return int(entry.name.split(".", 1)[0])
