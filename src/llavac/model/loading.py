"""Where the base model is and how it is loaded, for built and pretrained models alike.

The `base_model` stage always writes `base.json` naming the model: the built directory itself, or a
hub id / local path of a pretrained llava-hf model (13 GB of weights do not belong in the DVC cache).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoConfig, AutoImageProcessor, AutoProcessor, LlavaConfig, LlavaForConditionalGeneration, ProcessorMixin,
)
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER
from transformers.utils import cached_file

from llavac.cpu_numerics import route_cpu_convolutions_through_aten
from llavac.files import write_json
from llavac.model.inputs import LlavaInputs
from llavac.model.tokens import SENTENCEPIECE_FILE, SentencePieceEncoder

POINTER = "base.json"
IMAGE_BACKEND = "pil"
"""LLaVA's image processor: CLIP's PIL/NumPy one. Left to choose, transformers 5 takes the torchvision
("fast") one wherever torchvision is installed (most GPU nodes), whose resize gives other pixels."""
CLS_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0}
"""Positions a vision tower adds to its patches: CLIP's class token; SigLIP has none."""
IMAGE_COUNT_FIELDS = ("patch_size", "num_additional_image_tokens", "vision_feature_select_strategy")
"""What the llava-hf processor counts one image's positions from; older hub snapshots lack some."""
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
    """Load a llava-hf model from a hub id or a directory, CPU convolutions through ATen
    (`llavac.cpu_numerics.route_cpu_convolutions_through_aten`)."""
    route_cpu_convolutions_through_aten()
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


def model_config(name_or_path: str) -> LlavaConfig | None:
    """The llava-hf config of a model folder or hub id; `None` for a folder without one (an adapter)."""
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError):
        return None


def complete_image_count(processor: ProcessorMixin, name_or_path: str, config: LlavaConfig | None) -> None:
    """Fill the processor's image-count fields that its saved config lacks from the model's `config`.

    A missing `patch_size` would fail later as a TypeError, and a missing `num_additional_image_tokens`
    silently defaults to 0: one position short of CLIP's tower (its class token), which the model then
    refuses ("Image features and image tokens do not match"). So they come from the vision config, or
    one clear error says which are missing.
    """
    saved = type(processor).get_processor_dict(name_or_path)[0]
    missing = [field for field in IMAGE_COUNT_FIELDS if saved.get(field) is None]
    if not missing:
        return
    if config is None or config.vision_config.model_type not in CLS_TOKENS:
        why = ("there is no model config to take them from" if config is None else
               f"its vision tower {config.vision_config.model_type!r} is not one of: {', '.join(CLS_TOKENS)}")
        raise ValueError(
            f"{name_or_path}: the processor config lacks {', '.join(missing)}, needed to count an image's positions, "
            f"and {why}; add them to processor_config.json (patch_size: the vision tower's; "
            "num_additional_image_tokens: 1 for CLIP's class token; vision_feature_select_strategy: the model "
            "config's, \"default\" for LLaVA-1.5)"
        )
    derived = {
        "patch_size": config.vision_config.patch_size,
        "num_additional_image_tokens": CLS_TOKENS[config.vision_config.model_type],
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
    }
    for field in missing:
        setattr(processor, field, derived[field])


def sequence_limit(model_max_length: int, config: LlavaConfig | None) -> int:
    """The most positions one sequence (prompt, image, answer) may take: the tokenizer's `model_max_length`
    (the recipe's: LLaVA's 2,048 at 7B) and the language model's `max_position_embeddings`, whichever is less."""
    limits = [model_max_length] if model_max_length < VERY_LARGE_INTEGER else []
    if config is not None:
        limits.append(config.text_config.max_position_embeddings)
    if not limits:
        raise ValueError("no sequence limit is known: give the model's config or the tokenizer's model_max_length")
    return min(limits)


def load_inputs(name_or_path: str, config: LlavaConfig | None = None, model_max_length: int | None = None) -> LlavaInputs:
    """The processor of a model folder, hub id or adapter, with LLaVA's tokenization: SentencePiece itself.

    The `tokenizer.model` beside the processor (llava-hf ships one; built models and adapters copy it)
    is what LLaVA's slow tokenizer runs; a model without one cannot be fed LLaVA's ids. The image
    processor is CLIP's PIL one (`IMAGE_BACKEND`), as in the LLaVA repository, whatever is installed.
    `config` is the model's (read from `name_or_path` when not given; an adapter folder has none, so
    pass the loaded model's); `model_max_length` (training: the recipe's) replaces the tokenizer's and
    is saved with it, so prediction keeps training's limit.
    """
    processor = AutoProcessor.from_pretrained(name_or_path)
    processor.image_processor = AutoImageProcessor.from_pretrained(name_or_path, backend=IMAGE_BACKEND)
    config = config or model_config(name_or_path)
    complete_image_count(processor, name_or_path, config)
    if model_max_length is not None:
        processor.tokenizer.model_max_length = model_max_length
    found = cached_file(name_or_path, SENTENCEPIECE_FILE, _raise_exceptions_for_missing_entries=False)
    if not found:
        raise FileNotFoundError(
            f"{name_or_path} has no {SENTENCEPIECE_FILE}: LLaVA tokenizes with SentencePiece, so the model "
            "must ship its SentencePiece vocabulary (llava-hf models and the built ones do)"
        )
    return LlavaInputs(processor, SentencePieceEncoder(Path(found)), sequence_limit(processor.tokenizer.model_max_length, config))


def save_inputs(inputs: LlavaInputs, out_dir: Path) -> None:
    """Write the processor and the SentencePiece model, so `out_dir` reloads alike."""
    inputs.processor.save_pretrained(str(out_dir))
    shutil.copyfile(inputs.encoder.model_file, out_dir / SENTENCEPIECE_FILE)
