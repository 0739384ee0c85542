"""The one GPU run: the paper's path at the llava-1.5-7b shape, its throughput against plain baselines, its numerics.

    benchmarks/gpu_run.sh                 # on a GPU machine: installs the carried wheels, then runs this (docs/gpu.md)
    python benchmarks/gpu_run.py --scale tiny --sample .gpu-carry/sample --launcher python --out-dir OUT   # CPU dry run

With the architecture of `--scale` at random weights, built by the project's own `build_llava`:

1. paper path: the `train` stage (`stages/train.py`, started through params `train.launcher`, by default
   `deepspeed --num_gpus 1`) with the llava-v15-7b recipe (ZeRO-3, bf16, gradient checkpointing, per-device
   batch 16) on split 1 of a formatted synthetic sample (`--sample`, made on a CPU by `benchmarks/gpu_carry.sh`);
   killed (SIGKILL) as soon as its first checkpoint is complete, then started again, which resumes from it;
   then the `predict` and `score` stages on the split's test part with the adapter ZeRO-3 wrote. Wall time,
   peak device memory and samples/s per stage -> `gpu-paper-path-<device>.json`;
2. throughput: `benchmarks/gpu_throughput.py` on the same base (its ZeRO-3 training under the launcher and
   the plain baselines) -> `gpu-<device>.json`;
3. numerics: `benchmarks/gpu_numerics.py` on the same base -> `gpu-numerics-<device>.json`.

Two deviations from the paper's recipe, both so that a few steps prove the path: one device's global batch
is its per-device batch (no gradient accumulation: every step is an optimizer step), and two epochs, so a
checkpoint (saved per epoch) exists mid-run to be killed after. The three parts run one after the other within
`--budget-s` seconds: a part that would start with too little time left is recorded as skipped, so whatever
finished comes back. Nothing branches on the scale: `--scale tiny` runs the same stages and scripts on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import SCALES  # noqa: E402
from provenance import Provenance, write_result  # noqa: E402

from llavac.model.build import LLAVA_DIR, build_llava  # noqa: E402
from llavac.model.llava_format import read_llava_config  # noqa: E402
from llavac.model.loading import write_pointer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER_MODEL = "llava-v15-7b"
"""The params.yaml model block whose recipe and evaluation the stages run, at either scale: its base model is
the built one (the pointer the run writes), not the pretrained hub id."""
SPLIT = "1"
CHECKPOINT_STATE = "trainer_state.json"
"""What the Trainer writes last into a checkpoint: its presence means the checkpoint is complete."""
MINIMUM_PART_S = {"paper_path": 60, "throughput": 60, "numerics": 30}
"""Seconds of budget below which a part is not started (at 7B each needs at least a model load or two)."""


def device_name() -> str:
    """The CUDA device's name, or `cpu`; the results files are named after it (spaces as underscores)."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def device_memory_used() -> int:
    """Bytes in use on the whole CUDA device (all processes); 0 without one."""
    if not torch.cuda.is_available():
        return 0
    free, total = torch.cuda.mem_get_info()
    return total - free


