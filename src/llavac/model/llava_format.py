"""The LLaVA repository's checkpoint format, and its exact conversion to a llava-hf model.

The authors' code (`train.backend: llava-repo`) reads and writes its own format: a `LlavaLlamaForCausalLM`
folder (config `model_type: llava_llama` with the `mm_*` keys; weights `model.layers.*`,
`model.embed_tokens`, `lm_head`, `model.mm_projector.{0,2}.*`; a SentencePiece `tokenizer.model`) whose
CLIP tower is a separate folder or hub id named by `mm_vision_tower`. Everything else in this project
runs on llava-hf's `LlavaForConditionalGeneration`. This module writes the former and converts it into
the latter as transformers' `convert_llava_weights_to_hf.py` does: the same weights under llava-hf's
module names, ``<image>`` and ``<pad>`` appended to the vocabulary, the embedding and `lm_head` padded to
a multiple of 64 rows with samples around the mean embedding (rows no real token uses, never generated:
`LlavaInputs.never_generated`).

It never imports the `llava` package (which needs transformers 4.37): both formats are written here
from plain tensors, module by module, so neither depends on how a transformers version names its keys.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlamaTokenizer,
    LlavaProcessor,
)

from llavac.model.tokens import SENTENCEPIECE_FILE
from llavac.prompt import IMAGE_TOKEN

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
EMBEDDING_MULTIPLE = 64
"""llava-hf pads the vocabulary to a multiple of 64 rows (32,002 tokens -> 32,064)."""
PROJECTOR_PREFIX = "model.mm_projector."
VISION_TOWER_PREFIX = "model.vision_tower."
LANGUAGE_MODEL_PREFIX = "model."
LLAMA_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "max_position_embeddings", "rms_norm_eps", "hidden_act", "initializer_range", "attention_bias",
)


def sentencepiece_size(sentencepiece_file: Path) -> int:
    """How many pieces a SentencePiece model has (LLaVA's vocabulary: its embedding has exactly these rows)."""
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_file)).get_piece_size()


def llama_tokenizer(sentencepiece_file: Path) -> LlamaTokenizer:
    """llava-hf's tokenizer for a SentencePiece vocabulary: the pieces, then ``<image>`` and ``<pad>``."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(sentencepiece_file, Path(folder) / SENTENCEPIECE_FILE)
        tokenizer = LlamaTokenizer.from_pretrained(folder, legacy=False, extra_special_tokens={"image_token": IMAGE_TOKEN})
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def slow_tokenizer_config(model_max_length: int) -> dict[str, Any]:
    """`tokenizer_config.json` for LLaVA's `AutoTokenizer(use_fast=False)`: Vicuna-1.5's slow LlamaTokenizer.

    No pad token: LLaVA's training sets it to the unknown token itself.
    """
    return {
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": None, "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "model_max_length": model_max_length, "clean_up_tokenization_spaces": False, "sp_model_kwargs": {},
    }


def llava_config(text: LlamaConfig, vision_tower: str, mm_hidden_size: int) -> dict[str, Any]:
    """LLaVA-1.5's `config.json` for a Llama language model and a CLIP tower (the task-LoRA settings)."""
    return {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        **{field: getattr(text, field) for field in LLAMA_FIELDS},
        "rope_theta": text.rope_parameters["rope_theta"],
        "vocab_size": text.vocab_size,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "mm_vision_tower": vision_tower,
        "mm_hidden_size": mm_hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "flat",
        "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "use_mm_proj": True,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "tokenizer_model_max_length": text.max_position_embeddings,
    }


def write_llava_model(
    out_dir: Path, language_model: dict[str, torch.Tensor], projector: dict[str, torch.Tensor],
    config: dict[str, Any], sentencepiece_file: Path,
) -> Path:
    """A `LlavaLlamaForCausalLM` folder: config, weights under LLaVA's names, LLaVA's slow tokenizer.

    `language_model` has `LlamaForCausalLM`'s keys (`model.layers.*`, `lm_head.weight`), `projector`
    the `nn.Sequential` keys of LLaVA's `mlp2x_gelu` (`0.weight`, `2.bias`, ...).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {**language_model, **{PROJECTOR_PREFIX + key: value for key, value in projector.items()}}
    save_file({k: v.contiguous() for k, v in weights.items()}, out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(sentencepiece_file, out_dir / SENTENCEPIECE_FILE)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(slow_tokenizer_config(config["tokenizer_model_max_length"]), indent=2) + "\n")
    return out_dir


def write_clip_tower(tower: CLIPVisionModel, out_dir: Path) -> Path:
    """A CLIP vision tower folder as the hub's `openai/clip-vit-*` ones are: weights under `vision_model.*`.

    transformers 5 would save the keys without that prefix, which LLaVA's transformers 4.37 skips with
    no more than a warning (leaving a random tower); this layout loads in both.
    """
    tower.config.save_pretrained(out_dir)
    weights = {"vision_model." + key: value.contiguous() for key, value in tower.state_dict().items()}
    save_file(weights, out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    return out_dir


def read_llava_config(llava_dir: Path) -> dict[str, Any]:
    """A LLaVA-format model's `config.json`."""
    return json.loads((llava_dir / CONFIG_FILE).read_text())


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: `model.safetensors`, `pytorch_model.bin`, or their shards (via the index file)."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        files = [folder / single] if (folder / single).is_file() else []
        if (folder / index).is_file():
            files = [folder / name for name in sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))]
        if files:
            state: dict[str, torch.Tensor] = {}
            for file in files:
                state.update(load_file(file) if file.suffix == ".safetensors" else torch.load(file, map_location="cpu", weights_only=True))
            return state
    raise FileNotFoundError(f"{folder} holds no model weights (model.safetensors or pytorch_model.bin, sharded or not)")


