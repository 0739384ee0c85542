"""Stage `split`: train/val/test splits of the pairs under the chosen protocol, plus a manifest.

    python stages/split.py artifacts/pairs.parquet <splits.dir> artifacts/splits

params: seed, protocol, splits.source, splits.allow_mismatches.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import load_params, stage_logger

from llavac.data.splits import (
    PROTOCOLS,
    SOURCES,
    eligible_pairs,
    generated_splits,
    official_files,
    official_splits,
    parquet_files,
    read_pairs,
    reset_dir,
    split_manifest,
    write_manifest,
    write_splits,
)

log = stage_logger("split")


def split_pairs(
    pairs_path: Path, splits_dir: Path, out_dir: Path, protocol: str, source: str, seed: int, allow_mismatches: bool
) -> None:
    """Write ``out_dir/<K>/{train,val,test}.parquet`` and ``out_dir/manifest.json``.

    The manifest is written first, so that when published ids or labels disagree with the pairs
    the stage stops with the full list on disk (and no splits).
    """
    pairs = read_pairs(pairs_path)
    inputs: dict[Path, str | None] = dict.fromkeys(parquet_files(pairs_path))
    log.info("loaded %d pairs from %s", len(pairs), pairs_path)
    if source == "generated":
        splits, mismatches = generated_splits(pairs, protocol, seed), []
        log.info("generated %d %s split(s) with seed %d", len(splits), protocol, seed)
    else:
        splits, mismatches = official_splits(pairs, protocol, splits_dir)
        inputs |= official_files(protocol, splits_dir)
        log.info("read %d official %s split(s) from %s", len(splits), protocol, splits_dir / protocol)

    reset_dir(out_dir)
    manifest = split_manifest(
        protocol,
        source,
        seed if source == "generated" else None,
        splits,
        eligible_pairs(pairs, protocol),
        mismatches,
        inputs,
    )
    manifest_path = write_manifest(manifest, out_dir)
    log.info("wrote %s", manifest_path)
    altered = [entry["path"] for entry in manifest["inputs"] if entry.get("matches_published") is False]
    if altered:
        log.warning(
            "%d official file(s) differ from the published ones, e.g. %s (hashes in the manifest)",
            len(altered),
            altered[0],
        )
    if mismatches:
        ids = sorted({mismatch.id for mismatch in mismatches})
        summary = (
            f"{len(mismatches)} mismatch(es) between the official {protocol} files and {pairs_path} "
            f"on {len(ids)} id(s) ({', '.join(map(str, ids[:10]))}{', ...' if len(ids) > 10 else ''}); "
            f"all listed in {manifest_path}"
        )
        if not allow_mismatches:
            sys.exit(
                f"error: {summary}. Check that data.raw_dir is the real MVSA-Single, or set "
                "splits.allow_mismatches=true to go on (absent ids are left out, our labels are kept)."
            )
        log.warning("%s; going on because splits.allow_mismatches is true", summary)

    for split in splits:
        sizes = "/".join(str(len(frame)) for frame in split.parts().values())
        log.info("split %d: train/val/test = %s", split.number, sizes)
    paths = write_splits(splits, out_dir)
    log.info("wrote %d Parquet files under %s", len(paths), out_dir)


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit("usage: python stages/split.py PAIRS_PARQUET SPLITS_DIR OUT_DIR")
    pairs_path, splits_dir, out_dir = map(Path, sys.argv[1:])
    params = load_params()
    try:
        split_pairs(
            pairs_path,
            splits_dir,
            out_dir,
            params.protocol,
            params.splits.source,
            params.seed,
            params.splits.allow_mismatches,
        )
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
