"""The published split files of the protocols, read into :class:`~llavac.data.protocols.Split`.

MVSA-Single's and MVSA-Multiple's files have the same formats (Cheema's pair list and row-index
files, CLMLF's JSON), so one reader per protocol serves both; only the pinned files differ.

The files (fetched and checked by ``llavac fetch-splits``, pinned in ``llavac.data.fetch``) say which
ids go where and which labels their authors used. The rows themselves are taken from our pairs by
id, because the published texts were decoded wrongly by every repository. Where a published id or
label disagrees with our pairs, it is reported as a :class:`Mismatch`; the caller decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from llavac.data.fetch import OFFICIAL_FILES, unpublished
from llavac.data.protocols import CHEEMA_FOLDS, PARTS, STRATUM, Split, sorted_split
from llavac.labels import LABELS, TASKS

LABEL_COLUMNS: tuple[str, ...] = tuple(f"{task}_label" for task in TASKS)
CHEEMA_CODES: dict[int, str] = {0: "neutral", 1: "positive", 2: "negative"}
"""Label codes of Cheema et al.'s valid_pairlist.txt ..."""
CHEEMA_PAIRLIST_COLUMNS: tuple[str, ...] = ("id", "multimodal", "text", "image")
"""... and its columns, in file order (no header)."""
CLMLF_CODES: dict[int, str] = {0: "positive", 1: "neutral", 2: "negative"}
"""``emotion_label`` of CLMLF's JSON files (the ``random`` protocol)."""
OFFICIAL_PART_NAMES: dict[str, str] = {"train": "train", "val": "dev", "test": "test"}
"""Our part name -> the file stem CLMLF and QMF use (their ``dev`` is our ``val``)."""


@dataclass(frozen=True)
class Mismatch:
    """A published id that our pairs lack, or a published label our label rule does not give."""

    id: int
    file: str
    problem: str


@dataclass(frozen=True)
class OfficialSet:
    """What a published split states, before it meets our pairs."""

    labels: pd.DataFrame
    """One row per published record: ``id``, ``file`` and the ``<task>_label`` columns it states."""
    members: list[dict[str, list[int]]]
    """Per split, our part name -> the published ids."""


def official_files(protocol: str, splits_dir: Path, dataset: str = "mvsa-single") -> dict[Path, str]:
    """Path -> published SHA-256 of every official file of ``dataset``'s ``protocol``; all must be present.

    Raises ValueError when the protocol publishes no split of the dataset (QMF's on MVSA-Multiple),
    FileNotFoundError when a file is missing.
    """
    if reason := unpublished(dataset, protocol):
        raise ValueError(reason)
    files = {splits_dir / official.dest: official.sha256 for official in OFFICIAL_FILES[dataset][protocol]}
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise FileNotFoundError(
            f"the official {protocol} split files of {dataset} are missing: {shown}. Run `llavac fetch-splits "
            f"{protocol} --dataset {dataset} --dest {splits_dir}` (on a machine with network access, then copy them "
            "here), or set splits.source=generated."
        )
    return files


Parsed = TypeVar("Parsed")


def _published(path: Path, read: Callable[[Path], Parsed]) -> Parsed:
    """Read one published file, naming it when it is not in the published format."""
    try:
        return read(path)
    except ValueError as exc:  # pandas' parse errors and numpy's conversion errors are ValueErrors
        raise ValueError(
            f"{path} is not in the published format ({exc}); fetch it again with `llavac fetch-splits`"
        ) from exc


def _decode(codes: pd.Series, mapping: dict[int, str], path: Path) -> pd.Series:
    unknown = sorted(set(codes) - set(mapping))
    if unknown:
        raise ValueError(f"{path} holds label codes {unknown}; the published codes are {mapping}")
    return codes.map(mapping)


def _row_ids(path: Path, ids: pd.Series) -> list[int]:
    """Cheema's split files list 0-based row numbers of valid_pairlist.txt, not pair ids."""
    rows = _published(path, lambda p: np.loadtxt(p, dtype=np.int64, ndmin=1))
    outside = rows[(rows < 0) | (rows >= len(ids))]
    if outside.size:
        raise ValueError(f"{path} lists rows {outside[:10].tolist()} outside valid_pairlist.txt's {len(ids)} rows")
    return ids.iloc[rows].tolist()


def read_cheema(folder: Path) -> OfficialSet:
    """valid_pairlist.txt (``id,multimodal,text,image``, codes 0 neutral / 1 positive / 2 negative)
    and ``{train,val,test}_K.txt`` of row indices into it."""
    path = folder / "valid_pairlist.txt"
    table = _published(path, lambda p: pd.read_csv(p, header=None, names=list(CHEEMA_PAIRLIST_COLUMNS), dtype="int64"))
    labels = pd.DataFrame(
        {"id": table["id"], "file": f"{folder.name}/{path.name}"}
        | {f"{task}_label": _decode(table[task], CHEEMA_CODES, path) for task in TASKS}
    )
    members = [
        {part: _row_ids(folder / f"{part}_{number}.txt", table["id"]) for part in PARTS}
        for number in range(1, CHEEMA_FOLDS + 1)
    ]
    return OfficialSet(labels, members)


