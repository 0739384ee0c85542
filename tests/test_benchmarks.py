"""Every script in benchmarks/ runs here at its smallest scale, so none can rot: each run is checked for
its results JSON's keys and types, and for the provenance block (code version, machine, load) that
`benchmarks/provenance.py` adds. The figures themselves are not asserted: speed goals live in the
committed results, not in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from llavac.cpu_numerics import MKL_CBWR_AUTO, MKL_CBWR_COMPATIBLE, is_x86_64
from llavac.model.build import build_llava
from llavac.prompt import llava_record

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "vision": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 2},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 512},
    "vocab_size": 400,
}


def run_benchmark(script: str, *args: object, cwd: Path = REPO) -> str:
    """`python benchmarks/<script> args...` in `cwd` (the repository root); its stdout. Fails with the script's output."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def read_result(path: Path) -> dict:
    """The results JSON at `path`, after checking its provenance block."""
    results = json.loads(path.read_text())
    provenance = results["provenance"]
    assert len(provenance["git_commit"]) == 40 and isinstance(provenance["git_dirty"], bool)
    assert provenance["started_utc"] <= provenance["finished_utc"]
    loads = provenance["load_average_1_5_15min"]
    assert len(loads["start"]) == len(loads["end"]) == 3 and all(x >= 0 for x in loads["start"] + loads["end"])
    assert provenance["machine"]["cpu_count"] >= 1 and provenance["machine"]["memory_gib"] > 0
    assert {"torch", "transformers", "peft", "pyspark"} <= set(provenance["versions"])
    return results


def test_provenance_names_the_checkout_commit(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from provenance import Provenance, write_result

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    results = read_result(write_result(tmp_path / "r.json", {"figure": 1.5}, Provenance()))
    assert results["figure"] == 1.5 and results["provenance"]["git_commit"] == head


def test_preprocess_throughput_smallest(tmp_path):
    out = tmp_path / "preprocess.json"
    run_benchmark("preprocess_throughput.py", "--sizes", "40", "--repeats", "1", "--warmup-pairs", "20",
                  "--master", "local[1]", "--partitions", "2", "--out", out)
    results = read_result(out)
    assert results["spark"]["warmup_pairs"] == 20 and results["java"].startswith(("openjdk", "java"))
    [row] = results["results"]
    assert row["pairs"] == 40 and 0 < row["valid_pairs"] <= 40 and row["pairs_per_s"] > 0
    assert [set(run) for run in row["runs"]] == [{"seconds", "load_average_1m_before"}]


def test_label_scoring_smallest(tmp_path):
    (tmp_path / "raw" / "data").mkdir(parents=True)
    texts = ["what a lovely sunny day #happy", "so sad... ??", "meeting moved to 5pm"]
    records = []
    for i in range(6):
        Image.new("RGB", (20 + 5 * i, 24), (40 * i, 90, 200 - 30 * i)).save(tmp_path / "raw" / "data" / f"{i}.jpg")
        records.append(llava_record({"id": i, "text": texts[i % 3], "text_label": "positive", "image_label": "neutral",
                                     "multimodal_label": "positive", "image_path": f"data/{i}.jpg"}, "front"))
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "val.json").write_text(json.dumps(records[:3]))
    (tmp_path / "split" / "test.json").write_text(json.dumps(records[3:]))
    base = build_llava(tmp_path / "base", texts * 5, TINY, seed=0)
    out = tmp_path / "scoring.json"
    run_benchmark("label_scoring.py", "--base", base, "--split-dir", tmp_path / "split", "--images", tmp_path / "raw",
                  "--batch", "4", "--rounds", "1", "--max-new-tokens", "4", "--out", out)
    results = read_result(out)
    assert results["pairs"] == 6 and results["rounds"] == 1 and results["model"] == f"untrained {base}"
    for path in ("prefill_only", "score_labels", "generate"):
        assert results["fastest_seconds"][path]["wall"] > 0, path
    for ratio in ("score_labels_cost_vs_prefill", "generate_cost_vs_prefill"):
        assert set(results[ratio]) == {"wall", "cpu"} and results[ratio]["wall"] > 0, ratio
    assert results["tree_tokens_per_pair"] and all(isinstance(n, int) for n in results["tree_tokens_per_pair"])
    assert 0 <= results["generated_answers_in_template"] <= 6 and 0 <= results["mean_template_mass"] <= 1


