"""format stage: each split's pairs as LLaVA-repository conversation JSON (the paper's prompt)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import load_params, numbered_dirs, stage_logger  # first: it checks the interpreter
import pandas as pd

from llavac.data.splits import PARTS
from llavac.prompt import llava_record

def format_splits(splits_dir: Path, out_dir: Path, image_position: str) -> dict[str, int]:
    """Write `<out_dir>/<K>/<part>.json` for every split folder K under `splits_dir`; return record counts."""
    counts = {}
    for split_dir in numbered_dirs(splits_dir, "split"):
        (out_dir / split_dir.name).mkdir(parents=True, exist_ok=True)
        for part in PARTS:
            pairs = pd.read_parquet(split_dir / f"{part}.parquet")
            records = [llava_record(row, image_position) for row in pairs.to_dict("records")]
            with open(out_dir / split_dir.name / f"{part}.json", "w", encoding="utf-8") as f:
                json.dump(records, f, ensure_ascii=False, indent=1)
            counts[f"{split_dir.name}/{part}"] = len(records)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("splits_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    log = stage_logger("format")
    position = load_params().prompt.image_position
    counts = format_splits(args.splits_dir, args.out_dir, position)
    log.info("wrote %d files (%d records, image %s) to %s", len(counts), sum(counts.values()), position, args.out_dir)


if __name__ == "__main__":
    main()
