"""Where the base model is and how it is loaded, for built and pretrained models alike.

The `base_model` stage always writes `base.json` naming the model: the built directory itself, or a
hub id / local path of a pretrained llava-hf model (13 GB of weights do not belong in the DVC cache).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration, ProcessorMixin

POINTER = "base.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def write_pointer(base_dir: Path, name_or_path: str) -> None:
    """Record which model `base_dir` stands for."""
    base_dir.mkdir(parents=True, exist_ok=True)
    (base_dir / POINTER).write_text(json.dumps({"name_or_path": name_or_path}, indent=2) + "\n")


def read_pointer(base_dir: Path) -> str:
    """The hub id or path that `base_dir` stands for; a clear error names the stage that writes it."""
    pointer = base_dir / POINTER
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer} is missing: run `dvc repro base_model` first")
    return json.loads(pointer.read_text())["name_or_path"]


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype for a recipe's `precision` (fp32 | bf16 | fp16)."""
    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r} is not one of: {', '.join(DTYPES)}")
    return DTYPES[precision]


def load_base(name_or_path: str, precision: str) -> tuple[LlavaForConditionalGeneration, ProcessorMixin]:
    """Load a llava-hf model and its processor from a hub id or a directory."""
    try:
        model = LlavaForConditionalGeneration.from_pretrained(name_or_path, dtype=torch_dtype(precision))
        processor = AutoProcessor.from_pretrained(name_or_path)
    except OSError as error:
        raise FileNotFoundError(
            f"cannot load the base model {name_or_path!r}: it is neither a model folder seen from "
            f"{Path.cwd()} nor a reachable hub id ({error}). A folder is relative to the repository "
            "root: run from there. A hub id on a machine without network: download it elsewhere "
            f"(`hf download {name_or_path} --local-dir DIR`), copy DIR here and set "
            "models.<model>.pretrained to DIR."
        ) from error
    return model, processor
