"""Label probabilities: the 27 answers scored from one prefill and a tree step over the KV cache.

The scores are checked against a plain computation (each answer as a full sequence, no cache), on an
untrained model whose tokenizer splits label words into shared pieces and on a small model trained here
until it answers in the template; and against that model's greedy generation.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_model import ARCHITECTURE, RECIPE

from llavac.label_scores import TRIPLES, AnswerTree, answer_continuations, record_continuations, score_batch
from llavac.labels import LABELS, TASKS, label_rule
from llavac.model.build import build_llava
from llavac.model.inputs import message, padded, prompt_batch
from llavac.model.loading import load_base, load_inputs
from llavac.predict import Evaluation, generate_answers, load_classifier, parse_answer, predict_records, score_labels
from llavac.prompt import answer, llava_record
from llavac.train import train_split

SPLITTING = {**ARCHITECTURE, "vocab_size": 320, "text": {**ARCHITECTURE["text"], "max_position_embeddings": 1024}}
"""So few BPE merges that the label words are several pieces each, `negative` and `neutral` sharing ``▁ne``."""
COLOURS = {"negative": (20, 20, 160), "neutral": (128, 128, 128), "positive": (230, 200, 30)}
WORDS = {"negative": "awful sad rain", "neutral": "meeting at noon", "positive": "lovely happy sun"}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict:
    """48 pairs whose image label is the image's colour and text label the tweet's words."""
    root = tmp_path_factory.mktemp("label-scores")
    (root / "raw" / "data").mkdir(parents=True)
    records = []
    for i in range(48):
        text_label, image_label = LABELS[i % 3], LABELS[(i // 3) % 3]
        multimodal = label_rule(text_label, image_label) or text_label
        Image.new("RGB", (16 + i % 5, 16), COLOURS[image_label]).save(root / "raw" / "data" / f"{i}.jpg")
        pair = {"id": i, "text": f"{WORDS[text_label]} {'x ' * (i % 4)}", "text_label": text_label,
                "image_label": image_label, "multimodal_label": multimodal, "image_path": f"data/{i}.jpg"}
        records.append(llava_record(pair, "front"))
    return {"root": root, "records": records, "images": root / "raw"}


@pytest.fixture(scope="module")
def splitting(pairs) -> dict:
    """An untrained model whose tokenizer splits label words: the tree's general case."""
    base = build_llava(pairs["root"] / "splitting", list(WORDS.values()) * 5, SPLITTING, seed=0)
    return {**pairs, "model": load_base(str(base), "fp32").eval(), "inputs": load_inputs(str(base))}


@pytest.fixture(scope="module")
def trained(pairs) -> dict:
    """A model fine-tuned on the pairs until it answers in the template, with varied answers (LoRA unmerged)."""
    root = pairs["root"]
    base = build_llava(root / "base", list(WORDS.values()) * 5, ARCHITECTURE, seed=0)
    recipe = replace(RECIPE, lora_r=16, lora_alpha=32, epochs=10, per_device_batch_size=8, global_batch_size=8)
    train_split(str(base), pairs["records"], pairs["images"], root / "adapter", root / "ckpt", root / "live", recipe,
                seed=0, image_position="front")
    model, inputs = load_classifier(root / "adapter", Evaluation("fp32", merge_lora=False))
    return {**pairs, "model": model, "inputs": inputs}


def full_sequence_logprobs(model, inputs, record: dict, images: Path, continuations=None) -> np.ndarray:
    """log p(continuation | prompt) of the 27 answers (or of `continuations`), each fed whole without a cache:
    the reference for the tree step."""
    pixel_values = inputs.pixel_values([record], images)
    n_image = inputs.n_image_tokens(pixel_values)
    human = message(record, "human")
    prompt = inputs.prompt_ids(human, n_image)
    continuations = continuations or answer_continuations(inputs, human, n_image)
    rows = [prompt + ids for ids in continuations]
    mask = padded([[1] * len(row) for row in rows], 0, "left")
    with torch.inference_mode():
        logits = model(input_ids=padded(rows, inputs.pad_id, "left"), attention_mask=mask,
                       position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       pixel_values=pixel_values.repeat(len(rows), 1, 1, 1)).logits.float()
        logits[..., inputs.never_generated(logits.shape[-1])] = float("-inf")
        logprobs = logits.log_softmax(-1)
    width = mask.shape[1]
    return np.array([
        sum(float(logprobs[a, width - len(ids) - 1 + k, token]) for k, token in enumerate(ids))
        for a, ids in enumerate(continuations)
    ])


