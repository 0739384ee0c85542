"""One split's training as the train stage runs it, for tests that start it in a fresh process or under a launcher.

    [deepspeed --num_gpus N] python tests/launched_training.py [--local_rank=N] ROOT

ROOT/world.json holds train_split's arguments (base, records, images, recipe, seed); the adapter,
checkpoints and curves go to ROOT/adapter, ROOT/ckpt, ROOT/live. The rank comes from the launcher's
environment; its `--local_rank=N` is ignored. With `kill_at` (an optimizer step) and `kill_in` in
world.json every process kills itself with SIGKILL (kill -9: no handler, no atexit, nothing
flushed) at that step's checkpoint: `after` it is complete, or `during` it (its weights and optimizer
state written, its `trainer_state.json` not).
"""

import json
import os
import signal
import sys
from pathlib import Path

import transformers

from llavac.params import Recipe
from llavac.train import train_split

root = Path(sys.argv[-1])
world = json.loads((root / "world.json").read_text())


def kill(trainer: transformers.Trainer) -> None:
    if trainer.state.global_step == world["kill_at"]:
        trainer.accelerator.wait_for_everyone()  # every rank has written its part of the checkpoint
        os.kill(os.getpid(), signal.SIGKILL)


if world.get("kill_in") == "after":
    save_checkpoint = transformers.Trainer._save_checkpoint

    def after_save(self, *args):
        save_checkpoint(self, *args)
        kill(self)

    transformers.Trainer._save_checkpoint = after_save
elif world.get("kill_in") == "during":
    save_optimizer = transformers.Trainer._save_optimizer_and_scheduler

    def during_save(self, *args):
        save_optimizer(self, *args)
        kill(self)

    transformers.Trainer._save_optimizer_and_scheduler = during_save

train_split(world["base"], world["records"], Path(world["images"]), root / "adapter", root / "ckpt", root / "live",
            Recipe(**world["recipe"]), seed=world["seed"], image_position="front")
