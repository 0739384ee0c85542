"""End to end through DVC: `dvc repro` of the real stages on the embedded sample, in a temporary copy.

The whole DAG runs once with the params as shipped, exactly as a user's `make repro` does, and the
project's headline claim is checked on that run. The same run is the determinism guard: its scores and
its outputs' hashes must equal the committed `metrics/scores.json` and `dvc.lock`, so a change that
alters the numbers without a `dvc repro` + commit, or breaks determinism, fails here. It is marked `slow`: `pytest -m "not slow"` is the
quick inner loop, `make test` runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from llavac.labels import TASKS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path) -> str:
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "test"), ("EMAIL", "test@example.com"))}
    env = {**os.environ, **identity, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The project (tracked + new files, no outputs) as a fresh clone would have it: one commit."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    copy = tmp_path / "repo"
    for name in files:
        if name.startswith(("artifacts/", "metrics/", "plots/", "reports/", "dvclive/")) or name == "dvc.lock":
            continue
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    run(["git", "init", "-q"], copy)
    run(["git", "add", "-A"], copy)
    run(["git", "commit", "-qm", "clone"], copy)
    return copy


REMEDY = (
    "The pipeline as shipped no longer reproduces the committed results. If the change that caused it is meant to "
    "change them (code, params or a dependency version that alters the numbers), run `dvc repro` and commit dvc.lock "
    "and metrics/ with the change. If not, it broke determinism: the same code and params must give the same bytes "
    "on any x86-64 machine (see the CPU pins in src/llavac/cpu_numerics.py); find the first stage listed below."
)


def flat(tree: object, prefix: str = "") -> dict[str, object]:
    """`{"a/b/c": leaf}` for every leaf of nested dicts."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {key: leaf for name, child in tree.items() for key, leaf in flat(child, f"{prefix}/{name}").items()}


def output_hashes(lock: Path) -> dict[str, str]:
    """`{out path: md5}` of every stage in a dvc.lock, in the DAG's order."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def assert_same_as_committed(run: Path) -> None:
    """The determinism guard: a fresh run's scores and output hashes equal the committed ones, field by field."""
    fresh, committed = (flat(json.loads((root / "metrics/scores.json").read_text())) for root in (run, REPO))
    drift = {key: (committed.get(key), fresh.get(key)) for key in fresh.keys() | committed.keys()
             if fresh.get(key) != committed.get(key)}
    assert not drift, f"{REMEDY}\nmetrics/scores.json, committed vs this run: {dict(sorted(drift.items()))}"
    fresh_outs, committed_outs = output_hashes(run / "dvc.lock"), output_hashes(REPO / "dvc.lock")
    changed = [path for path in committed_outs if fresh_outs.get(path) != committed_outs[path]]
    assert not changed, f"{REMEDY}\noutputs whose md5 differs from the committed dvc.lock, in DAG order: {changed}"


def test_the_default_pipeline_learns_on_the_sample(repo_copy: Path):
    """`dvc repro` as shipped: the sample, the cheema protocol's 10 splits, the tiny model and recipe."""
    run(["dvc", "repro"], repo_copy)
    data = json.loads((repo_copy / "metrics/data.json").read_text())
    assert data["valid_pairs"] > 300 and sum(data["dropped"].values()) > 0 and data["synthetic_sample"] is True
    manifest = json.loads((repo_copy / "artifacts/splits/manifest.json").read_text())
    assert sorted(manifest["splits"], key=int) == [str(k) for k in range(1, 11)]
    tests = [pd.read_parquet(repo_copy / f"artifacts/splits/{k}/test.parquet") for k in range(1, 11)]
    assert sorted(pd.concat(tests)["id"]) == sorted(pd.read_parquet(repo_copy / "artifacts/pairs.parquet")["id"])
    record = json.loads((repo_copy / "artifacts/llava/1/train.json").read_text())[0]
    assert record["conversations"][0]["value"].startswith("<image>\nConsider the following Image and Text.")
    assert (repo_copy / "artifacts/sample/MVSA_Single" / record["image"]).is_file()

    for k, test in enumerate(tests, start=1):
        lines = (repo_copy / f"artifacts/predictions/{k}.jsonl").read_text().splitlines()
        predictions = [json.loads(line) for line in lines]
        assert [p["id"] for p in predictions] == test["id"].tolist()
        assert {"raw", "pred_text", "pred_image", "pred_multimodal", "multimodal_label", "p_multimodal"} <= set(predictions[0])
        validation = (repo_copy / f"artifacts/predictions/val/{k}.jsonl").read_text().splitlines()
        assert len(validation) == len(pd.read_parquet(repo_copy / f"artifacts/splits/{k}/val.parquet"))
    scores = json.loads((repo_copy / "metrics/scores.json").read_text())
    assert scores["n_splits"] == 10 and scores["n_test_pairs"] == sum(map(len, tests))
    # The headline claim: the tiny model learns, beating the majority class (the share of the most
    # frequent gold label over the same test pairs) by at least 10 points on every label.
    gold = pd.concat(tests)
    majority = {task: 100 * gold[f"{task}_label"].value_counts().max() / len(gold) for task in TASKS}
    for task in TASKS:
        assert scores[task]["accuracy"] >= majority[task] + 10, (task, scores[task]["accuracy"], majority[task])

    vs_paper = json.loads((repo_copy / "metrics/vs_paper.json").read_text())
    assert vs_paper["multimodal"]["accuracy"]["paper"] == 76.24  # Table 1, the cheema protocol
    assert "synthetic sample" in (repo_copy / "reports/results.md").read_text()
    assert set(scores["calibration"]["temperatures"]) == {str(k) for k in range(1, 11)}
    for picture in ("plots/png/confusion_multimodal.png", "plots/png/reliability_multimodal.png",
                    "plots/png/coverage.png", "dvclive/training_loss.png"):
        assert (repo_copy / picture).stat().st_size > 1000
    assert all((repo_copy / f"artifacts/adapters/{k}/adapter_model.safetensors").is_file() for k in range(1, 11))
    status = run(["dvc", "status"], repo_copy)
    assert "changed" not in status, status
    assert_same_as_committed(repo_copy)

    # benchmarks/tiny_llama_zero3.py records this run as it records its tiny-llama one (its smoke test)
    out = repo_copy.parent / "recorded.json"
    run([sys.executable, str(REPO / "benchmarks/tiny_llama_zero3.py"), "--no-run", "--out", str(out)], repo_copy)
    recorded = json.loads(out.read_text())
    assert recorded["command"] == "dvc exp run -S model=tiny -S protocol=cheema -S 'train.launcher=python'"
    assert recorded["majority_class"] == {task: round(majority[task], 2) for task in TASKS}
    assert recorded["accuracy"] == {task: scores[task]["accuracy"] for task in TASKS}
    assert (recorded["n_splits"], recorded["n_test_pairs"], recorded["wall_seconds"]) == (10, len(gold), None)
    assert recorded["adapter_full_shape_and_finite"] is True and recorded["build"]["tokenizer"] == "trained"
    assert recorded["provenance"]["git_commit"] == run(["git", "rev-parse", "HEAD"], REPO).strip()  # the script's checkout


