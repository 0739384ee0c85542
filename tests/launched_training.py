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


KILL_POINT = {"after": "_save_checkpoint", "during": "_save_optimizer_and_scheduler"}
"""`kill_in` -> the Trainer method at whose end the process dies: the whole checkpoint saved, or only
its weights and optimizer state (`trainer_state.json` is written after them)."""

if world.get("kill_in"):
    method = KILL_POINT[world["kill_in"]]
    save = getattr(transformers.Trainer, method)

    def save_then_kill(self: transformers.Trainer, *args: object) -> None:
        save(self, *args)
        if self.state.global_step == world["kill_at"]:
            self.accelerator.wait_for_everyone()  # every rank has written its part of the checkpoint
            os.kill(os.getpid(), signal.SIGKILL)

    setattr(transformers.Trainer, method, save_then_kill)

train_split(world["base"], world["records"], Path(world["images"]), root / "adapter", root / "ckpt", root / "live",
            Recipe(**world["recipe"]), seed=world["seed"], image_position="front")
