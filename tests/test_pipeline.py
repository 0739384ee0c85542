"""End to end through DVC: `dvc repro` of the real stages on the embedded sample, in a temporary copy.

The whole DAG runs once with the params as shipped (conftest's `reproduced`), exactly as a user's
`make repro` does, and the project's headline claim is checked on that run. The same run is the
determinism guard (`assert_same_as_committed`): against the committed `dvc.lock` and
`metrics/scores.json`, bitwise on a machine of the lock's class, and on any other the outputs before
training bitwise and the headline scores within a measured tolerance; and one split trained again on
this machine must give the same bytes. It is marked `slow`: `pytest -m "not slow"` is the quick
inner loop, `make test` runs it.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import committed_text, project_copy, run
from llavac.data.sample import write_sample
from llavac.labels import TASKS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The project as a fresh clone would have it (`helpers.project_copy`), for a test that changes its params."""
    return project_copy(tmp_path / "repo")


PRE_TRAINING_STAGES = ("sample", "preprocess", "split", "base_model", "format")
"""The stages before `train`: integer and byte work (and a seeded random init) that gives the same bytes on
any machine; measured equal on an AMD EPYC (AVX2) and an Intel Xeon (AVX-512)."""

HEADLINE_TOLERANCE = {"text": 25.0, "image": 3.0, "multimodal": 5.0}
"""How far, in points, a run on a machine of another class than the lock's may put each label's mean accuracy
and weighted F1 from the committed ones. Training on another CPU rounds one float32 operation apart within a
few steps and from there it is another run of the recipe, as another seed is: this covers the spread of the
default recipe's runs measured over seeds and machines (`test_the_tolerance_covers_every_measured_run`,
docs/design.md's *Reproducibility*)."""


def flat(tree: object, prefix: str = "") -> dict[str, object]:
    """`{"a/b/c": leaf}` for every leaf of nested dicts."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {key: leaf for name, child in tree.items() for key, leaf in flat(child, f"{prefix}/{name}").items()}


def output_hashes(lock: str, stages: tuple[str, ...] | None = None) -> dict[str, str]:
    """`{out path: md5}` of every stage (or of `stages`) of a dvc.lock's text, in the DAG's order."""
    locked = yaml.safe_load(lock)["stages"]
    return {out["path"]: out["md5"] for name, stage in locked.items() if stages is None or name in stages
            for out in stage.get("outs", [])}


def machine_class_text(machine: dict) -> str:
    """One line naming a machine class (`llavac.cpu_numerics.numerics_class`)."""
    return (f"{machine.get('cpu_model')} ({machine.get('cpu_vendor')}; {', '.join(machine.get('cpu_features', []))}; "
            f"cache {machine.get('cache')}; {machine.get('threads')} thread(s); torch {machine.get('torch')}, "
            f"MKL {machine.get('mkl')}, oneDNN {machine.get('onednn')})")


def headline(scores: dict) -> dict[str, float]:
    """`{"text/accuracy": 62.05, ...}`: each label's mean accuracy and weighted F1 over the splits."""
    return {f"{task}/{metric}": scores[task][metric] for task in TASKS for metric in ("accuracy", "weighted_f1")}