def test_paths_and_values_with_shell_hydra_and_glob_characters_go_through_dvc_into_spark(repo_copy: Path):
    """`dvc exp run -S` with a raw folder and a splits folder named with every kind of special character
    (quoted for the shell and for DVC's Hydra override grammar as docs/inputs.md says), and Spark's master
    `local[1]`: the preprocess and split stages read those folders and no other."""
    from llavac.data.sample import write_sample

    weird = repo_copy / 'data' / 'MVSA copy [v2] {a,b} *?, "dq" naïve $HOME 新'
    summary = write_sample(weird, 80, seed=1, min_side=20, max_side=40)
    def quoted(value: object) -> str:  # Hydra's double-quoted string: a double quote inside is escaped
        return '"' + str(value).replace('"', '\\"') + '"'

    overrides = [f"data.raw_dir={quoted(weird / 'MVSA_Single')}", f"splits.dir={quoted(weird / 'splits')}",
                 f"spark.master={quoted('local[1]')}", "protocol=random"]
    run(["dvc", "exp", "run", *(word for override in overrides for word in ("-S", override)), "split"], repo_copy)
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    assert (params["data"]["raw_dir"], params["spark"]["master"]) == (str(weird / "MVSA_Single"), "local[1]")
    data = json.loads((repo_copy / "metrics/data.json").read_text())
    assert data["valid_pairs"] == summary.expected_pairs
    pairs = pd.read_parquet(repo_copy / "artifacts/pairs.parquet")
    assert all((weird / "MVSA_Single" / path).is_file() for path in pairs["image_path"])
    assert (repo_copy / "artifacts/splits/1/test.parquet").is_file()


def test_the_guard_names_the_remedy_when_a_score_or_an_output_drifts(tmp_path: Path):
    """The guard itself, on copies of the committed files: one changed score, then one changed output hash."""
    (tmp_path / "metrics").mkdir()
    scores = json.loads((REPO / "metrics/scores.json").read_text())
    shutil.copy(REPO / "dvc.lock", tmp_path / "dvc.lock")
    scores["splits"]["3"]["text"]["accuracy"] += 0.01
    (tmp_path / "metrics/scores.json").write_text(json.dumps(scores))
    with pytest.raises(AssertionError, match=r"run `dvc repro` and commit(.|\n)*/splits/3/text/accuracy"):
        assert_same_as_committed(tmp_path)
    shutil.copy(REPO / "metrics/scores.json", tmp_path / "metrics/scores.json")
    assert_same_as_committed(tmp_path)
    lock = (REPO / "dvc.lock").read_text()
    adapters = yaml.safe_load(lock)["stages"]["train"]["outs"][0]["md5"]
    (tmp_path / "dvc.lock").write_text(lock.replace(adapters, "0" * 32 + ".dir"))
    with pytest.raises(AssertionError, match=r"broke determinism(.|\n)*\['artifacts/adapters'\]"):
        assert_same_as_committed(tmp_path)