def _json_records(path: Path, lines: bool, label: str) -> pd.DataFrame:
    """A CLMLF/QMF file as a frame with integer ids (theirs are strings) and its ``label`` column."""

    def read(p: Path) -> pd.DataFrame:
        frame = pd.read_json(p, lines=lines, dtype=False)
        missing = {"id", label} - set(frame.columns)
        if missing:
            raise ValueError(f"records lack the fields {sorted(missing)}")
        return frame.assign(id=frame["id"].astype("int64"))

    return _published(path, read)


def _read_parts(
    folder: Path, suffix: str, label: str, labels_of: Callable[[pd.Series, Path], dict[str, pd.Series]]
) -> OfficialSet:
    """CLMLF and QMF ship one file per part; ``labels_of`` turns a file's ``label`` field into our
    label columns."""
    records, members = [], {}
    for part, stem in OFFICIAL_PART_NAMES.items():
        path = folder / f"{stem}{suffix}"
        frame = _json_records(path, lines=suffix == ".jsonl", label=label)
        records.append(
            pd.DataFrame({"id": frame["id"], "file": f"{folder.name}/{path.name}"} | labels_of(frame[label], path))
        )
        members[part] = frame["id"].tolist()
    return OfficialSet(pd.concat(records, ignore_index=True), [members])


def read_random(folder: Path) -> OfficialSet:
    """CLMLF: JSON arrays of ``{"id": "<str>", "text", "emotion_label": 0 positive / 1 neutral / 2 negative}``."""
    return _read_parts(
        folder, ".json", "emotion_label", lambda codes, path: {STRATUM: _decode(codes, CLMLF_CODES, path)}
    )


def read_zhang(folder: Path) -> OfficialSet:
    """QMF: JSON lines ``{"id": "477", "label": "positive", "text", "img"}``.

    QMF keeps only pairs whose text and image labels agree, so its one label stands for all three:
    comparing it with each of ours checks the multimodal label and the agreement at once.
    """

    def labels_of(label: pd.Series, path: Path) -> dict[str, pd.Series]:
        unknown = sorted(set(label) - set(LABELS))
        if unknown:
            raise ValueError(f"{path} holds labels {unknown}; the published labels are {list(LABELS)}")
        return {column: label for column in LABEL_COLUMNS}

    return _read_parts(folder, ".jsonl", "label", labels_of)


_READERS: dict[str, Callable[[Path], OfficialSet]] = {
    "cheema": read_cheema,
    "random": read_random,
    "zhang": read_zhang,
}


def _require_disjoint(official: OfficialSet, protocol: str) -> None:
    """A published split that repeats an id across (or within) its parts would leak test data."""
    for number, members in enumerate(official.members, start=1):
        ids = pd.Series([pair_id for part in members.values() for pair_id in part])
        repeated = ids[ids.duplicated()].unique().tolist()
        if repeated:
            raise ValueError(
                f"official {protocol} split {number} lists ids {repeated[:10]} more than once across "
                f"train/val/test; the files are damaged: fetch them again with `llavac fetch-splits {protocol}`"
            )


def label_mismatches(labels: pd.DataFrame, pairs: pd.DataFrame) -> list[Mismatch]:
    """Published ids absent from ``pairs``, and every published label that differs from ours."""
    ours = pairs.set_index("id")
    found = labels["id"].isin(ours.index)
    mismatches = [
        Mismatch(int(pair_id), file, "absent from the pairs")
        for pair_id, file in labels.loc[~found, ["id", "file"]].itertuples(index=False)
    ]
    stated = labels[found]
    for column in (column for column in LABEL_COLUMNS if column in labels.columns):
        theirs = stated[column].to_numpy()
        mine = ours.loc[stated["id"], column].to_numpy()
        for pair_id, file, official, rule in zip(stated["id"], stated["file"], theirs, mine, strict=True):
            if official != rule:
                mismatches.append(Mismatch(int(pair_id), file, f"{column}: published {official}, ours {rule}"))
    return sorted(mismatches, key=lambda mismatch: (mismatch.id, mismatch.problem))


def official_splits(
    pairs: pd.DataFrame, protocol: str, splits_dir: Path, dataset: str = "mvsa-single"
) -> tuple[list[Split], list[Mismatch]]:
    """``dataset``'s published splits of ``protocol`` from ``splits_dir/<protocol>/``, rows taken from ``pairs``.

    Published ids our pairs lack are left out and reported; rows keep our labels, and published
    labels that differ are reported. The caller decides whether mismatches are acceptable.
    """
    official_files(protocol, splits_dir, dataset)
    official = _READERS[protocol](splits_dir / protocol)
    _require_disjoint(official, protocol)
    splits = [
        sorted_split(number, *(pairs[pairs["id"].isin(members[part])] for part in PARTS))
        for number, members in enumerate(official.members, start=1)
    ]
    return splits, label_mismatches(official.labels, pairs)
