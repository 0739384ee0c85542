"""The split manifest: what was split, how, from which exact bytes, and what came out.

Written beside the split folders (``manifest.json``), so a result can be traced to the pairs and
published files it came from, and so a mismatch with the published files is on disk for review.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from llavac.data.fetch import file_sha256
from llavac.data.official import Mismatch
from llavac.data.protocols import Split
from llavac.labels import LABELS, TASKS


def split_shape(splits: list[Split], eligible: pd.DataFrame) -> dict[str, Any]:
    """Whether each split's parts are disjoint and cover the protocol's pairs, and, for several
    splits, whether the test sets cover every pair exactly once (Cheema's folds)."""
    eligible_ids = set(eligible["id"])
    report: dict[str, Any] = {"eligible_pairs": len(eligible_ids), "splits": {}}
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
) -> dict[str, Any]:
    """The manifest's content.

    ``inputs`` maps every file read to its published SHA-256 (None for our own files); the
    manifest records the actual hash and, for published files, whether it is the pinned one.
    """
    files = []
    for path, published in inputs.items():
        entry: dict[str, Any] = {"path": str(path), "sha256": file_sha256(path)}
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
