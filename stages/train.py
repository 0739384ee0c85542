"""train stage: LoRA-fine-tune the base model on every split's training set.

Run as `python stages/train.py ...` on a CPU or one GPU, or under `deepspeed --num_gpus N` /
`deepspeed --hostfile ...` (params.yaml `train.launcher`); the launcher adds `--local_rank`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from pathlib import Path

from common import load_params, numbered_dirs, run, stage_logger  # first: it checks the interpreter
import torch

from llavac.model.loading import read_pointer
from llavac.plots import plot_training_loss
from llavac.train import train_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("llava_dir", type=Path, help="formatted splits: <K>/train.json")
    parser.add_argument("image_folder", type=Path, help="the MVSA raw folder the records' image paths are relative to")
    parser.add_argument("out_dir", type=Path, help="adapters: <K>/")
    parser.add_argument("checkpoint_dir", type=Path, help="resumable checkpoints: <K>/ (not a DVC output)")
    parser.add_argument("live_dir", type=Path, help="DVCLive training curves: <K>/")
    args, _ = parser.parse_known_args()  # the deepspeed launcher appends --local_rank=N
    log = stage_logger("train")
    params = load_params()
    recipe = params.selected.recipe
    base = read_pointer(args.base_dir)
    histories = {}
    for split_dir in numbered_dirs(args.llava_dir, "format"):
        split = split_dir.name
        records = json.loads((split_dir / "train.json").read_text(encoding="utf-8"))
        log.info("split %s: fine-tuning %s on %d pairs", split, base, len(records))
        result = train_split(
            base,
            records,
            args.image_folder,
            args.out_dir / split,
            args.checkpoint_dir / split,
            args.live_dir / split,
            recipe,
            params.seed,
            params.prompt.image_position,
        )
        histories[split] = result["history"]
        log.info("split %s: %d steps, mean training loss %.4f -> %s", split, result["steps"], result["train_loss"], args.out_dir / split)
        # Ten 7B engines in one process would otherwise pile up on the GPU.
        del result
        gc.collect()
        torch.cuda.empty_cache()
    if int(os.environ.get("RANK", "0")) == 0:
        plot_training_loss(histories, args.live_dir / "training_loss.png")


if __name__ == "__main__":
    run(main, ValueError)
