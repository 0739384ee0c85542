"""Cost of scoring the 27 template answers against a prefill-only pass and against greedy generation.

    python benchmarks/label_scoring.py [--adapter artifacts/adapters/1] [--split-dir artifacts/llava/1]
        [--images artifacts/sample/MVSA_Single] [--batch 32] [--out benchmarks/results/label-scoring-cpu.json]
    python benchmarks/label_scoring.py --real-shaped --out benchmarks/results/label-scoring-real-shaped-cpu.json
    python benchmarks/label_scoring.py --base BASE_MODEL_DIR ...   # any untrained llava-hf model folder

Same pairs (the split's validation and test sets), same batch size, same loaded classifier (the
pipeline's trained adapter, merged as the predict stage loads it). After one untimed warm-up of each
path, `--rounds` rounds each run the three paths in turn; the fastest and the median round are
reported, in wall-clock seconds and in CPU seconds of this process. On a shared machine other jobs
only ever add time, so the costs relative to prefill are taken from the fastest rounds. Also records how the scores relate to generation:
how many generated answers are one of the 27, and how often the template-constrained greedy answer
and the most probable answer equal them. Run `dvc repro train` first.

The embedded default's prompt is short (~134 tokens: 16 image positions), so the tree step's 51
tokens are a large share of it. `--real-shaped` times params.yaml's `models.tiny-llama` instead
(untrained, random init): LLaVA-1.5's vocabulary and 576 image positions, so the token counts are
the 7B model's at CPU size (its answers are noise, so only the timings mean something). At 7B the
same comparison is part of `benchmarks/gpu_throughput.py`. The code version, the machine, its load
and the versions are in the JSON's `provenance` block (`benchmarks/provenance.py`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llavac.cpu_numerics import pin_cpu_numerics

pin_cpu_numerics()  # the stages' CPU numerics, before torch and numpy load (they read them once)

import torch  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import prefill_only  # noqa: E402
from provenance import Provenance, write_result  # noqa: E402

from llavac.label_scores import TRIPLES, AnswerTree, answer_continuations  # noqa: E402
from llavac.model.build import build_llava  # noqa: E402
from llavac.model.inputs import message  # noqa: E402
from llavac.model.loading import load_base, load_inputs  # noqa: E402
from llavac.predict import Evaluation, generate_answers, load_classifier, score_labels  # noqa: E402
from llavac.prompt import answer  # noqa: E402


def clocked(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall-clock and process CPU seconds of one call of `fn`, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, default=Path("artifacts/adapters/1"))
    parser.add_argument("--split-dir", type=Path, default=Path("artifacts/llava/1"), help="holds val.json and test.json")
    parser.add_argument("--images", type=Path, default=Path("artifacts/sample/MVSA_Single"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16, help="as params.yaml's predict.max_new_tokens")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--real-shaped", action="store_true", help="time an untrained models.tiny-llama instead")
    parser.add_argument("--base", type=Path, help="time this untrained llava-hf model folder instead of the adapter")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/label-scoring-cpu.json"))
    args = parser.parse_args()
    run = Provenance()
    torch.manual_seed(0)
    records = [r for part in ("val", "test") for r in json.loads((args.split_dir / f"{part}.json").read_text())]
    if args.real_shaped:
        build = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["models"]["tiny-llama"]
        args.base = build_llava(Path(tempfile.mkdtemp(prefix="llavac-bench-")) / "base", [], build["build"], seed=0)
    if args.base:
        model, inputs = load_base(str(args.base), "fp32").eval(), load_inputs(str(args.base))
    else:
        model, inputs = load_classifier(args.adapter, Evaluation("fp32", merge_lora=True))

    paths = {
        "prefill_only": lambda: prefill_only(model, inputs, records, args.images, args.batch),
        "score_labels": lambda: score_labels(model, inputs, records, args.images, args.batch),
        "generate": lambda: generate_answers(model, inputs, records, args.images, args.batch, args.max_new_tokens),
    }
    outputs = {name: fn() for name, fn in paths.items()}  # warm-up, and the answers compared below
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, fn in paths.items():
            wall, cpu, _ = clocked(fn)
            times[name].append((wall, cpu))
    fastest = {name: {"wall": min(w for w, _ in t), "cpu": min(c for _, c in t)} for name, t in times.items()}
    median = {name: {"wall": statistics.median(w for w, _ in t), "cpu": statistics.median(c for _, c in t)}
              for name, t in times.items()}
    scores, generated = outputs["score_labels"], outputs["generate"]

    n_image = inputs.n_image_tokens(inputs.pixel_values(records[:1], args.images))
    prompt_tokens = [len(inputs.prompt_ids(message(r, "human"), n_image)) for r in records]
    tree_tokens = [len(AnswerTree.of(answer_continuations(inputs, message(r, "human"), n_image)).tokens) for r in records]
    template = {answer(*t) for t in TRIPLES}
    valid = [(text.strip(), score) for text, score in zip(generated, scores, strict=True) if text.strip() in template]
    results = {
        "what": "prefill only vs score_labels (prefill + one tree step over the KV cache) vs generate_answers",
        "model": ("untrained models.tiny-llama" if args.real_shaped else f"untrained {args.base}" if args.base
                  else f"adapter {args.adapter}"),
        "pairs": len(records),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "fastest_seconds": {name: {k: round(v, 3) for k, v in m.items()} for name, m in fastest.items()},
        "median_seconds": {name: {k: round(v, 3) for k, v in m.items()} for name, m in median.items()},
        **{f"{name}_cost_vs_prefill": {clock: round(fastest[name][clock] / fastest["prefill_only"][clock], 3)
                                        for clock in ("wall", "cpu")} for name in ("score_labels", "generate")},
        "mean_prompt_tokens": round(sum(prompt_tokens) / len(records), 1),
        "tree_tokens_per_pair": sorted(set(tree_tokens)),
        "generated_answers_in_template": len(valid),
        "constrained_greedy_equals_generated": sum(answer(*s.greedy) == text for text, s in valid),
        "most_probable_equals_generated": sum(answer(*s.best) == text for text, s in valid),
        "mean_template_mass": round(sum(s.template_mass for s in scores) / len(scores), 4),
    }
    write_result(args.out, results, run)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
