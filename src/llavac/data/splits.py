"""Train/val/test splits of the MVSA-Single pairs under the three published protocols.

Two sources give the same shape of result, a list of :class:`Split`:

- ``generated`` re-implements each protocol's procedure with a seed, for data the published files
  do not describe (the embedded sample, a re-annotated corpus);
- ``official`` reads the published files (fetched by ``llavac fetch-splits``) and takes the rows
  from our pairs by id, because the published texts were decoded wrongly by every repository.
  Where a published id or label disagrees with our pairs, it is reported as a :class:`Mismatch`.

Protocols (``reference/mvsa.md``): ``cheema`` (10 stratified folds, each with a stratified val),
``random`` (one stratified 8:1:1 split, CLMLF) and ``zhang`` (QMF: only pairs whose text and image
labels agree, about 60/20/20).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from llavac.data.fetch import OFFICIAL_FILES, file_sha256
from llavac.labels import LABELS, TASKS

PROTOCOLS: tuple[str, ...] = ("cheema", "random", "zhang")
SOURCES: tuple[str, ...] = ("generated", "official")
PARTS: tuple[str, ...] = ("train", "val", "test")

PAIR_COLUMNS: tuple[str, ...] = (
    "id",
    "text",
    "text_label",
    "image_label",
    "multimodal_label",
    "image_path",
    "image_sha256",
    "image_width",
    "image_height",
)
LABEL_COLUMNS: tuple[str, ...] = tuple(f"{task}_label" for task in TASKS)
STRATUM = "multimodal_label"
"""Every protocol stratifies on the label it is scored on."""

CHEEMA_FOLDS = 10
CHEEMA_CODES: dict[int, str] = {0: "neutral", 1: "positive", 2: "negative"}
"""Label codes of Cheema et al.'s valid_pairlist.txt ..."""
CHEEMA_PAIRLIST_COLUMNS: tuple[str, ...] = ("id", "multimodal", "text", "image")
"""... and its columns, in file order (no header)."""
CLMLF_CODES: dict[int, str] = {0: "positive", 1: "neutral", 2: "negative"}
"""``emotion_label`` of CLMLF's JSON files (the ``random`` protocol)."""
OFFICIAL_PART_NAMES: dict[str, str] = {"train": "train", "val": "dev", "test": "test"}
"""Our part name -> the file stem CLMLF and QMF use (their ``dev`` is our ``val``)."""


