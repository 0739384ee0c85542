"""Token-exactness with the LLaVA repository, on the real LLaMA/Vicuna vocabulary.

The reference below is computed with the `sentencepiece` library directly, by the LLaVA repository's
rules (`tokenizer_image_token` and `preprocess_v1` with the slow tokenizer): each chunk around
``<image>`` encoded on its own, ``<s>`` on the first chunk only, ``</s>`` as the EOS id, the loss on
the answer and ``</s>``. The project's ids must equal it whatever the llava-hf tokenizer's config says.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece
import torch
from PIL import Image

from llavac.model.inputs import IGNORE_INDEX, TrainingCollator, prompt_batch
from llavac.model.llama_vocab import llama_reference_encodings
from llavac.model.loading import load_inputs
from llavac.prompt import chat_prompt, chat_text, human_turn, llava_record

IMAGE_INDEX = -200  # LLaVA's placeholder, replaced by the image features inside its model
N_IMAGE = 576
LLAVA_HF_IMAGE_ID = 32000
TEXTS = [
    "", " leading space", "trailing space ", "double  space before a word", "tabs\tand\t\ttabs",
    "line\nbreak", "crlf\r\nline", "emoji 😡🎉 ok", "周末快乐 Chinese 中文", "RT @user: http://t.co/ab12 #tag",
    "   many   runs    of spaces  ", "mixed \t \n  whitespace", "?? ?? emoji as question marks", "x" * 3,
]
ANSWER = "positive, neutral, negative"


def reference_chunks(sp: sentencepiece.SentencePieceProcessor, prompt: str) -> list[int]:
    """`tokenizer_image_token(prompt)`: <s>, then every chunk's SentencePiece ids, -200 between chunks."""
    ids = [sp.bos_id()]
    for index, chunk in enumerate(prompt.split("<image>")):
        if index:
            ids.append(IMAGE_INDEX)
        eos = chunk.endswith("</s>")
        ids += sp.encode(chunk.removesuffix("</s>")) + ([sp.eos_id()] if eos else [])
    return ids


def reference_training(sp: sentencepiece.SentencePieceProcessor, human: str, reply: str) -> tuple[list[int], list[int]]:
    """`preprocess_v1` for one single-turn record, with the image block expanded as llava-hf expects."""
    conversation = chat_text(human, reply)
    ids = reference_chunks(sp, conversation)
    sep = " ASSISTANT: "
    round_text = conversation.split("</s>")[0]
    instruction_len = len(reference_chunks(sp, round_text.split(sep)[0] + sep)) - 2
    round_len = len(reference_chunks(sp, round_text))
    labels = [IGNORE_INDEX] * (1 + instruction_len) + ids[1 + instruction_len :]
    assert 1 + round_len == len(ids), "LLaVA itself would report a tokenization mismatch"
    n_masked = len(expand(ids[: 1 + instruction_len]))
    return expand(ids), [IGNORE_INDEX] * n_masked + labels[1 + instruction_len :]


def expand(ids: list[int]) -> list[int]:
    """llava-hf's form: the image placeholder becomes 576 image-token ids."""
    out: list[int] = []
    for i in ids:
        out += [LLAVA_HF_IMAGE_ID] * N_IMAGE if i == IMAGE_INDEX else [i]
    return out


@pytest.fixture(scope="module")
def sp(llama_sentencepiece) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(llama_sentencepiece))


@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "non-legacy"])
def base(request, real_shaped_base, tmp_path_factory) -> Path:
    """The real-shaped base, its tokenizer config saying `legacy: true` or `false`."""
    folder = tmp_path_factory.mktemp("legacy") / "base"
    shutil.copytree(real_shaped_base, folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "legacy": request.param}))
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    (folder / "data").mkdir()
    for i in range(len(TEXTS)):
        Image.new("RGB", (300 + 10 * i, 200), (20 * i, 90, 200)).save(folder / "data" / f"{i}.jpg")
    return folder


def records(position: str) -> list[dict]:
    labels = ANSWER.split(", ")
    return [llava_record({"id": i, "text": text, "image_path": f"data/{i}.jpg", "text_label": labels[0],
                          "image_label": labels[1], "multimodal_label": labels[2]}, position)
            for i, text in enumerate(TEXTS)]


