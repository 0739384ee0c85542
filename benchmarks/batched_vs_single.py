"""How often batched prediction answers differ from one-at-a-time prediction, per precision.

    python benchmarks/batched_vs_single.py [--pairs 96] [--out benchmarks/results/batched-vs-single-cpu.json]

LLaVA's evaluation runs one pair at a time (merged LoRA, fp16); the project batches with left
padding. In fp32 the two agree exactly (tests/test_model.py); in bf16/fp16 padding changes the shapes
of the reductions, so rounding can flip a close greedy choice. This script measures how often, on the
"real-shaped" tiny model (LLaVA-1.5's real vocabulary, 336-pixel images, 576 image positions) after
a short fine-tuning so the answers are label words rather than noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import synthetic_records  # noqa: E402

from llavac.files import write_json  # noqa: E402
from llavac.model.build import build_llava  # noqa: E402
from llavac.params import Evaluation, Recipe  # noqa: E402
from llavac.predict import generate_answers, load_classifier, parse_answer  # noqa: E402
from llavac.train import train_split  # noqa: E402

TINY_LLAMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["models"]["tiny-llama"]
"""params.yaml's real-shaped tiny model and its recipe."""
SETTINGS = {"fp32": Evaluation("fp32", True), "bf16": Evaluation("bf16", True), "fp16": Evaluation("fp16", True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=96, help="pairs to predict (and to fine-tune on)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batched-vs-single-cpu.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        records = synthetic_records(work / "raw", args.pairs)
        base = build_llava(work / "base", [], TINY_LLAMA["build"], seed=0)
        train_split(str(base), records, work / "raw", work / "adapter", work / "ckpt", work / "live",
                    Recipe(**TINY_LLAMA["recipe"]), 0, False, image_position="front")
        answers = {}
        for name, evaluation in SETTINGS.items():
            model, inputs = load_classifier(work / "adapter", evaluation)
            for batch in (1, args.batch):
                answers[f"{name}/batch{batch}"] = generate_answers(model, inputs, records, work / "raw", batch, 16)
    reference = answers["fp32/batch1"]

    def differ(a: list[str], b: list[str]) -> dict[str, float]:
        return {"raw_answers_differ": sum(x != y for x, y in zip(a, b)) / len(a),
                "parsed_labels_differ": sum(parse_answer(x) != parse_answer(y) for x, y in zip(a, b)) / len(a)}

    results = {
        "model": "params.yaml models.tiny-llama (LLaMA vocabulary, 336 px / patch 14), fine-tuned with its recipe",
        "pairs": args.pairs,
        "batch": args.batch,
        "device": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "valid_answers_fp32_single": sum(None not in parse_answer(a) for a in reference) / len(reference),
        "distinct_answers_fp32_single": len(set(reference)),
        **{f"{name}_batched_vs_single": differ(answers[f"{name}/batch{args.batch}"], answers[f"{name}/batch1"])
           for name in SETTINGS},
        **{f"{name}_single_vs_fp32_single": differ(answers[f"{name}/batch1"], reference) for name in ("bf16", "fp16")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
