"""train stage: LoRA-fine-tune the base model on every split's training set.

Run as `python stages/train.py ...` on a CPU or one GPU, or under `deepspeed --num_gpus N` /
`deepspeed --hostfile ...` (params.yaml `train.launcher`); the launcher adds `--local_rank`.
"""

from __future__ import annotations

import argparse
import json
import sys
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import load_params, model_block, stage_logger  # noqa: E402
from llavac.model.loading import read_pointer  # noqa: E402
from llavac.train import Recipe, train_split  # noqa: E402


def plot_losses(histories: dict[str, list[dict]], path: Path) -> None:
    """Training loss per step, one line per split, as a PNG to open offline."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, history in histories.items():
        steps = [h["step"] for h in history if "loss" in h]
        ax.plot(steps, [h["loss"] for h in history if "loss" in h], label=f"split {split}", linewidth=1)
    ax.set(xlabel="optimizer step", ylabel="training loss (answer tokens)", title="LoRA fine-tuning")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    recipe = Recipe(**model_block(params)["recipe"])
    base = read_pointer(args.base_dir)
    splits = sorted((d.name for d in args.llava_dir.iterdir() if d.is_dir()), key=int)
    histories = {}
    for split in splits:
        records = json.loads((args.llava_dir / split / "train.json").read_text(encoding="utf-8"))
        log.info("split %s: fine-tuning %s on %d pairs", split, base, len(records))
        result = train_split(
            base,
            records,
            args.image_folder,
            args.out_dir / split,
            args.checkpoint_dir / split,
            args.live_dir / split,
            recipe,
            params["seed"],
            params["train"]["resume"],
        )
        histories[split] = result["history"]
        log.info("split %s: %d steps, mean training loss %.4f -> %s", split, result["steps"], result["train_loss"], args.out_dir / split)
    if int(os.environ.get("RANK", "0")) == 0:
        plot_losses(histories, args.live_dir / "training_loss.png")


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
