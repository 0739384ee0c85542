"""The published tables, the comparison with our scores, the report and the paper-<protocol> git tags."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import write_params
from llavac.labels import TASKS
from llavac.metrics import load_predictions, score_splits
from llavac.paper import (
    RunInfo,
    load_paper,
    make_paper_tags,
    paper_scores,
    results_markdown,
    versus_paper,
    vs_paper_json,
)

REPO = Path(__file__).resolve().parents[1]
PAPER_YAML = REPO / "reference" / "paper.yaml"
GIT_ID = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


@pytest.fixture(scope="module")
def paper():
    return load_paper(PAPER_YAML)


@pytest.fixture
def ours(tmp_path: Path, prediction_records, write_predictions) -> dict:
    write_predictions(tmp_path / "predictions", {k: prediction_records(random.Random(k), 30, 100 * k) for k in (1, 2)})
    return score_splits(load_predictions(tmp_path / "predictions"))


def leaf_paths(tree: dict, prefix: str = "") -> set[str]:
    """Dotted key paths of a nested dict, as `dvc metrics show` names its columns."""
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths |= leaf_paths(value, path + ".") if isinstance(value, dict) else {path}
    return paths


def test_paper_yaml_holds_every_row_of_the_three_tables(paper):
    rows_per_protocol = {p: len(paper.rows_for(p)) for p in paper.protocols}
    assert rows_per_protocol == {"cheema": 4, "random": 5, "zhang": 2}
    assert {p: {r.table for r in paper.rows_for(p)} for p in paper.protocols} == {
        "cheema": {1},
        "random": {2},
        "zhang": {3},
    }
    for protocol in paper.protocols:
        assert [r.model for r in paper.rows_for(protocol) if r.llavac] == ["LLaVAC"]
    for row in paper.rows:
        assert set(row.scores["multimodal"]) == {"accuracy", "weighted_f1"}
        # percent, as printed in the tables (a fraction such as 0.7705 would slip past 0..100)
        assert all(40 < v < 100 for v in row.scores["multimodal"].values()), row
        assert row.citation
    # a model appears once per table
    for protocol in paper.protocols:
        models = [r.model for r in paper.rows_for(protocol)]
        assert len(models) == len(set(models))
    assert "Chay-intr" in paper.source and "2024" in paper.source
    assert "7.31" in paper.headline and "8.76" in paper.headline


def test_paper_yaml_with_two_llavac_rows_is_rejected(tmp_path):
    doc = yaml.safe_load(PAPER_YAML.read_text())
    doc["rows"][0]["llavac"] = True
    bad = tmp_path / "paper.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="'cheema' has 2 LLaVAC rows"):
        load_paper(bad)
    doc["rows"][0]["multimodal"]["accuracy"] = 176.24
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="row 1 needs"):
        load_paper(bad)


def test_paper_json_uses_the_key_paths_of_scores_json(paper, ours):
    for protocol in paper.protocols:
        published = paper_scores(paper, protocol)
        assert leaf_paths(published) == {"multimodal.accuracy", "multimodal.weighted_f1"}
        assert leaf_paths(published) <= leaf_paths(ours)
    assert paper_scores(paper, "zhang") == {"multimodal": {"accuracy": 85.36, "weighted_f1": 85.06}}
    with pytest.raises(ValueError, match="not in the paper's tables"):
        paper_scores(paper, "kfold")


def test_versus_paper_is_ours_minus_paper_for_shared_metrics(paper, ours):
    published = paper_scores(paper, "cheema")
    deltas = versus_paper(ours, published)
    metrics = ("accuracy", "weighted_f1")
    assert leaf_paths(deltas) == {f"multimodal.{m}.{k}" for m in metrics for k in ("ours", "paper", "delta")}
    for metric in ("accuracy", "weighted_f1"):
        d = deltas["multimodal"][metric]
        assert d["ours"] == ours["multimodal"][metric]
        assert d["paper"] == published["multimodal"][metric]
        assert d["delta"] == pytest.approx(ours["multimodal"][metric] - published["multimodal"][metric], abs=0.005)


def test_results_markdown_says_which_data_it_ran_on(paper, ours):
    run = RunInfo(model="tiny", raw_dir="artifacts/sample/MVSA_Single", synthetic_sample=True, valid_pairs=321,
                  split_source="generated", split_seed=7, seed=3)
    sample_md = results_markdown(paper, "random", ours, run)
    for row in paper.rows_for("random"):
        assert row.model in sample_md and f"{row.scores['multimodal']['accuracy']:.2f}" in sample_md
    assert "synthetic sample" in sample_md and "not a reproduction" in sample_md
    assert "321 valid pairs" in sample_md and f"{ours['n_test_pairs']} test pairs over {ours['n_splits']} split" in sample_md
    assert "generated (split seed 7)" in sample_md and "seed 3, fine-tuned (LoRA), modalities `both`" in sample_md
    # on the sample our row is not in the paper's table and no difference is printed
    assert "(ours" not in sample_md and "minus" not in sample_md
    for task in TASKS:
        t = ours[task]
        assert (f"| {task} | {t['accuracy']:.1f} [{t['accuracy_ci_low']:.1f}, {t['accuracy_ci_high']:.1f}] | "
                f"{t['weighted_f1']:.1f} [{t['weighted_f1_ci_low']:.1f}, {t['weighted_f1_ci_high']:.1f}] | "
                f"{t['accuracy_std']:.2f} |") in sample_md
        assert f"{t['invalid_rate']:.2f} |" in sample_md
    assert "std over splits" in sample_md and "95 % bootstrap interval" in sample_md
    real = RunInfo(model="llava-v15-7b", raw_dir="data/MVSA_Single", synthetic_sample=False, split_source="official")
    real_md = results_markdown(paper, "zhang", ours, real)
    assert "MVSA-Single" in real_md and "not a reproduction" not in real_md and "QMF" in real_md
    mm = ours["multimodal"]
    assert f"| LLaVAC (ours, `llava-v15-7b`) | this run | {mm['accuracy']:.1f} [" in real_md
    assert f"accuracy {mm['accuracy'] - 85.36:+.2f}" in real_md and "Splits: official" in real_md


def test_vs_paper_json_says_what_the_run_was_and_has_no_delta_on_the_sample(paper, ours):
    published = paper_scores(paper, "cheema")
    run = RunInfo(model="tiny", raw_dir="x", synthetic_sample=True, valid_pairs=390, split_seed=42, seed=1)
    sample = vs_paper_json(ours, published, run)
    assert sample["run"] == {
        "dataset": "synthetic sample", "comparable_with_paper": False, "valid_pairs": 390,
        "test_pairs": ours["n_test_pairs"], "splits": ours["n_splits"], "split_source": "generated", "split_seed": 42,
        "seed": 1, "method": "lora", "modalities": "both", "invalid_rate": ours["multimodal"]["invalid_rate"],
    }
    assert leaf_paths(sample["multimodal"]) == {f"{m}.{k}" for m in ("accuracy", "weighted_f1")
                                                for k in ("synthetic_sample", "paper")}  # never "ours" beside the paper
    assert sample["multimodal"]["accuracy"]["synthetic_sample"] == ours["multimodal"]["accuracy"]
    real = vs_paper_json(ours, published, RunInfo(model="m", raw_dir="x", synthetic_sample=False))
    assert real["run"]["dataset"] == "MVSA-Single" and real["run"]["comparable_with_paper"] is True
    assert real["multimodal"]["accuracy"]["delta"] == pytest.approx(ours["multimodal"]["accuracy"] - 76.24, abs=0.005)


@pytest.mark.parametrize(("synthetic", "wording"), [(True, "synthetic sample"), (False, "MVSA-Single")])
def test_compare_stage_writes_paper_deltas_and_report(tmp_path, run_stage, ours, synthetic, wording):
    """Whether the data is synthetic comes from metrics/data.json, not from where raw_dir lies."""
    raw_dir = "data/MVSA_Single"
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "scores.json").write_text(json.dumps(ours))
    (tmp_path / "metrics" / "data.json").write_text(json.dumps({"synthetic_sample": synthetic, "valid_pairs": 4511}))
    write_params(tmp_path, protocol="zhang", model="tiny", data__raw_dir=raw_dir, seed=5, splits__seed=6,
                 train__method="none", prompt__modalities="text")
    outputs = ["metrics/paper.json", "metrics/vs_paper.json", "reports/results.md"]
    assert run_stage(tmp_path, "compare.py", "metrics/scores.json", PAPER_YAML, *outputs, "metrics/data.json") is None
    assert json.loads((tmp_path / "metrics" / "paper.json").read_text()) == {
        "multimodal": {"accuracy": 85.36, "weighted_f1": 85.06}
    }
    compared = json.loads((tmp_path / "metrics" / "vs_paper.json").read_text())
    assert compared["multimodal"]["accuracy"]["paper"] == 85.36
    assert ("delta" in compared["multimodal"]["accuracy"]) is not synthetic
    assert compared["run"]["dataset"] == wording and compared["run"]["seed"] == 5 and compared["run"]["split_seed"] == 6
    report = (tmp_path / "reports" / "results.md").read_text()
    assert wording in report and raw_dir in report and "4511 valid pairs" in report
    assert "not fine-tuned (`train.method: none`, zero-shot), modalities `text`" in report
    assert (compared["run"]["method"], compared["run"]["modalities"]) == ("none", "text")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, env={**os.environ, **GIT_ID}
    ).stdout.strip()


def repo_state(repo: Path) -> dict[str, str]:
    """Everything paper tags must leave alone: branch, HEAD, index, working tree."""
    return {
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "head": git(repo, "rev-parse", "HEAD"),
        "index": git(repo, "diff", "--cached"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "scores": (repo / "metrics" / "scores.json").read_text(),
    }


@pytest.fixture
def repo(tmp_path: Path, ours: dict) -> Path:
    """A git + DVC repo with our scores committed, one staged and one unstaged change in progress."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    subprocess.run([Path(sys.executable).parent / "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text("metrics:\n  - metrics/scores.json\n")
    (repo / "metrics").mkdir()
    (repo / "metrics" / "scores.json").write_text(json.dumps(ours, indent=2))
    (repo / "README.md").write_text("first\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "README.md").write_text("second\n")
    git(repo, "add", "README.md")
    (repo / "metrics" / "scores.json").write_text(json.dumps({**ours, "n_splits": 99}, indent=2))
    (repo / "notes.txt").write_text("untracked\n")
    return repo


def test_paper_tags_commit_the_papers_scores_without_touching_the_checkout(repo, paper):
    before = repo_state(repo)
    assert make_paper_tags(repo, paper) == ["paper-cheema", "paper-random", "paper-zhang", "paper-mvsa-multiple-random"]
    assert repo_state(repo) == before
    # MVSA-Multiple: no LLaVAC row, so the tag holds the strongest published result (MGNNS, 72.49 / 69.34)
    tagged = json.loads(git(repo, "show", "paper-mvsa-multiple-random:metrics/scores.json"))
    assert tagged == {"multimodal": {"accuracy": 72.49, "weighted_f1": 69.34}}
    assert "MGNNS" in git(repo, "log", "-1", "--format=%B", "paper-mvsa-multiple-random")
    for protocol in paper.protocols:
        tagged = json.loads(git(repo, "show", f"paper-{protocol}:metrics/scores.json"))
        assert tagged == paper_scores(paper, protocol)
        assert git(repo, "rev-parse", f"paper-{protocol}^") == before["head"]
        # only the scores differ from HEAD, so DVC finds the same dvc.yaml at the tag
        assert git(repo, "diff", "--name-only", "HEAD", f"paper-{protocol}") == "metrics/scores.json"

    first = git(repo, "rev-parse", "paper-cheema")
    make_paper_tags(repo, paper, ["cheema"])
    assert git(repo, "rev-parse", "paper-cheema") == first  # same HEAD, same commit
    git(repo, "commit", "-q", "-m", "second")
    make_paper_tags(repo, paper, ["cheema"])
    assert git(repo, "rev-parse", "paper-cheema^") == git(repo, "rev-parse", "HEAD")  # the tag moved


def test_a_users_own_tag_of_the_same_name_is_never_moved(repo, paper, caplog):
    make_paper_tags(repo, paper, ["cheema"])
    git(repo, "commit", "-q", "-m", "second")
    with caplog.at_level("INFO", logger="llavac.paper"):
        make_paper_tags(repo, paper, ["cheema"])
    assert "paper-cheema: moved from" in caplog.text  # ours: moved, and said
    git(repo, "tag", "-f", "paper-random", "HEAD")  # the user's own tag, on their commit
    mine = git(repo, "rev-parse", "paper-random")
    with pytest.raises(ValueError, match="paper-random exists and was not made by `llavac paper-tags`"):
        make_paper_tags(repo, paper, ["random"])
    assert git(repo, "rev-parse", "paper-random") == mine


def test_dvc_metrics_diff_against_a_paper_tag(repo, paper, ours):
    make_paper_tags(repo, paper, ["cheema"])
    result = subprocess.run(
        [Path(sys.executable).parent / "dvc", "metrics", "diff", "paper-cheema", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    diff = json.loads(result.stdout)["metrics/scores.json"]
    assert diff["multimodal.accuracy"]["old"] == 76.24
    assert diff["multimodal.accuracy"]["new"] == ours["multimodal"]["accuracy"]
    assert diff["multimodal.weighted_f1"]["old"] == 76.36


def test_paper_tags_need_a_commit(tmp_path, paper):
    git(tmp_path, "init", "-q")
    with pytest.raises(RuntimeError, match="rev-parse"):
        make_paper_tags(tmp_path, paper)


def test_mvsa_multiple_rows_are_selected_by_dataset(paper, ours):
    multiple = paper.rows_for("random", "mvsa-multiple")
    assert [(r.model, r.table, r.llavac) for r in multiple] == [("MGNNS", None, False), ("CLMLF", None, False), ("MDSE", None, False)]
    assert "CLMLF" in [r.model for r in paper.rows_for("random")]  # MVSA-Single's CLMLF row, 75.33
    assert paper.rows_for("random")[2].scores["multimodal"]["accuracy"] == 75.33
    assert paper.rows_for("cheema", "mvsa-multiple") == []
    real = RunInfo(model="tiny", raw_dir="data/MVSA_Multiple", synthetic_sample=False, dataset_id="mvsa-multiple")
    report = results_markdown(paper, "random", ours, real)
    assert report.startswith("# Results: MVSA-Multiple, protocol `random`") and "Data: **MVSA-Multiple**" in report
    accuracy = ours["multimodal"]["accuracy"] - 72.49
    assert f"Ours minus the strongest published result, MGNNS (Yang et al. 2021 (unverified here)): accuracy {accuracy:+.2f}" in report
    assert "| MDSE |" in report and "75.33" not in report
    sample = RunInfo(model="tiny", raw_dir="artifacts/sample/MVSA_Single", synthetic_sample=True, dataset_id="mvsa-multiple")
    sample_report = results_markdown(paper, "random", ours, sample)
    assert "| MGNNS |" in sample_report and "minus" not in sample_report  # no difference on the synthetic sample
    nothing = results_markdown(paper, "cheema", ours, real)
    assert "No published result on MVSA-Multiple under protocol `cheema`" in nothing and "Se-MLNN" not in nothing
