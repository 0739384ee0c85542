"""Stage `format`: each split's pairs as LLaVA-repository conversation JSON (the paper's prompt).

    python stages/format.py artifacts/splits artifacts/llava

params: prompt.image_position, prompt.modalities.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import load_params, run, stage_logger  # first: it checks the interpreter

from llavac.data.llava_json import format_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("splits_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    log = stage_logger("format")
    prompt = load_params().prompt
    try:
        counts = format_splits(args.splits_dir, args.out_dir, prompt.image_position, prompt.modalities)
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")
    log.info("wrote %d files (%d records, image %s, modalities %s) to %s", len(counts), sum(counts.values()),
             prompt.image_position, prompt.modalities, args.out_dir)


if __name__ == "__main__":
    run(main)
