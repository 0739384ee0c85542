"""Model half: the built base model, inputs and masking, LoRA placement, optimizer groups, training,
resuming, and batched prediction — all on a small random-init llava-hf model built here."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoProcessor, LlavaConfig, Trainer, TrainingArguments
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from llavac.curves import plot_training_loss, validation_steps
from llavac.model.build import build_llava
from llavac.labels import LABELS
from llavac.model.inputs import (
    IGNORE_INDEX, PromptTooLong, TrainingCollator, background_colour, fit_records, message, pad_to_square, prompt_batch,
)
from llavac.model.adapter_card import read_card
from llavac.model.loading import IMAGE_COUNT_FIELDS, load_base, load_inputs, sequence_limit
from llavac.params import Evaluation, Recipe
from llavac.predict import (
    generate_ids, load_classifier, parse_answer, predict_records, prediction_rows, score_labels,
)
from llavac.prompt import answer, llava_record, split_human_turn
from llavac.train import (
    AnswerLogitsCollator, PROJECTOR, add_lora, answer_loss, answer_positions, gradient_accumulation, optimizer_groups, split_processes,
    train_split, train_splits,
)

ARCHITECTURE = {
    "vision": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 2},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 512, "initializer_range": 0.2},
    "vocab_size": 400,
}
RECIPE = Recipe(lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=1e-2, projector_learning_rate=3e-3,
                weight_decay=0.0, warmup_ratio=0.03, lr_scheduler="cosine", max_grad_norm=1.0, epochs=2,
                per_device_batch_size=4, global_batch_size=4, precision="fp32", gradient_checkpointing=False,
                model_max_length=512, deepspeed="configs/deepspeed/zero2.json")
LABELS3 = [("positive", "neutral", "positive"), ("negative", "negative", "negative"), ("neutral", "positive", "positive")]
CARD_FACTS = {"image_position": "front"}
TEXTS = ["RT @amy: what a lovely sunny day! http://t.co/ab12 #happy", "so sad... ??",
         "meeting moved to 5pm", "I hate waiting in the rain #awful"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A built base model and 8 pairs with non-square images of different sizes."""
    return write_world(tmp_path_factory.mktemp("model"))


def write_world(root: Path) -> dict:
    """Under `root`: the base model (`base`), 8 pairs' images (`images`/data/<id>.jpg) and their LLaVA records."""
    (root / "raw" / "data").mkdir(parents=True)
    records = []
    for i in range(8):
        text_label, image_label, mm = LABELS3[i % 3]
        Image.new("RGB", (20 + 7 * i, 30), (40 * i, 200 - 20 * i, 90)).save(root / "raw" / "data" / f"{i}.jpg")
        pair = {"id": i, "text": TEXTS[i % 4] + " x" * i, "text_label": text_label, "image_label": image_label,
                "multimodal_label": mm, "image_path": f"data/{i}.jpg"}
        records.append(llava_record(pair, "front"))
    base = build_llava(root / "base", TEXTS * 5, ARCHITECTURE, seed=0)
    return {"root": root, "base": str(base), "records": records, "images": root / "raw"}


def test_pad_to_square_centres_on_the_clip_mean():
    image = Image.new("RGB", (40, 10), (255, 0, 0))
    square = pad_to_square(image, (122, 116, 104))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (122, 116, 104)
    assert square.getpixel((20, 20)) == (255, 0, 0)
    assert square.getpixel((20, 14)) == (122, 116, 104) and square.getpixel((20, 15)) == (255, 0, 0)


def test_built_model_is_a_normal_llava_hf_directory(world):
    processor = AutoProcessor.from_pretrained(world["base"])
    assert background_colour(processor) == (122, 116, 104)
    model = load_base(world["base"], "fp32")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.image_seq_length == 4  # (16 / 8)^2 patches, CLS dropped


def test_training_labels_decode_to_exactly_the_answer_and_eos(world):
    inputs = load_inputs(world["base"])
    tokenizer = inputs.processor.tokenizer
    batch = TrainingCollator(inputs, world["images"])(world["records"][:5])
    assert batch["attention_mask"].sum(1).unique().numel() > 1, "fixture must exercise padding"
    for row, record in enumerate(world["records"][:5]):
        kept = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        # SentencePiece's decoding drops the answer's leading "▁" (it merged the prompt's trailing space).
        assert tokenizer.decode(kept) == record["conversations"][1]["value"] + "</s>"
        # Every label sits on a real (attended) position and equals the input token there.
        positions = (batch["labels"][row] != IGNORE_INDEX).nonzero().squeeze(1)
        assert batch["attention_mask"][row, positions].all()
        assert torch.equal(batch["input_ids"][row, positions], kept)


