"""predict stage: batched greedy answers of every split's adapter on its test set, parsed into labels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import load_params, numbered_dirs, run, stage_logger
from llavac.labels import TASKS
from llavac.predict import predict_records, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("adapters_dir", type=Path)
    parser.add_argument("llava_dir", type=Path, help="formatted splits: <K>/test.json")
    parser.add_argument("image_folder", type=Path)
    parser.add_argument("out_dir", type=Path, help="predictions: <K>.jsonl")
    args = parser.parse_args()
    log = stage_logger("predict")
    params = load_params()
    settings, evaluation = params.predict, params.selected.evaluation
    log.info("predicting in %s, LoRA %s", evaluation.precision, "merged into the base" if evaluation.merge_lora else "unmerged")
    for adapter in numbered_dirs(args.adapters_dir, "train"):
        records = json.loads((args.llava_dir / adapter.name / "test.json").read_text(encoding="utf-8"))
        rows = predict_records(adapter, records, args.image_folder, settings.batch_size, settings.max_new_tokens, evaluation)
        out = args.out_dir / f"{adapter.name}.jsonl"
        write_jsonl(rows, out)
        unparsed = sum(row[f"pred_{task}"] is None for row in rows for task in TASKS)
        log.info("split %s: %d test pairs, %d unparseable slots -> %s", adapter.name, len(rows), unparsed, out)


if __name__ == "__main__":
    run(main, ValueError)
