"""What pinning MKL to its `COMPATIBLE` branch costs: float32 matrix products under `AUTO` and `COMPATIBLE`.

    python benchmarks/mkl_branch.py [--rounds 20] [--out benchmarks/results/mkl-branch-cpu.json]

The stages run MKL with `MKL_CBWR=COMPATIBLE` (`llavac.cpu_numerics`: on a non-Intel CPU an ISA
branch such as `AVX2` is ignored and MKL runs `AUTO`, whose kernels differ from one CPU to the
next). Each branch runs in a fresh interpreter (MKL reads the variable once) under the stages' other
pins (one thread, AVX2 elsewhere), and times float32 `torch.matmul` at the shapes the two CPU
models of params.yaml multiply: a linear layer and the MLP of `models.tiny` over its training
batch of 16 prompts of 134 positions; the same of `models.tiny-llama` over 8 prompts of ~700
positions (its fp32 runs: one-process training, `benchmarks/recipe_probe.py`; under DeepSpeed it
trains in bf16, which this does not time); and its 32,064-row language-model head at the last
position of a prediction batch of 32. After one untimed product, `--rounds` products are timed; the
fastest and the median are reported in milliseconds. Each child also reports the branch MKL says is
in force (`llavac.cpu_numerics.mkl_branch`: 2 is AUTO, 3 COMPATIBLE) and a checksum of every
product, so the JSON shows whether the branch changed the rounding here. The code version, the
machine, its load and the versions are in the JSON's `provenance` block (`benchmarks/provenance.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from llavac.cpu_numerics import pin_cpu_numerics

pin_cpu_numerics()  # the stages' CPU pins, inherited by each child, whose MKL_CBWR is set per branch

from provenance import Provenance, write_result  # noqa: E402

BRANCHES = ("AUTO", "COMPATIBLE")
SHAPES = {
    "tiny_linear": (16 * 134, 64, 64),
    "tiny_mlp_up": (16 * 134, 64, 128),
    "tiny_mlp_down": (16 * 134, 128, 64),
    "tiny_llama_linear": (8 * 700, 128, 128),
    "tiny_llama_mlp_up": (8 * 700, 128, 256),
    "tiny_llama_mlp_down": (8 * 700, 256, 128),
    "tiny_llama_lm_head": (32, 128, 32064),
}
"""name -> (rows, inner, columns) of a float32 product `(rows, inner) @ (inner, columns)`."""


def time_products(rounds: int) -> dict[str, Any]:
    """In this process: the MKL branch in force, and per shape the fastest/median ms and a checksum."""
    import time

    import torch

    from llavac.cpu_numerics import mkl_branch

    generator = torch.Generator().manual_seed(0)
    shapes = {}
    for name, (rows, inner, columns) in SHAPES.items():
        a = torch.randn(rows, inner, generator=generator)
        b = torch.randn(inner, columns, generator=generator)
        product = a @ b
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            a @ b
            times.append((time.perf_counter() - start) * 1e3)
        shapes[name] = {"ms_fastest": min(times), "ms_median": statistics.median(times),
                        "checksum": float(product.double().abs().sum())}
    return {"branch_in_force": mkl_branch(), "torch_threads": torch.get_num_threads(), "shapes": shapes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mkl-branch-cpu.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_products(args.rounds)))
        return

    run = Provenance()
    branches = {}
    for branch in BRANCHES:
        done = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(args.rounds)], capture_output=True,
                              text=True, env=os.environ | {"MKL_CBWR": branch})
        if done.returncode:
            sys.exit(f"error: the {branch} child failed:\n{done.stderr[-3000:]}")
        branches[branch] = json.loads(done.stdout)
        print(branch, {name: round(s["ms_fastest"], 3) for name, s in branches[branch]["shapes"].items()})
    auto, compatible = (branches[b]["shapes"] for b in BRANCHES)
    write_result(args.out, {
        "rounds": args.rounds,
        "shapes_rows_inner_columns": SHAPES,
        "branches": branches,
        "compatible_over_auto_fastest": {name: compatible[name]["ms_fastest"] / auto[name]["ms_fastest"] for name in SHAPES},
        "same_checksums": all(compatible[name]["checksum"] == auto[name]["checksum"] for name in SHAPES),
    }, run)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
