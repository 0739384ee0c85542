"""Where the base model is and how it is loaded, for built and pretrained models alike.

The `base_model` stage always writes `base.json` naming the model: the built directory itself, or a
hub id / local path of a pretrained llava-hf model (13 GB of weights do not belong in the DVC cache).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration
from transformers.utils import cached_file

from llavac.files import write_json
from llavac.model.inputs import LlavaInputs
from llavac.model.tokens import SENTENCEPIECE_FILE, SentencePieceEncoder

POINTER = "base.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def write_pointer(base_dir: Path, name_or_path: str, llava_model: str | None, vision_tower: str | None) -> None:
    """Record which model `base_dir` stands for: llava-hf's, and the same weights in LLaVA's own format.

    `llava_model` and `vision_tower` (hub ids or folders) are what `train.backend: llava-repo` trains;
    `None` where the model block names no LLaVA-format checkpoint.
    """
    base_dir.mkdir(parents=True, exist_ok=True)
    write_json(base_dir / POINTER, {"name_or_path": name_or_path, "llava_model": llava_model, "vision_tower": vision_tower})


def read_pointer(base_dir: Path, key: str = "name_or_path") -> str | None:
    """The llava-hf model (or, with `key`, the LLaVA-format model or its vision tower) that `base_dir` stands for.

    A clear error names the stage that writes the pointer.
    """
    pointer = base_dir / POINTER
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer} is missing: run `dvc repro base_model` first")
    return json.loads(pointer.read_text()).get(key)


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype for a recipe's `precision` (fp32 | bf16 | fp16)."""
    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r} is not one of: {', '.join(DTYPES)}")
    return DTYPES[precision]


def load_base(name_or_path: str, precision: str) -> LlavaForConditionalGeneration:
    """Load a llava-hf model from a hub id or a directory."""
    try:
        return LlavaForConditionalGeneration.from_pretrained(name_or_path, dtype=torch_dtype(precision))
    except OSError as error:
        raise FileNotFoundError(
            f"cannot load the base model {name_or_path!r}: it is neither a model folder seen from "
            f"{Path.cwd()} nor a reachable hub id ({error}). A folder is relative to the repository "
            "root: run from there. A hub id on a machine without network: download it elsewhere "
            f"(`hf download {name_or_path} --local-dir DIR`), copy DIR here and set "
            "models.<model>.pretrained to DIR."
        ) from error


def load_inputs(name_or_path: str) -> LlavaInputs:
    """The processor of a model folder, hub id or adapter, with LLaVA's tokenization: SentencePiece itself.

    The `tokenizer.model` beside the processor (llava-hf ships one; built models and adapters copy it)
    is what LLaVA's slow tokenizer runs; a model without one cannot be fed LLaVA's ids.
    """
    processor = AutoProcessor.from_pretrained(name_or_path)
    found = cached_file(name_or_path, SENTENCEPIECE_FILE, _raise_exceptions_for_missing_entries=False)
    if not found:
        raise FileNotFoundError(
            f"{name_or_path} has no {SENTENCEPIECE_FILE}: LLaVA tokenizes with SentencePiece, so the model "
            "must ship its SentencePiece vocabulary (llava-hf models and the built ones do)"
        )
    return LlavaInputs(processor, SentencePieceEncoder(Path(found)))


def save_inputs(inputs: LlavaInputs, out_dir: Path) -> None:
    """Write the processor and the SentencePiece model, so `out_dir` reloads alike."""
    inputs.processor.save_pretrained(str(out_dir))
    shutil.copyfile(inputs.encoder.model_file, out_dir / SENTENCEPIECE_FILE)