def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` and all its descendants (the launcher's ranks); 0 once it is gone."""
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return 0


@dataclass
class StageRun:
    """One stage process: its command line, wall time, exit, peak device memory and the tail of its output."""

    command: list[str]
    seconds: float = 0.0
    returncode: int | None = None
    killed: bool = False
    out_of_budget: bool = False
    peak_device_gib: float | None = None
    peak_host_rss_gib: float | None = None
    output: str = field(default="", repr=False)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "output"} | {"output_tail": self.output[-1500:]}


def run_stage(command: list[str], cwd: Path, log: Path, deadline: float,
              kill_when: Callable[[], bool] | None = None) -> StageRun:
    """Run `command` in its own process group, sampling the device's and the host's memory every 0.2 s; SIGKILL
    the whole group (kill -9: nothing is flushed) as soon as `kill_when()` is true, or at `deadline`
    (`time.perf_counter()` seconds: the run's budget is spent)."""
    run = StageRun(command)
    baseline = device_memory_used()
    peak = [baseline, 0]
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        stop = threading.Event()

        def sample_memory() -> None:
            while not stop.wait(0.2):
                peak[0] = max(peak[0], device_memory_used())
                peak[1] = max(peak[1], tree_rss(process.pid))

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        while process.poll() is None:
            run.killed = kill_when is not None and kill_when()
            run.out_of_budget = time.perf_counter() > deadline
            if run.killed or run.out_of_budget:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                break
            time.sleep(0.1)
        stop.set()
        sampler.join()
    run.seconds = round(time.perf_counter() - started, 2)
    run.returncode = process.returncode
    run.output = log.read_text(errors="replace")
    if torch.cuda.is_available():
        run.peak_device_gib = round((peak[0] - baseline) / 2**30, 2)
    run.peak_host_rss_gib = round(peak[1] / 2**30, 2)
    return run


def trainer_logs(output: str) -> list[dict[str, float]]:
    """The Trainer's printed log dicts (`{'loss': '2.8', ...}`, one per step, then the run's summary), as numbers."""
    logs = []
    for line in output.splitlines():
        for match in re.finditer(r"\{'(?:loss|train_runtime)'[^{}]*\}", line):
            pairs = re.findall(r"'(\w+)': '?([-+0-9.e]+|nan|inf)'?", match.group(0))
            logs.append({key: float(value) for key, value in pairs})
    return logs


def zero_stage_of(checkpoint: Path) -> int | None:
    """The ZeRO stage a DeepSpeed checkpoint was saved under (its model states hold the config), None if it is none."""
    states = sorted(checkpoint.glob("global_step*/*model_states.pt"))
    if not states:
        return None
    saved = torch.load(states[0], map_location="cpu", weights_only=False)
    return int(saved.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0))


def stage_params(launcher: str) -> dict[str, Any]:
    """params.yaml for the stage runs: the repository's, `PAPER_MODEL` selected, with the two deviations above."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    recipe = params["models"][PAPER_MODEL]["recipe"]
    recipe.update(global_batch_size=recipe["per_device_batch_size"], epochs=2, deepspeed=str(REPO / recipe["deepspeed"]))
    params["model"] = PAPER_MODEL
    params["train"]["launcher"] = launcher
    return params


def paper_path(base_dir: Path, sample: Path, work: Path, launcher: str, deadline: float) -> dict[str, Any]:
    """Train (killed after its first checkpoint, then resumed), predict and score split `SPLIT` through the stages;
    a stage still running at `deadline` is killed and the ones after it fail (their outputs are missing)."""
    work.mkdir(parents=True, exist_ok=True)
    params = stage_params(launcher)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    llava_dir, images = sample / "llava", sample / "MVSA_Single"
    stage = [sys.executable, str(REPO / "stages" / "train.py"), str(base_dir), str(llava_dir), str(images), "adapters",
             "checkpoints", "dvclive", "machine.json"]
    checkpoints = work / "checkpoints" / SPLIT
    recipe = params["models"][PAPER_MODEL]["recipe"]
    n_train = len(json.loads((llava_dir / SPLIT / "train.json").read_text()))
    first = run_stage(stage, work, work / "train-1.log", deadline,
                      kill_when=lambda: any(checkpoints.glob(f"checkpoint-*/{CHECKPOINT_STATE}")))
    killed_at = sorted(int(p.parent.name.rsplit("-", 1)[1]) for p in checkpoints.glob(f"checkpoint-*/{CHECKPOINT_STATE}"))
    zero_stage = zero_stage_of(checkpoints / f"checkpoint-{killed_at[-1]}") if killed_at else None
    adapter_after_kill = (work / "adapters" / SPLIT / "adapter_model.safetensors").exists()
    second = run_stage(stage, work, work / "train-2.log", deadline)
    steps = [log for log in trainer_logs(second.output) if "loss" in log]
    summary = next((log for log in trainer_logs(second.output) if "train_runtime" in log), {})
    resumed_steps = len(steps)
    steps_per_epoch = -(-n_train // recipe["global_batch_size"])
    samples = n_train * resumed_steps / steps_per_epoch  # exact: the kill and the resume fall on an epoch's end
    predict = run_stage([sys.executable, str(REPO / "stages" / "predict.py"), "adapters", str(llava_dir), str(images),
                         "predictions"], work, work / "predict.log", deadline)
    n_predicted = sum(len(json.loads((llava_dir / SPLIT / f"{part}.json").read_text())) for part in ("test", "val"))
    score = run_stage([sys.executable, str(REPO / "stages" / "score.py"), "predictions", "predictions/val",
                       "scores.json", "plots"], work, work / "score.log", deadline)
    scores = json.loads((work / "scores.json").read_text()) if score.returncode == 0 else None
    total_steps = killed_at[-1] + resumed_steps if killed_at else None
    return {
        "what": ("the paper path at this scale: the train stage under the launcher with ZeRO-3 (zero3), killed after "
                 "its first complete checkpoint and started again (resume), then the predict and score stages"),
        "launcher": launcher,
        "recipe": recipe,
        "train_pairs": n_train,
        "stages": {"train_until_kill": first.summary(), "train_resume": second.summary(),
                   "predict": predict.summary(), "score": score.summary()},
        "resume": {
            "killed_after_checkpoint_step": killed_at[-1] if killed_at else None,
            "killed_before_the_end": first.killed and not adapter_after_kill,
            "steps_trained_after_resume": resumed_steps,
            "total_steps": total_steps,
            "expected_total_steps": recipe["epochs"] * steps_per_epoch,
            "adapter_written": (work / "adapters" / SPLIT / "adapter_model.safetensors").is_file(),
        },
        "zero_stage_in_checkpoint": zero_stage,
        "zero3_ok": zero_stage == 3 and second.returncode == 0 and total_steps is not None,
        "train_samples_per_s_after_resume": round(samples / summary["train_runtime"], 2) if summary.get("train_runtime") else None,
        "predict_pairs": n_predicted,
        "predict_samples_per_s_stage_wall": round(n_predicted / predict.seconds, 2) if predict.returncode == 0 else None,
        "scores": None if scores is None else {
            "n_test_pairs": scores["n_test_pairs"],
            **{task: {k: scores[task][k] for k in ("accuracy", "weighted_f1", "invalid_rate")}
               for task in ("text", "image", "multimodal")},
        },
    }


def run_script(script: str, args: list[str], timeout: float, log: Path) -> dict[str, Any]:
    """`python benchmarks/<script> args` with a timeout; its exit and output tail."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
        returncode, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        returncode, output = "timeout", f"{expired.stdout or ''}{expired.stderr or ''}"
        output = output if isinstance(output, str) else output.decode(errors="replace")
    log.write_text(output)
    return {"script": script, "returncode": returncode, "seconds": round(time.perf_counter() - started, 1),
            "output_tail": output[-1500:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=SCALES, default="llava-1.5-7b")
    parser.add_argument("--sample", type=Path, default=REPO / ".gpu-carry" / "sample",
                        help="a formatted sample: llava/1/{train,val,test}.json and MVSA_Single/ (benchmarks/gpu_carry.sh)")
    parser.add_argument("--launcher", default="deepspeed --num_gpus 1", help="params train.launcher for the train stage")
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new one under /tmp)")
    parser.add_argument("--budget-s", type=float, default=480, help="wall-clock seconds for the whole run")
    parser.add_argument("--parts", nargs="+", choices=MINIMUM_PART_S, default=list(MINIMUM_PART_S))
    parser.add_argument("--predict-pairs", default="256", help="gpu_throughput.py's")
    parser.add_argument("--predict-batch", default="128", help="gpu_throughput.py's")
    parser.add_argument("--train-steps", default="4", help="gpu_throughput.py's")
    parser.add_argument("--numerics-pairs", default="48", help="gpu_numerics.py's --pairs")
    parser.add_argument("--numerics-batch", default="16", help="gpu_numerics.py's --batch")
    args = parser.parse_args()
    started, run = time.perf_counter(), Provenance()
    work = args.work or Path(tempfile.mkdtemp(prefix="llavac-gpu-run-"))
    work.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    device = device_name()
    tag = device.replace(" ", "_")
    architecture, _ = SCALES[args.scale]
    records = json.loads((args.sample / "llava" / SPLIT / "train.json").read_text())
    texts = [turn["value"] for record in records for turn in record["conversations"]]

    build_started = time.perf_counter()
    cuda = torch.cuda.is_available()
    hf_dir = build_llava(work / "base", texts, architecture, seed=0, dtype=torch.bfloat16 if cuda else torch.float32,
                         device="cuda" if cuda else "cpu")
    llava_dir = work / "base" / LLAVA_DIR
    write_pointer(work / "base_model", str(hf_dir), str(llava_dir), read_llava_config(llava_dir)["mm_vision_tower"])
    if cuda:
        torch.cuda.empty_cache()
    build_s = round(time.perf_counter() - build_started, 1)
    print(f"built the {args.scale} base in {build_s} s: {hf_dir}", flush=True)

    def left() -> float:
        return args.budget_s - (time.perf_counter() - started)

    common = {"device": device, "scale": args.scale, "base_build_seconds": build_s}
    parts: dict[str, Any] = {}
    for part in args.parts:
        if left() < MINIMUM_PART_S[part]:
            parts[part] = {"skipped": f"{left():.0f} s of the {args.budget_s:.0f} s budget left"}
            continue
        part_started = time.perf_counter()
        if part == "paper_path":
            result = paper_path(work / "base_model", args.sample.resolve(), work / "paper", args.launcher,
                                deadline=started + args.budget_s - 10)
            write_result(args.out_dir / f"gpu-paper-path-{tag}.json", {**common, **result}, run)
            parts[part] = {"zero3_ok": result["zero3_ok"]}
        elif part == "throughput":
            parts[part] = run_script("gpu_throughput.py", [
                "--scale", args.scale, "--base", str(hf_dir), "--zero-stages", "3", "--predict-pairs", args.predict_pairs,
                "--predict-batch", args.predict_batch, "--train-steps", args.train_steps,
                "--out", str(args.out_dir / f"gpu-{tag}.json")], left() - 5, work / "throughput.log")
        else:
            parts[part] = run_script("gpu_numerics.py", [
                "--base", str(hf_dir), "--pairs", args.numerics_pairs, "--batch", args.numerics_batch,
                "--out", str(args.out_dir / f"gpu-numerics-{tag}.json")], left() - 5,
                work / "numerics.log")
        parts[part]["seconds"] = round(time.perf_counter() - part_started, 1)
        print(f"{part}: {json.dumps(parts[part])[:400]}", flush=True)
    write_result(args.out_dir / f"gpu-run-{tag}.json", {**common, "command": shlex.join(sys.argv),
                                                         "budget_s": args.budget_s, "parts": parts}, run)


if __name__ == "__main__":
    main()
