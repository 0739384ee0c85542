"""From LLaVA-format records to model tensors: square padding, LLaVA's token ids, answer-only labels.

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

from llavac.model.tokens import SentencePieceEncoder, image_prompt_ids
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


BLANK_SIDE = 336
"""Side of the blank image (LLaVA-1.5's input size); being one colour, it gives the same pixels at any size."""


def load_images(records: Sequence[dict[str, Any]], image_folder: Path, background: tuple[int, int, int]) -> list[Image.Image]:
    """Open each record's image (relative to `image_folder`) as RGB, padded to a square; a record whose
    image is None (`prompt.modalities: text`) gets a blank square of `background`."""
    images = []
    for record in records:
        if record["image"] is None:
            images.append(Image.new("RGB", (BLANK_SIDE, BLANK_SIDE), background))
            continue
        with Image.open(image_folder / record["image"]) as image:
            images.append(pad_to_square(image.convert("RGB"), background))
    return images


def message(record: dict[str, Any], role: str) -> str:
    """The value of a single-turn LLaVA record's `human` or `gpt` message (new pairs have no `gpt`)."""
    return next(t["value"] for t in record["conversations"] if t["from"] == role)


class LlavaInputs:
    """Records to model tensors: LLaVA's exact token ids (`tokens.py`) and the processor's pixels.

    The llava-hf processor's tokenizer is not used for ids (it differs from LLaVA's on every record,
    see `tokens.py`); its image processor is, and its image-token id and count.
    """

    def __init__(self, processor: ProcessorMixin, encoder: SentencePieceEncoder) -> None:
        self.processor = processor
        self.encoder = encoder
        self.image_token_id: int = processor.image_token_id
        self.pad_id: int = processor.tokenizer.pad_token_id
        self.background = background_colour(processor)

    def never_generated(self, vocab_size: int) -> list[int]:
        """Ids the model must not produce: the image and pad tokens, and llava-hf's padding rows.

        LLaVA's own model has exactly the tokenizer's vocabulary (32,000 rows); llava-hf adds
        ``<image>``, ``<pad>`` and 62 untrained rows up to 32,064 that greedy decoding could pick.
        """
        return [self.image_token_id, self.pad_id, *range(len(self.processor.tokenizer), vocab_size)]

    def pixel_values(self, records: Sequence[dict[str, Any]], image_folder: Path) -> torch.Tensor:
        images = load_images(records, image_folder, self.background)
        return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

    def n_image_tokens(self, pixel_values: torch.Tensor) -> int:
        """How many positions one image fills: the llava-hf processor's own formula."""
        height, width = pixel_values.shape[-2:]
        patch = self.processor.patch_size
        count = (height // patch) * (width // patch) + self.processor.num_additional_image_tokens
        return count - 1 if self.processor.vision_feature_select_strategy == "default" else count

    def prompt_ids(self, human: str, n_image_tokens: int) -> list[int]:
        """What generation continues: the conversation up to ``ASSISTANT:``, as LLaVA's evaluation builds it."""
        return image_prompt_ids(self.encoder, chat_prompt(human), self.image_token_id, n_image_tokens)

    def training_ids(self, human: str, reply: str, n_image_tokens: int) -> tuple[list[int], list[int]]:
        """Input ids and labels of one record by `preprocess_v1`'s rule: loss on the answer and ``</s>`` only.

        LLaVA masks ``len(ids(prompt + " ")) - 1`` leading positions: the prompt up to ``ASSISTANT: ``
        minus the trailing space, which SentencePiece merges into the answer's first word
        (``▁positive``). It then requires the masked prefix plus the answer and ``</s>`` to cover the
        whole sequence, else it masks everything ("tokenization mismatch"); that is an error here.
        """
        ids = image_prompt_ids(self.encoder, chat_text(human, reply), self.image_token_id, n_image_tokens)
        instruction = image_prompt_ids(self.encoder, chat_prompt(human) + " ", self.image_token_id, n_image_tokens)
        n_masked = len(instruction) - 1
        if ids[:n_masked] != instruction[:n_masked] or ids[-1] != self.encoder.eos_id:
            raise ValueError(
                "tokenization mismatch: the prompt's tokens are not a prefix of prompt + answer; "
                "the answer-only loss mask would be wrong for this tokenizer"
            )
        return ids, [IGNORE_INDEX] * n_masked + ids[n_masked:]


def padded(rows: Sequence[Sequence[int]], value: int, side: str) -> torch.Tensor:
    """Rows of ids padded with `value` to the longest row, on the `side` given (left for generation)."""
    width = max(len(row) for row in rows)
    filler = [[value] * (width - len(row)) for row in rows]
    return torch.tensor([[*f, *row] if side == "left" else [*row, *f] for row, f in zip(rows, filler, strict=True)])


class TrainingCollator:
    """Turns a list of LLaVA records into a right-padded training batch with answer-only labels."""

    def __init__(self, inputs: LlavaInputs, image_folder: Path, max_length: int) -> None:
        self.inputs = inputs
        self.image_folder = image_folder
        self.max_length = max_length

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixel_values = self.inputs.pixel_values(records, self.image_folder)
        n_image = self.inputs.n_image_tokens(pixel_values)
        ids, labels = [], []
        for record in records:
            record_ids, record_labels = self.inputs.training_ids(message(record, "human"), message(record, "gpt"), n_image)
            if len(record_ids) > self.max_length:
                # Truncating would cut the answer (it is at the end) or the image block; neither is sane.
                raise ValueError(
                    f"pair {record['id']}: its training sequence has {len(record_ids)} tokens, above "
                    f"model_max_length {self.max_length}; raise model_max_length in the recipe or shorten the text"
                )
            ids.append(record_ids)
            labels.append(record_labels)
        return {
            "input_ids": padded(ids, self.inputs.pad_id, "right"),
            "attention_mask": padded([[1] * len(row) for row in ids], 0, "right"),
            "labels": padded(labels, IGNORE_INDEX, "right"),
            "pixel_values": pixel_values,
        }


def prompt_batch(inputs: LlavaInputs, records: Sequence[dict[str, Any]], image_folder: Path) -> dict[str, torch.Tensor]:
    """A left-padded generation batch: every row ends exactly where the assistant starts answering."""
    pixel_values = inputs.pixel_values(records, image_folder)
    n_image = inputs.n_image_tokens(pixel_values)
    ids = [inputs.prompt_ids(message(record, "human"), n_image) for record in records]
    return {
        "input_ids": padded(ids, inputs.pad_id, "left"),
        "attention_mask": padded([[1] * len(row) for row in ids], 0, "left"),
        "pixel_values": pixel_values,
    }