EMOJI_FLOOD = "😀" * 999  # a field report: ~4,000 ids with a byte-fallback vocabulary, 8x the tiny model's positions


def long_record(world: dict, text: str = EMOJI_FLOOD) -> dict:
    return llava_record({"id": 99, "text": text, "text_label": "positive", "image_label": "neutral",
                         "multimodal_label": "positive", "image_path": "data/0.jpg"}, "front")


def test_an_over_long_tweet_is_cut_to_the_models_positions_and_nothing_else_is(world):
    inputs = load_inputs(world["base"])
    assert inputs.max_length == ARCHITECTURE["text"]["max_position_embeddings"]  # the built tokenizer sets no limit
    short, long = world["records"][0], long_record(world)
    with pytest.raises(ValueError, match="pair 99: .* above the limit 512"):  # the collator's guard, unfitted
        TrainingCollator(inputs, world["images"])([short, long])
    with pytest.raises(ValueError, match="pair 99: its prompt has .* too many for the limit 512"):  # generation's guard
        prompt_batch(inputs, [short, long], world["images"])
    (fitted_short, fitted_long), truncated = fit_records(inputs, [short, long])
    assert fitted_short == short and truncated[0] == 0
    head, kept, tail = split_human_turn(message(fitted_long, "human"))
    assert EMOJI_FLOOD.startswith(kept) and 0 < len(kept) < len(EMOJI_FLOOD)
    assert (head, tail) == split_human_turn(message(long, "human"))[::2], "only the tweet text is cut"
    n_image = ARCHITECTURE["vision"]["image_size"] ** 2 // ARCHITECTURE["vision"]["patch_size"] ** 2  # CLS dropped
    lengths = [len(inputs.training_ids(head + text + tail, answer(*labels), n_image)[0])
               for text in (kept, EMOJI_FLOOD[: len(kept) + 1]) for labels in itertools.product(LABELS, repeat=3)]
    assert max(lengths[:27]) <= 512 < max(lengths[27:]), "every answer fits, and one more character would not"
    full, cut = (len(inputs.prompt_ids(message(r, "human"), n_image)) for r in (long, fitted_long))
    assert truncated[1] == full - cut > 3000
    batch = TrainingCollator(inputs, world["images"])([fitted_short, fitted_long])
    assert batch["input_ids"].shape[1] <= 512 and batch["labels"][1][batch["labels"][1] != IGNORE_INDEX].numel() > 0


def test_a_limit_below_the_prompt_and_image_is_one_clear_error(world):
    inputs = load_inputs(world["base"], model_max_length=40)
    assert inputs.max_length == 40
    with pytest.raises(PromptTooLong, match="with no tweet text at all, above the model's limit of 40"):
        fit_records(inputs, world["records"][:1])


def test_the_sequence_limit_is_the_recipes_within_the_models_positions():
    seven_b = LlavaConfig(text_config={"model_type": "llama", "max_position_embeddings": 4096})
    assert sequence_limit(2048, seven_b) == 2048  # LLaVA's model_max_length for the 7B run
    assert sequence_limit(VERY_LARGE_INTEGER, seven_b) == 4096
    assert sequence_limit(8192, seven_b) == 4096
    with pytest.raises(ValueError, match="no sequence limit is known"):
        sequence_limit(VERY_LARGE_INTEGER, None)


def test_training_cuts_an_over_long_tweet_and_counts_it_and_prediction_says_so(world, tmp_path):
    records = [*world["records"][:3], long_record(world)]
    recipe = replace(RECIPE, epochs=1)
    result = train_split(world["base"], records, world["images"], tmp_path / "adapter", tmp_path / "ckpt",
                         tmp_path / "live", recipe, seed=0, **CARD_FACTS)
    assert (result["steps"], result["truncated_pairs"]) == (1, 1)
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["truncated_pairs"] == 1
    model, inputs = load_classifier(tmp_path / "adapter", Evaluation("fp32", merge_lora=True))
    assert inputs.max_length == 512
    rows = predict_records(model, inputs, records, world["images"], 4, 8, "generate")
    assert [row["truncated_tokens"] > 3000 for row in rows] == [False, False, False, True]
    assert rows[3]["truncated_tokens"] == fit_records(inputs, records)[1][3]


