"""`llavac compare`: short aligned rows with intervals and data facts, seed groups, paired comparisons."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llavac.experiments import (
    Run,
    compare_experiments,
    comparison_rows,
    pairs_differ,
    paired_rows,
    read_run,
    render,
    resolve_revision,
    seed_groups,
)
from llavac.metrics import load_predictions

SAMPLE_RUN = {"run.dataset": "synthetic sample", "run.comparable_with_paper": "False", "run.test_pairs": 390.0,
              "run.splits": 10.0, "run.split_source": "generated"}


def scored(accuracy: float, **more) -> dict:
    """A finished run's exp_show row: multimodal accuracy with its interval, as DVC flattens the metrics files."""
    return {"metrics/scores.json:multimodal.accuracy": accuracy, "multimodal.accuracy_ci_low": accuracy - 4,
            "multimodal.accuracy_ci_high": accuracy + 3.5, "multimodal.invalid_rate": 0.0, "protocol": "cheema",
            "model": "tiny", "seed": 42.0, "multimodal.accuracy.paper": 76.24, **SAMPLE_RUN, **more}


def test_rows_show_intervals_data_and_only_the_settings_that_differ():
    experiments = [
        {"rev": "workspace", "Experiment": None, **scored(81.79, **{"text.accuracy": 60.77})},
        {"rev": "9" * 40, "Experiment": "zero-shot", "State": "Success", **scored(0.0, **{"train.method": "none"})},
        {"rev": "8" * 40, "Experiment": "real", "State": "Success",
         **scored(77.0, **{"run.dataset": "MVSA-Single", "run.comparable_with_paper": "True", "run.test_pairs": 4511.0})},
        {"rev": "7" * 7, "Experiment": "later", "State": "Queued", **scored(81.79, seed=1.0)},
    ]
    (header, ours, zero, real, queued), notes = comparison_rows(experiments)
    assert header[:5] == ["experiment", "method", "data", "mm acc", "paper"]
    assert ours[:6] == ["workspace", "-", "sample 390/10", "81.8 [77.8, 85.3]", "n/a", "-"]
    assert zero[1] == "none" and real[2] == "MVSA-Single 4511/10"
    assert real[4] == "76.24", "the paper's number stands beside a run on MVSA-Single only"
    assert queued[0] == "later (queued)" and set(queued[1:]) == {""}, "a queued run shows the workspace's metrics"
    assert any("protocol cheema" in note and "model tiny" in note and "seed 42" in note for note in notes)
    lines = render([header, ours, zero, real]).splitlines()
    assert len({line.index(" " + value) for line, value in zip(lines, ["data", "sample", "sample", "MVSA"], strict=True)}) == 1
    # on the sample alone the paper's columns are left out, and the notes say why
    (header, ours), notes = comparison_rows(experiments[:1])
    assert "paper" not in header and ours[1:3] == ["sample 390/10", "81.8 [77.8, 85.3]"]
    assert any("not comparable" in note for note in notes)


def test_runs_that_differ_only_in_seed_are_grouped_with_mean_and_std():
    same = {"protocol": "cheema", "train.method": "lora", "State": "Success"}
    experiments = [
        {"rev": "a" * 40, "Experiment": "s1", **scored(80.0, seed=1.0), **same},
        {"rev": "b" * 40, "Experiment": "s2", **scored(84.0, seed=2.0), **same},
        {"rev": "c" * 40, "Experiment": "s3", **scored(83.0, seed=3.0), **same},
        {"rev": "d" * 40, "Experiment": "other", **scored(50.0, seed=1.0), **{**same, "train.method": "none"}},
        {"rev": "workspace", "Experiment": None, **scored(80.0, seed=1.0), **same},
    ]
    keys = ["seed", "protocol", "train.method"]
    groups = seed_groups(experiments, keys)
    assert [[row["Experiment"] for row in group] for group in groups] == [["s1", "s2", "s3"]]
    rows, _ = comparison_rows(experiments, keys)
    group_row = rows[-1]
    assert group_row[0] == "mean of 3 seeds" and "1,2,3" in group_row
    # by hand: mean 247 / 3 = 82.33; sample std sqrt(((7/3)^2 + (5/3)^2 + (2/3)^2) / 2) = sqrt(78 / 18) = 2.08
    assert "82.3 ± 2.1" in group_row


def frame(ids: list[int], gold: list[str], predicted: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, **{f"{t}_label": gold for t in ("text", "image", "multimodal")},
                         **{f"pred_{t}": predicted for t in ("text", "image", "multimodal")}})


def difference_cell(row: list[str]) -> tuple[float, float, float]:
    """A - B and its interval's low and high bound, read from a paired row's `A - B [95 % CI]` cell."""
    match = re.fullmatch(r"([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\]", row[4])
    assert match, row
    difference, low, high = map(float, match.groups())
    return difference, low, high


def exact_mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p by hand: twice the Binomial(b + c, 1/2) tail at the smaller discordant count,
    at most 1 (b + c > 0)."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


