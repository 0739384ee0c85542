"""The real-shaped tiny model through the paper's launch path: 2 ranks, ZeRO-3, bf16, on a CPU.

    python benchmarks/tiny_llama_zero3.py [--set KEY=VALUE ...] [--out benchmarks/results/tiny-llama-zero3-cpu.json]

Runs, from the repository root with the environment activated,

    dvc exp run -S model=tiny-llama -S protocol=random -S 'train.launcher=deepspeed --num_gpus 2'

(plus one `-S KEY=VALUE` per `--set`, e.g. `--set models.tiny-llama.recipe.learning_rate=2e-3`)
and records its wall time, the scores against the majority class (the share of the most frequent
gold label over the same pooled test pairs, as tests/test_pipeline.py counts it), whether every
split's adapter tensor is full-shape and finite, the model's build and recipe, and the provenance
block (code version, machine, load). `--no-run` records the run already in the workspace instead,
with the model, protocol and launcher its params.yaml holds (its wall time is then unknown: null,
or `--wall-seconds` if it was measured elsewhere).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, write_result  # noqa: E402

from llavac.labels import TASKS  # noqa: E402
from llavac.model.loading import load_base  # noqa: E402
from llavac.params import Recipe  # noqa: E402
from llavac.train import add_lora  # noqa: E402


def adapter_is_whole(adapter: Path, base: str, recipe: Recipe) -> bool:
    """Every tensor of `adapter` has the name and shape peft saves for the recipe's LoRA model, and is finite."""
    expected = {name: tuple(tensor.shape) for name, tensor in get_peft_model_state_dict(add_lora(load_base(base, "fp32"), recipe)).items()}
    saved = load_file(adapter / "adapter_model.safetensors")
    return {k: tuple(v.shape) for k, v in saved.items()} == expected and all(bool(v.isfinite().all()) for v in saved.values())


def workspace_run(model: str) -> dict:
    """The scores of the run in the workspace against the majority class of its pooled test pairs, and its adapters' check."""
    scores = json.loads(Path("metrics/scores.json").read_text())
    splits = sorted(json.loads(Path("artifacts/splits/manifest.json").read_text())["splits"], key=int)
    gold = [record for k in splits for record in json.loads(Path(f"artifacts/llava/{k}/test.json").read_text(encoding="utf-8"))]
    selected = yaml.safe_load(Path("params.yaml").read_text())["models"][model]
    base = json.loads(Path("artifacts/base_model/base.json").read_text())["name_or_path"]
    recipe = Recipe(**selected["recipe"])
    majority = {task: round(100 * Counter(r[f"{task}_label"] for r in gold).most_common(1)[0][1] / len(gold), 2) for task in TASKS}
    accuracy = {task: scores[task]["accuracy"] for task in TASKS}
    return {
        "n_splits": len(splits),
        "n_test_pairs": len(gold),
        "accuracy": accuracy,
        "majority_class": majority,
        "beats_majority_by": {task: round(accuracy[task] - majority[task], 2) for task in TASKS},
        "adapter_full_shape_and_finite": all(adapter_is_whole(Path(f"artifacts/adapters/{k}"), base, recipe) for k in splits),
        "build": selected["build"],
        "recipe": selected["recipe"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny-llama-zero3-cpu.json"))
    parser.add_argument("--model", default="tiny-llama", help="a key of params.yaml's models (for a run)")
    parser.add_argument("--protocol", default="random", help="for a run")
    parser.add_argument("--launcher", default="deepspeed --num_gpus 2", help="for a run")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="for a run: one more `dvc exp run -S KEY=VALUE`")
    parser.add_argument("--no-run", action="store_true", help="record the run already in the workspace (its params)")
    parser.add_argument("--wall-seconds", type=float, help="with --no-run: that run's wall time, if it was measured")
    parser.add_argument("--note", help="with --no-run: where, when and from which code that run came")
    args = parser.parse_args()
    if args.no_run:
        params = yaml.safe_load(Path("params.yaml").read_text())
        args.model, args.protocol, args.launcher = params["model"], params["protocol"], params["train"]["launcher"]
    command = ["dvc", "exp", "run", "-S", f"model={args.model}", "-S", f"protocol={args.protocol}",
               *(word for setting in args.settings for word in ("-S", setting)), "-S", f"train.launcher={args.launcher}"]
    run = Provenance()
    wall = args.wall_seconds
    if not args.no_run:
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = round(time.perf_counter() - start, 1)
    results = {"command": " ".join(command[:-1] + [repr(command[-1])]), "ran_here": not args.no_run, "note": args.note,
               "wall_seconds": wall, **workspace_run(args.model)}
    write_result(args.out, results, run)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
