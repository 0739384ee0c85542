"""Stage `sample`: write the embedded synthetic dataset in the raw layout of `dataset`.

    python stages/sample.py artifacts/sample

Reads params `dataset` and `sample.*` (its own `sample.seed`); writes OUT_DIR/MVSA_Single
(labelResultAll.txt with one or three annotators per line, data/<id>.txt, data/<id>.jpg) and
OUT_DIR/splits/README.txt.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import load_params, run, stage_logger

from llavac.data.sample import write_sample


def main() -> None:
    log = stage_logger("sample")
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/sample.py OUT_DIR")
    out_dir = Path(sys.argv[1])
    params = load_params()
    sample, seed = params.sample, params.sample.seed
    log.info("writing %d synthetic %s pairs (seed %d, image sides %d-%d px) to %s",
             sample.n_pairs, params.dataset, seed, sample.min_side, sample.max_side, out_dir)
    try:
        summary = write_sample(out_dir, sample.n_pairs, seed, sample.min_side, sample.max_side, params.dataset)
    except (ValueError, FileExistsError) as error:
        sys.exit(f"error: {error}")
    log.info("wrote %d label rows; text labels %s; image labels %s",
             summary.label_rows, summary.text_labels, summary.image_labels)
    for reason, ids in summary.drops.items():
        log.info("  %d row(s) preprocessing must drop as %s: ids %s", len(ids), reason, ids)
    log.info("  kept with replaced bytes: ids %s; files without a label row: ids %s",
             summary.replaced_text_ids, summary.unlabelled_ids)
    log.info("expect %d valid pairs after preprocessing", summary.expected_pairs)


if __name__ == "__main__":
    run(main)
