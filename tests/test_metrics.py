"""Scoring: scikit-learn's numbers, unparsed answers as wrong, mean ± std over splits, plots."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from llavac.labels import LABELS, TASKS
from llavac.metrics import INVALID, confusion_rows, load_predictions, score_splits, task_scores

REPO = Path(__file__).resolve().parents[1]

ROUNDING = 0.005 + 1e-9
"""scores.json keeps 2 decimals."""


@pytest.fixture
def predictions(tmp_path: Path, prediction_records, write_predictions) -> tuple[Path, dict[int, list[dict]]]:
    rng = random.Random(7)
    splits = {k: prediction_records(rng, 40 + k, 1000 * k) for k in (1, 2, 3)}
    write_predictions(tmp_path / "predictions", splits)
    write_predictions(tmp_path / "predictions" / "val", {k: prediction_records(rng, 60, 1000 * k + 500) for k in splits})
    return tmp_path / "predictions", splits


def sklearn_expectation(records: list[dict], task: str) -> dict[str, float]:
    """What scikit-learn says for one split, an unparsed answer mapped to a label no gold pair has."""
    gold = [r[f"{task}_label"] for r in records]
    pred = [r[f"pred_{task}"] or "unparsed" for r in records]
    _, _, per_class_f1, support = precision_recall_fscore_support(gold, pred, labels=list(LABELS), zero_division=0)
    return {
        "accuracy": 100 * accuracy_score(gold, pred),
        "weighted_f1": 100 * f1_score(gold, pred, labels=list(LABELS), average="weighted", zero_division=0),
        "macro_f1": 100 * f1_score(gold, pred, labels=list(LABELS), average="macro", zero_division=0),
        "invalid_rate": 100 * sum(r[f"pred_{task}"] is None for r in records) / len(records),
        "f1_by_class": dict(zip(LABELS, 100 * per_class_f1, strict=True)),
        "support_by_class": dict(zip(LABELS, support.tolist(), strict=True)),
    }


def test_split_scores_equal_sklearn(predictions):
    pred_dir, raw = predictions
    splits = load_predictions(pred_dir)
    assert sorted(splits) == [1, 2, 3]
    for k, records in raw.items():
        for task in TASKS:
            ours = task_scores(splits[k][f"{task}_label"], splits[k][f"pred_{task}"])
            expected = sklearn_expectation(records, task)
            for metric in ("accuracy", "weighted_f1", "macro_f1", "invalid_rate"):
                assert ours[metric] == pytest.approx(expected[metric])
            for label in LABELS:
                assert ours["per_class"][label]["f1"] == pytest.approx(expected["f1_by_class"][label])
                assert ours["per_class"][label]["support"] == expected["support_by_class"][label]


def test_unparsed_answer_is_invalid_and_wrong():
    gold = pd.Series(["positive", "negative", "neutral", "positive"], dtype=object)
    predicted = pd.Series(["positive", None, "neutral", None], dtype=object)
    scores = task_scores(gold, predicted)
    assert scores["invalid_rate"] == 50.0
    assert scores["accuracy"] == 50.0
    # every gold pair is in the support, so the two unparsed answers cost recall of their gold class
    assert sum(c["support"] for c in scores["per_class"].values()) == 4
    assert scores["per_class"]["positive"]["recall"] == 50.0
    assert scores["per_class"]["negative"]["recall"] == 0.0
    assert scores["weighted_f1"] < 100.0


def test_mean_and_population_std_over_splits(predictions):
    pred_dir, raw = predictions
    scores = score_splits(load_predictions(pred_dir))
    assert scores["n_splits"] == 3
    assert scores["n_test_pairs"] == sum(len(r) for r in raw.values())
    for task in TASKS:
        per_split = [sklearn_expectation(records, task) for records in raw.values()]
        for metric in ("accuracy", "weighted_f1", "macro_f1"):
            values = [s[metric] for s in per_split]
            assert scores[task][metric] == pytest.approx(np.mean(values), abs=ROUNDING)
            assert scores[task][f"{metric}_std"] == pytest.approx(np.std(values), abs=ROUNDING)
            assert scores[task][f"{metric}_std"] > 0
        n_invalid = sum(r[f"pred_{task}"] is None for records in raw.values() for r in records)
        assert scores[task]["invalid_rate"] == pytest.approx(100 * n_invalid / scores["n_test_pairs"], abs=ROUNDING)
        support = {label: sum(s["support_by_class"][label] for s in per_split) for label in LABELS}
        assert {label: scores[task]["per_class"][label]["support"] for label in LABELS} == support
        for k, records in raw.items():
            expected = sklearn_expectation(records, task)
            assert scores["splits"][str(k)][task]["accuracy"] == pytest.approx(expected["accuracy"], abs=ROUNDING)
            assert scores["splits"][str(k)]["n_test_pairs"] == len(records)


def test_where_text_and_image_labels_differ_each_sides_accuracy_and_copies_are_counted_by_hand(predictions):
    pred_dir, raw = predictions
    pooled = [record for records in raw.values() for record in records]
    differ = [r for r in pooled if r["text_label"] != r["image_label"]]
    assert 0 < len(differ) < len(pooled)
    block = score_splits(load_predictions(pred_dir))["where_labels_differ"]
    assert block["test_pairs"] == len(differ)
    for name, predicted, gold in (("text_accuracy", "pred_text", "text_label"), ("image_accuracy", "pred_image", "image_label"),
                                  ("text_predicted_as_image_label", "pred_text", "image_label"),
                                  ("image_predicted_as_text_label", "pred_image", "text_label")):
        by_hand = 100 * sum(r[predicted] == r[gold] for r in differ) / len(differ)  # None (unparsed) never equals a label
        assert block[name] == pytest.approx(by_hand, abs=ROUNDING), name


def test_one_split_has_zero_std(tmp_path, prediction_records, write_predictions):
    write_predictions(tmp_path, {1: prediction_records(random.Random(3), 25, 0)})
    scores = score_splits(load_predictions(tmp_path))
    assert scores["n_splits"] == 1
    assert all(scores[t][f"{m}_std"] == 0.0 for t in TASKS for m in ("accuracy", "weighted_f1", "macro_f1"))


def test_scores_carry_a_95_percent_interval_around_the_mean_over_splits(predictions):
    scores = score_splits(load_predictions(predictions[0]))
    for task in TASKS:
        for metric in ("accuracy", "weighted_f1"):
            low, high = scores[task][f"{metric}_ci_low"], scores[task][f"{metric}_ci_high"]
            assert low < scores[task][metric] < high
            assert high - low < 30  # ~130 pairs: an interval of some ten points, not the whole range


def test_a_split_answered_all_right_has_a_degenerate_interval(tmp_path, prediction_records, write_predictions):
    records = prediction_records(random.Random(4), 20, 0)
    for record in records:
        record["pred_image"] = record["image_label"]
    write_predictions(tmp_path, {1: records})
    image = score_splits(load_predictions(tmp_path))["image"]
    assert image["accuracy"] == image["accuracy_ci_low"] == image["accuracy_ci_high"] == 100.0
    assert image["weighted_f1_ci_low"] == image["weighted_f1_ci_high"] == 100.0


def test_confusion_rows_cover_every_pair_of_every_split(predictions):
    pred_dir, raw = predictions
    rows = confusion_rows(load_predictions(pred_dir), "multimodal")
    flat = [r for records in raw.values() for r in records]
    assert rows == [{"actual": r["multimodal_label"], "predicted": r["pred_multimodal"] or INVALID} for r in flat]
    assert any(row["predicted"] == INVALID for row in rows)


def test_bad_predictions_are_reported(tmp_path, prediction_records):
    with pytest.raises(FileNotFoundError, match="dvc repro predict"):
        load_predictions(tmp_path)
    record = prediction_records(random.Random(1), 1, 0)[0]
    (tmp_path / "1.jsonl").write_text(json.dumps({**record, "pred_text": "happy"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"1\.jsonl:1: pred_text='happy'"):
        load_predictions(tmp_path)
    (tmp_path / "1.jsonl").write_text(json.dumps({**record, "p_image": {"positive": 1.5}}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"1\.jsonl:1: p_image=.* is not a distribution"):
        load_predictions(tmp_path)
    del record["image_label"]
    (tmp_path / "1.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing keys"):
        load_predictions(tmp_path)


def test_score_stage_writes_metrics_and_plots(predictions, tmp_path, run_stage):
    pred_dir, raw = predictions
    assert run_stage(tmp_path, "score.py", pred_dir, pred_dir / "val", "metrics/scores.json", "plots") is None
    scores = json.loads((tmp_path / "metrics" / "scores.json").read_text())
    calibration = scores.pop("calibration")
    assert scores == score_splits(load_predictions(pred_dir))
    assert sorted(calibration["temperatures"]) == ["1", "2", "3"]
    n_pairs = sum(len(r) for r in raw.values())
    for task in TASKS:
        rows = json.loads((tmp_path / "plots" / "confusion" / f"{task}.json").read_text())
        assert len(rows) == n_pairs
        # the fixture is over-confident: calibration must lower the validation NLL it was fitted on
        assert calibration[task]["validation_nll_after"] < calibration[task]["validation_nll_before"]
        coverage = json.loads((tmp_path / "plots" / "coverage" / f"{task}.json").read_text())
        assert len(coverage) == n_pairs and coverage[-1]["coverage"] == 1.0
        for name in ("before", "after"):
            reliability = json.loads((tmp_path / "plots" / "calibration" / f"{task}_{name}.json").read_text())
            assert sum(row["pairs"] for row in reliability) == n_pairs
        for png in (f"confusion_{task}.png", f"reliability_{task}.png", "coverage.png"):
            assert (tmp_path / "plots" / "png" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every data file dvc.yaml's top-level plots draw from the score stage's folders is written
    dvc_plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    drawn = {file for plot in dvc_plots for spec in plot.values() if isinstance(spec.get("y"), dict) for file in spec["y"]}
    assert {"plots/calibration/diagonal.json", "plots/coverage/text.json"} <= drawn
    assert [f for f in drawn if f.startswith("plots/") and not (tmp_path / f).is_file()] == []


def test_score_stage_without_predictions_names_the_command(tmp_path, run_stage):
    message = run_stage(tmp_path, "score.py", "missing", "missing/val", "metrics/scores.json", "plots")
    assert message.startswith("error:") and "dvc repro predict" in message