def assert_same_as_committed(run: Path, committed: Callable[[str], str] = committed_text) -> None:
    """The determinism guard: a fresh run against the committed `metrics/scores.json` and `dvc.lock`.

    On a machine of the class that made the lock (`reports/machine.json`) every score and every output's
    hash must be equal. On any other the outputs before training must be equal and the headline scores
    within `HEADLINE_TOLERANCE`: no public library promises the same float32 rounding across CPUs.
    """
    lock_machine, this_machine = json.loads(committed("reports/machine.json")), json.loads((run / "reports/machine.json").read_text())
    fresh_scores, committed_scores = json.loads((run / "metrics/scores.json").read_text()), json.loads(committed("metrics/scores.json"))
    fresh_lock, committed_lock = (run / "dvc.lock").read_text(), committed("dvc.lock")
    if this_machine == lock_machine:
        remedy = (f"This machine is of the class that made the committed dvc.lock ({machine_class_text(this_machine)}), "
                  "where the pipeline as shipped gives the same bytes. If the change that caused the difference is meant "
                  "to change the results (code, params or a dependency version), run `dvc repro` and commit dvc.lock, "
                  "metrics/ and reports/ with it; if not, it made training nondeterministic: find the first stage listed.")
        fresh_flat, committed_flat = flat(fresh_scores), flat(committed_scores)
        drift = {key: (committed_flat.get(key), fresh_flat.get(key)) for key in fresh_flat.keys() | committed_flat.keys()
                 if fresh_flat.get(key) != committed_flat.get(key)}
        assert not drift, f"{remedy}\nmetrics/scores.json, committed vs this run: {dict(sorted(drift.items()))}"
        stages = None
    else:
        remedy = (f"This machine ({machine_class_text(this_machine)}) is not of the class that made the committed "
                  f"dvc.lock ({machine_class_text(lock_machine)}): its training may round apart, so only the outputs "
                  f"before training are compared byte for byte, and the headline scores within {HEADLINE_TOLERANCE} "
                  "points. Outside that the change altered the results: run `dvc repro` and commit if it is meant to.")
        fresh, locked = headline(fresh_scores), headline(committed_scores)
        beyond = {key: (locked[key], fresh[key]) for key in locked
                  if abs(fresh[key] - locked[key]) > HEADLINE_TOLERANCE[key.split("/")[0]]}
        assert not beyond, f"{remedy}\nheadline scores beyond the tolerance, committed vs this run: {beyond}"
        stages = PRE_TRAINING_STAGES
    fresh_outs, committed_outs = output_hashes(fresh_lock, stages), output_hashes(committed_lock, stages)
    changed = [path for path in committed_outs if fresh_outs.get(path) != committed_outs[path]]
    assert not changed, f"{remedy}\noutputs whose md5 differs from the committed dvc.lock, in DAG order: {changed}"


CARD = Path("llavac.json")
"""An adapter's card: it names its base relative to the adapter's own folder (`llavac.model.adapter_card`)."""


def assert_training_repeats_bytewise(repo_copy: Path, split: str) -> None:
    """Same-machine determinism, on any machine: the train stage run again on one split, in a process of its own
    and with no checkpoint to resume, writes the same adapter bytes and the same training curve as the pipeline."""
    again = repo_copy.parent / "again"
    shutil.copytree(repo_copy / "artifacts/llava" / split, again / "llava" / split)
    raw_dir = yaml.safe_load((repo_copy / "params.yaml").read_text())["data"]["raw_dir"]
    run([sys.executable, "stages/train.py", "artifacts/base_model", str(again / "llava"), raw_dir, str(again / "adapters"),
         str(again / "checkpoints"), str(again / "dvclive"), str(again / "machine.json")], repo_copy)
    first, second = repo_copy / "artifacts/adapters" / split, again / "adapters" / split
    names = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert names and names == sorted(path.relative_to(second) for path in second.rglob("*") if path.is_file())
    differ = [str(name) for name in names if name != CARD and (first / name).read_bytes() != (second / name).read_bytes()]
    assert not differ, f"training split {split} twice on this machine wrote different bytes: {differ}"
    cards = [json.loads((folder / CARD).read_text()) for folder in (first, second)]
    assert [(folder / card.pop("base")).resolve() for folder, card in zip((first, second), cards)] == \
        [(repo_copy / "artifacts/base_model/llava-hf").resolve()] * 2 and cards[0] == cards[1]  # the base, relative
    curve = Path(split, "plots/metrics/loss.tsv")
    assert (repo_copy / "dvclive" / curve).read_bytes() == (again / "dvclive" / curve).read_bytes()


def test_the_default_pipeline_learns_on_the_sample(reproduced: Path):
    """`dvc repro` as shipped: the sample, the cheema protocol's 10 splits, the tiny model and recipe."""
    repo_copy = reproduced
    data = json.loads((repo_copy / "metrics/data.json").read_text())
    sample = yaml.safe_load((repo_copy / "params.yaml").read_text())["sample"]
    written = write_sample(repo_copy.parent / "sample-again", sample["n_pairs"], sample["seed"], sample["min_side"],
                           sample["max_side"])  # what the sample's writer says preprocessing must keep and drop
    assert data["valid_pairs"] == written.expected_pairs and data["synthetic_sample"] is True
    assert data["dropped"] == {reason: len(ids) for reason, ids in written.drops.items()}
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
    machine = json.loads((repo_copy / "reports/machine.json").read_text())
    assert machine["onednn_enabled"] is False and machine["threads"] == 1  # what every training process ran under
    status = run(["dvc", "status"], repo_copy)
    assert "changed" not in status, status
    assert_same_as_committed(repo_copy)
    assert_training_repeats_bytewise(repo_copy, "1")

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


