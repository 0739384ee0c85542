"""The GPU benchmark's tiny CPU mode runs the same code as the GPU run, so the script cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
