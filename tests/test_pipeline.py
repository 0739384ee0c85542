"""End to end through DVC: `dvc repro` of the real stages on the embedded sample, in a temporary copy.

The default params run `format` as shipped; the whole DAG runs once more on a smaller sample and the
single-split protocol so the suite stays quick. Both go through dvc.yaml exactly as a user's run does.
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


def set_params(repo: Path, **overrides: object) -> None:
    """Edit params.yaml in the copy, keys as dotted paths (what `dvc exp run -S` would do)."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_format_on_the_default_sample(repo_copy: Path):
    run(["dvc", "repro", "format"], repo_copy)
    data = json.loads((repo_copy / "metrics/data.json").read_text())
    assert data["valid_pairs"] > 300 and sum(data["dropped"].values()) > 0
    manifest = json.loads((repo_copy / "artifacts/splits/manifest.json").read_text())
    assert sorted(manifest["splits"], key=int) == [str(k) for k in range(1, 11)]
    tests = [pd.read_parquet(repo_copy / f"artifacts/splits/{k}/test.parquet")["id"] for k in range(1, 11)]
    assert sorted(pd.concat(tests)) == sorted(pd.read_parquet(repo_copy / "artifacts/pairs.parquet")["id"])
    record = json.loads((repo_copy / "artifacts/llava/1/train.json").read_text())[0]
    assert record["conversations"][0]["value"].startswith("<image>\nConsider the following Image and Text.")
    assert (repo_copy / "artifacts/sample/MVSA_Single" / record["image"]).is_file()


def test_full_dag_on_a_small_sample(repo_copy: Path):
    set_params(repo_copy, protocol="random", **{"sample.n_pairs": 120, "models.tiny.recipe.epochs": 1})
    run(["dvc", "repro"], repo_copy)
    predictions = [json.loads(line) for line in (repo_copy / "artifacts/predictions/1.jsonl").read_text().splitlines()]
    test_ids = pd.read_parquet(repo_copy / "artifacts/splits/1/test.parquet")["id"].tolist()
    assert [p["id"] for p in predictions] == test_ids
    assert {"raw", "pred_text", "pred_image", "pred_multimodal", "multimodal_label", "p_multimodal"} <= set(predictions[0])
    val_ids = pd.read_parquet(repo_copy / "artifacts/splits/1/val.parquet")["id"].tolist()
    validation = (repo_copy / "artifacts/predictions/val/1.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in validation] == val_ids
    scores = json.loads((repo_copy / "metrics/scores.json").read_text())
    assert scores["n_splits"] == 1 and scores["n_test_pairs"] == len(test_ids)
    assert 0 <= scores["multimodal"]["accuracy"] <= 100
    vs_paper = json.loads((repo_copy / "metrics/vs_paper.json").read_text())
    assert vs_paper["multimodal"]["accuracy"]["paper"] == 77.05  # Table 2, the random protocol
    assert "synthetic sample" in (repo_copy / "reports/results.md").read_text()
    assert set(scores["calibration"]["temperatures"]) == {"1"}
    for picture in ("plots/png/confusion_multimodal.png", "plots/png/reliability_multimodal.png",
                    "plots/png/coverage.png", "dvclive/training_loss.png"):
        assert (repo_copy / picture).stat().st_size > 1000
    assert (repo_copy / "artifacts/adapters/1/adapter_model.safetensors").is_file()
    status = run(["dvc", "status"], repo_copy)
    assert "changed" not in status, status