def test_rebuilt_vocabulary_reproduces_the_original_tokenizer(llama_sentencepiece, sp):
    cases = llama_reference_encodings(llama_sentencepiece.parent.parent)
    assert len(cases) == 46 and sp.get_piece_size() == 32000
    assert [sp.encode(text) for text, _ in cases] == [ids for _, ids in cases]
    assert [sp.piece_to_id(p) for p in ("▁negative", "▁neutral", "▁positive", ",", "▁", ":")] == [
        8178, 21104, 6374, 29892, 29871, 29901]


@pytest.mark.parametrize("position", ["front", "inline"])
def test_training_ids_and_labels_equal_llavas(base, images, sp, position):
    batch = TrainingCollator(load_inputs(str(base)), images)(records(position))
    for row, text in enumerate(TEXTS):
        ids, labels = reference_training(sp, human_turn(text, position), ANSWER)
        n = len(ids)
        assert batch["attention_mask"][row].sum() == n, text
        assert batch["input_ids"][row, :n].tolist() == ids, text
        assert batch["labels"][row, :n].tolist() == labels, text
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        kept = [i for i in labels if i != IGNORE_INDEX]
        assert kept == [6374, 29892, 21104, 29892, 8178, 2]  # ▁positive , ▁neutral , ▁negative </s>


@pytest.mark.parametrize("position", ["front", "inline"])
def test_generation_prompt_equals_llavas(base, images, sp, position):
    batch = prompt_batch(load_inputs(str(base)), records(position), images)
    width = batch["input_ids"].shape[1]
    for row, text in enumerate(TEXTS):
        ids = expand(reference_chunks(sp, chat_prompt(human_turn(text, position))))
        assert batch["input_ids"][row, width - len(ids):].tolist() == ids, text
        assert batch["attention_mask"][row].sum() == len(ids)  # left padding only before the prompt


def test_the_token_after_the_image_block_is_llavas(real_shaped_base, images, sp):
    """The difference the llava-hf processor makes on every record: LLaVA feeds ``▁`` after the image."""
    ids = load_inputs(str(real_shaped_base)).prompt_ids(human_turn("hi", "front"), N_IMAGE)
    after = ids.index(LLAVA_HF_IMAGE_ID) + N_IMAGE
    assert ids[after - N_IMAGE - 2 : after - N_IMAGE] == [29901, 29871]  # ":" "▁" before the image
    assert ids[after : after + 3] == [29871, 13, 13696]  # "▁" "\n" "Consider" after it


def test_padding_rows_and_added_tokens_are_never_generated(real_shaped_base):
    inputs = load_inputs(str(real_shaped_base))
    banned = set(inputs.never_generated(32064))
    assert banned == set(range(32000, 32064))


def test_a_trained_vocabulary_masks_exactly_the_answer(tmp_path, images):
    """The built model's own SentencePiece vocabulary follows the same rules as LLaMA's."""
    from llavac.model.build import build_llava

    architecture = {"vision": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                               "num_hidden_layers": 2, "num_attention_heads": 2},
                    "text": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "num_key_value_heads": 2},
                    "tokenizer": "trained", "vocab_size": 500}
    base = build_llava(tmp_path / "trained", TEXTS * 3, architecture, seed=0)
    inputs = load_inputs(str(base))
    assert inputs.encoder.with_prefix.get_piece_size() == 500
    batch = TrainingCollator(inputs, images)(records("front"))
    tokenizer = inputs.processor.tokenizer
    for row in range(len(TEXTS)):
        kept = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert tokenizer.decode(kept) == ANSWER + "</s>"
        assert kept[-1] == inputs.encoder.eos_id == 2
        assert torch.equal(batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX], kept)


def test_a_vocabulary_larger_than_the_texts_allow_is_one_clear_error(tmp_path):
    from llavac.model.build import train_sentencepiece

    with pytest.raises(ValueError, match=r"build.vocab_size 5000 cannot be trained on these texts: .*<= \d+"):
        train_sentencepiece(["a few words", "and a few more"], 5000, tmp_path / "tokenizer.model")
    assert not (tmp_path / "tokenizer.model").exists()
