"""Shared fixtures: one Spark session, writers of raw MVSA-Single folders and of predictions, and
the one way the tests run a stage script."""

from __future__ import annotations

import io
import json
import math
import os
import random
import re
import runpy
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The suite runs under the CPU numerics the stages pin (one thread, one kernel path: llavac.cpu_numerics,
# set by stages/common.py) before anything imports torch, so that a test comparing a model run in this
# process with one run in a subprocess (LLaVA's side, a stage) sees the same kernels whatever order the
# tests run in.
sys.path.insert(0, str(REPO / "stages"))
import common  # noqa: E402,F401
sys.path.remove(str(REPO / "stages"))
from llavac.cpu_numerics import route_cpu_convolutions_through_aten  # noqa: E402

route_cpu_convolutions_through_aten()  # as `load_base` does, for the models a test builds or loads itself

import pytest  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from llavac.data import mvsa  # noqa: E402
from llavac.data.preprocess import spark_session  # noqa: E402
from llavac.labels import LABELS, TASKS  # noqa: E402


@pytest.fixture
def run_stage(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str | None]:
    """``run_stage(cwd, "split.py", *args)``: ``python stages/split.py args...`` run from ``cwd``, as
    dvc.yaml runs it, but inside this process (a fresh interpreter costs seconds of imports).

    Returns the stage's exit message (``"error: ..."``), or None when it succeeds. The stage reads
    ``cwd/params.yaml``, so a test writes the params it needs there first. The whole pipeline runs
    through DVC in fresh interpreters in test_pipeline.py.
    """

    def run(cwd: Path, script: str, *args: object) -> str | None:
        monkeypatch.chdir(cwd)
        monkeypatch.syspath_prepend(str(REPO / "stages"))
        monkeypatch.setattr(sys, "argv", [f"stages/{script}", *map(str, args)])
        try:
            runpy.run_path(str(REPO / "stages" / script), run_name="__main__")
        except SystemExit as stop:
            if stop.code not in (None, 0):
                return str(stop.code)
        return None

    return run


def _prediction_records(rng: random.Random, n: int, first_id: int) -> list[dict]:
    """Records in the predict stage's format: mostly right, some wrong, some unparsed (null), with
    over-confident label probabilities that favour the gold label more often than not."""
    records = []
    for i in range(n):
        gold = {t: rng.choice(LABELS) for t in TASKS}
        record = {"id": first_id + i, "raw": "..."}
        for t in TASKS:
            record[f"{t}_label"] = gold[t]
            logits = [rng.gauss(0, 3) + (4 * rng.random() if label == gold[t] else 0) for label in LABELS]
            weights = [math.exp(z - max(logits)) for z in logits]
            record[f"p_{t}"] = {label: w / sum(weights) for label, w in zip(LABELS, weights, strict=True)}
            roll = rng.random()
            record[f"pred_{t}"] = gold[t] if roll < 0.6 else None if roll < 0.75 else rng.choice(LABELS)
        records.append(record)
    return records


def _write_predictions(pred_dir: Path, splits: dict[int, list[dict]]) -> Path:
    """``pred_dir/<k>.jsonl`` for each split ``k``; returns ``pred_dir``."""
    pred_dir.mkdir(parents=True, exist_ok=True)
    for k, records in splits.items():
        (pred_dir / f"{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return pred_dir


@pytest.fixture(scope="session")
def prediction_records() -> Callable[[random.Random, int, int], list[dict]]:
    """``prediction_records(rng, n, first_id)``: ``n`` records as the predict stage writes them."""
    return _prediction_records


@pytest.fixture(scope="session")
def write_predictions() -> Callable[[Path, dict[int, list[dict]]], Path]:
    """``write_predictions(pred_dir, {k: records})``: the predict stage's output folder."""
    return _write_predictions


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc repro` of the project as shipped, in a fresh copy (`helpers.project_copy`), once per session: the whole
    DAG on the embedded default. test_pipeline.py checks it; test_remote.py shares it through DVC remotes."""
    from helpers import project_copy, run

    copy = project_copy(tmp_path_factory.mktemp("reproduced") / "repo")
    run(["dvc", "repro"], copy)
    return copy


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """Starting Spark takes seconds, so every test shares this one local session."""
    session = spark_session("local[2]", partitions=2)
    yield session
    session.stop()


def _jpeg(width: int, height: int, colour: tuple[int, int, int] = (200, 170, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _write_mvsa(
    raw_dir: Path, label_lines: list[str], files: dict[str, bytes], newline: str = "\r\n", header: str = mvsa.LABEL_HEADER
) -> Path:
    """``raw_dir/labelResultAll.txt`` (``header``, then ``label_lines``, UTF-8) and ``raw_dir/data/<name>`` files."""
    (raw_dir / mvsa.DATA_DIR).mkdir(parents=True)
    lines = [header, *label_lines]
    (raw_dir / mvsa.LABEL_FILE).write_bytes("".join(line + newline for line in lines).encode("utf-8"))
    for name, content in files.items():
        (raw_dir / mvsa.DATA_DIR / name).write_bytes(content)
    return raw_dir


@pytest.fixture(scope="session")
def jpeg() -> Callable[..., bytes]:
    """``jpeg(width, height, colour=...)``: the bytes of a valid one-colour JPEG."""
    return _jpeg


@pytest.fixture(scope="session")
def write_mvsa() -> Callable[..., Path]:
    """``write_mvsa(raw_dir, label_lines, files, newline="\\r\\n", header=...)``: a raw MVSA folder in the real layout."""
    return _write_mvsa


@pytest.fixture(scope="session")
def llama_sentencepiece() -> Path:
    """LLaVA-1.5's real LLaMA vocabulary as a SentencePiece model (fetched with pip once, then cached)."""
    from llavac.model.llama_vocab import llama_tokenizer_model

    return llama_tokenizer_model()


REAL_SHAPED_TINY = yaml.safe_load((REPO / "params.yaml").read_text())["models"]["tiny-llama"]
"""params.yaml's real-shaped tiny model: LLaVA-1.5-7B's vocabulary and image positions at CPU size."""


@pytest.fixture(scope="session")
def real_shaped_base(tmp_path_factory, llama_sentencepiece) -> Path:
    """A random-init llava-hf model with the real vocabulary and the 7B model's image positions."""
    from llavac.model.build import build_llava

    return build_llava(tmp_path_factory.mktemp("real-shaped") / "base", [], REAL_SHAPED_TINY["build"], seed=0)


SEED_STAGE = """\
import json, time, yaml
print(time.strftime("%H:%M:%S"), "score: start")  # as the project's stages log, which `dvc queue logs` shows
seed = yaml.safe_load(open("params.yaml"))["seed"]
accuracy = 70.0 + seed
block = {"accuracy": accuracy, "accuracy_ci_low": accuracy - 5, "accuracy_ci_high": accuracy + 5, "weighted_f1": accuracy - 1,
         "invalid_rate": 0.0}
json.dump({"n_splits": 2, "n_test_pairs": 40, "multimodal": block, "text": block, "image": block}, open("scores.json", "w"))
print(time.strftime("%H:%M:%S"), "score: done")
"""


@pytest.fixture(scope="session")
def seed_grid(tmp_path_factory) -> Path:
    """A git + DVC repository whose one stage writes scores.json (accuracy 70 + seed), committed with seed 42,
    and three experiments `dvc exp run --queue -S seed=1,2,3` ran from DVC's queue."""
    repo = tmp_path_factory.mktemp("seed-grid")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    dvc = str(Path(sys.executable).parent / "dvc")

    def run(*command: str) -> str:
        return subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    run("git", "init", "-q")
    run(dvc, "init", "-q")
    (repo / "seed_stage.py").write_text(SEED_STAGE)
    (repo / "params.yaml").write_text("seed: 42\nprotocol: cheema\n")
    (repo / "dvc.yaml").write_text(
        f"stages:\n  score:\n    cmd: {sys.executable} seed_stage.py\n    deps: [seed_stage.py]\n    params: [seed]\n"
        "    metrics:\n      - scores.json:\n          cache: false\n")
    run(dvc, "repro", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "pipeline")
    run(dvc, "exp", "run", "--queue", "-S", "seed=1,2,3")
    run(dvc, "queue", "start")
    deadline = time.monotonic() + 240
    while re.search(r"Queued|Running", run(dvc, "queue", "status")) and time.monotonic() < deadline:
        time.sleep(2)
    status = run(dvc, "queue", "status")
    assert status.count("Success") == 3, f"the queue did not run the three experiments:\n{status}"
    return repo
