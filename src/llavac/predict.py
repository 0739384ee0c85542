"""Batched greedy prediction with a trained adapter, and the tolerant parser of the model's answers.

The LLaVA repository evaluates one sample at a time, in fp16, with the LoRA merged into the base; a
classification needs one prefill and a few tokens, so batching with left padding gives the same
answers many times faster. Merging and the precision are the caller's choice (`Evaluation`): merged
fp16 is LLaVA's own setting, the default for the paper's model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, get_args

import torch
from peft import PeftModel
from tqdm import tqdm
from transformers import LlavaForConditionalGeneration

from llavac.files import write_text
from llavac.label_scores import AnswerTree, LabelScores, record_continuations, score_batch
from llavac.labels import LABELS, TASKS
from llavac.model.adapter_card import read_card
from llavac.model.inputs import LlavaInputs, fit_records, message, prompt_batch
from llavac.model.loading import load_base, load_inputs
from llavac.params import Evaluation, PredictMode
from llavac.prompt import answer

LABEL_WORD = re.compile(r"\b(" + "|".join(LABELS) + r")\b")
SLOT_SEPARATOR = re.compile(r"[,;\n|/]")
MODES: tuple[str, ...] = get_args(PredictMode)
"""`generate`: the paper's free greedy answer, parsed; `score`: the most probable template answer."""


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


def load_classifier(adapter_dir: Path, evaluation: Evaluation) -> tuple[torch.nn.Module, LlavaInputs]:
    """The base model named by the adapter's card with the adapter (LoRA + trained projector) applied.

    In eval mode, on the GPU if there is one. With `merge_lora` the LoRA is folded into the base
    weights (and the trained projector replaces the base's), as LLaVA's evaluation does. A card of
    method `none` (nothing trained) gives the base model as it is.
    """
    card = read_card(adapter_dir)
    model = load_base(card.base_for(adapter_dir), evaluation.precision)
    if card.method == "lora":
        model = PeftModel.from_pretrained(model, str(adapter_dir))
        if evaluation.merge_lora:
            model = model.merge_and_unload()
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), load_inputs(str(adapter_dir), model.config)


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of `items` of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def to_device(batch: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`batch` on the model's device, with pixel values in the model's dtype (bf16 at 7B)."""
    moved = {key: value.to(model.device) for key, value in batch.items()}
    moved["pixel_values"] = moved["pixel_values"].to(model.dtype)
    return moved


@torch.inference_mode()
def generate_ids(
    model: PeftModel | LlavaForConditionalGeneration,
    inputs: LlavaInputs,
    records: Sequence[dict[str, Any]],
    image_folder: Path,
    batch_size: int,
    max_new_tokens: int,
) -> list[list[int]]:
    """Greedy answers' new token ids for `records`, batched with left padding.

    Each list ends with the first end-of-sequence id (kept, as LLaVA's `generate` returns it) or
    after `max_new_tokens` ids; the padding the batch adds after a finished answer is removed, so a
    row's ids do not depend on the batch it was in.
    """
    answers: list[list[int]] = []
    banned = inputs.never_generated(model.get_output_embeddings().weight.shape[0])
    eos = inputs.encoder.eos_id
    for chunk in tqdm(list(batches(records, batch_size)), desc="predict", unit="batch"):
        batch = to_device(prompt_batch(inputs, chunk, image_folder), model)
        output = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                suppress_tokens=banned, pad_token_id=inputs.pad_id, eos_token_id=eos)
        for row in output[:, batch["input_ids"].shape[1] :].tolist():
            answers.append(row[: row.index(eos) + 1] if eos in row else row)
    return answers


def generate_answers(
    model: PeftModel | LlavaForConditionalGeneration,
    inputs: LlavaInputs,
    records: Sequence[dict[str, Any]],
    image_folder: Path,
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy answers for `records` (`generate_ids`), decoded without special tokens."""
    ids = generate_ids(model, inputs, records, image_folder, batch_size, max_new_tokens)
    return inputs.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)


@torch.inference_mode()
def score_labels(
    model: PeftModel | LlavaForConditionalGeneration,
    inputs: LlavaInputs,
    records: Sequence[dict[str, Any]],
    image_folder: Path,
    batch_size: int,
) -> list[LabelScores]:
    """The probability of every template answer for `records`, batched with left padding like `generate_answers`."""
    scores: list[LabelScores] = []
    known, known_tree = None, None
    for chunk in tqdm(list(batches(records, batch_size)), desc="score labels", unit="batch"):
        batch = to_device(prompt_batch(inputs, chunk, image_folder), model)
        n_image = inputs.n_image_tokens(batch["pixel_values"])
        trees = []
        for record in chunk:
            continuations = record_continuations(inputs, message(record, "human"), n_image, known)
            if continuations is not known:
                known, known_tree = continuations, AnswerTree.of(continuations)
            trees.append(known_tree)
        scores.extend(score_batch(model, inputs, batch, trees))
    return scores


def predict_records(
    model: PeftModel | LlavaForConditionalGeneration, inputs: LlavaInputs, records: Sequence[dict[str, Any]],
    image_folder: Path, batch_size: int, max_new_tokens: int, mode: str,
) -> list[dict[str, Any]]:
    """Prediction rows for `records` with a classifier from `load_classifier`.

    Every row carries the label probabilities. `mode` says where the labels come from: `generate`
    parses the free greedy answer (the paper's protocol: an unreadable answer stays invalid);
    `score` takes the most probable of the 27 template answers, which is never invalid. A tweet too
    long for the model's limit is cut as in training (`LlavaInputs.fit`); each row says how many
    tokens were cut from it (`truncated_tokens`, 0 for a whole text).
    """
    if mode not in MODES:
        raise ValueError(f"predict mode {mode!r} is not one of: {', '.join(MODES)}")
    records, truncated = fit_records(inputs, records)
    scores = score_labels(model, inputs, records, image_folder, batch_size)
    if mode == "generate":
        answers = generate_answers(model, inputs, records, image_folder, batch_size, max_new_tokens)
    else:
        answers = [answer(*score.best) for score in scores]
    rows = prediction_rows(records, answers, scores)
    return [{**row, "truncated_tokens": cut} for row, cut in zip(rows, truncated, strict=True)]


def abstain_below(row: dict[str, Any], min_confidence: float) -> dict[str, Any]:
    """`row` with every label whose probability is below `min_confidence` withheld (null) and named in `abstained`."""
    unsure = [t for t in TASKS if row[f"pred_{t}"] is not None and row[f"p_{t}"][row[f"pred_{t}"]] < min_confidence]
    return {**row, **{f"pred_{t}": None for t in unsure}, "abstained": unsure}


def write_jsonl(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """One JSON object per line, UTF-8 kept readable (tweets carry non-ASCII text); written whole or not at all."""
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def prediction_rows(
    records: Sequence[dict[str, Any]], answers: Sequence[str], scores: Sequence[LabelScores]
) -> list[dict[str, Any]]:
    """One output row per pair: the raw answer, the parsed labels, the probabilities, the gold labels where known."""
    rows = []
    for record, raw, score in zip(records, answers, scores, strict=True):
        parsed = dict(zip(TASKS, parse_answer(raw), strict=True))
        rows.append(
            {
                "id": record["id"],
                "raw": raw,
                **{f"pred_{task}": parsed[task] for task in TASKS},
                **score.row(),
                **{f"{task}_label": record[f"{task}_label"] for task in TASKS if f"{task}_label" in record},
            }
        )
    return rows
