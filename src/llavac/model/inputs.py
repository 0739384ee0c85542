"""From LLaVA-format records to model tensors: square padding, LLaVA's token ids, answer-only labels.

The LLaVA repository does all of this inside one thousand-line file; here each step is a small,
tested function, and the same code serves the tiny model and LLaVA-1.5-7B.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from transformers import ProcessorMixin

from llavac.data.mvsa import open_image
from llavac.model.tokens import SentencePieceEncoder, image_prompt_ids
from llavac.labels import LABELS
from llavac.prompt import answer, chat_prompt, chat_text, split_human_turn

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


LARGE_SIDE = 4096
"""The longest side an image is padded at as it is. Twitter serves tweets' images resized, so MVSA's are expected to
be well below it and padded and processed exactly as LLaVA does (not checked here on the real data: `pairs.parquet`
records each image's width and height, where a run on it can confirm it). A longer image (a
camera photo, a 2 x 20,000 strip) would make a canvas of its longer side squared (1.2 GB of RGB for that strip),
so it is first reduced (`Image.thumbnail`, bicubic) to fit `REDUCED_SIDE`: the processor shrinks it to 336
pixels anyway."""
REDUCED_SIDE = 4 * BLANK_SIDE
"""The side an image longer than `LARGE_SIDE` is reduced to fit, still four times the processor's input."""


def open_upright(path: Path) -> Image.Image:
    """The image at `path` as RGB, turned as its EXIF orientation says (`ImageOps.exif_transpose`), and
    reduced to fit `REDUCED_SIDE` when its longer side exceeds `LARGE_SIDE`.

    An image without an orientation tag (every MVSA image: Twitter strips EXIF) is not turned, and one no
    longer than `LARGE_SIDE` is not resized, so their pixels are the ones LLaVA's ``Image.open(...).convert("RGB")``
    gives. Raises what `llavac.data.mvsa.open_image` raises (a file that is not an image, or one above its
    pixel limit).
    """
    with open_image(path) as image:
        if max(image.size) > LARGE_SIDE:
            image.thumbnail((REDUCED_SIDE, REDUCED_SIDE), Image.Resampling.BICUBIC)  # a JPEG is decoded reduced
        return ImageOps.exif_transpose(image).convert("RGB")


def load_images(records: Sequence[dict[str, Any]], image_folder: Path, background: tuple[int, int, int]) -> list[Image.Image]:
    """Open each record's image (relative to `image_folder`) upright as RGB (`open_upright`), padded to a
    square; a record whose image is None (`prompt.modalities: text`) gets a blank square of `background`."""
    images = []
    for record in records:
        if record["image"] is None:
            images.append(Image.new("RGB", (BLANK_SIDE, BLANK_SIDE), background))
            continue
        images.append(pad_to_square(open_upright(image_folder / record["image"]), background))
    return images


def message(record: dict[str, Any], role: str) -> str:
    """The value of a single-turn LLaVA record's `human` or `gpt` message (new pairs have no `gpt`)."""
    return next(t["value"] for t in record["conversations"] if t["from"] == role)


class PromptTooLong(ValueError):
    """The prompt and the image alone (no tweet text) take more positions than the model's limit."""


@dataclass(frozen=True)
class Fitted:
    """A user message made to fit the model's limit: `human`, with `truncated_tokens` of its sequence cut
    from the end of the tweet text (0 when the text fits whole)."""

    human: str
    truncated_tokens: int


