"""Where two CPUs round apart: a digest of every operation's output over the first training steps of one split.

    python benchmarks/numerics_trace.py --out benchmarks/results/numerics-trace-<machine>.json
    python benchmarks/numerics_trace.py --out /tmp/mine.json --compare benchmarks/results/numerics-trace-<other>.json
    DNNL_MAX_CPU_ISA=SSE41 python benchmarks/numerics_trace.py --out /tmp/sse41.json --onednn --compare /tmp/mine.json

Run in a checkout where `dvc repro` has built the base model and formatted the splits. Under the stages'
CPU pins (`llavac.cpu_numerics`) it trains split `--split` of `artifacts/llava/` as the train stage does:
the base model of `artifacts/base_model`, the selected recipe and seed of params.yaml, LoRA drawn after
the seed, the training collator's batches in order, the answer-only loss, gradient clipping and AdamW
with the projector's own learning rate (not the Trainer's loop, whose data shuffling and schedule add
no arithmetic of their own). Every ATen operation that runs (forward, backward, clipping, the optimizer
step) is recorded with its name, its outputs' shapes and a SHA-256 prefix of their bytes. With
`--compare` it prints the first operations whose outputs differ from the other file's, and their
count. The two runs must execute the same operations in the same order (same code, params and
inputs); the file also records the machine class (`numerics_class`), so a trace names its CPU.
`--onednn` turns oneDNN back on and a pin set in the environment overrides the stages' (the third
command): that is how a kernel choice is shown to move the numbers (docs/design.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from llavac.cpu_numerics import numerics_class, pin_cpu_numerics

pin_cpu_numerics()  # before torch loads: the libraries read the pins once

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from provenance import Provenance, write_result  # noqa: E402

DIGEST_CHARS = 12
"""Hex characters kept of each output's SHA-256: enough to tell two float tensors apart."""


def digest(tensor: torch.Tensor) -> str:
    """A SHA-256 prefix of a tensor's bytes in row-major order (`DIGEST_CHARS` hex characters)."""
    data = tensor.detach().contiguous()
    if data.dtype in (torch.bfloat16, torch.float16):
        data = data.view(torch.int16)  # numpy has no bfloat16
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()[:DIGEST_CHARS]


