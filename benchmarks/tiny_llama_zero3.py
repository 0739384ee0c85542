"""The real-shaped tiny model through the paper's launch path: 2 ranks, ZeRO-3, bf16, on a CPU.

    python benchmarks/tiny_llama_zero3.py [--out benchmarks/results/tiny-llama-zero3-cpu.json]

Runs, from the repository root with the environment activated,

    dvc exp run -S model=tiny-llama -S protocol=random -S 'train.launcher=deepspeed --num_gpus 2'

and records its wall time, the scores against the majority class (the share of the most frequent
gold label over the same test pairs, as tests/test_pipeline.py counts it), whether every adapter
tensor is full-shape and finite, the git commit and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import yaml
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batched_vs_single import git_commit  # noqa: E402

from llavac.files import write_json  # noqa: E402
from llavac.labels import TASKS  # noqa: E402
from llavac.model.loading import load_base  # noqa: E402
from llavac.params import Recipe  # noqa: E402
from llavac.train import add_lora  # noqa: E402

COMMAND = ["dvc", "exp", "run", "-S", "model=tiny-llama", "-S", "protocol=random", "-S", "train.launcher=deepspeed --num_gpus 2"]


def adapter_is_whole(adapter: Path, base: str, recipe: Recipe) -> bool:
    """Every tensor of `adapter` has the name and shape peft saves for the recipe's LoRA model, and is finite."""
    expected = {name: tuple(tensor.shape) for name, tensor in get_peft_model_state_dict(add_lora(load_base(base, "fp32"), recipe)).items()}
    saved = load_file(adapter / "adapter_model.safetensors")
    return {k: tuple(v.shape) for k, v in saved.items()} == expected and all(bool(v.isfinite().all()) for v in saved.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny-llama-zero3-cpu.json"))
    parser.add_argument("--no-run", action="store_true",
                        help="record the run already in the workspace, keeping the wall time and commit of the --out file")
    args = parser.parse_args()
    if args.no_run:
        earlier = json.loads(args.out.read_text())
        commit, wall = earlier["git_commit"], earlier["wall_seconds"]
    else:
        commit = git_commit()
        start = time.perf_counter()
        subprocess.run(COMMAND, check=True)
        wall = time.perf_counter() - start
    scores = json.loads(Path("metrics/scores.json").read_text())
    gold = json.loads(Path("artifacts/llava/1/test.json").read_text(encoding="utf-8"))
    selected = yaml.safe_load(Path("params.yaml").read_text())["models"]["tiny-llama"]
    base = json.loads(Path("artifacts/base_model/base.json").read_text())["name_or_path"]
    results = {
        "command": " ".join(COMMAND[:-1] + [repr(COMMAND[-1])]),
        "wall_seconds": round(wall, 1),
        "n_test_pairs": len(gold),
        "accuracy": {task: scores[task]["accuracy"] for task in TASKS},
        "majority_class": {task: round(100 * Counter(r[f"{task}_label"] for r in gold).most_common(1)[0][1] / len(gold), 2)
                           for task in TASKS},
        "adapter_full_shape_and_finite": adapter_is_whole(Path("artifacts/adapters/1"), base, Recipe(**selected["recipe"])),
        "recipe": selected["recipe"],
        "git_commit": commit,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average_1min": os.getloadavg()[0]},
        "torch": torch.__version__,
    }
    results["beats_majority_by"] = {task: round(results["accuracy"][task] - results["majority_class"][task], 2) for task in TASKS}
    write_json(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
