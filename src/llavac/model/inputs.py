"""From LLaVA-format records to model tensors: square padding, the chat strings, answer-only labels.

The LLaVA repository does all of this inside one thousand-line file; here each step is a small,
tested function, and the same code serves the tiny model and LLaVA-1.5-7B.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import ProcessorMixin

from llavac.prompt import chat_prompt, chat_text

IGNORE_INDEX = -100


def pad_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Centre `image` on a square canvas of `background` (LLaVA's ``image_aspect_ratio=pad``).

    The CLIP processor would otherwise centre-crop and cut off the sides of wide tweet images.
    """
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def background_colour(processor: ProcessorMixin) -> tuple[int, int, int]:
    """The image processor's mean as 0-255 RGB: (122, 116, 104) for CLIP, as in the LLaVA repository."""
    mean = processor.image_processor.image_mean
    return tuple(int(255 * m) for m in mean)  # type: ignore[return-value]  # LLaVA truncates too


def load_images(records: Sequence[dict[str, Any]], image_folder: Path, background: tuple[int, int, int]) -> list[Image.Image]:
    """Open each record's image (relative to `image_folder`) as RGB, padded to a square."""
    images = []
    for record in records:
        with Image.open(image_folder / record["image"]) as image:
            images.append(pad_to_square(image.convert("RGB"), background))
    return images


def turn(record: dict[str, Any], role: str) -> str:
    """The value of a single-turn LLaVA record's `human` or `gpt` turn (new pairs have no `gpt`)."""
    return next(t["value"] for t in record["conversations"] if t["from"] == role)


def answer_length(tokenizer: Any, human: str, reply: str) -> int:
    """How many tokens the answer and ``</s>`` take at the end of the tokenised training string.

    Computed as tokens(prompt + answer) minus tokens(prompt). That is only right when the prompt's
    tokens are a prefix of the full string's tokens; a tokenizer for which that fails would silently
    train on the wrong tokens (LLaVA's "tokenization mismatch"), so it is an error here.
    """
    full = tokenizer(chat_text(human, reply), add_special_tokens=True)["input_ids"]
    prompt = tokenizer(chat_prompt(human), add_special_tokens=True)["input_ids"]
    if full[: len(prompt)] != prompt:
        raise ValueError(
            "tokenization mismatch: the prompt's tokens are not a prefix of prompt+answer; "
            "the answer-only loss mask would be wrong for this tokenizer"
        )
    return len(full) - len(prompt)


def answer_only_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_lengths: Sequence[int]) -> torch.Tensor:
    """Labels that keep the last `answer_lengths[i]` real tokens of row i and mask everything else.

    Rows are right-padded, so a row's answer ends at its last attended position.
    """
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    ends = attention_mask.sum(dim=1).tolist()
    for row, (end, n_answer) in enumerate(zip(ends, answer_lengths, strict=True)):
        labels[row, end - n_answer : end] = input_ids[row, end - n_answer : end]
    return labels


class TrainingCollator:
    """Turns a list of LLaVA records into a right-padded training batch with answer-only labels."""

    def __init__(self, processor: ProcessorMixin, image_folder: Path, max_length: int) -> None:
        self.processor = processor
        self.image_folder = image_folder
        self.max_length = max_length
        self.background = background_colour(processor)

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pairs = [(turn(r, "human"), turn(r, "gpt")) for r in records]
        texts = [chat_text(human, reply) for human, reply in pairs]
        images = load_images(records, self.image_folder, self.background)
        self.processor.tokenizer.padding_side = "right"
        batch = self.processor(images=images, text=texts, padding="longest", return_tensors="pt")
        if batch["input_ids"].shape[1] > self.max_length:
            # Truncating would cut the answer (it is at the end) or the image block; neither is sane.
            raise ValueError(
                f"a training sequence has {batch['input_ids'].shape[1]} tokens, above model_max_length "
                f"{self.max_length}; raise model_max_length in the recipe or shorten the texts"
            )
        lengths = [answer_length(self.processor.tokenizer, human, reply) for human, reply in pairs]
        batch["labels"] = answer_only_labels(batch["input_ids"], batch["attention_mask"], lengths)
        return dict(batch)


def prompt_batch(processor: ProcessorMixin, records: Sequence[dict[str, Any]], image_folder: Path) -> dict[str, torch.Tensor]:
    """A left-padded generation batch: every row ends exactly where the assistant starts answering."""
    images = load_images(records, image_folder, background_colour(processor))
    texts = [chat_prompt(turn(r, "human")) for r in records]
    processor.tokenizer.padding_side = "left"
    return dict(processor(images=images, text=texts, padding="longest", return_tensors="pt"))
