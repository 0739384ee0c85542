"""Numerics of the project's prediction at a model's real shape: batched vs one at a time, fp16 and bf16, and pixels.

    python benchmarks/gpu_numerics.py --base BASE_DIR [--pairs 48] [--batch 16] --out gpu-numerics-<device>.json

On the same synthetic pairs (`gpu_throughput.synthetic_records`: non-square JPEGs, tweets of realistic length)
and the base model in `BASE_DIR` (random weights at 7B shape in the GPU run):

- for fp16 (LLaVA's evaluation precision) and bf16: greedy answers' token ids batched (left padding) against
  one pair at a time (as LLaVA evaluates), and the 27 template answers' log-probabilities (`score_labels`)
  batched against one at a time: how many answers and most probable answers differ, the largest probability
  difference, and how many pairs are close calls (the two most probable answers within `--close` nats:
  random weights give many, and there rounding decides);
- the image processor's pixels: what the project feeds (`LlavaInputs.pixel_values`, the processor saved with
  the model) against the PIL processor LLaVA uses (`CLIPImageProcessorPil`) and the torchvision one
  (`CLIPImageProcessor` in transformers 5), each on the same padded images.

In fp32 on a CPU batched and single answers are equal ids (tests/test_model.py); this measures what reduced
precision on a GPU changes. Written by `benchmarks/gpu_run.py` as part of the one GPU run (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import CLIPImageProcessor, CLIPImageProcessorPil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import synthetic_records  # noqa: E402
from provenance import Provenance, write_result  # noqa: E402

from llavac.model.inputs import load_images  # noqa: E402
from llavac.model.loading import load_base, load_inputs  # noqa: E402
from llavac.predict import generate_ids, score_labels  # noqa: E402


def batched_vs_single(base: str, precision: str, records: list[dict], folder: Path, batch: int, close: float,
                      max_new_tokens: int) -> dict[str, Any]:
    """How batched prediction differs from one-at-a-time prediction of `records` in `precision`."""
    model = load_base(base, precision).to("cuda" if torch.cuda.is_available() else "cpu").eval()
    inputs = load_inputs(base)
    ids = {size: generate_ids(model, inputs, records, folder, size, max_new_tokens) for size in (batch, 1)}
    scores = {size: score_labels(model, inputs, records, folder, size) for size in (batch, 1)}
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    top_two = [np.sort(s.answer_logprobs)[-2:] for s in scores[1]]
    close_calls = [bool(b - a < close) for a, b in top_two]
    best_differs = [together.best != alone.best for together, alone in zip(scores[batch], scores[1], strict=True)]
    return {
        "answers_differ": sum(a != b for a, b in zip(ids[batch], ids[1], strict=True)),
        "distinct_answers_single": len({tuple(x) for x in ids[1]}),
        "most_probable_answer_differs": sum(best_differs),
        "most_probable_answer_differs_among_close_calls": sum(d and c for d, c in zip(best_differs, close_calls)),
        "close_calls": sum(close_calls),
        "max_abs_probability_difference": float(max(np.abs(t.joint - a.joint).max()
                                                    for t, a in zip(scores[batch], scores[1], strict=True))),
    }


def pixels(base: str, records: list[dict], folder: Path) -> dict[str, Any]:
    """The project's pixels against LLaVA's PIL processor and the torchvision one, on the same padded images."""
    inputs = load_inputs(base)
    processor = inputs.processor.image_processor
    settings = {key: getattr(processor, key) for key in ("size", "crop_size", "image_mean", "image_std")}
    images = load_images(records, folder, inputs.background)
    ours = inputs.pixel_values(records, folder)
    pil = CLIPImageProcessorPil(**settings)(images, return_tensors="pt")["pixel_values"]
    torchvision = CLIPImageProcessor(**settings)(images, return_tensors="pt")["pixel_values"]
    return {
        "project_processor": type(processor).__name__,
        "project_equals_pil": bool(torch.equal(ours, pil)),
        "project_vs_pil_max_abs": float((ours - pil).abs().max()),
        "torchvision_processor": type(CLIPImageProcessor(**settings)).__name__,
        "torchvision_vs_pil_max_abs": float((torchvision - pil).abs().max()),
        "torchvision_vs_pil_mean_abs": float((torchvision - pil).abs().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="a llava-hf model folder")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16, help="as params.yaml's predict.max_new_tokens")
    parser.add_argument("--close", type=float, default=0.01, help="nats between the two most probable answers")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    run = Provenance()
    folder = Path(tempfile.mkdtemp(prefix="llavac-numerics-"))
    records = synthetic_records(folder, args.pairs)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "base": args.base,
        "pairs": args.pairs,
        "batch": args.batch,
        "close_call_nats": args.close,
        **{f"{precision}_batched_vs_single": batched_vs_single(args.base, precision, records, folder, args.batch,
                                                               args.close, args.max_new_tokens)
           for precision in ("fp16", "bf16")},
        "pixels": pixels(args.base, records, folder),
    }
    write_result(args.out, results, run)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
