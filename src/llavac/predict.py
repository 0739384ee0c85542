"""Batched greedy prediction with a trained adapter, and the tolerant parser of the model's answers.

The LLaVA repository evaluates one sample at a time; a classification needs one prefill and a few
tokens, so batching with left padding gives the same answers many times faster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from tqdm import tqdm
from transformers import AutoProcessor, LlavaForConditionalGeneration, ProcessorMixin

from llavac.labels import LABELS, TASKS
from llavac.model.inputs import prompt_batch
from llavac.model.loading import load_base

LABEL_WORD = re.compile(r"\b(" + "|".join(LABELS) + r")\b")
SLOT_SEPARATOR = re.compile(r"[,;\n|/]")


def parse_answer(raw: str) -> tuple[str | None, str | None, str | None]:
    """The (text, image, multimodal) labels in a generated answer; `None` for a slot it cannot read.

    Case, spacing, punctuation and extra words ("Text: Positive.") are tolerated. When the answer has
    exactly three separated slots, each is read on its own, so one bad slot does not shift the others;
    otherwise the first three label words, in order, fill the slots.
    """
    lowered = raw.lower()
    slots = SLOT_SEPARATOR.split(lowered.strip().strip("."))
    if len(slots) == 3:
        found = [LABEL_WORD.findall(slot) for slot in slots]
        labels = [words[0] if len(set(words)) == 1 else None for words in found]
    else:
        labels = LABEL_WORD.findall(lowered)[:3]
        labels += [None] * (3 - len(labels))
    return labels[0], labels[1], labels[2]


def load_classifier(adapter_dir: Path, base: str, precision: str) -> tuple[PeftModel, ProcessorMixin]:
    """The base model with the adapter (LoRA + trained projector) applied, in eval mode, on the GPU if any."""
    model, _ = load_base(base, precision)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    processor = AutoProcessor.from_pretrained(str(adapter_dir))
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), processor


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of `items` of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def on_model(batch: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`batch` on the model's device, with pixel values in the model's dtype (bf16 at 7B)."""
    moved = {key: value.to(model.device) for key, value in batch.items()}
    moved["pixel_values"] = moved["pixel_values"].to(model.dtype)
    return moved


@torch.inference_mode()
def generate_answers(
    model: PeftModel | LlavaForConditionalGeneration,
    processor: ProcessorMixin,
    records: Sequence[dict[str, Any]],
    image_folder: Path,
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy answers for `records`, batched with left padding; only the new tokens are decoded."""
    answers: list[str] = []
    for chunk in tqdm(list(batches(records, batch_size)), desc="predict", unit="batch"):
        inputs = on_model(prompt_batch(processor, chunk, image_folder), model)
        output = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        answers.extend(processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return answers


def predict_records(
    adapter_dir: Path, records: Sequence[dict[str, Any]], image_folder: Path, batch_size: int, max_new_tokens: int
) -> list[dict[str, Any]]:
    """Prediction rows for `records` with the adapter in `adapter_dir` (its recipe.json names the base)."""
    recipe = json.loads((adapter_dir / "recipe.json").read_text())
    model, processor = load_classifier(adapter_dir, recipe["base"], recipe["precision"])
    return prediction_rows(records, generate_answers(model, processor, records, image_folder, batch_size, max_new_tokens))


def write_jsonl(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """One JSON object per line, UTF-8 kept readable (tweets carry non-ASCII text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def prediction_rows(records: Sequence[dict[str, Any]], answers: Sequence[str]) -> list[dict[str, Any]]:
    """One output row per pair: the raw answer, the parsed labels, and the gold labels where known."""
    rows = []
    for record, raw in zip(records, answers, strict=True):
        parsed = dict(zip(TASKS, parse_answer(raw), strict=True))
        rows.append(
            {
                "id": record["id"],
                "raw": raw,
                **{f"pred_{task}": parsed[task] for task in TASKS},
                **{f"{task}_label": record[f"{task}_label"] for task in TASKS if f"{task}_label" in record},
            }
        )
    return rows