REQUIRED = ("device", "predict_speedup_vs_one_at_a_time", "predict_fraction_of_prefill", "train_speedup_vs_plain",
            "train_peak_gib", "zero3_ok", "predict_one_at_a_time_samples_per_s", "predict_batched_samples_per_s",
            "prefill_only_samples_per_s", "train_plain_peft_samples_per_s", "train_samples_per_s",
            "score_labels_samples_per_s", "scoring_cost_vs_prefill")


def test_gpu_run_dry_run_on_the_cpu(tmp_path):
    """The one GPU command at tiny scale: the same stages (train killed after its first checkpoint and resumed,
    predict, score) and the same throughput and numerics scripts (gpu_throughput.py, gpu_numerics.py), each
    writing its results file."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_throughput import synthetic_records

    sample = tmp_path / "sample"
    records = synthetic_records(sample / "MVSA_Single", 72)
    (sample / "llava" / "1").mkdir(parents=True)
    for part, chunk in (("train", records[:64]), ("val", records[64:68]), ("test", records[68:])):
        (sample / "llava" / "1" / f"{part}.json").write_text(json.dumps(chunk))
    out = tmp_path / "out"
    run_benchmark("gpu_run.py", "--scale", "tiny", "--sample", sample, "--launcher", "python", "--out-dir", out,
                  "--work", tmp_path / "work", "--budget-s", "3000", "--predict-pairs", "8", "--predict-batch", "4",
                  "--train-steps", "1", "--numerics-pairs", "4", "--numerics-batch", "2")

    paper = read_result(out / "gpu-paper-path-cpu.json")
    assert all(word in paper["what"] for word in ("zero3", "resume", "predict", "score"))
    assert set(paper["stages"]) == {"train_until_kill", "train_resume", "predict", "score"}
    assert paper["stages"]["train_until_kill"]["killed"] and all(
        paper["stages"][name]["returncode"] == 0 for name in ("train_resume", "predict", "score"))
    resume = paper["resume"]
    assert resume["killed_before_the_end"] and resume["adapter_written"]
    assert 0 < resume["killed_after_checkpoint_step"] < resume["total_steps"] == resume["expected_total_steps"] == 8
    assert paper["recipe"]["per_device_batch_size"] == 16 and paper["recipe"]["precision"] == "bf16"
    assert paper["recipe"]["gradient_checkpointing"] and paper["recipe"]["deepspeed"].endswith("zero3.json")
    assert paper["predict_pairs"] == 8 and paper["scores"]["n_test_pairs"] == 4
    assert {"accuracy", "weighted_f1", "invalid_rate"} <= set(paper["scores"]["multimodal"])
    # The python launcher starts no DeepSpeed: no ZeRO checkpoint, so the run says ZeRO-3 was not proven.
    assert paper["zero_stage_in_checkpoint"] is None and paper["zero3_ok"] is False

    throughput = read_result(out / "gpu-cpu.json")  # benchmarks/gpu_throughput.py
    assert set(REQUIRED) <= set(throughput)
    for key in ("predict_one_at_a_time_samples_per_s", "predict_batched_samples_per_s", "prefill_only_samples_per_s",
                "score_labels_samples_per_s", "train_plain_peft_samples_per_s", "train_samples_per_s"):
        assert throughput[key] > 0, key
    assert throughput["tokens_per_sample"] > throughput["recipe"]["per_device_batch_size"] > 0

    numerics = read_result(out / "gpu-numerics-cpu.json")  # benchmarks/gpu_numerics.py
    for precision in ("fp16", "bf16"):
        block = numerics[f"{precision}_batched_vs_single"]
        assert 0 <= block["answers_differ"] <= numerics["pairs"] and 0 <= block["close_calls"] <= numerics["pairs"]
        assert 0 <= block["max_abs_probability_difference"] <= 1
    assert numerics["pixels"]["project_equals_pil"] and numerics["pixels"]["project_processor"] == "CLIPImageProcessorPil"

    summary = read_result(out / "gpu-run-cpu.json")
    assert set(summary["parts"]) == {"paper_path", "throughput", "numerics"}
    assert all("skipped" not in part for part in summary["parts"].values()), summary["parts"]


def test_batched_vs_single_at_its_smallest_scale(tmp_path, llama_sentencepiece):
    """The script runs end to end (4 pairs, one epoch) and writes every figure with its type and its provenance."""
    out = tmp_path / "batched.json"
    run_benchmark("batched_vs_single.py", "--pairs", 4, "--batch", 2, "--epochs", 1, "--out", out)
    results = read_result(out)
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
    assert results["cpu_numerics"]["torch_threads"] >= 1 and results["provenance"]["versions"]["torch"] == torch.__version__


def test_warning_lines_counts_the_projects_warnings_apart_from_pips_index_notes(tmp_path):
    log = tmp_path / "repro.log"
    log.write_text("WARNING: Location 'file:///opt/pypi/simple/torch/' is ignored: it is neither a file nor a directory.\n"
                   "stage one\n[WARNING] Setting accelerator to CPU.\nUserWarning: x\n[WARNING] Setting accelerator to CPU.\n")
    out = tmp_path / "warnings.json"
    run_benchmark("warning_lines.py", log, "--command", "make repro", "--out", out)
    results = json.loads(out.read_text())
    assert (results["warning_lines"], results["pip_index_notes"]) == (3, 1)
    assert results["lines"] == {"[WARNING] Setting accelerator to CPU.": 2, "UserWarning: x": 1}


def test_experiment_summary_sets_the_committed_run_against_its_majority_class(tmp_path):
    """On HEAD's committed default run (cheema: the test sets cover every pair once)."""
    out = tmp_path / "summary.json"
    run_benchmark("experiment_summary.py", "HEAD", out, "--command", "dvc repro")
    results = json.loads(out.read_text())
    scores = json.loads((REPO / "metrics/scores.json").read_text())
    data = json.loads((REPO / "metrics/data.json").read_text())
    assert results["n_test_pairs"] == scores["n_test_pairs"] == data["valid_pairs"]
    for task, block in results["tasks"].items():
        # The majority class from another source than the script's (data.json's label counts): the gold supports
        # the metrics stage counted in the predictions. Guards the label picked, the share's scale (%) and the pairs
        # it is a share of; the last check allows the two roundings to 2 decimals.
        support = {label: facts["support"] for label, facts in scores[task]["per_class"].items()}
        share = 100 * max(support.values()) / sum(support.values())
        assert block["majority_class"] == max(support, key=support.get) and 100 / 3 <= share <= 100
        assert block["majority_class_accuracy"] == pytest.approx(share, abs=0.005)
        assert block["points_above_majority"] == pytest.approx(scores[task]["accuracy"] - share, abs=0.011)


