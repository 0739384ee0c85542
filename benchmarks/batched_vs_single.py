"""Batched prediction against one pair at a time, per precision, with the close calls counted.

    python benchmarks/batched_vs_single.py [--pairs 96] [--batch 32] [--out benchmarks/results/batched-vs-single-cpu.json]
    python benchmarks/batched_vs_single.py --adapter artifacts/adapters/1 --records artifacts/llava/1/test.json \\
        --images artifacts/sample/MVSA_Single       # a trained adapter (e.g. the tiny-llama experiment's) on its test set

LLaVA's evaluation runs one pair at a time (merged LoRA, fp16); the project batches with left
padding. In bf16/fp16 padding changes the shapes of the reductions, so rounding can flip a close
greedy choice. Per precision (fp32, bf16, fp16; the LoRA merged as in LLaVA's evaluation) this
counts the pairs whose generated answer or parsed labels differ between batch 1 and `--batch`, the
largest difference of the 27 answers' probabilities, and how many pairs are close calls (the two
most probable answers within 0.1 of each other): a flip is only possible there, so "0 differ" means
little when there are no close calls. Without `--adapter` the model is params.yaml's real-shaped
tiny model (LLaMA's vocabulary, 336-pixel images, 576 image positions) after its recipe's
fine-tuning on `--pairs` synthetic pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from llavac.cpu_numerics import pin_cpu_numerics

pin_cpu_numerics()  # the stages' CPU numerics, before torch and numpy load (they read them once)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import synthetic_records  # noqa: E402
from provenance import Provenance, write_result  # noqa: E402

from llavac.model.build import build_llava  # noqa: E402
from llavac.params import Evaluation, Recipe  # noqa: E402
from llavac.predict import generate_answers, load_classifier, parse_answer, score_labels  # noqa: E402
from llavac.train import train_split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_LLAMA = yaml.safe_load((REPO / "params.yaml").read_text())["models"]["tiny-llama"]
"""params.yaml's real-shaped tiny model and its recipe."""
PRECISIONS = ("fp32", "bf16", "fp16")
CLOSE_CALL = 0.1
"""Two answers whose probabilities are within this of each other make a close call."""


def close_calls(joint: np.ndarray) -> np.ndarray:
    """Per pair (rows of 27 answer probabilities): whether its two most probable answers are within `CLOSE_CALL`."""
    top_two = np.sort(joint, axis=1)[:, -2:]
    return (top_two[:, 1] - top_two[:, 0]) < CLOSE_CALL


def compare(records: list[dict], images: Path, adapter: Path, batch: int) -> dict[str, dict]:
    """Per precision: batch 1 against `batch`, and against fp32 at batch 1."""
    answers, joints = {}, {}
    for precision in PRECISIONS:
        model, inputs = load_classifier(adapter, Evaluation(precision, merge_lora=True))
        for size in (1, batch):
            answers[precision, size] = generate_answers(model, inputs, records, images, size, 16)
            joints[precision, size] = np.stack([s.joint for s in score_labels(model, inputs, records, images, size)])
    reference_close = close_calls(joints["fp32", 1])

    def differ(a: tuple[str, int], b: tuple[str, int]) -> dict[str, int | float]:
        raw = np.array([x != y for x, y in zip(answers[a], answers[b], strict=True)])
        parsed = np.array([parse_answer(x) != parse_answer(y) for x, y in zip(answers[a], answers[b], strict=True)])
        return {"raw_answers_differ": int(raw.sum()), "parsed_labels_differ": int(parsed.sum()),
                "parsed_labels_differ_among_close_calls": int((parsed & close_calls(joints[b])).sum()),
                "max_probability_difference": float(np.abs(joints[a] - joints[b]).max())}

    results = {"close_calls_fp32_single": int(reference_close.sum())}
    for precision in PRECISIONS:
        results[f"{precision}_batched_vs_single"] = differ((precision, batch), (precision, 1))
        results[f"{precision}_close_calls_single"] = int(close_calls(joints[precision, 1]).sum())
        if precision != "fp32":
            results[f"{precision}_single_vs_fp32_single"] = differ((precision, 1), ("fp32", 1))
    reference = answers["fp32", 1]
    results["valid_answers_fp32_single"] = sum(None not in parse_answer(a) for a in reference)
    results["distinct_answers_fp32_single"] = len(set(reference))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=96, help="synthetic pairs to fine-tune on and predict (without --adapter)")
    parser.add_argument("--epochs", type=float, help="fine-tuning epochs (default: the tiny-llama recipe's)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--adapter", type=Path, help="a trained adapter folder instead of the short fine-tuning")
    parser.add_argument("--records", type=Path, help="with --adapter: a LLaVA-format JSON list of the pairs to predict")
    parser.add_argument("--images", type=Path, help="with --adapter: the folder the records' image paths are relative to")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batched-vs-single-cpu.json"))
    parser.add_argument("--note", help="with --adapter: which run it comes from")
    args = parser.parse_args()
    if args.adapter and not (args.records and args.images):
        parser.error("--adapter needs --records and --images")
    run = Provenance()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        if args.adapter:
            records, images, adapter = json.loads(args.records.read_text(encoding="utf-8")), args.images, args.adapter
            model = f"the adapter {args.adapter} on {args.records}"
        else:
            work = Path(scratch)
            records, images, adapter = synthetic_records(work / "raw", args.pairs), work / "raw", work / "adapter"
            recipe = Recipe(**TINY_LLAMA["recipe"])
            recipe = replace(recipe, epochs=args.epochs or recipe.epochs,
                             per_device_batch_size=min(recipe.per_device_batch_size, args.pairs),
                             global_batch_size=min(recipe.global_batch_size, args.pairs))
            base = build_llava(work / "base", [], TINY_LLAMA["build"], seed=0)
            train_split(str(base), records, images, adapter, work / "ckpt", work / "live", recipe, 0, image_position="front")
            model = "params.yaml models.tiny-llama (LLaMA vocabulary, 336 px / patch 14), fine-tuned on the synthetic pairs"
        results = {
            "model": model,
            "note": args.note,
            "pairs": len(records),
            "batch": args.batch,
            "close_call": f"the two most probable of the 27 answers within {CLOSE_CALL} in probability",
            **compare(records, images, adapter, args.batch),
            "cpu_numerics": {"torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        }
    write_result(args.out, results, run)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