def padded_rows(weight: torch.Tensor, rows: int, generator: torch.Generator) -> torch.Tensor:
    """`weight` with rows appended up to `rows`: samples around the mean row, as llava-hf's conversion adds them.

    The conversion samples from a normal with the rows' mean and 1e-5 times their covariance; the
    diagonal of that covariance is used here (the new rows are never read as tokens: `<image>` is
    replaced by image features, `<pad>` is masked, the rest is never generated).
    """
    extra = rows - weight.shape[0]
    mean, std = weight.float().mean(0), weight.float().std(0) * 1e-5**0.5
    sampled = mean + std * torch.randn(extra, weight.shape[1], generator=generator)
    return torch.cat([weight, sampled.to(weight.dtype)])


def hf_vocab_size(n_pieces: int) -> int:
    """The llava-hf embedding size: the pieces, `<image>`, `<pad>`, rounded up to a multiple of 64."""
    return -(-(n_pieces + 2) // EMBEDDING_MULTIPLE) * EMBEDDING_MULTIPLE


def hf_config(config: dict[str, Any], n_pieces: int, tower: CLIPVisionModel) -> LlavaConfig:
    """llava-hf's config for a LLaVA config: `<image>` and `<pad>` are the two ids after the pieces."""
    text = LlamaConfig(
        **{field: config[field] for field in LLAMA_FIELDS if field in config},
        rope_parameters={"rope_type": "default", "rope_theta": config.get("rope_theta", 10000.0)},
        vocab_size=hf_vocab_size(n_pieces), bos_token_id=1, eos_token_id=2, pad_token_id=n_pieces + 1,
        tie_word_embeddings=False,
    )
    select = {"patch": "default", "cls_patch": "full"}[config.get("mm_vision_select_feature", "patch")]
    vision = tower.config
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=n_pieces,
        image_seq_length=(vision.image_size // vision.patch_size) ** 2 + (select == "full"),
        vision_feature_layer=config["mm_vision_select_layer"], vision_feature_select_strategy=select,
        projector_hidden_act="gelu",
    )


def convert_llava_model(llava_dir: Path, out_dir: Path, vision_tower: str | None = None, seed: int = 0) -> Path:
    """Write the llava-hf conversion of the LLaVA-format model in `llava_dir` to `out_dir`; return `out_dir`.

    The CLIP tower comes from `vision_tower` or the config's `mm_vision_tower` (a folder, or a hub id),
    as in the LLaVA repository, which never reads tower weights stored in the checkpoint itself.
    """
    config = read_llava_config(llava_dir)
    if config.get("model_type") != "llava_llama" or config.get("mm_projector_type") != "mlp2x_gelu":
        raise ValueError(
            f"{llava_dir} is not a LLaVA-1.5 checkpoint (config model_type {config.get('model_type')!r}, "
            f"mm_projector_type {config.get('mm_projector_type')!r}; expected 'llava_llama' and 'mlp2x_gelu')"
        )
    sentencepiece_file = llava_dir / SENTENCEPIECE_FILE
    if not sentencepiece_file.is_file():
        raise FileNotFoundError(f"{llava_dir} has no {SENTENCEPIECE_FILE}: LLaVA's slow tokenizer needs it")
    tower_name = vision_tower or config["mm_vision_tower"]
    tower = CLIPVisionModel.from_pretrained(tower_name, dtype=torch.float32)
    n_pieces = sentencepiece_size(sentencepiece_file)
    hf = hf_config(config, n_pieces, tower)
    state = read_state_dict(llava_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(hf)
    language = {k.removeprefix(LANGUAGE_MODEL_PREFIX): v for k, v in state.items()
                if k.startswith(LANGUAGE_MODEL_PREFIX) and not k.startswith((PROJECTOR_PREFIX, VISION_TOWER_PREFIX))
                and not k.endswith("rotary_emb.inv_freq")}  # a buffer older transformers saved
    rows = hf.text_config.vocab_size
    language["embed_tokens.weight"] = padded_rows(language["embed_tokens.weight"], rows, generator)
    projector = {k.removeprefix(PROJECTOR_PREFIX): v for k, v in state.items() if k.startswith(PROJECTOR_PREFIX)}
    model.model.language_model.load_state_dict(language, strict=True, assign=True)
    model.lm_head.load_state_dict({"weight": padded_rows(state["lm_head.weight"], rows, generator)}, strict=True, assign=True)
    model.model.multi_modal_projector.load_state_dict(
        {"linear_1." + k[2:] if k.startswith("0.") else "linear_2." + k[2:]: v for k, v in projector.items()},
        strict=True, assign=True,
    )
    model.model.vision_tower.load_state_dict(tower.state_dict(), strict=True, assign=True)
    model.generation_config.pad_token_id = hf.text_config.pad_token_id
    model.generation_config.eos_token_id = 2
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    hf_processor(sentencepiece_file, tower_name, hf).save_pretrained(out_dir)
    shutil.copyfile(sentencepiece_file, out_dir / SENTENCEPIECE_FILE)
    return out_dir


def hf_processor(sentencepiece_file: Path, tower_name: str, config: LlavaConfig) -> LlavaProcessor:
    """llava-hf's processor: the tower's CLIP image processor and the SentencePiece vocabulary + `<image>`, `<pad>`."""
    return LlavaProcessor(
        image_processor=CLIPImageProcessorPil.from_pretrained(tower_name),
        tokenizer=llama_tokenizer(sentencepiece_file),
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
    )
