"""Build a random-init LLaVA-1.5 in the LLaVA repository's format, and its llava-hf conversion.

The embedded default has no weights to download, so the `base_model` stage builds a small LLaVA-1.5
(CLIP-ViT vision tower + `mlp2x_gelu` projector + Llama language model) with either a SentencePiece BPE
vocabulary trained on the dataset's own texts and the prompt (`tokenizer: trained`) or the real LLaMA /
Vicuna vocabulary of LLaVA-1.5 (`tokenizer: llama`, see `llama_vocab.py`), which with a 336-pixel,
patch-14 vision side gives a "real-shaped" tiny model: the 7B model's exact ids and image positions at
a size a CPU trains in seconds. It is written twice, with the same weights: in the LLaVA repository's
own format (what `train.backend: llava-repo` trains, as `liuhaotian/llava-v1.5-7b`) and as its llava-hf
conversion (what everything else loads, as `llava-hf/llava-1.5-7b-hf`); see `llava_format.py`.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece
import torch
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from llavac.labels import LABELS
from llavac.model.llama_vocab import llama_tokenizer_model
from llavac.model.llava_format import convert_llava_model, llava_config, write_clip_tower, write_llava_model
from llavac.model.tokens import SENTENCEPIECE_FILE
from llavac.prompt import PROMPT_TEMPLATE, SYSTEM, chat_prompt

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TOKENIZERS = ("trained", "llama")
LLAVA_DIR = "llava"
"""The LLaVA-format model inside a built base folder; its CLIP tower is `llava/vision_tower`."""
HF_DIR = "llava-hf"


def train_sentencepiece(texts: Iterable[str], vocab_size: int, out_file: Path) -> Path:
    """A SentencePiece BPE vocabulary with the LLaMA tokenizer's settings, trained on `texts`.

    unk 0, ``<s>`` 1, ``</s>`` 2, no pad id, byte fallback (no unknown characters), digits split, the
    dummy-prefix ``▁`` and no whitespace normalisation: what LLaVA's slow tokenizer (and `tokens.py`)
    expect of LLaMA's vocabulary, so the tiny model's ids follow exactly the 7B model's rules.
    """
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)), model_writer=model, model_type="bpe", vocab_size=vocab_size,
            byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
            allow_whitespace_only_pieces=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=True, character_coverage=1.0, num_threads=1, minloglevel=2,
        )
    except RuntimeError as error:  # e.g. more pieces asked for than the texts allow
        reason = str(error).rsplit("] ", 1)[-1]
        raise ValueError(f"build.vocab_size {vocab_size} cannot be trained on these texts: {reason}") from error
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(model.getvalue())
    return out_file


def tokenizer_corpus(texts: Iterable[str]) -> list[str]:
    """The tweets plus every fixed string the model will read or write (prompt, system, answers)."""
    fixed = [SYSTEM, PROMPT_TEMPLATE, chat_prompt(PROMPT_TEMPLATE)] + [
        f"{a}, {b}, {c}" for a in LABELS for b in LABELS for c in LABELS
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
    """Write a random-init LLaVA-1.5 to `out_dir/llava` (LLaVA's format) and `out_dir/llava-hf`; return the latter.

    `architecture` holds `vision` (CLIPVisionConfig fields incl. image_size, patch_size; LLaVA reads
    hidden layer -2, so at least 2 layers), `text` (LlamaConfig fields), `tokenizer` (`trained` or
    `llama`) and, for `trained`, `vocab_size` (its pieces). Every weight is drawn as LLaVA's code
    draws it: the Llama and CLIP models' own initialisation, PyTorch's for the projector's layers.
    `dtype` and `device` only matter at 7B scale, where initialising on the GPU in bf16 takes
    seconds instead of minutes.
    """
    kind = architecture.get("tokenizer", "trained")
    if kind not in TOKENIZERS:
        raise ValueError(f"build.tokenizer {kind!r} is not one of: {', '.join(TOKENIZERS)}")
    torch.manual_seed(seed)
    llava_dir = out_dir / LLAVA_DIR
    tower_dir = llava_dir / "vision_tower"
    scratch = tempfile.TemporaryDirectory()
    sentencepiece_file = (
        llama_tokenizer_model() if kind == "llama"
        else train_sentencepiece(tokenizer_corpus(texts), architecture["vocab_size"], Path(scratch.name) / SENTENCEPIECE_FILE)
    )
    vision = CLIPVisionConfig(**architecture["vision"])
    with torch.device(device):
        tower = CLIPVisionModel(vision).to(dtype)
        text = LlamaConfig(**architecture["text"], vocab_size=sentencepiece.SentencePieceProcessor(
            model_file=str(sentencepiece_file)).get_piece_size(), bos_token_id=1, eos_token_id=2, pad_token_id=None)
        language_model = LlamaForCausalLM(text).to(dtype)
        projector = torch.nn.Sequential(
            torch.nn.Linear(vision.hidden_size, text.hidden_size), torch.nn.GELU(), torch.nn.Linear(text.hidden_size, text.hidden_size)
        ).to(dtype)
    write_clip_tower(tower, tower_dir)
    side = vision.image_size
    CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                          image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(tower_dir)
    write_llava_model(llava_dir, language_model.state_dict(), projector.state_dict(),
                      llava_config(text, str(tower_dir), vision.hidden_size), sentencepiece_file)
    scratch.cleanup()
    return convert_llava_model(llava_dir, out_dir / HF_DIR, seed=seed)