def test_the_image_processor_is_clips_pil_one_even_where_torchvision_would_be_chosen(world, monkeypatch):
    from transformers.models.auto import image_processing_auto
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    class TorchvisionStandIn(CLIPImageProcessorPil):
        """Stands in for CLIP's torchvision processor, which this environment cannot import."""

    real = image_processing_auto._load_class_with_fallback
    monkeypatch.setattr(image_processing_auto, "is_torchvision_available", lambda: True)
    monkeypatch.setattr(image_processing_auto, "_load_class_with_fallback",
                        lambda mapping, backend: TorchvisionStandIn if backend == "torchvision" else real(mapping, backend))
    assert type(AutoProcessor.from_pretrained(world["base"]).image_processor) is TorchvisionStandIn, "what an unpinned load takes"
    assert type(load_inputs(world["base"]).processor.image_processor) is CLIPImageProcessorPil


@pytest.mark.parametrize("dropped", [["patch_size"], ["num_additional_image_tokens"], list(IMAGE_COUNT_FIELDS)])
def test_an_older_processor_config_counts_image_positions_from_the_vision_config(world, tmp_path, dropped):
    old = tmp_path / "old"
    shutil.copytree(world["base"], old)
    config = json.loads((old / "processor_config.json").read_text())
    (old / "processor_config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in dropped}))
    inputs = load_inputs(str(old))
    model = load_base(str(old), "fp32").eval()
    batch = prompt_batch(inputs, world["records"][:2], world["images"])
    assert inputs.n_image_tokens(batch["pixel_values"]) == model.config.image_seq_length == 4
    with torch.inference_mode():
        model(**batch)  # the model checks that the image positions match its features
    (old / "config.json").unlink()  # an adapter-like folder: no model config to take them from
    with pytest.raises(ValueError, match=f"lacks {', '.join(dropped)}, needed to count an image's positions"):
        load_inputs(str(old))


def test_lora_sits_on_every_language_model_linear_and_nowhere_else(world):
    model = add_lora(load_base(world["base"], "fp32"), RECIPE)
    lora_modules = {name.rsplit(".lora_A", 1)[0] for name, _ in model.named_parameters() if ".lora_A." in name}
    assert lora_modules, "no LoRA module at all"
    assert not [m for m in lora_modules if "vision_tower" in m or PROJECTOR in m or "lm_head" in m]
    expected = {f"layers.{i}.{kind}" for i in range(2)
                for kind in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert {m.split("language_model.", 1)[1] for m in lora_modules} == expected
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all(".lora_" in name or PROJECTOR in name for name in trainable)
    assert any(PROJECTOR in name for name in trainable), "the projector must be trained in full"


def test_projector_has_its_own_learning_rate_in_the_trainers_optimizer(world, tmp_path):
    model = add_lora(load_base(world["base"], "fp32"), RECIPE)
    groups = optimizer_groups(model, RECIPE)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"),
                      optimizer_cls_and_kwargs=(torch.optim.AdamW, {"params": groups}))
    optimizer = trainer.create_optimizer()
    by_lr = {group["lr"]: group["params"] for group in optimizer.param_groups}
    assert set(by_lr) == {RECIPE.learning_rate, RECIPE.projector_learning_rate}
    projector = {id(p) for n, p in model.named_parameters() if PROJECTOR in n and p.requires_grad}
    assert {id(p) for p in by_lr[RECIPE.projector_learning_rate]} == projector


def test_answer_only_logits_give_the_full_logits_loss_and_gradients(world):
    """The language-model head at the answer positions only: the same loss and gradients as from all logits."""
    torch.manual_seed(0)
    model = add_lora(load_base(world["base"], "fp32"), RECIPE)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero, which would leave A's gradient zero
            torch.nn.init.normal_(parameter, std=0.1)
    batch = TrainingCollator(load_inputs(world["base"]), world["images"])(world["records"][:4])
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def loss_and_gradients(loss: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in trained.items()}

    full = loss_and_gradients(model(**batch).loss)  # transformers' causal-LM loss over every position's logits
    without_labels = {k: v for k, v in batch.items() if k != "labels"}
    kept = answer_positions(batch["labels"])
    outputs = model(**without_labels, logits_to_keep=kept)
    answers_only = loss_and_gradients(answer_loss(outputs, batch["labels"]))
    n_answer = int((batch["labels"] != IGNORE_INDEX).sum())
    assert outputs.logits.shape[0] == n_answer < batch["labels"].numel() / 5  # only the answer positions went through the head
    torch.testing.assert_close(answers_only[0], full[0], rtol=1e-6, atol=0)
    for name in trained:
        torch.testing.assert_close(answers_only[1][name], full[1][name], rtol=1e-5, atol=1e-8, msg=name)
    assert any(g.abs().sum() > 0 for name, g in full[1].items() if "lora_A" in name)


def test_gradient_accumulation_keeps_the_global_batch():
    paper = replace(RECIPE, per_device_batch_size=16, global_batch_size=128)
    assert gradient_accumulation(paper, world_size=8) == 1
    assert gradient_accumulation(paper, world_size=1) == 8
    with pytest.raises(ValueError, match="not a multiple"):
        gradient_accumulation(paper, world_size=3)


@pytest.fixture(scope="module")
def adapter(world) -> Path:
    root = world["root"]
    result = train_split(world["base"], world["records"], world["images"], root / "adapter", root / "ckpt",
                         root / "live", RECIPE, seed=0, **CARD_FACTS)
    assert result["steps"] == 4  # 8 records / batch 4 x 2 epochs
    return root / "adapter"


def test_adapter_holds_lora_projector_processor_and_recipe(adapter, world):
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys)
    assert any(PROJECTOR in k for k in keys), "the trained projector must be saved with the adapter"
    card = read_card(adapter)
    assert card.base_for(adapter) == str(Path(world["base"]).resolve()) and not Path(card.base).is_absolute()
    assert (card.image_position, card.tokenizer_rule, card.precision) == ("front", "sentencepiece", "fp32")
    assert AutoProcessor.from_pretrained(adapter).tokenizer is not None
    assert (world["root"] / "live" / "plots" / "metrics").is_dir(), "DVCLive curves missing"