def test_paired_rows_on_the_same_pairs_in_another_order():
    """Counted here pair by pair: the accuracies, the discordant pairs and McNemar's p; the paired interval against
    the normal approximation from the per-pair differences' spread (a different method, near it at 60 pairs)."""
    rng = random.Random(0)
    labels = ["negative", "neutral", "positive"]
    gold = [rng.choice(labels) for _ in range(60)]
    a_pred = [g if rng.random() < 0.8 else rng.choice(labels) for g in gold]
    b_pred = [g if rng.random() < 0.6 else None for g in gold]
    a = Run("A", {"seed": 1}, {1: frame(list(range(60)), gold, a_pred)})
    reversed_b = frame(list(range(60)), gold, b_pred).iloc[::-1].reset_index(drop=True)
    b = Run("B", {"seed": 2}, {1: reversed_b})
    assert pairs_differ(a, b) is None
    rows, test = paired_rows(a, b)
    right_a = [p == g for p, g in zip(a_pred, gold, strict=True)]
    right_b = [p == g for p, g in zip(b_pred, gold, strict=True)]
    a_only = sum(x and not y for x, y in zip(right_a, right_b, strict=True))
    b_only = sum(y and not x for x, y in zip(right_a, right_b, strict=True))
    assert (test["a_right_b_wrong"], test["a_wrong_b_right"]) == (a_only, b_only) == (22, 6)
    assert test["p_value"] == pytest.approx(exact_mcnemar_p(a_only, b_only), rel=1e-9)
    difference, low, high = difference_cell(next(row for row in rows if row[:2] == ["multimodal", "accuracy"]))
    assert difference == round(100 * (sum(right_a) - sum(right_b)) / 60, 1)
    per_pair = 100 * (np.array(right_a, dtype=float) - np.array(right_b, dtype=float))
    half_width = 1.959964 * per_pair.std() / np.sqrt(60)
    # percentile bounds move in steps of 100/60 points: within 1.5 steps of the normal approximation's
    assert low == pytest.approx(per_pair.mean() - half_width, abs=2.5)
    assert high == pytest.approx(per_pair.mean() + half_width, abs=2.5)


def outcome_runs(splits: list[str]) -> tuple[Run, Run]:
    """Runs A and B of one outcome per pair, a string of them per split: `a` A right only, `b` B right only,
    `=` both right, `x` both wrong (every gold label positive; a wrong answer is negative)."""
    right_a, right_b = {"a": True, "b": False, "=": True, "x": False}, {"a": False, "b": True, "=": True, "x": False}
    runs = []
    for name, right in (("A", right_a), ("B", right_b)):
        frames, first = {}, 0
        for k, outcomes in enumerate(splits, start=1):
            ids = list(range(first, first + len(outcomes)))
            frames[k] = frame(ids, ["positive"] * len(ids), ["positive" if right[o] else "negative" for o in outcomes])
            first += len(outcomes)
        runs.append(Run(name, {"seed": len(runs)}, frames))
    return runs[0], runs[1]


def test_paired_rows_on_a_hand_worked_table():
    """Two splits of 5 pairs: 5 right in A only, 1 in B only, 3 in both, 1 in neither. A 80 %, B 40 %: A - B = +40;
    exact McNemar p = 2 (C(6,0) + C(6,1)) / 2^6 = 14/64 = 0.21875."""
    rows, test = paired_rows(*outcome_runs(["aaa=x", "aab=="]))
    assert (test["a_right_b_wrong"], test["a_wrong_b_right"]) == (5, 1)
    assert test["p_value"] == pytest.approx(0.21875, rel=1e-12)
    multimodal_accuracy = next(row for row in rows if row[:2] == ["multimodal", "accuracy"])
    difference, low, high = difference_cell(multimodal_accuracy)
    assert (multimodal_accuracy[2:4], difference) == (["80.0", "40.0"], 40.0) and low <= difference <= high
    # split 1's pairs differ by 0 or +100 only: a resample never puts B ahead there, the mean over splits >= -50
    assert -50.0 <= low < high <= 100.0


def test_paired_intervals_that_are_known_exactly():
    """Equal answers on every pair: A - B is 0 on every resample, so the interval is [0, 0] (a bootstrap that did
    not pair the runs would spread); A right wherever B is wrong: +100 on every resample, p = 2 / 2^10."""
    rows, test = paired_rows(*outcome_runs(["==x=x", "x==x="]))
    assert {row[4] for row in rows[1:]} == {"+0.0 [+0.0, +0.0]"}
    assert test == {"a_right_b_wrong": 0, "a_wrong_b_right": 0, "p_value": 1.0}
    rows, test = paired_rows(*outcome_runs(["aaaaa", "aaaaa"]))
    assert {row[4] for row in rows[1:]} == {"+100.0 [+100.0, +100.0]"}  # accuracy and weighted F1, every label
    assert (test["a_right_b_wrong"], test["a_wrong_b_right"]) == (10, 0)
    assert test["p_value"] == pytest.approx(2 / 2**10, rel=1e-12) == exact_mcnemar_p(10, 0)


