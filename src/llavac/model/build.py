"""Build a random-init llava-hf model directory from an architecture spec.

The embedded default has no weights to download, so the `base_model` stage builds a small
`LlavaForConditionalGeneration` (CLIP-ViT vision tower + Llama language model) with either a BPE
tokenizer trained on the dataset's own texts and the prompt (`tokenizer: bpe`) or the real LLaMA /
Vicuna SentencePiece vocabulary of LLaVA-1.5 (`tokenizer: llama`, see `llama_vocab.py`), which with a
336-pixel, patch-14 vision side gives a "real-shaped" tiny model: the 7B model's exact ids and image
positions at a size a CPU trains in seconds. The result is an ordinary llava-hf directory:
everything downstream loads it exactly as it loads `llava-hf/llava-1.5-7b-hf`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlamaTokenizer,
    LlavaProcessor,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from llavac.labels import LABELS
from llavac.model.llama_vocab import llama_tokenizer_model
from llavac.model.tokens import SENTENCEPIECE_FILE
from llavac.prompt import EOS, IMAGE_TOKEN, PROMPT_TEMPLATE, SYSTEM, chat_prompt

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SPECIAL_TOKENS = ("<unk>", "<s>", EOS, "<pad>", IMAGE_TOKEN)
TOKENIZERS = ("bpe", "llama")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (no unknown characters) that prepends ``<s>`` like Llama's.

    Byte-level pre-tokenisation splits before spaces, so the prompt's tokens are a prefix of the
    prompt+answer tokens: the property answer-only masking relies on.
    """
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", core.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token=EOS,
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )


def llama_tokenizer(sentencepiece_file: Path) -> LlamaTokenizer:
    """LLaVA-1.5's tokenizer as llava-hf ships it: the LLaMA vocabulary + ``<image>`` 32000 + ``<pad>`` 32001."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(sentencepiece_file, Path(folder) / SENTENCEPIECE_FILE)
        tokenizer = LlamaTokenizer.from_pretrained(folder, legacy=False, extra_special_tokens={"image_token": IMAGE_TOKEN})
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def tokenizer_corpus(texts: Iterable[str]) -> list[str]:
    """The tweets plus every fixed string the model will read or write (prompt, system, answers)."""
    fixed = [SYSTEM, PROMPT_TEMPLATE, chat_prompt(PROMPT_TEMPLATE)] + [
        f"{a}, {b}, {c}{EOS}" for a in LABELS for b in LABELS for c in LABELS
    ]
    return fixed * 20 + list(texts)


def build_llava(
    out_dir: Path,
    texts: Iterable[str],
    architecture: dict[str, Any],
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> Path:
    """Write a random-init llava-hf model + processor to `out_dir` and return it.

    `architecture` holds `vision` (CLIPVisionConfig fields incl. image_size, patch_size), `text`
    (LlamaConfig fields), `vocab_size` (the embedding size; the tokenizer may use fewer, as llava-hf
    pads its 32002 tokens to 32064) and optionally `tokenizer` (`bpe`, the default, or `llama`); the
    image-token count follows from the vision side.
    `dtype` and `device` only matter at 7B scale, where initialising on the GPU in bf16 takes
    seconds instead of minutes.
    """
    torch.manual_seed(seed)
    kind = architecture.get("tokenizer", "bpe")
    if kind not in TOKENIZERS:
        raise ValueError(f"build.tokenizer {kind!r} is not one of: {', '.join(TOKENIZERS)}")
    sentencepiece_file = llama_tokenizer_model() if kind == "llama" else None
    tokenizer: PreTrainedTokenizerBase = (
        llama_tokenizer(sentencepiece_file) if sentencepiece_file else train_tokenizer(tokenizer_corpus(texts), architecture["vocab_size"])
    )
    vision = CLIPVisionConfig(**architecture["vision"])
    image_side = vision.image_size
    n_image_tokens = (image_side // vision.patch_size) ** 2
    text = LlamaConfig(
        **architecture["text"],
        vocab_size=max(len(tokenizer), architecture["vocab_size"]),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=n_image_tokens,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_side},
        crop_size={"height": image_side, "width": image_side},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    if sentencepiece_file:  # llava-hf ships it too: it is what makes the ids LLaVA's (tokens.py)
        shutil.copyfile(sentencepiece_file, out_dir / SENTENCEPIECE_FILE)
    return out_dir
