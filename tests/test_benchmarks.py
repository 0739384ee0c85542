"""The GPU benchmark's tiny CPU mode runs the same code as the GPU run, so the script cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("device", "predict_speedup_vs_one_at_a_time", "predict_fraction_of_prefill", "train_speedup_vs_plain",
            "train_peak_gib", "zero3_ok", "predict_one_at_a_time_samples_per_s", "predict_batched_samples_per_s",
            "prefill_only_samples_per_s", "train_plain_peft_samples_per_s", "train_samples_per_s", "versions",
            "score_labels_samples_per_s", "scoring_cost_vs_prefill")


@pytest.mark.slow
def test_gpu_benchmark_tiny_cpu_mode(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "benchmarks/gpu_throughput.py", "--scale", "tiny", "--out", str(out),
                    "--predict-pairs", "16", "--predict-batch", "8", "--train-steps", "2"],
                   cwd=REPO, check=True, capture_output=True)
    results = json.loads(out.read_text())
    assert set(REQUIRED) <= set(results)
    for key in ("predict_one_at_a_time_samples_per_s", "predict_batched_samples_per_s", "prefill_only_samples_per_s",
                "score_labels_samples_per_s",
                "train_plain_peft_samples_per_s", "train_samples_per_s"):
        assert results[key] > 0, key
    assert results["tokens_per_sample"] > results["recipe"]["per_device_batch_size"] > 0


@pytest.mark.slow
def test_batched_vs_single_at_its_smallest_scale(tmp_path, llama_sentencepiece):
    """The script runs end to end (4 pairs, one epoch) and writes every figure with its type and its provenance."""
    out = tmp_path / "batched.json"
    subprocess.run([sys.executable, "benchmarks/batched_vs_single.py", "--pairs", "4", "--batch", "2", "--epochs", "1",
                    "--out", str(out)], cwd=REPO, check=True, capture_output=True)
    results = json.loads(out.read_text())
    assert (results["pairs"], results["batch"]) == (4, 2)
    for precision in ("fp32", "bf16", "fp16"):
        comparisons = [f"{precision}_batched_vs_single"] + ([f"{precision}_single_vs_fp32_single"] if precision != "fp32" else [])
        for name in comparisons:
            figures = results[name]
            for count in ("raw_answers_differ", "parsed_labels_differ", "parsed_labels_differ_among_close_calls"):
                assert isinstance(figures[count], int) and 0 <= figures[count] <= 4, (name, count)
            assert 0.0 <= figures["max_probability_difference"] <= 1.0
        assert 0 <= results[f"{precision}_close_calls_single"] <= 4
    assert 0 <= results["close_calls_fp32_single"] <= 4 and 1 <= results["distinct_answers_fp32_single"] <= 4
    assert len(results["git_commit"].removesuffix("+dirty")) == 40
    assert results["machine"]["cpus"] >= 1 and results["torch"] == torch.__version__
