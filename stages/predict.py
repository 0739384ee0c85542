"""predict stage: every split's adapter on its test set (labels by `predict.mode`) and validation set (scored).

Each row carries the label probabilities; the validation rows exist for the score stage to calibrate
them. Validation is only scored, never generated: its probabilities are all that is used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import load_params, run, stage_logger
from llavac.labels import TASKS
from llavac.predict import load_classifier, predict_records, write_jsonl
from llavac.split_folders import split_folders

VALIDATION = "val"
"""Subfolder of the predictions holding the validation sets' rows, `val/<K>.jsonl`."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("adapters_dir", type=Path)
    parser.add_argument("llava_dir", type=Path, help="formatted splits: <K>/test.json and <K>/val.json")
    parser.add_argument("image_folder", type=Path)
    parser.add_argument("out_dir", type=Path, help="predictions: <K>.jsonl (test) and val/<K>.jsonl")
    args = parser.parse_args()
    log = stage_logger("predict")
    params = load_params()
    settings, evaluation = params.predict, params.selected.evaluation
    log.info("predicting in %s, LoRA %s, test labels by %s", evaluation.precision,
             "merged into the base" if evaluation.merge_lora else "unmerged", settings.mode)
    for adapter in split_folders(args.adapters_dir, "train"):
        model, inputs = load_classifier(adapter, evaluation)
        for part, part_mode, out in (("test", settings.mode, args.out_dir / f"{adapter.name}.jsonl"),
                                     ("val", "score", args.out_dir / VALIDATION / f"{adapter.name}.jsonl")):
            records = json.loads((args.llava_dir / adapter.name / f"{part}.json").read_text(encoding="utf-8"))
            rows = predict_records(model, inputs, records, args.image_folder, settings.batch_size,
                                   settings.max_new_tokens, part_mode)
            write_jsonl(rows, out)
            unparsed = sum(row[f"pred_{task}"] is None for row in rows for task in TASKS)
            cut = sum(row["truncated_tokens"] > 0 for row in rows)
            log.info("split %s: %d %s pairs (%s), %d unparseable slots, %d texts cut to the model's limit -> %s",
                     adapter.name, len(rows), part, part_mode, unparsed, cut, out)


if __name__ == "__main__":
    run(main, ValueError)