def test_ablation_results_collects_the_queued_experiments_with_their_scores_and_minutes(tmp_path, seed_grid):
    """On a repository whose three seed experiments ran from DVC's queue: one row each beside the workspace."""
    out = tmp_path / "ablations.json"
    printed = run_benchmark("ablation_results.py", "--out", out, cwd=seed_grid)
    results = read_result(out)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=seed_grid, capture_output=True, text=True).stdout.strip()
    assert results["head"] == head and results["paired"] == []
    runs = {run["name"]: run for run in results["runs"]}
    assert runs["workspace"]["settings"]["seed"] == 42 and len(runs) == 4
    experiments = [run for name, run in runs.items() if name != "workspace"]
    assert sorted(run["settings"]["seed"] for run in experiments) == [1, 2, 3]
    for run in experiments:
        accuracy = 70.0 + run["settings"]["seed"]
        assert run["scores"]["text"] == {"accuracy": accuracy, "accuracy_ci_low": accuracy - 5,
                                         "accuracy_ci_high": accuracy + 5, "weighted_f1": accuracy - 1, "invalid_rate": 0.0}
        assert (run["test_pairs"], run["splits"]) == (40, 2)
        assert isinstance(run["minutes"], float) and run["minutes"] >= 0
    assert any(row.startswith("mean of 3 seeds") for row in results["compare"])
    assert f"| {experiments[0]['name']} | `seed={experiments[0]['settings']['seed']}` | 40 / 2 |" in printed


