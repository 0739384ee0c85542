"""train stage: LoRA-fine-tune the base model on every split's training set, with the selected backend.

`train.method: none` trains nothing: each split's adapter folder stands for the base model as it is.

`train.backend: hf` trains with this project's code (HF Trainer); `llava-repo` runs the LLaVA
repository's own `llava/train/train.py` and converts its LoRA into the same adapter format.
`train.launcher` (`python`, `deepspeed --num_gpus N`, `deepspeed --hostfile F`) starts the training
processes: for `hf` it re-starts this script under the launcher (one copy per device, each sees
`LOCAL_RANK`); for `llava-repo` it starts LLaVA's script.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from common import load_params, run, stage_logger  # first: it checks the interpreter
import torch

from deepspeed.accelerator import get_accelerator
from llavac.launcher import is_deepspeed, launched_by_deepspeed
from llavac.llava_repo import (
    TRAINED_LLAVA_DIR, ensure_llava_env, has_flash_attention, llava_train_command, llava_world_size, train_split_llava_repo,
)
from llavac.model.loading import read_pointer
from llavac.cpu_numerics import numerics_class, route_cpu_convolutions_through_aten
from llavac.curves import plot_training_loss
from llavac.files import write_json
from llavac.split_folders import split_folders
from llavac.train import split_processes, train_splits, untrained_adapter


def relaunch_under(launcher: str) -> None:
    """Replace this process by `launcher stages/train.py ARGS` unless it already is one of the launched copies."""
    if is_deepspeed(launcher) and not launched_by_deepspeed():
        words = shlex.split(launcher)
        os.execvp(words[0], [*words, sys.argv[0], *sys.argv[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("llava_dir", type=Path, help="formatted splits: <K>/train.json")
    parser.add_argument("image_folder", type=Path, help="the MVSA raw folder the records' image paths are relative to")
    parser.add_argument("out_dir", type=Path, help="adapters: <K>/")
    parser.add_argument("checkpoint_dir", type=Path, help="resumable checkpoints and LLaVA's raw output: <K>/ (not a DVC output)")
    parser.add_argument("live_dir", type=Path, help="DVCLive training curves: <K>/")
    parser.add_argument("machine_record", type=Path, help="the class of machine that trained (llavac.cpu_numerics.numerics_class)")
    args, _ = parser.parse_known_args()  # the deepspeed launcher appends --local_rank=N
    log = stage_logger("train")
    route_cpu_convolutions_through_aten()  # as `load_base` does in every training process: the machine record says so
    params = load_params()
    backend, launcher = params.train.backend, params.train.launcher
    recipe = params.selected.recipe
    base = read_pointer(args.base_dir)
    if params.train.method == "none":
        args.live_dir.mkdir(parents=True, exist_ok=True)  # a DVC output even when there are no curves
        write_json(args.machine_record, numerics_class())
        for split_dir in split_folders(args.llava_dir, "format"):
            untrained_adapter(base, args.out_dir / split_dir.name, params.prompt.image_position, recipe.precision)
            log.info("split %s: train.method=none, nothing trained: %s stands for %s as it is",
                     split_dir.name, args.out_dir / split_dir.name, base)
        return
    if backend == "hf":
        relaunch_under(launcher)
    else:
        llava_model, vision_tower = read_pointer(args.base_dir, "llava_model"), read_pointer(args.base_dir, "vision_tower")
        if not llava_model or not vision_tower:
            sys.exit(f"error: train.backend=llava-repo needs the model in LLaVA's format: give models.{params.model} "
                     "`pretrained_llava` and `vision_tower` (e.g. liuhaotian/llava-v1.5-7b, openai/clip-vit-large-patch14-336)")
        if params.prompt.modalities == "text":
            sys.exit("error: train.backend=llava-repo cannot train prompt.modalities=text (LLaVA's loader opens every "
                     "record's image; the blank image exists only in this project's loader): use train.backend=hf")
        if params.prompt.image_position != "front":
            sys.exit("error: train.backend=llava-repo always moves <image> to the front of the prompt (LLaVA's preprocessing); "
                     "set prompt.image_position=front")
        log.info("installing or checking the LLaVA environment (make llava-env)")
        llava_bin = ensure_llava_env(Path.cwd())
        cuda = torch.cuda.is_available()
        if not cuda and is_deepspeed(launcher):
            log.warning("train.launcher=%r: the llava-repo backend runs LLaVA's code as one plain process on a CPU "
                        "(its DeepSpeed path needs CUDA, docs/deepspeed.md); the hf backend trains on CPU ranks", launcher)
        world_size = llava_world_size(launcher, cuda, get_accelerator().device_count())
        flash_attention = cuda and has_flash_attention(llava_bin)
    split_dirs = split_folders(args.llava_dir, "format")

    def llava_repo_results() -> Iterator[dict]:
        for split_dir in split_dirs:
            output_dir = args.checkpoint_dir / split_dir.name / TRAINED_LLAVA_DIR
            command = llava_train_command(
                llava_bin, launcher, cuda, flash_attention, llava_model, vision_tower, split_dir / "train.json",
                args.image_folder, output_dir, recipe, params.seed, world_size,
            )
            log.info("split %s: fine-tuning %s with the llava-repo backend: %s", split_dir.name, base, shlex.join(command))
            yield train_split_llava_repo(command, output_dir, base, args.out_dir / split_dir.name,
                                         args.live_dir / split_dir.name, recipe)

    if backend == "hf":
        jobs = []
        for split_dir in split_dirs:
            split = split_dir.name
            records = json.loads((split_dir / "train.json").read_text(encoding="utf-8"))
            validation_records = json.loads((split_dir / "val.json").read_text(encoding="utf-8"))  # its loss is drawn
            log.info("split %s: fine-tuning %s on %d pairs with the hf backend", split, base, len(records))
            jobs.append({"base": base, "records": records, "image_folder": args.image_folder, "out_dir": args.out_dir / split,
                         "checkpoint_dir": args.checkpoint_dir / split, "live_dir": args.live_dir / split, "recipe": recipe,
                         "seed": params.seed, "image_position": params.prompt.image_position,
                         "validation_records": validation_records})
        processes = split_processes(params.train.cpu_processes, len(jobs), is_deepspeed(launcher))
        if processes > 1:
            log.info("training %d splits at a time, each in a process of its own with one thread (train.cpu_processes)", processes)
        results = train_splits(jobs, processes)
    else:
        results = llava_repo_results()
    histories = {}
    for split_dir, result in zip(split_dirs, results):
        split = split_dir.name
        histories[split] = result["history"]
        log.info("split %s: %d steps, mean training loss %.4f -> %s", split, result["steps"], result["train_loss"], args.out_dir / split)
        # Ten 7B engines in one process would otherwise pile up on the GPU.
        del result
        gc.collect()
        torch.cuda.empty_cache()
    if int(os.environ.get("RANK", "0")) == 0:
        plot_training_loss(histories, args.live_dir / "training_loss.png")
        write_json(args.machine_record, numerics_class())


if __name__ == "__main__":
    run(main, ValueError, RuntimeError)
