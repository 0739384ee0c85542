"""What turning oneDNN off costs the train stage: split 1 of the embedded default trained with and without it.

    python benchmarks/onednn_cost.py [--rounds 2] [--out benchmarks/results/onednn-cost-cpu.json]

Run in a checkout where `dvc repro` has built the base model and formatted the splits. The stages run
CPU convolutions through ATen (`llavac.cpu_numerics.route_cpu_convolutions_through_aten`, called by
`load_base`): oneDNN chooses its convolution kernels by the CPU, which no variable pins. Each round
runs `stages/train.py` on split 1 alone, as DVC runs it, once as shipped and once with that call
made a no-op (oneDNN on, the library's default), in alternating order, each in a fresh interpreter
and folder (no checkpoint to resume). Reported: each arm's wall seconds per round, the fastest
round's ratio off / on, and whether the two arms wrote the same adapter bytes. The code version,
the machine, its load and the versions are in the JSON's `provenance` block.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import Provenance, write_result

ARMS = {
    "onednn_off": "",
    "onednn_on": "import llavac.model.loading as loading; loading.route_cpu_convolutions_through_aten = lambda: None; ",
}
"""arm -> the Python run before the stage script, after the pins (in the same interpreter)."""
SPLIT = "1"


def train_once(prelude: str, work: Path) -> tuple[float, str]:
    """Train split `SPLIT` with the train stage in `work`; its wall seconds and the adapter's SHA-256."""
    shutil.copytree(Path("artifacts/llava", SPLIT), work / "llava" / SPLIT)
    stage = ["stages/train.py", "artifacts/base_model", str(work / "llava"), "artifacts/sample/MVSA_Single",
             str(work / "adapters"), str(work / "checkpoints"), str(work / "dvclive"), str(work / "machine.json")]
    # `common` first, as the stage imports it: the CPU pins are set before the prelude loads torch.
    code = (f"import runpy, sys; sys.argv = {stage!r}; sys.path.insert(0, 'stages'); import common; {prelude}"
            "runpy.run_path('stages/train.py', run_name='__main__')")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: the train stage failed:\n{done.stderr[-3000:]}")
    return seconds, hashlib.sha256((work / "adapters" / SPLIT / "adapter_model.safetensors").read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onednn-cost-cpu.json"))
    args = parser.parse_args()
    for needed, stage in (("artifacts/base_model", "base_model"), (f"artifacts/llava/{SPLIT}/train.json", "format")):
        if not Path(needed).exists():
            sys.exit(f"error: {needed} is missing: run `dvc repro {stage}` in this checkout first")
    run = Provenance()
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    adapters: dict[str, set[str]] = {arm: set() for arm in ARMS}
    for round_ in range(args.rounds):
        for arm in (list(ARMS) if round_ % 2 == 0 else list(ARMS)[::-1]):
            with tempfile.TemporaryDirectory() as work:
                took, adapter = train_once(ARMS[arm], Path(work))
            seconds[arm].append(round(took, 2))
            adapters[arm].add(adapter)
            print(f"round {round_ + 1}: {arm} {took:.1f} s", flush=True)
    results = {
        "what": __doc__.splitlines()[0],
        "split": SPLIT,
        "wall_seconds": seconds,
        "off_over_on_fastest": round(min(seconds["onednn_off"]) / min(seconds["onednn_on"]), 3),
        "each_arm_repeats_its_adapter": all(len(found) == 1 for found in adapters.values()),
        "arms_write_the_same_adapter": adapters["onednn_off"] == adapters["onednn_on"],
    }
    write_result(args.out, results, run)
    print(results)


if __name__ == "__main__":
    main()
