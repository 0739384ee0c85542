"""Model half: the built base model, inputs and masking, LoRA placement, optimizer groups, training,
resuming, and batched prediction — all on a small random-init llava-hf model built here."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoProcessor, Trainer, TrainingArguments

from llavac.model.build import build_llava
from llavac.model.inputs import IGNORE_INDEX, TrainingCollator, background_colour, pad_to_square
from llavac.model.adapter_card import read_card
from llavac.model.loading import load_base, load_inputs
from llavac.predict import Evaluation, generate_answers, load_classifier, parse_answer, prediction_rows, score_labels
from llavac.prompt import llava_record
from llavac.train import PROJECTOR, Recipe, add_lora, gradient_accumulation, optimizer_groups, train_split

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
    root = tmp_path_factory.mktemp("model")
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
    batch = TrainingCollator(inputs, world["images"], 512)(world["records"][:5])
    assert batch["attention_mask"].sum(1).unique().numel() > 1, "fixture must exercise padding"
    for row, record in enumerate(world["records"][:5]):
        kept = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert tokenizer.decode(kept) == " " + record["conversations"][1]["value"] + "</s>"
        # Every label sits on a real (attended) position and equals the input token there.
        positions = (batch["labels"][row] != IGNORE_INDEX).nonzero().squeeze(1)
        assert batch["attention_mask"][row, positions].all()
        assert torch.equal(batch["input_ids"][row, positions], kept)


def test_sequence_above_max_length_is_refused(world):
    with pytest.raises(ValueError, match="pair 0: .* above model_max_length 20"):
        TrainingCollator(load_inputs(world["base"]), world["images"], 20)(world["records"][:2])


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
                         root / "live", RECIPE, seed=0, resume=False, **CARD_FACTS)
    assert result["steps"] == 4  # 8 records / batch 4 x 2 epochs
    return root / "adapter"


def test_adapter_holds_lora_projector_processor_and_recipe(adapter, world):
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys)
    assert any(PROJECTOR in k for k in keys), "the trained projector must be saved with the adapter"
    card = read_card(adapter)
    assert card.base_for(adapter) == str(Path(world["base"]).resolve()) and not Path(card.base).is_absolute()
    assert (card.image_position, card.tokenizer_rule, card.precision) == ("front", "tokenizer", "fp32")
    assert AutoProcessor.from_pretrained(adapter).tokenizer is not None
    assert (world["root"] / "live" / "plots" / "metrics").is_dir(), "DVCLive curves missing"


def test_training_moves_the_projector_away_from_the_base(adapter, world):
    base = load_base(world["base"], "fp32")
    trained, _ = load_classifier(adapter, Evaluation("fp32", merge_lora=False))
    before = base.model.multi_modal_projector.linear_1.weight
    after = trained.base_model.model.model.multi_modal_projector.modules_to_save["default"].linear_1.weight
    assert not torch.allclose(before, after)


def test_resume_continues_from_the_last_checkpoint(adapter, world):
    root = world["root"]
    result = train_split(world["base"], world["records"], world["images"], root / "adapter2", root / "ckpt",
                         root / "live2", RECIPE, seed=0, resume=True, **CARD_FACTS)
    # The finished split's checkpoint is at its last step: resuming trains no further step.
    assert result["steps"] == 4
    assert not [h for h in result["history"] if "loss" in h]


def test_batched_prediction_equals_one_at_a_time(adapter, world):
    model, inputs = load_classifier(adapter, Evaluation("fp32", merge_lora=False))
    records = world["records"]
    batched = generate_answers(model, inputs, records, world["images"], batch_size=8, max_new_tokens=8)
    single = generate_answers(model, inputs, records, world["images"], batch_size=1, max_new_tokens=8)
    assert batched == single
    assert len(set(batched)) > 1 or batched[0], "answers must be real generations"
    rows = prediction_rows(records, batched, score_labels(model, inputs, records, world["images"], batch_size=8))
    assert [r["id"] for r in rows] == list(range(8))
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


def test_checkpoints_of_another_run_are_discarded_on_resume(adapter, world):
    root = world["root"]
    other = world["records"][:4]  # different data: the split's old checkpoint must not be reused
    result = train_split(world["base"], other, world["images"], root / "adapter3", root / "ckpt",
                         root / "live3", RECIPE, seed=0, resume=True, **CARD_FACTS)
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
                    root / f"same-live{run}", quick, seed=3, resume=False, **CARD_FACTS)
        weights.append(load_file(root / f"same{run}" / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_bf16_training_keeps_fp32_master_weights_and_moves_the_projector(world):
    """At the paper's projector rate (2e-5) a bf16 weight would round most updates away; fp32 masters keep them."""
    from safetensors.torch import load_file

    root = world["root"]
    recipe = replace(RECIPE, precision="bf16", epochs=1, learning_rate=2e-4, projector_learning_rate=2e-5)
    train_split(world["base"], world["records"], world["images"], root / "bf16", root / "bf16-ckpt",
                root / "bf16-live", recipe, seed=0, resume=False, **CARD_FACTS)
    saved = load_file(root / "bf16" / "adapter_model.safetensors")
    assert {tensor.dtype for tensor in saved.values()} == {torch.float32}
    key = next(k for k in saved if PROJECTOR in k and k.endswith("linear_1.weight"))
    before = load_base(world["base"], "bf16").model.multi_modal_projector.linear_1.weight.float()
    moved = (saved[key] != before).float().mean().item()
    assert moved > 0.9, f"only {moved:.0%} of the projector's weights moved"
    # The same step on bf16 weights: most of it is below half an ulp and vanishes.
    assert ((before + 2e-5).bfloat16().float() != before).float().mean().item() < 0.5