def test_text_route_sets_the_text_label_against_the_image_label_and_reads_the_attention(tmp_path):
    """On a 4-step adapter of test_model's world: every count and share well-formed, the attention per layer and head."""
    from test_model import RECIPE, write_world

    from llavac.train import train_split

    world = write_world(tmp_path / "world")
    train_split(world["base"], world["records"], world["images"], tmp_path / "adapter", tmp_path / "ckpt", tmp_path / "live",
                RECIPE, seed=0, image_position="front")
    (tmp_path / "llava").mkdir()
    for part, records in (("train", world["records"][:6]), ("test", world["records"][6:])):
        (tmp_path / "llava" / f"{part}.json").write_text(json.dumps(records))
    out = tmp_path / "route.json"
    run_benchmark("text_route.py", "--adapter", tmp_path / "adapter", "--llava-dir", tmp_path / "llava", "--images",
                  world["images"], "--train-pairs", 5, "--attention-pairs", 2, "--out", out)
    results = read_result(out)
    for part, pairs in (("train", 5), ("test", 2)):
        labels = results["labels"][part]
        assert labels["pairs"] == pairs == labels["pairs_where_labels_agree"] + labels["where_labels_differ"]["test_pairs"]
        assert all(0 <= labels["accuracy"][task] <= 100 for task in ("text", "image", "multimodal"))
    assert results["attention_pairs"] == 2
    layers = {name: results["attention_of_the_last_prompt_position"][name] for name in ("base", "adapter")}
    for name, per_layer in layers.items():
        assert len(per_layer) == 2, name  # test_model's ARCHITECTURE: 2 language-model layers of 2 heads
        for layer in per_layer:
            assert all(len(layer[key]) == 2 and all(0 <= value <= 1 for value in layer[key])
                       for key in ("share_on_sentiment_words", "share_on_image", "largest_weight"))
    # "so sad... ??" (pair 1) is one of the two: the base, untrained, spreads some attention onto "sad"
    assert any(share > 0 for share in layers["base"][0]["share_on_sentiment_words"])
    (tmp_path / "llava" / "test.json").unlink()
    failed = subprocess.run([sys.executable, REPO / "benchmarks" / "text_route.py", "--adapter", str(tmp_path / "adapter"),
                             "--llava-dir", str(tmp_path / "llava"), "--images", str(world["images"]), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stderr.startswith("error: ") and "test.json missing: run `dvc repro format`" in failed.stderr


def test_recipe_probe_trains_one_split_with_the_settings_and_scores_every_part(tmp_path):
    """On test_model's world, with the repository's params.yaml: the overrides and fp32 reach the recipe the adapter
    was trained with, every part is scored; an unknown recipe key names the known ones, a missing input the stage that writes it."""
    from test_model import write_world

    from llavac.model.loading import write_pointer

    world = write_world(tmp_path / "world")
    write_pointer(tmp_path / "base", world["base"], None, None)
    (tmp_path / "llava").mkdir()
    for part, records in (("train", world["records"][:6]), ("val", world["records"][6:7]), ("test", world["records"][6:])):
        (tmp_path / "llava" / f"{part}.json").write_text(json.dumps(records))
    common = ("--base-dir", tmp_path / "base", "--llava-dir", tmp_path / "llava", "--images", world["images"])
    out = tmp_path / "probe.json"
    # A previous probe's folder: emptied first, so a finished run of the same settings is trained again, not restored.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "left-over").write_text("")
    run_benchmark("recipe_probe.py", *common, "--adapter-dir", tmp_path / "run", "--set", "epochs=1", "--set", "learning_rate=1e-3",
                  "--blank-images", "--train-pairs", 5, "--out", out)
    results = read_result(out)
    assert results["recipe"]["epochs"] == 1 and results["recipe"]["learning_rate"] == 1e-3 and results["recipe"]["precision"] == "fp32"
    assert results["blank_images"] is True and results["settings"] == ["epochs=1", "learning_rate=1e-3"]
    assert {part: results["labels"][part]["pairs"] for part in ("train", "val", "test")} == {"train": 5, "val": 1, "test": 2}
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "run" / "left-over").exists()
    card = json.loads((tmp_path / "run" / "adapter" / "llavac.json").read_text())
    assert card["recipe"]["learning_rate"] == 1e-3
    failed = subprocess.run([sys.executable, REPO / "benchmarks" / "recipe_probe.py", *map(str, common), "--adapter-dir",
                             str(tmp_path / "bad"), "--set", "lr=1e-3"], cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stderr.strip().splitlines()[-1].startswith("error: --set 'lr=1e-3': 'lr' is not a recipe field; the fields are: lora_r")
    for missing, message in ((("--llava-dir", tmp_path / "none"), "val.json, "), (("--base-dir", tmp_path / "none"), "base.json is missing: run `dvc repro base_model`")):
        failed = subprocess.run([sys.executable, REPO / "benchmarks" / "recipe_probe.py", *map(str, common), *map(str, missing),
                                 "--adapter-dir", str(tmp_path / "bad")], cwd=REPO, capture_output=True, text=True)
        assert failed.returncode == 1 and failed.stderr.startswith("error: ") and message in failed.stderr, failed.stderr


@pytest.mark.skipif(not is_x86_64(), reason="MKL's branches are x86-64's (torch's other builds have no MKL)")
def test_mkl_branch_smallest(tmp_path):
    out = tmp_path / "mkl.json"
    run_benchmark("mkl_branch.py", "--rounds", "3", "--out", out)
    results = read_result(out)
    auto, compatible = results["branches"]["AUTO"], results["branches"]["COMPATIBLE"]
    assert (auto["branch_in_force"], compatible["branch_in_force"]) == (MKL_CBWR_AUTO, MKL_CBWR_COMPATIBLE)
    assert auto["torch_threads"] == compatible["torch_threads"] == 1
    assert set(results["compatible_over_auto_fastest"]) == set(auto["shapes"]) == set(results["shapes_rows_inner_columns"])
    # Each timing is a product's time in milliseconds: no faster than 1 TFLOP/s (several times one core's float32
    # peak), so a zero, a negative or a time in seconds fails; the fastest is no slower than the median. The ratio is
    # COMPATIBLE's fastest over AUTO's (not the inverse, not the medians'): consistent with those raw times.
    for name, (rows, inner, columns) in results["shapes_rows_inner_columns"].items():
        floor_ms = 2 * rows * inner * columns / 1e12 * 1e3  # its multiply-adds at 1 TFLOP/s
        for branch in (auto, compatible):
            timing = branch["shapes"][name]
            assert floor_ms < timing["ms_fastest"] <= timing["ms_median"] < 60e3, (name, timing)
        ratio = compatible["shapes"][name]["ms_fastest"] / auto["shapes"][name]["ms_fastest"]
        assert results["compatible_over_auto_fastest"][name] == pytest.approx(ratio, rel=1e-9), name


def test_numerics_trace_repeats_itself_and_names_the_first_operation_a_kernel_choice_moves(tmp_path):
    """On test_model's world: two traces of the same run are identical; with oneDNN back on, capping its ISA at
    SSE4.1 moves the patch embedding's convolution (an operation of step 0) and the count says how many followed."""
    from test_model import write_world

    from helpers import write_params
    from llavac.model.loading import write_pointer

    world = write_world(tmp_path / "world")
    write_params(tmp_path, data__raw_dir=str(world["images"]))
    write_pointer(tmp_path / "artifacts/base_model", world["base"], None, None)
    (tmp_path / "artifacts/llava/1").mkdir(parents=True)
    (tmp_path / "artifacts/llava/1/train.json").write_text(json.dumps(world["records"]))
    first, again = tmp_path / "first.json", tmp_path / "again.json"
    run_benchmark("numerics_trace.py", "--out", first, cwd=tmp_path)
    run_benchmark("numerics_trace.py", "--out", again, "--compare", first, "--summary", cwd=tmp_path)
    traced, compared = read_result(first), read_result(again)
    assert traced["n_operations"] == compared["n_operations"] > 100 and compared["operations"] is None
    assert compared["compared_with"]["differing_operations"] == 0 and traced["losses"] == compared["losses"]
    assert traced["machine_class"]["onednn_enabled"] is False
    assert any(name == "aten.convolution.default" for _, name, _, _ in traced["operations"])
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/numerics_trace.py"), "--onednn", "--summary", "--compare",
                           str(first), "--out", str(tmp_path / "sse41.json")], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), "DNNL_MAX_CPU_ISA": "SSE41"})
    assert done.returncode == 0, done.stderr[-2000:]
    moved = read_result(tmp_path / "sse41.json")["compared_with"]
    if is_x86_64():
        assert moved["differing_operations"] > 0 and "(step 0)" in moved["findings"][0], moved
    (tmp_path / "artifacts/llava/1/train.json").unlink()
    failed = subprocess.run([sys.executable, str(REPO / "benchmarks/numerics_trace.py"), "--out", str(first)], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert failed.returncode == 1 and "run `dvc repro format`" in failed.stderr