@dataclass(frozen=True)
class Split:
    """One train/val/test partition; ``number`` is 1-based, as in the published file names."""

    number: int
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def parts(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class Mismatch:
    """A published id that our pairs lack, or a published label our label rule does not give."""

    id: int
    file: str
    problem: str


def read_pairs(path: Path) -> pd.DataFrame:
    """The preprocess stage's pairs (a Parquet file or a Spark output folder), checked and sorted by id."""
    pairs = pd.read_parquet(path)
    missing = [column for column in PAIR_COLUMNS if column not in pairs.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; it should be the preprocess stage's pairs table")
    duplicated = pairs.loc[pairs["id"].duplicated(), "id"].unique().tolist()
    if duplicated:
        raise ValueError(f"{path} holds ids {duplicated[:10]} more than once; one row per pair is expected")
    return pairs.sort_values("id", ignore_index=True)


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files behind ``path``: itself, or the part files of a Spark output folder."""
    return sorted(path.rglob("*.parquet")) if path.is_dir() else [path]


def eligible_pairs(pairs: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The pairs a protocol splits: ``zhang`` (QMF) keeps only pairs whose text and image labels agree."""
    if protocol == "zhang":
        return pairs[pairs["text_label"] == pairs["image_label"]]
    return pairs


# --- generated ----------------------------------------------------------------------------------


def _stratified_draw(frame: pd.DataFrame, size: int | float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(rest, drawn)``: ``size`` rows (a count, or a fraction that scikit-learn rounds up) drawn
    at random with the multimodal label proportions of ``frame``."""
    rest, drawn = train_test_split(frame, test_size=size, stratify=frame[STRATUM], random_state=seed)
    return rest, drawn


def _split(number: int, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> Split:
    """A Split whose parts are sorted by id, so that files and diffs do not depend on draw order."""
    return Split(number, *(part.sort_values("id", ignore_index=True) for part in (train, val, test)))


def cheema_splits(pairs: pd.DataFrame, seed: int, folds: int = CHEEMA_FOLDS) -> list[Split]:
    """Cheema et al.: split K tests on stratified fold K; its val is a stratified draw of one
    fold's size from the other folds; the rest trains. On 4511 pairs: 3607/452/452, then 3609/451/451."""
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = []
    for number, (rest_rows, test_rows) in enumerate(kfold.split(pairs, pairs[STRATUM]), start=1):
        train, val = _stratified_draw(pairs.iloc[rest_rows], len(test_rows), seed)
        splits.append(_split(number, train, val, pairs.iloc[test_rows]))
    return splits


def random_split(pairs: pd.DataFrame, seed: int) -> list[Split]:
    """One stratified 8:1:1 split. CLMLF's val and test each hold a tenth of every class rounded
    down, so the draws take that many rows: 3611/450/450 on 4511 pairs."""
    tenth = int((pairs[STRATUM].value_counts() // 10).sum())
    rest, test = _stratified_draw(pairs, tenth, seed)
    train, val = _stratified_draw(rest, tenth, seed)
    return [_split(1, train, val, test)]


def zhang_split(pairs: pd.DataFrame, seed: int) -> list[Split]:
    """QMF: the pairs whose text and image labels agree, 60 % train, the other 40 % halved into val
    and test (the odd row to test): 1555/518/519 on 2592 pairs."""
    train, held = _stratified_draw(eligible_pairs(pairs, "zhang"), 0.4, seed)
    val, test = _stratified_draw(held, 0.5, seed)
    return [_split(1, train, val, test)]


_GENERATORS: dict[str, Callable[[pd.DataFrame, int], list[Split]]] = {
    "cheema": cheema_splits,
    "random": random_split,
    "zhang": zhang_split,
}


def generated_splits(pairs: pd.DataFrame, protocol: str, seed: int) -> list[Split]:
    """The protocol's procedure with ``seed``; the same pairs and seed give the same splits."""
    pairs = pairs.sort_values("id", ignore_index=True)
    try:
        return _GENERATORS[protocol](pairs, seed)
    except ValueError as exc:  # scikit-learn refuses strata too small for the draw
        counts = eligible_pairs(pairs, protocol)[STRATUM].value_counts().to_dict()
        raise ValueError(
            f"cannot draw {protocol} splits from {sum(counts.values())} pairs with multimodal labels {counts}: {exc}"
        ) from exc


# --- official -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfficialSet:
    """What a published split states, before it meets our pairs."""

    labels: pd.DataFrame
    """One row per published record: ``id``, ``file`` and the ``<task>_label`` columns it states."""
    members: list[dict[str, list[int]]]
    """Per split, our part name -> the published ids."""


def official_files(protocol: str, splits_dir: Path) -> dict[Path, str]:
    """Path -> published SHA-256 of every official file of ``protocol``; all must be present."""
    files = {splits_dir / official.dest: official.sha256 for official in OFFICIAL_FILES[protocol]}
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise FileNotFoundError(
            f"the official {protocol} split files are missing: {shown}. Run `llavac fetch-splits {protocol} "
            f"--dest {splits_dir}` (on a machine with network access, then copy them here), "
            "or set splits.source=generated."
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


def official_splits(pairs: pd.DataFrame, protocol: str, splits_dir: Path) -> tuple[list[Split], list[Mismatch]]:
    """The published splits of ``protocol`` from ``splits_dir/<protocol>/``, rows taken from ``pairs``.

    Published ids our pairs lack are left out and reported; rows keep our labels, and published
    labels that differ are reported. The caller decides whether mismatches are acceptable.
    """
    official_files(protocol, splits_dir)
    official = _READERS[protocol](splits_dir / protocol)
    _require_disjoint(official, protocol)
    splits = [
        _split(number, *(pairs[pairs["id"].isin(members[part])] for part in PARTS))
        for number, members in enumerate(official.members, start=1)
    ]
    return splits, label_mismatches(official.labels, pairs)


# --- report and output --------------------------------------------------------------------------


def split_shape(splits: list[Split], eligible: pd.DataFrame) -> dict:
    """Whether each split's parts are disjoint and cover the protocol's pairs, and, for several
    splits, whether the test sets cover every pair exactly once (Cheema's folds)."""
    eligible_ids = set(eligible["id"])
    report: dict = {"eligible_pairs": len(eligible_ids), "splits": {}}
    tested: Counter[int] = Counter()
    for split in splits:
        parts = [set(frame["id"]) for frame in split.parts().values()]
        union = set().union(*parts)
        report["splits"][str(split.number)] = {
            "disjoint": sum(map(len, parts)) == len(union),
            "covered": len(union & eligible_ids),
            "uncovered_ids": sorted(eligible_ids - union),
            "ineligible_ids": sorted(union - eligible_ids),
        }
        tested.update(split.test["id"])
    if len(splits) > 1:
        report["test_sets_cover_each_pair_once"] = set(tested) == eligible_ids and set(tested.values()) == {1}
    return report


def label_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per task, the count of every label (zeros included, so parts compare at a glance)."""
    return {task: {label: int((frame[f"{task}_label"] == label).sum()) for label in LABELS} for task in TASKS}


def split_manifest(
    protocol: str,
    source: str,
    seed: int | None,
    splits: list[Split],
    eligible: pd.DataFrame,
    mismatches: list[Mismatch],
    inputs: dict[Path, str | None],
) -> dict:
    """What was split, how, from which exact bytes, and what came out.

    ``inputs`` maps every file read to its published SHA-256 (None for our own files); the
    manifest records the actual hash and, for published files, whether it is the pinned one.
    """
    files = []
    for path, published in inputs.items():
        entry: dict = {"path": str(path), "sha256": file_sha256(path)}
        if published is not None:
            entry |= {"published_sha256": published, "matches_published": entry["sha256"] == published}
        files.append(entry)
    return {
        "protocol": protocol,
        "source": source,
        "seed": seed,
        "inputs": files,
        "splits": {
            str(split.number): {
                part: {"size": len(frame), "labels": label_counts(frame)} for part, frame in split.parts().items()
            }
            for split in splits
        },
        "shape": split_shape(splits, eligible),
        "mismatches": [{"id": m.id, "file": m.file, "problem": m.problem} for m in mismatches],
    }


def reset_dir(out_dir: Path) -> None:
    """Empty the output folder: split folders left by an earlier protocol would be read downstream."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)


def write_manifest(manifest: dict, out_dir: Path) -> Path:
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def write_splits(splits: list[Split], out_dir: Path) -> list[Path]:
    """``<out_dir>/<number>/{train,val,test}.parquet``, with the pairs' columns."""
    paths = []
    for split in splits:
        for part, frame in split.parts().items():
            path = out_dir / str(split.number) / f"{part}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path, index=False)
            paths.append(path)
    return paths
