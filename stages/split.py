"""Stage `split`: train/val/test splits of the pairs under the chosen protocol, plus a manifest.

    python stages/split.py artifacts/pairs.parquet <splits.dir> artifacts/splits

params: splits.seed, dataset, protocol, splits.source, splits.allow_mismatches.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import load_params, run, stage_logger

from llavac.data.splits import SplitMismatchError, split_pairs


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit("usage: python stages/split.py PAIRS_PARQUET SPLITS_DIR OUT_DIR")
    pairs_path, splits_dir, out_dir = map(Path, sys.argv[1:])
    stage_logger("split")
    params = load_params()
    try:
        split_pairs(
            pairs_path,
            splits_dir,
            out_dir,
            params.protocol,
            params.splits.source,
            params.splits.seed,
            params.splits.allow_mismatches,
            params.dataset,
        )
    except SplitMismatchError as exc:
        sys.exit(
            f"error: {exc}. Check that data.raw_dir is the real {params.dataset} data, or set "
            "splits.allow_mismatches=true to go on (absent ids are left out, our labels are kept)."
        )
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    run(main)
