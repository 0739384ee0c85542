"""The split stage's library: the pairs -> the protocol's train/val/test splits, checked, with a manifest.

The sequence: read the pairs; generate the splits with the seed (``llavac.data.protocols``) or read
the published files (``llavac.data.official``); write the manifest first (``llavac.data.manifest``),
so that when the published files disagree with the pairs the full list is on disk and no splits
are; stop on such a disagreement unless it is allowed; write one Parquet file per part of each
split, in the numbered split folders (``llavac.split_folders``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import get_args

from llavac.data.manifest import split_manifest
from llavac.data.official import Mismatch, official_files, official_splits
from llavac.data.pairs import parquet_files, read_pairs
from llavac.data.protocols import PROTOCOLS, Split, eligible_pairs, generated_splits
from llavac.files import folder_written_whole, publish_folder, write_json
from llavac.params import SplitSource
from llavac.split_folders import split_folder

log = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = get_args(SplitSource)
MANIFEST_FILE = "manifest.json"


class SplitMismatchError(ValueError):
    """The published split files name ids our pairs lack, or labels our label rule does not give."""


def split_pairs(
    pairs_path: Path,
    splits_dir: Path,
    out_dir: Path,
    protocol: str,
    source: str,
    seed: int,
    allow_mismatches: bool,
    dataset: str = "mvsa-single",
) -> list[Split]:
    """Write ``out_dir/manifest.json`` and ``out_dir/<K>/{train,val,test}.parquet``; return the splits.

    ``splits_dir/<protocol>/`` holds ``dataset``'s published files when ``source`` is ``official``. Raises
    SplitMismatchError when they disagree with the pairs, or ValueError when one differs from the
    published file, unless ``allow_mismatches``; ``out_dir`` then holds only the manifest, which
    lists what was wrong. FileNotFoundError or ValueError for missing or malformed input. The
    folder is written aside and put in place at the end, so a failure never leaves half of it.
    """
    if protocol not in PROTOCOLS or source not in SOURCES:
        raise ValueError(f"protocol {protocol!r} / source {source!r}: expected one of {PROTOCOLS} / {SOURCES}")
    pairs = read_pairs(pairs_path)
    inputs: dict[Path, str | None] = dict.fromkeys(parquet_files(pairs_path))
    log.info("loaded %d pairs from %s", len(pairs), pairs_path)
    mismatches: list[Mismatch] = []
    if source == "generated":
        splits = generated_splits(pairs, protocol, seed)
        log.info("generated %d %s split(s) with seed %d", len(splits), protocol, seed)
    else:
        splits, mismatches = official_splits(pairs, protocol, splits_dir, dataset)
        inputs |= official_files(protocol, splits_dir, dataset)
        log.info("read %d official %s split(s) from %s", len(splits), protocol, splits_dir / protocol)

    manifest = split_manifest(
        protocol,
        source,
        seed if source == "generated" else None,
        splits,
        eligible_pairs(pairs, protocol),
        mismatches,
        inputs,
    )
    manifest_path = out_dir / MANIFEST_FILE
    with folder_written_whole(out_dir) as staging:
        write_json(staging / MANIFEST_FILE, manifest)
        if mismatches:
            ids = sorted({mismatch.id for mismatch in mismatches})
            summary = (
                f"{len(mismatches)} mismatch(es) between the official {protocol} files and {pairs_path} "
                f"on {len(ids)} id(s) ({', '.join(map(str, ids[:10]))}{', ...' if len(ids) > 10 else ''}); "
                f"all listed in {manifest_path}"
            )
            if not allow_mismatches:
                publish_folder(staging, out_dir)
                raise SplitMismatchError(summary)
            log.warning("%s; going on as allowed (absent ids are left out, our labels are kept)", summary)
        altered = [entry["path"] for entry in manifest["inputs"] if entry.get("matches_published") is False]
        if altered:
            summary = (
                f"{len(altered)} official {protocol} file(s) differ from the published ones (SHA-256), e.g. {altered[0]}: "
                f"truncated or edited, or another dataset's (this is {dataset})? Fetch them again with "
                f"`llavac fetch-splits {protocol} --dataset {dataset} --dest {splits_dir}`"
            )
            if not allow_mismatches:
                publish_folder(staging, out_dir)
                raise ValueError(f"{summary}, or set splits.allow_mismatches=true to use them as they are")
            log.warning("%s; going on as allowed (their hashes are in %s)", summary, manifest_path)

        for split in splits:
            sizes = "/".join(str(len(frame)) for frame in split.parts().values())
            log.info("split %d: train/val/test = %s", split.number, sizes)
        paths = write_splits(splits, staging)
    log.info("wrote %s and %d Parquet files under %s", manifest_path, len(paths), out_dir)
    return splits


def write_splits(splits: list[Split], out_dir: Path) -> list[Path]:
    """``<out_dir>/<number>/{train,val,test}.parquet``, with the pairs' columns."""
    paths = []
    for split in splits:
        for part, frame in split.parts().items():
            path = split_folder(out_dir, split.number) / f"{part}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path, index=False)
            paths.append(path)
    return paths