def test_answers_with_the_real_vocabulary_are_one_token_per_label(real_shaped_base):
    inputs = load_inputs(str(real_shaped_base))
    human = llava_record({"id": 0, "text": "what a day", "text_label": "neutral", "image_label": "neutral",
                          "multimodal_label": "neutral", "image_path": "x.jpg"})["conversations"][0]["value"]
    continuations = answer_continuations(inputs, human, 576)
    # reference/tokenizer.md: ▁negative 8178, ▁neutral 21104, ▁positive 6374, "," 29892, </s> 2
    assert continuations[TRIPLES.index(("negative", "neutral", "positive"))] == [8178, 29892, 21104, 29892, 6374, 2]
    tree = AnswerTree.of(continuations)
    assert len(tree.tokens) == 3 + 3 + 9 + 9 + 27  # every proper prefix once: t, "t,", "t, i", "t, i,", "t, i, m"


def test_the_real_shaped_models_frozen_head_lets_every_answer_token_win(real_shaped_base):
    """LoRA changes neither the language-model head nor the final norm: what training moves is the last hidden
    state, which the norm scales to a fixed length. For models.tiny-llama that state must be able to make each
    answer token nearly certain among 32,064. With hidden size 64 and initializer_range 0.2 the best state still
    lost 0.17-1.17 nats per token and the training loss stalled (docs/deepspeed.md)."""
    model = load_base(str(real_shaped_base), "fp32")
    head = model.lm_head.weight.detach()  # (vocabulary, hidden)
    norm = model.model.language_model.norm.weight.detach()  # (hidden,)
    for token in (8178, 21104, 6374, 29892, 2):  # ▁negative ▁neutral ▁positive "," </s>
        state = torch.randn(head.shape[1], generator=torch.Generator().manual_seed(token)).requires_grad_()
        optimizer = torch.optim.Adam([state], lr=0.05)
        for _ in range(300):
            logits = head @ (norm * state / state.pow(2).mean().sqrt())  # RMSNorm's output
            loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([token]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert loss.item() < 0.05, (token, loss.item())


def test_a_tokenizer_that_splits_label_words_still_spells_every_answer_in_the_tree(splitting):
    inputs = splitting["inputs"]
    human = message(splitting["records"][0], "human")
    continuations = answer_continuations(inputs, human, 4)
    assert max(len(ids) for ids in continuations) > 6, "the fixture must exercise labels of several tokens"
    tree = AnswerTree.of(continuations)
    for a, ids in enumerate(continuations):
        assert tree.answer_tokens[a][tree.real[a]].tolist() == ids
        assert tree.lines[a, 0] == 0  # the first token is scored by the prompt's last logits
        for k in range(1, len(ids)):  # each later one by the node of the prefix before it
            node = int(tree.lines[a, k]) - 1
            assert tree.depths[node] == k and tree.tokens[node] == ids[k - 1]
            assert tree.ancestry[node].sum() == k  # the node and its k - 1 ancestors


def test_probabilities_sum_to_one(splitting):
    scores = score_labels(splitting["model"], splitting["inputs"], splitting["records"][:8], splitting["images"], 8)
    for score in scores:
        row = score.row()
        assert sum(row["p_answers"].values()) == pytest.approx(1.0, abs=1e-9)
        for task in TASKS:
            marginal = row[f"p_{task}"]
            assert list(marginal) == list(LABELS) and sum(marginal.values()) == pytest.approx(1.0, abs=1e-9)
            slot = TASKS.index(task)
            for label in LABELS:
                joint_sum = sum(p for text, p in row["p_answers"].items() if text.split(", ")[slot] == label)
                assert marginal[label] == pytest.approx(joint_sum, abs=1e-12)
        assert 0 < row["template_mass"] <= 1 + 1e-6
        assert row["p_best_answer"] == max(row["p_answers"].values())


@pytest.mark.parametrize("which", ["splitting", "trained"])
def test_cached_tree_scores_equal_full_sequences_without_cache(which, request):
    world = request.getfixturevalue(which)
    records = world["records"][:6]  # texts of different lengths: left padding in the batch
    scores = score_labels(world["model"], world["inputs"], records, world["images"], batch_size=6)
    for record, score in zip(records, scores, strict=True):
        reference = full_sequence_logprobs(world["model"], world["inputs"], record, world["images"])
        np.testing.assert_allclose(score.answer_logprobs, reference, atol=1e-4, rtol=0)


def test_rows_with_trees_of_different_sizes_share_one_tree_step(splitting):
    model, inputs, records = splitting["model"], splitting["inputs"], splitting["records"][:3]
    batch = prompt_batch(inputs, records, splitting["images"])
    humans = [message(record, "human") for record in records]
    plain = answer_continuations(inputs, humans[0], inputs.n_image_tokens(batch["pixel_values"]))
    longer = [[*ids[:1], ids[1], *ids[1:]] for ids in plain]  # a second token repeated: a deeper, wider tree
    trees = [AnswerTree.of(plain), AnswerTree.of(longer), AnswerTree.of(plain)]
    assert len(trees[1].tokens) > len(trees[0].tokens)
    scores = score_batch(model, inputs, batch, trees)
    for record, score, continuations in zip(records, scores, (plain, longer, plain), strict=True):
        reference = full_sequence_logprobs(model, inputs, record, splitting["images"], continuations)
        np.testing.assert_allclose(score.answer_logprobs, reference, atol=1e-4, rtol=0)


def test_answer_ids_are_reused_across_tweets_only_where_they_hold(splitting):
    inputs = splitting["inputs"]
    first, second = (message(record, "human") for record in splitting["records"][:2])
    own, known = answer_continuations(inputs, second, 4), answer_continuations(inputs, first, 4)
    assert record_continuations(inputs, second, 4, known) is known and known == own  # reused, and right to be
    wrong = [[*ids[:-1], inputs.pad_id, ids[-1]] for ids in own]
    assert record_continuations(inputs, second, 4, wrong) == own


def test_constrained_greedy_equals_every_valid_generation(trained):
    model, inputs, records, images = trained["model"], trained["inputs"], trained["records"], trained["images"]
    generated = [text.strip() for text in generate_answers(model, inputs, records, images, batch_size=16, max_new_tokens=24)]
    scores = score_labels(model, inputs, records, images, batch_size=16)
    template = {answer(*triple) for triple in TRIPLES}
    valid = [(text, score) for text, score in zip(generated, scores, strict=True) if text in template]
    assert len(valid) >= len(records) // 2, f"the fixture model answers in the template only {len(valid)} times"
    assert len({text for text, _ in valid}) > 1, "the fixture model must give different answers"
    for text, score in valid:
        assert answer(*score.greedy) == text
        # An answer holding more than half the joint is necessarily the most probable one.
        if score.joint[TRIPLES.index(tuple(text.split(", ")))] > 0.5:
            assert answer(*score.best) == text


def test_score_mode_is_never_invalid_and_generate_mode_keeps_the_parsed_answer(trained):
    model, inputs, records, images = trained["model"], trained["inputs"], trained["records"][:8], trained["images"]
    scored = predict_records(model, inputs, records, images, 8, 24, "score")
    for row in scored:
        assert tuple(row[f"pred_{task}"] for task in TASKS) == tuple(row["best_answer"].split(", "))
        assert row["raw"] == row["best_answer"]
    generated = predict_records(model, inputs, records, images, 8, 24, "generate")
    answers = generate_answers(model, inputs, records, images, 8, 24)
    for row, other, raw in zip(generated, scored, answers, strict=True):
        assert row["p_multimodal"] == pytest.approx(other["p_multimodal"])
        assert row["raw"] == raw and tuple(row[f"pred_{task}"] for task in TASKS) == parse_answer(raw)
    with pytest.raises(ValueError, match="predict mode 'beam' is not one of: generate, score"):
        predict_records(model, inputs, records, images, 8, 24, "beam")


def test_classify_writes_probabilities_and_abstains_below_the_threshold(trained, tmp_path):
    from llavac.cli import main

    images = trained["images"] / "data"
    (tmp_path / "pairs.csv").write_text(
        "id,image,text\n" + "".join(f"p{i},{images / f'{i}.jpg'},{WORDS[LABELS[i % 3]]}\n" for i in range(12)))
    def classify(threshold: float) -> list[dict]:
        out = tmp_path / f"{threshold}.jsonl"
        main(["classify", str(tmp_path / "pairs.csv"), "--adapter", str(trained["root"] / "adapter"), "--out", str(out),
              "--min-confidence", str(threshold)])
        return [json.loads(line) for line in out.read_text().splitlines()]

    answered = classify(0.0)
    chosen = [row[f"p_{task}"][row[f"pred_{task}"]] for row in answered for task in TASKS]
    threshold = float(np.median(chosen))  # some labels below it, some not
    for sure, row in zip(answered, classify(threshold), strict=True):
        assert sure["abstained"] == [] and sure["raw"] == sure["best_answer"]
        assert sum(sure["p_answers"].values()) == pytest.approx(1.0)
        for task in TASKS:
            p = sure[f"p_{task}"][sure[f"pred_{task}"]]
            assert (task in row["abstained"]) == (p < threshold)
            assert row[f"pred_{task}"] == (None if p < threshold else sure[f"pred_{task}"])
    assert min(chosen) < threshold, "the threshold must withhold some labels"
    with pytest.raises(SystemExit):
        main(["classify", str(tmp_path / "pairs.csv"), "--min-confidence", "1.5"])