def test_runs_on_other_pairs_are_refused_with_the_params_that_chose_them():
    cheema = Run("c", {"protocol": "cheema", "seed": 1}, {1: frame([1, 2, 3], ["positive"] * 3, ["positive"] * 3)})
    zhang = Run("z", {"protocol": "zhang", "seed": 1}, {1: frame([2, 3, 4], ["positive"] * 3, ["positive"] * 3)})
    reason = pairs_differ(cheema, zhang)
    assert "1 test pairs only in c, 1 only in z" in reason and "protocol ('cheema' vs 'zhang')" in reason
    relabelled = Run("r", {"protocol": "cheema", "seed": 1}, {1: frame([1, 2, 3], ["negative"] * 3, ["positive"] * 3)})
    assert "3 test pairs with other gold labels" in pairs_differ(cheema, relabelled)
    assert "the data itself differs" in pairs_differ(cheema, relabelled)
    more = Run("m", cheema.params, {**cheema.splits, 2: cheema.splits[1]})
    assert "splits [1, 2]" in pairs_differ(more, cheema)


def test_a_run_is_read_at_its_revision_through_dvc(tmp_path, prediction_records, write_predictions):
    """Predictions are a DVC-cached output: a commit's are read from the cache, the workspace's from disk."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    dvc = str(Path(sys.executable).parent / "dvc")

    def run(*command: str) -> None:
        subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)

    run("git", "init", "-q")
    run(dvc, "init", "-q")
    (tmp_path / "params.yaml").write_text("seed: 1\nprotocol: cheema\n")
    first = {1: prediction_records(random.Random(1), 12, 0), 2: prediction_records(random.Random(2), 9, 100)}
    write_predictions(tmp_path / "artifacts" / "predictions", first)
    run(dvc, "add", "-q", "artifacts/predictions")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "first")
    write_predictions(tmp_path / "artifacts" / "predictions", {1: prediction_records(random.Random(3), 12, 0)})
    (tmp_path / "params.yaml").write_text("seed: 2\nprotocol: cheema\n")
    committed = read_run("HEAD", "HEAD", tmp_path)
    assert committed.params == {"seed": 1, "protocol": "cheema"}
    expected = load_predictions(tmp_path / "artifacts" / "predictions")  # the workspace now
    workspace = read_run("workspace", None, tmp_path)
    assert workspace.params["seed"] == 2
    pd.testing.assert_frame_equal(workspace.splits[1], expected[1])
    assert sorted(committed.splits) == [1, 2] and committed.splits[1]["id"].tolist() == [r["id"] for r in first[1]]
    assert committed.splits[1]["pred_text"].tolist() == [r["pred_text"] for r in first[1]]
    assert json.loads(json.dumps(committed.params)) == committed.params
    # names: an experiment's (a ref under refs/exps, as DVC stores them, on any baseline), a commit, `workspace`
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    run("git", "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/my-exp", head)
    assert resolve_revision("my-exp", tmp_path) == head == resolve_revision("HEAD", tmp_path)
    assert resolve_revision("workspace", tmp_path) is None
    with pytest.raises(ValueError, match="'nope' is not `workspace`, an experiment"):
        resolve_revision("nope", tmp_path)


@pytest.mark.slow
def test_a_seed_grid_runs_from_dvcs_queue_and_compare_groups_it(seed_grid: Path):
    """`dvc exp run --queue -S seed=1,2,3` + `dvc queue start` on a one-stage pipeline; `llavac compare` then
    shows the three runs and their mean ± std."""
    rows = compare_experiments(seed_grid).splitlines()
    assert sum(" 71.0 [66.0, 76.0]" in row or " 72.0 [67.0, 77.0]" in row or " 73.0 [68.0, 78.0]" in row
               for row in rows) == 3
    group = next(row for row in rows if row.startswith("mean of 3 seeds"))
    assert "1,2,3" in group and "72.0 ± 1.0" in group


def test_a_revision_whose_predictions_are_not_in_the_cache_is_one_line_naming_the_fetch(tmp_path: Path):
    """`llavac compare --paired` on a commit whose predictions were never pulled: what to run, not DVC's traceback."""
    from helpers import run

    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "artifacts/predictions").mkdir(parents=True)
    (tmp_path / "artifacts/predictions/1.jsonl").write_text('{"id": 1}\n')
    run(["dvc", "add", "-q", "artifacts/predictions"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "a run"], tmp_path)
    shutil.rmtree(tmp_path / ".dvc/cache")  # as in a clone that never pulled
    with pytest.raises(FileNotFoundError, match=r"a-run: its test predictions \(artifacts/predictions\) are not in the "
                                                r"DVC cache.*dvc fetch --all-commits.*dvc exp pull <git remote> a-run"):
        read_run("a-run", "HEAD", tmp_path)
