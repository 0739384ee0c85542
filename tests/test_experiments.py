"""`llavac compare`: one short, aligned row per experiment, from the keys DVC flattens its metrics into."""

from llavac.experiments import comparison_rows, render


def test_rows_pick_the_paper_columns_and_mark_what_an_experiment_lacks():
    experiments = [
        {"rev": "workspace", "Experiment": None, "dataset": "mvsa-multiple", "protocol": "cheema", "model": "tiny", "train.backend": "hf",
         "multimodal.accuracy.ours": 80.256, "multimodal.accuracy_std": 4.45, "multimodal.accuracy.paper": 76.24,
         "multimodal.weighted_f1.ours": 81.73, "multimodal.weighted_f1_std": 4.18, "multimodal.weighted_f1.paper": 76.36,
         "text.accuracy": 59.74, "text.accuracy_std": 7.78, "image.accuracy": 99.49, "image.accuracy_std": 1.03,
         "text.per_class.negative.precision": 70.3},
        {"rev": "3f1c0d9e0a5b4c7d8e9f0a1b2c3d4e5f6a7b8c9d", "Experiment": None, "protocol": "random", "model": "tiny"},
        {"rev": "9" * 40, "Experiment": "llavac-random", "protocol": "random", "model": "llava-v15-7b", "text.accuracy": 70.0},
    ]
    header, ours, commit, named = comparison_rows(experiments)
    assert header == ["experiment", "dataset", "protocol", "model", "backend", "mode", "mm acc", "paper", "mm wF1", "paper",
                      "text acc", "image acc"]
    assert ours == ["workspace", "mvsa-multiple", "cheema", "tiny", "hf", "-", "80.26 ± 4.45", "76.24", "81.73 ± 4.18", "76.36",
                    "59.74 ± 7.78", "99.49 ± 1.03"]
    assert commit[:4] == ["3f1c0d9", "-", "random", "tiny"] and set(commit[4:]) == {"-"}
    assert named[0] == "llavac-random" and named[10] == "70.00"
    lines = render([header, ours, commit, named]).splitlines()
    starts = [line.index(" " + value) for line, value in zip(lines, ["protocol", "cheema", "random", "random"], strict=True)]
    assert len(lines) == 4 and len(set(starts)) == 1, lines  # the protocol column is aligned