class LlavaInputs:
    """Records to model tensors: LLaVA's exact token ids (`tokens.py`) and the processor's pixels.

    The llava-hf processor's tokenizer is not used for ids (it differs from LLaVA's on every record,
    see `tokens.py`); its image processor is, and its image-token id and count. `max_length` is the
    most positions a whole sequence (prompt, image positions, answer, ``</s>``) may take
    (`loading.sequence_limit`).
    """

    def __init__(self, processor: ProcessorMixin, encoder: SentencePieceEncoder, max_length: int) -> None:
        self.processor = processor
        self.encoder = encoder
        self.max_length = max_length
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
        """How many positions one image of `pixel_values` (N, 3, H, W) fills."""
        height, width = pixel_values.shape[-2:]
        return self.image_positions(height, width)

    def image_positions(self, height: int, width: int) -> int:
        """How many positions an H x W image fills: the llava-hf processor's own formula (576 at 336 px, patch 14)."""
        patch = self.processor.patch_size
        count = (height // patch) * (width // patch) + self.processor.num_additional_image_tokens
        return count - 1 if self.processor.vision_feature_select_strategy == "default" else count

    @cached_property
    def answer_positions(self) -> int:
        """The positions the longest of the 27 template answers takes after the prompt, ``</s>`` included."""
        prompt = len(self.prompt_ids("", 0))
        answers = [answer(*labels) for labels in itertools.product(LABELS, repeat=3)]
        return max(len(self.training_ids("", reply, 0)[0]) - prompt for reply in answers)

    def fit(self, human: str) -> Fitted:
        """`human` cut to the model's limit: the prompt, the image's positions and the longest answer must fit
        in `max_length`; where they do not, the end of the tweet text is cut (at a character) until they do.

        The instruction, the image and the answer are never cut (the LLaVA repository cuts the sequence's
        end at `model_max_length`, the answer first). Training and prediction cut alike, so a model
        sees the same text in both. Raises `PromptTooLong` when the prompt without any text does not fit,
        and ValueError for a message that is not the paper's prompt (`prompt.split_human_turn`).
        """
        crop = self.processor.image_processor.crop_size
        n_image = self.image_positions(crop["height"], crop["width"])
        budget = self.max_length - self.answer_positions

        def length(message: str) -> int:
            return len(self.prompt_ids(message, n_image))

        full = length(human)
        if full <= budget:
            return Fitted(human, 0)
        head, text, tail = split_human_turn(human)
        if length(head + tail) > budget:
            raise PromptTooLong(
                f"the prompt and the image's {n_image} positions take {length(head + tail) + self.answer_positions} "
                f"positions with no tweet text at all, above the model's limit of {self.max_length}; raise "
                "model_max_length in the recipe (at most the model's max_position_embeddings)"
            )
        kept, cut = 0, len(text)  # bisect for the longest prefix that fits: `kept` fits, `cut` does not
        while cut - kept > 1:
            middle = (kept + cut) // 2
            kept, cut = (middle, cut) if length(head + text[:middle] + tail) <= budget else (kept, middle)
        fitted = head + text[:kept] + tail
        return Fitted(fitted, full - length(fitted))

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

    def __init__(self, inputs: LlavaInputs, image_folder: Path) -> None:
        self.inputs = inputs
        self.image_folder = image_folder

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixel_values = self.inputs.pixel_values(records, self.image_folder)
        n_image = self.inputs.n_image_tokens(pixel_values)
        ids, labels = [], []
        for record in records:
            record_ids, record_labels = self.inputs.training_ids(message(record, "human"), message(record, "gpt"), n_image)
            if len(record_ids) > self.inputs.max_length:
                raise ValueError(
                    f"pair {record['id']}: its training sequence has {len(record_ids)} tokens, above the limit "
                    f"{self.inputs.max_length}; pass the records through `fit_records` first"
                )
            ids.append(record_ids)
            labels.append(record_labels)
        return {
            "input_ids": padded(ids, self.inputs.pad_id, "right"),
            "attention_mask": padded([[1] * len(row) for row in ids], 0, "right"),
            "labels": padded(labels, IGNORE_INDEX, "right"),
            "pixel_values": pixel_values,
        }


def fit_records(inputs: LlavaInputs, records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """`records` with each user message cut to the model's limit (`LlavaInputs.fit`), and the tokens cut from each."""
    fitted, truncated = [], []
    for record in records:
        result = inputs.fit(message(record, "human"))
        turns = [{**turn, "value": result.human} if turn["from"] == "human" else turn
                 for turn in record["conversations"]]
        fitted.append({**record, "conversations": turns})
        truncated.append(result.truncated_tokens)
    return fitted, truncated


def prompt_batch(inputs: LlavaInputs, records: Sequence[dict[str, Any]], image_folder: Path) -> dict[str, torch.Tensor]:
    """A left-padded generation batch: every row ends exactly where the assistant starts answering."""
    pixel_values = inputs.pixel_values(records, image_folder)
    n_image = inputs.n_image_tokens(pixel_values)
    ids = [inputs.prompt_ids(message(record, "human"), n_image) for record in records]
    for record, row in zip(records, ids, strict=True):
        if len(row) + inputs.answer_positions > inputs.max_length:  # the model would run past its positions
            raise ValueError(f"pair {record['id']}: its prompt has {len(row)} tokens, too many for the limit "
                             f"{inputs.max_length} with an answer; pass the records through `fit_records` first")
    return {
        "input_ids": padded(ids, inputs.pad_id, "left"),
        "attention_mask": padded([[1] * len(row) for row in ids], 0, "left"),
        "pixel_values": pixel_values,
    }