def test_training_moves_the_projector_away_from_the_base(adapter, world):
    base = load_base(world["base"], "fp32")
    trained, _ = load_classifier(adapter, Evaluation("fp32", merge_lora=False))
    before = base.model.multi_modal_projector.linear_1.weight
    after = trained.base_model.model.model.multi_modal_projector.modules_to_save["default"].linear_1.weight
    assert not torch.allclose(before, after)


def test_a_finished_split_restores_its_end_with_its_curves(adapter, world):
    root = world["root"]
    first = (root / "live" / "plots" / "metrics" / "loss.tsv").read_text()
    result = train_split(world["base"], world["records"], world["images"], root / "adapter2", root / "ckpt",
                         root / "live2", RECIPE, seed=0, **CARD_FACTS)
    # Same inputs: the checkpoint at the last step is restored and no step is trained again.
    assert result["steps"] == 4 and result["train_loss"] > 0
    assert (root / "live2" / "plots" / "metrics" / "loss.tsv").read_text() == first
    assert (root / "adapter2" / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()


def test_the_validation_loss_is_the_answer_loss_each_epoch_and_leaves_the_adapter_as_it_was(world):
    root = world["root"]
    recipe = replace(RECIPE, lora_dropout=0.1)  # dropout draws from the CPU generator evaluation must leave alone
    validation_records = world["records"][:3]
    runs = {
        name: train_split(world["base"], world["records"], world["images"], root / f"adapter-{name}", root / f"ckpt-{name}",
                          root / f"live-{name}", recipe, seed=0, validation_records=records, **CARD_FACTS)
        for name, records in (("plain", None), ("validated", validation_records))
    }
    adapter = root / "adapter-validated"
    assert (adapter / "adapter_model.safetensors").read_bytes() == (root / "adapter-plain" / "adapter_model.safetensors").read_bytes()
    metrics = Path("plots") / "metrics"
    assert (root / "live-validated" / metrics / "loss.tsv").read_text() == (root / "live-plain" / metrics / "loss.tsv").read_text()
    assert validation_steps(runs["plain"]["history"]) == []
    validation = validation_steps(runs["validated"]["history"])
    assert [entry["step"] for entry in validation] == [2, 4]  # the end of each of the 2 epochs
    rows = (root / "live-validated" / metrics / "eval_loss.tsv").read_text().splitlines()
    assert rows[0] == "step\teval_loss" and [row.split("\t")[0] for row in rows[1:]] == ["2", "4"]
    # the last one is the trained adapter's loss on the validation pairs' answer tokens (one batch of 3)
    model, _ = load_classifier(adapter, Evaluation("fp32", merge_lora=False))
    batch = AnswerLogitsCollator(TrainingCollator(load_inputs(world["base"]), world["images"]))(validation_records)
    with torch.no_grad():
        outputs = model(**{key: value for key, value in batch.items() if key != "labels"})
    assert validation[-1]["eval_loss"] == pytest.approx(float(answer_loss(outputs, batch["labels"])), rel=1e-5)
    plot_training_loss({"1": runs["validated"]["history"], "2": runs["plain"]["history"]}, root / "loss.png")
    assert Image.open(root / "loss.png").size == (840, 480)


LAUNCHED_TRAINING = Path(__file__).with_name("launched_training.py")


@pytest.mark.parametrize("kill_in", ["after", "during"])
def test_a_killed_split_resumes_to_the_same_adapter_and_curves(world, tmp_path, kill_in):
    """kill -9 right after a checkpoint, or while one is being written; the rerun ends where an uninterrupted run does."""
    recipe = replace(RECIPE, epochs=3)  # 6 steps, a checkpoint every epoch (2 steps)
    runs = {}
    for name, kill_at in (("whole", -1), ("killed", 4)):
        root = tmp_path / name
        root.mkdir()
        facts = {"base": world["base"], "records": world["records"], "images": str(world["images"]),
                 "recipe": asdict(recipe), "seed": 0}
        (root / "world.json").write_text(json.dumps({**facts, "kill_at": kill_at, "kill_in": kill_in}))
        first = subprocess.run([sys.executable, LAUNCHED_TRAINING, root], capture_output=True, text=True)
        if name == "killed":
            assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
            assert not (root / "adapter").exists()
            (root / "world.json").write_text(json.dumps(facts))
            again = subprocess.run([sys.executable, LAUNCHED_TRAINING, root], capture_output=True, text=True)
            assert again.returncode == 0, again.stderr[-2000:]
        else:
            assert first.returncode == 0, first.stderr[-2000:]
        runs[name] = root
    whole, killed = runs["whole"], runs["killed"]
    assert (killed / "adapter" / "adapter_model.safetensors").read_bytes() == (whole / "adapter" / "adapter_model.safetensors").read_bytes()
    for curve in ("loss", "learning_rate", "grad_norm"):
        path = Path("plots") / "metrics" / f"{curve}.tsv"
        assert (killed / "live" / path).read_text() == (whole / "live" / path).read_text(), curve


def test_batched_prediction_equals_one_at_a_time(adapter, world):
    """Greedy ids and label probabilities batched (left padding) equal one pair at a time, on pairs whose answers
    differ and whose prompts differ in length by over 100 tokens in one batch: a one-word tweet and a long one
    join the 8 training pairs."""
    extra = [llava_record({"id": 8 + i, "text": text, "text_label": "neutral", "image_label": "neutral",
                           "multimodal_label": "neutral", "image_path": f"data/{i}.jpg"}, "front")
             for i, text in enumerate(["ok", " ".join(TEXTS * 6)])]
    model, inputs = load_classifier(adapter, Evaluation("fp32", merge_lora=False))
    records, _ = fit_records(inputs, [*world["records"], *extra])  # the long tweet is cut to the model's positions
    images = world["images"]
    lengths = prompt_batch(inputs, records, images)["attention_mask"].sum(1)
    assert lengths.max() - lengths.min() >= 100, f"one batch must mix very different prompt lengths: {lengths.tolist()}"
    batched = generate_ids(model, inputs, records, images, batch_size=len(records), max_new_tokens=10)
    single = generate_ids(model, inputs, records, images, batch_size=1, max_new_tokens=10)
    assert batched == single
    answers = inputs.processor.tokenizer.batch_decode(batched, skip_special_tokens=True)
    # Equal answers prove nothing if they are all alike, empty or echo the prompt: a padding bug that changes one
    # answer must be able to show. (Trained 4 steps, this adapter's answers still follow each pair's input.)
    assert len(set(answers)) >= len(records) // 2, answers
    assert all(answer.strip() for answer in answers), answers
    assert not any("ASSISTANT" in answer or "Consider the following" in answer for answer in answers), answers
    scores = score_labels(model, inputs, records, images, batch_size=len(records))
    for together, alone in zip(scores, score_labels(model, inputs, records, images, batch_size=1), strict=True):
        assert np.allclose(together.answer_logprobs, alone.answer_logprobs, atol=1e-5)
    rows = prediction_rows(records, answers, scores)
    assert [r["id"] for r in rows] == list(range(10))
    assert rows[0]["multimodal_label"] == "positive"


@pytest.mark.parametrize("raw, expected", [
    ("positive, neutral, positive", ("positive", "neutral", "positive")),
    (" Positive,NEUTRAL ,  negative.", ("positive", "neutral", "negative")),
    ("Text: positive; Image: negative; Multimodal: negative", ("positive", "negative", "negative")),
    ("The text is positive, the image is neutral, so overall positive", ("positive", "neutral", "positive")),
    ("positive, happy, negative", ("positive", None, "negative")),
    ("positive, positive or negative, negative", ("positive", None, "negative")),
    ("positive\nneutral\npositive", ("positive", "neutral", "positive")),
    ("negative negative", ("negative", "negative", None)),
    ("I cannot tell", (None, None, None)),
    ("", (None, None, None)),
    ("positive, neutral, positive, positive, negative", ("positive", "neutral", "positive")),
])
def test_parser_reads_odd_answers(raw, expected):
    assert parse_answer(raw) == expected


def test_a_cpu_run_with_other_kernels_threads_or_pins_is_another_run(monkeypatch):
    from llavac.train import run_fingerprint

    records = [{"id": 1}]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU facts count on a CPU only
    same = run_fingerprint("base", records, RECIPE, 0)
    assert run_fingerprint("base", records, RECIPE, 0) == same
    monkeypatch.setenv("MKL_CBWR", "a-branch-no-pin-sets")  # what torch would read in a fresh process
    other_branch = run_fingerprint("base", records, RECIPE, 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert len({same, other_branch, run_fingerprint("base", records, RECIPE, 0)}) == 3


def test_a_run_of_other_library_code_is_another_run(monkeypatch, tmp_path):
    """DVC re-runs training when the code changes; the checkpoints of the old code's run must not be restored."""
    import llavac.train
    from llavac.train import run_fingerprint

    (tmp_path / "data").mkdir()
    (tmp_path / "train.py").write_text("x = 1\n")
    (tmp_path / "data" / "mvsa.py").write_text("y = 1\n")
    monkeypatch.setattr(llavac.train, "LIBRARY", tmp_path)
    fingerprints = {run_fingerprint("base", [{"id": 1}], RECIPE, 0)}
    (tmp_path / "data" / "mvsa.py").write_text("y = 2\n")
    fingerprints.add(run_fingerprint("base", [{"id": 1}], RECIPE, 0))
    (tmp_path / "data" / "mvsa.py").rename(tmp_path / "data" / "other.py")
    fingerprints.add(run_fingerprint("base", [{"id": 1}], RECIPE, 0))
    assert len(fingerprints) == 3


def test_a_run_on_a_rebuilt_base_is_another_run(tmp_path):
    """The base's path stays artifacts/base_model/llava-hf when params.yaml's build changes; its files do not."""
    from llavac.train import run_fingerprint

    base = tmp_path / "llava-hf"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    before = run_fingerprint(str(base), [{"id": 1}], RECIPE, 0)
    assert run_fingerprint(str(base), [{"id": 1}], RECIPE, 0) == before
    (base / "model.safetensors").write_bytes(b"other weights")
    assert run_fingerprint(str(base), [{"id": 1}], RECIPE, 0) != before


def test_a_run_under_deepspeed_is_another_run(monkeypatch):
    """A DeepSpeed checkpoint's optimizer state is sharded per rank: it resumes only under as many ranks."""
    from llavac.train import run_fingerprint

    records = [{"id": 1}]
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    plain = run_fingerprint("base", records, RECIPE, 0)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    two = run_fingerprint("base", records, RECIPE, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert len({plain, two, run_fingerprint("base", records, RECIPE, 0)}) == 3


def test_fp16_under_deepspeed_without_fp16_kernels_is_refused_in_one_line(world, monkeypatch, tmp_path):
    import llavac.train

    class NoFp16:
        def is_fp16_supported(self) -> bool:
            return False

        def device_name(self) -> str:
            return "cpu"

    monkeypatch.setattr(llavac.train, "get_accelerator", NoFp16)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="precision fp16 under DeepSpeed needs fp16 kernels.*use bf16 or fp32"):
        train_split(world["base"], world["records"], world["images"], tmp_path / "a", tmp_path / "c", tmp_path / "l",
                    replace(RECIPE, precision="fp16"), seed=0, **CARD_FACTS)
    assert not (tmp_path / "c").exists()


def test_checkpoints_of_another_run_are_discarded_on_resume(adapter, world):
    root = world["root"]
    other = world["records"][:4]  # different data: the split's old checkpoint must not be reused
    result = train_split(world["base"], other, world["images"], root / "adapter3", root / "ckpt",
                         root / "live3", RECIPE, seed=0, **CARD_FACTS)
    # A fresh run on 4 records is 2 steps; the stale checkpoint sits at step 4.
    assert result["steps"] == 2, "a foreign checkpoint was resumed instead of training"


def test_classify_cli_reads_csv_jsonl_and_folders(adapter, world, tmp_path, monkeypatch):
    from llavac.cli import main

    monkeypatch.chdir(tmp_path)  # the adapter's card finds its base from any directory

    images = world["images"] / "data"
    (tmp_path / "pairs.csv").write_text(
        "id,image,text\n" + "".join(f"cat_{i},{images / f'{i}.jpg'},{TEXTS[i]}\n" for i in range(3)), encoding="utf-8"
    )
    (tmp_path / "pairs.jsonl").write_text(
        "".join(json.dumps({"image": str(images / f"{i}.jpg"), "text": TEXTS[i]}) + "\n" for i in range(2)))
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        (folder / f"tweet{i}.jpg").write_bytes((images / f"{i}.jpg").read_bytes())
        (folder / f"tweet{i}.txt").write_bytes(TEXTS[i].encode("gbk"))
    for source, ids in (("pairs.csv", ["cat_0", "cat_1", "cat_2"]), ("pairs.jsonl", [1, 2]), ("folder", ["tweet0", "tweet1"])):
        out = tmp_path / f"{source}.out.jsonl"
        main(["classify", str(tmp_path / source), "--adapter", str(adapter), "--out", str(out), "--batch-size", "2"])
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == ids
        assert all({"raw", "pred_text", "pred_image", "pred_multimodal"} <= set(r) for r in rows)
        assert [r["text"] for r in rows] == TEXTS[: len(ids)]  # each output row says what it classified


def test_classify_cli_checks_every_pair_before_the_model_and_keeps_one_line_per_pair(adapter, world, tmp_path, capsys):
    from llavac.cli import main

    image = world["images"] / "data" / "0.jpg"
    (tmp_path / "ok.jpg").write_bytes(image.read_bytes())
    (tmp_path / "cut.jpg").write_bytes(image.read_bytes()[:200])
    os.mkfifo(tmp_path / "fifo.jpg")  # reading it would block forever
    (tmp_path / "pairs.csv").write_text(
        "image,text\n/etc/passwd,hello\n../absent.jpg,hi\nfifo.jpg,x\nok.jpg,what a lovely day\ncut.jpg,meh\nok.jpg,\n"
    )
    out = tmp_path / "out.jsonl"
    main(["classify", str(tmp_path / "pairs.csv"), "--adapter", str(adapter), "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [("error" in r) for r in rows] == [True, True, True, False, True, True]
    assert "not a readable image" in rows[0]["error"] and "No such file" in rows[1]["error"]
    assert "not a regular file" in rows[2]["error"] and "not a readable image" in rows[4]["error"]
    assert rows[5]["error"] == "empty_text" and {"raw", "pred_multimodal"} <= set(rows[3])
    assert "classified 1 pairs, skipped 5" in capsys.readouterr().out


def test_classify_cli_takes_one_pair_on_the_command_line(adapter, world, tmp_path):
    from llavac.cli import main

    out = tmp_path / "one.jsonl"
    main(["classify", "--image", str(world["images"] / "data" / "1.jpg"), "--text", TEXTS[1], "--adapter", str(adapter),
          "--out", str(out)])
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (row["id"], row["image"], row["text"]) == ("1", "1.jpg", TEXTS[1]) and "pred_text" in row


def test_classify_cli_cuts_a_text_too_long_for_the_model_and_says_so(adapter, world, tmp_path):
    """The field report: 999 emoji, ~4,000 ids against 512 positions, once answered silently past them."""
    from llavac.cli import main

    out = tmp_path / "long.jsonl"
    main(["classify", "--image", str(world["images"] / "data" / "1.jpg"), "--text", EMOJI_FLOOD, "--adapter", str(adapter),
          "--out", str(out)])
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["text"] == EMOJI_FLOOD and row["truncated_tokens"] > 3000 and row["pred_multimodal"] in LABELS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the input holds no pairs"),
        (b"image,text\n", "the input holds no pairs"),
        (b"image;text\na.jpg;hi\n", "`image` and `text` are required"),
        (b"image,text\na.jpg,caf\xe9\n", "pairs.csv is not UTF-8 text"),
    ],
)
def test_classify_cli_refuses_an_unusable_input_before_loading_the_model(adapter, tmp_path, content, message, monkeypatch):
    from llavac import cli

    monkeypatch.setattr("llavac.predict.load_classifier", lambda *a: pytest.fail("the model was loaded"))
    (tmp_path / "pairs.csv").write_bytes(content)
    with pytest.raises(SystemExit, match=message):
        cli.main(["classify", str(tmp_path / "pairs.csv"), "--adapter", str(adapter), "--out", str(tmp_path / "o.jsonl")])
    assert not (tmp_path / "o.jsonl").exists()


def test_classify_cli_names_a_missing_base_model(adapter, tmp_path):
    from llavac.cli import main

    moved = tmp_path / "elsewhere"
    shutil.copytree(adapter, moved)  # the card's base is relative to the adapter: now it points nowhere
    with pytest.raises(SystemExit, match="the base model of .* is missing: it was trained on the folder"):
        main(["classify", "--image", "x.jpg", "--text", "hi", "--adapter", str(moved)])


def test_fetch_splits_refuses_a_file_as_destination(tmp_path, capsys):
    from llavac.cli import main

    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit):
        main(["fetch-splits", "--dest", str(tmp_path / "f")])
    assert f"--dest {tmp_path / 'f'} is a file; give a folder" in capsys.readouterr().err


def test_classify_cli_without_an_adapter_says_which_stage_makes_it(tmp_path):
    from llavac.cli import main

    with pytest.raises(SystemExit, match="dvc repro train"):
        main(["classify", str(tmp_path), "--adapter", str(tmp_path / "nothing")])


def test_same_seed_trains_the_same_adapter(world):
    from safetensors.torch import load_file

    root, quick = world["root"], replace(RECIPE, epochs=1)
    weights = []
    for run in range(2):
        train_split(world["base"], world["records"], world["images"], root / f"same{run}", root / f"same-ckpt{run}",
                    root / f"same-live{run}", quick, seed=3, **CARD_FACTS)
        weights.append(load_file(root / f"same{run}" / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_splits_trained_side_by_side_in_processes_equal_splits_trained_alone(world):
    """`train_splits` with two processes (the CPU default, `train.cpu_processes`): each split's adapter is the
    one `train_split` writes in this process, and the results come back in the jobs' order."""
    root, quick = world["root"], replace(RECIPE, epochs=1)
    jobs = [{"base": world["base"], "records": world["records"][:n], "image_folder": world["images"],
             "out_dir": root / f"side{n}", "checkpoint_dir": root / f"side-ckpt{n}", "live_dir": root / f"side-live{n}",
             "recipe": quick, "seed": n, **CARD_FACTS} for n in (6, 8)]
    results = list(train_splits(jobs, processes=2))
    assert [result["steps"] for result in results] == [2, 2]  # 6 and 8 records at batch 4
    for job, result in zip(jobs, results):
        alone = {**job, "out_dir": root / f"alone-{job['out_dir'].name}", "checkpoint_dir": root / f"alone-ckpt-{job['seed']}"}
        assert train_split(**alone)["train_loss"] == result["train_loss"]
        assert (job["out_dir"] / "adapter_model.safetensors").read_bytes() == \
            (alone["out_dir"] / "adapter_model.safetensors").read_bytes()


def test_split_processes_is_one_on_a_gpu_or_under_deepspeed_else_the_request_or_the_cpus():
    cpus = len(os.sched_getaffinity(0))
    assert split_processes(0, 10, deepspeed_launch=False) == (1 if torch.cuda.is_available() else min(10, cpus))
    assert split_processes(3, 2, deepspeed_launch=False) == (1 if torch.cuda.is_available() else 2)
    assert split_processes(4, 10, deepspeed_launch=True) == 1


def test_bf16_training_keeps_fp32_master_weights_and_moves_the_projector(world):
    """At the paper's projector rate (2e-5) a bf16 weight would round most updates away; fp32 masters keep them."""
    from safetensors.torch import load_file

    root = world["root"]
    recipe = replace(RECIPE, precision="bf16", epochs=1, learning_rate=2e-4, projector_learning_rate=2e-5)
    train_split(world["base"], world["records"], world["images"], root / "bf16", root / "bf16-ckpt",
                root / "bf16-live", recipe, seed=0, **CARD_FACTS)
    saved = load_file(root / "bf16" / "adapter_model.safetensors")
    assert {tensor.dtype for tensor in saved.values()} == {torch.float32}
    key = next(k for k in saved if PROJECTOR in k and k.endswith("linear_1.weight"))
    before = load_base(world["base"], "bf16").model.multi_modal_projector.linear_1.weight.float()
    moved = (saved[key] != before).float().mean().item()
    assert moved > 0.9, f"only {moved:.0%} of the projector's weights moved"
    # The same step on bf16 weights: most of it is below half an ulp and vanishes.
    assert ((before + 2e-5).bfloat16().float() != before).float().mean().item() < 0.5