def committed_copy(folder: Path) -> Callable[[str], str]:
    """A stand-in for `committed_text` that reads the files of `folder`."""
    return lambda path: (folder / path).read_text()


@pytest.fixture
def guarded(tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of the committed `metrics/scores.json`, `dvc.lock` and `reports/machine.json`: (committed, run)."""
    copies = tmp_path / "committed", tmp_path / "run"
    for root in copies:
        for path in ("metrics/scores.json", "dvc.lock", "reports/machine.json"):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(committed_text(path))
    return copies


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def replace_out_hash(run: Path, stage: str) -> None:
    """Give the first output of `stage` in `run`'s dvc.lock another md5."""
    lock = (run / "dvc.lock").read_text()
    md5 = yaml.safe_load(lock)["stages"][stage]["outs"][0]["md5"]
    (run / "dvc.lock").write_text(lock.replace(md5, "0" * 32 + (".dir" if md5.endswith(".dir") else "")))


def test_on_the_locks_machine_class_the_guard_is_bitwise(guarded: tuple[Path, Path]):
    committed, run = guarded
    assert_same_as_committed(run, committed_copy(committed))
    edit_json(run / "metrics/scores.json", lambda scores: scores["splits"]["3"]["text"].update(
        accuracy=scores["splits"]["3"]["text"]["accuracy"] + 0.01))
    with pytest.raises(AssertionError, match=r"of the class that made(.|\n)*run `dvc repro` and commit(.|\n)*/splits/3/text/accuracy"):
        assert_same_as_committed(run, committed_copy(committed))
    (run / "metrics/scores.json").write_text((committed / "metrics/scores.json").read_text())
    replace_out_hash(run, "train")
    with pytest.raises(AssertionError, match=r"nondeterministic(.|\n)*\['artifacts/adapters'\]"):
        assert_same_as_committed(run, committed_copy(committed))


def test_on_another_machine_class_the_guard_checks_the_inputs_bitwise_and_the_scores_within_the_tolerance(
        guarded: tuple[Path, Path]):
    committed, run = guarded
    edit_json(run / "reports/machine.json", lambda machine: machine.update(cpu_vendor="AuthenticAMD", cpu_model="AMD EPYC"))
    replace_out_hash(run, "train")  # another CPU trains other adapters, and predicts other scores
    edit_json(run / "metrics/scores.json", lambda scores: (
        scores["splits"]["3"]["text"].update(accuracy=0.0),
        scores["multimodal"].update(accuracy=scores["multimodal"]["accuracy"] + HEADLINE_TOLERANCE["multimodal"] - 0.01)))
    assert_same_as_committed(run, committed_copy(committed))
    edit_json(run / "metrics/scores.json", lambda scores: scores["image"].update(
        weighted_f1=scores["image"]["weighted_f1"] - HEADLINE_TOLERANCE["image"] - 0.01))
    with pytest.raises(AssertionError, match=r"This machine \(AMD EPYC \(AuthenticAMD(.|\n)*not of the class(.|\n)*image/weighted_f1"):
        assert_same_as_committed(run, committed_copy(committed))
    (run / "metrics/scores.json").write_text((committed / "metrics/scores.json").read_text())
    replace_out_hash(run, "format")
    with pytest.raises(AssertionError, match=r"not of the class(.|\n)*\['artifacts/llava'\]"):
        assert_same_as_committed(run, committed_copy(committed))


def test_the_tolerance_covers_every_measured_run():
    """`HEADLINE_TOLERANCE` is at least the spread (largest minus smallest) of every run of the default recipe that
    differs from it only in its seed or its machine: the committed lock's, and benchmarks/results/ablations-cpu.json's."""
    default = yaml.safe_load((REPO / "params.yaml").read_text())
    ablations = json.loads((REPO / "benchmarks/results/ablations-cpu.json").read_text())
    def param(dotted: str) -> object:
        return functools.reduce(lambda node, key: node[key], dotted.split("."), default)

    runs = [run["scores"] for run in ablations["runs"]
            if all(value == param(key) for key, value in run["settings"].items() if key != "seed")]
    runs.append(json.loads(committed_text("metrics/scores.json")))
    assert len(runs) >= 4, "fewer than four runs of the default recipe measured"
    for key in headline(runs[-1]):
        task, metric = key.split("/")
        values = [scores[task][metric] for scores in runs]
        assert max(values) - min(values) <= HEADLINE_TOLERANCE[task], (key, values)