class OperationTrace(TorchDispatchMode):
    """Records `[step, operation, output shapes, output digests]` for every ATen operation run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[Any]] = []
        self.step = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        out = func(*args, **(kwargs or {}))
        tensors = [item for item in tree_flatten(out)[0] if isinstance(item, torch.Tensor)]
        self.rows.append([self.step, str(func), [list(t.shape) for t in tensors], [digest(t) for t in tensors]])
        return out


def trace_training(split: str, steps: int, onednn: bool, attention: str | None) -> dict[str, Any]:
    """Train `steps` steps of split `split` as the train stage does, inside an `OperationTrace`; the trace and the losses."""
    from transformers import set_seed

    from llavac.model.inputs import TrainingCollator, fit_records
    from llavac.model.loading import load_base, load_inputs, read_pointer
    from llavac.params import load_params
    from llavac.train import AnswerLogitsCollator, add_lora, answer_loss, keep_trainables_in_fp32, optimizer_groups

    params = load_params()
    recipe = params.selected.recipe
    base = read_pointer(Path("artifacts/base_model"))
    records = json.loads(Path("artifacts/llava", split, "train.json").read_text(encoding="utf-8"))
    base_model = load_base(base, recipe.precision)  # which turns oneDNN off, as in every stage
    torch.backends.mkldnn.enabled = onednn
    if attention:
        base_model.set_attn_implementation(attention)
    set_seed(params.seed)
    model = add_lora(base_model, recipe)
    keep_trainables_in_fp32(model)
    model.train()
    inputs = load_inputs(base, model.config, recipe.model_max_length)
    fitted, _ = fit_records(inputs, records)
    collate = AnswerLogitsCollator(TrainingCollator(inputs, Path(params.data.raw_dir)))
    optimizer = torch.optim.AdamW(optimizer_groups(model, recipe))
    trace, losses = OperationTrace(), []
    batch_size = recipe.per_device_batch_size
    for step in range(steps):
        batch = collate([fitted[(step * batch_size + row) % len(fitted)] for row in range(batch_size)])  # wraps round
        labels = batch.pop("labels")  # as the Trainer does with a `compute_loss_func`
        trace.step = step
        with trace:
            loss = answer_loss(model(**batch), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.item())
    return {"rows": trace.rows, "losses": losses}


def first_differences(mine: list[list[Any]], theirs: list[list[Any]], shown: int) -> tuple[list[str], int | None]:
    """Lines naming the first `shown` operations whose outputs differ, then how many differ in all; and that count.

    A different operation at the same index means the two runs did not run the same code or inputs:
    the comparison stops there and says so (the count is then None).
    """
    lines, differing = [], 0
    for index, (row, other) in enumerate(zip(mine, theirs)):
        if row[1] != other[1] or row[2] != other[2]:
            lines.append(f"op {index} (step {row[0]}): {row[1]} {row[2]} here, {other[1]} {other[2]} there: "
                         "the runs are not the same code and inputs; nothing after this is comparable")
            return lines, None
        if row[3] != other[3]:
            differing += 1
            if differing <= shown:
                lines.append(f"op {index} (step {row[0]}): {row[1]} {row[2]} differs")
    if len(mine) != len(theirs):
        lines.append(f"the traces have {len(mine)} and {len(theirs)} operations")
    lines.append(f"{differing} of {min(len(mine), len(theirs))} operations differ" if differing else
                 f"all {min(len(mine), len(theirs))} operations identical")
    return lines, differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the trace file to write (JSON)")
    parser.add_argument("--compare", type=Path, help="another machine's trace file: name the first operations that differ")
    parser.add_argument("--split", default="1")
    parser.add_argument("--steps", type=int, default=2, help="training steps to trace")
    parser.add_argument("--show", type=int, default=5, help="how many differing operations to name")
    parser.add_argument("--onednn", action="store_true", help="turn oneDNN back on (the stages turn it off)")
    parser.add_argument("--attention", choices=("eager", "sdpa"), help="the attention implementation (default: the model's)")
    parser.add_argument("--summary", action="store_true", help="leave the operations out of --out (keep the comparison)")
    args = parser.parse_args()
    for needed, stage in (("artifacts/base_model", "base_model"), (f"artifacts/llava/{args.split}/train.json", "format")):
        if not Path(needed).exists():
            sys.exit(f"error: {needed} is missing: run `dvc repro {stage}` in this checkout first")
    run = Provenance()
    traced = trace_training(args.split, args.steps, args.onednn, args.attention)
    rows = traced["rows"]
    print(f"{len(rows)} operations over {args.steps} step(s), losses {traced['losses']}")
    comparison = None
    if args.compare:
        other = json.loads(args.compare.read_text())
        findings, differing = first_differences(rows, other["operations"], args.show)
        comparison = {"file": str(args.compare), "cpu_model": other["machine_class"].get("cpu_model"),
                      "losses": other["losses"], "findings": findings, "differing_operations": differing}
        print(f"against {args.compare} ({comparison['cpu_model']}, losses {other['losses']}):")
        print("\n".join(comparison["findings"]))
    settings = {"split": args.split, "steps": args.steps, "onednn": args.onednn, "attention": args.attention}
    write_result(args.out, {"what": __doc__.splitlines()[0], "settings": settings, "machine_class": numerics_class(),
                            "losses": traced["losses"], "n_operations": len(rows), "compared_with": comparison,
                            "operations": None if args.summary else rows}, run)
    print(f"-> {args.out}")

if __name__ == "__main__":
    main()
