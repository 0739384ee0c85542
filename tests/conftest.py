"""Shared fixtures: one Spark session for the whole test run, and writers of raw MVSA-Single folders."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image
from pyspark.sql import SparkSession

from llavac.data import mvsa
from llavac.data.preprocess import spark_session


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


def _write_mvsa(raw_dir: Path, label_lines: list[str], files: dict[str, bytes], newline: str = "\r\n") -> Path:
    """``raw_dir/labelResultAll.txt`` (the header, then ``label_lines``) and ``raw_dir/data/<name>`` files."""
    (raw_dir / mvsa.DATA_DIR).mkdir(parents=True)
    lines = [mvsa.LABEL_HEADER, *label_lines]
    (raw_dir / mvsa.LABEL_FILE).write_bytes("".join(line + newline for line in lines).encode("ascii"))
    for name, content in files.items():
        (raw_dir / mvsa.DATA_DIR / name).write_bytes(content)
    return raw_dir


@pytest.fixture(scope="session")
def jpeg() -> Callable[..., bytes]:
    """``jpeg(width, height, colour=...)``: the bytes of a valid one-colour JPEG."""
    return _jpeg


@pytest.fixture(scope="session")
def write_mvsa() -> Callable[..., Path]:
    """``write_mvsa(raw_dir, label_lines, files, newline="\\r\\n")``: a raw MVSA-Single folder in the real layout."""
    return _write_mvsa


@pytest.fixture(scope="session")
def llama_sentencepiece() -> Path:
    """LLaVA-1.5's real LLaMA vocabulary as a SentencePiece model (fetched with pip once, then cached)."""
    from llavac.model.llama_vocab import llama_tokenizer_model

    return llama_tokenizer_model()


REAL_SHAPED_TINY = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["models"]["tiny-llama"]
"""params.yaml's real-shaped tiny model: LLaVA-1.5-7B's vocabulary and image positions at CPU size."""


@pytest.fixture(scope="session")
def real_shaped_base(tmp_path_factory, llama_sentencepiece) -> Path:
    """A random-init llava-hf model with the real vocabulary and the 7B model's image positions."""
    from llavac.model.build import build_llava

    return build_llava(tmp_path_factory.mktemp("real-shaped") / "base", [], REAL_SHAPED_TINY["build"], seed=0)
