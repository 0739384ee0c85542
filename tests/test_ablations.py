"""The ablations' inputs and models: a blank image for text-only, the base model as it is for train.method none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from llavac.model.adapter_card import read_card
from llavac.model.build import build_llava
from llavac.model.inputs import prompt_batch
from llavac.model.loading import load_base, load_inputs
from llavac.params import Evaluation
from llavac.predict import load_classifier, predict_records
from llavac.prompt import llava_record
from llavac.train import untrained_adapter
from helpers import write_params
from test_model import ARCHITECTURE, TEXTS


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A built base model and 6 labelled pairs in each of the three modalities."""
    root = tmp_path_factory.mktemp("ablations")
    (root / "raw" / "data").mkdir(parents=True)
    pairs = []
    for i in range(6):
        Image.new("RGB", (20 + 5 * i, 30), (40 * i, 200 - 20 * i, 90)).save(root / "raw" / "data" / f"{i}.jpg")
        pairs.append({"id": i, "text": TEXTS[i % 4], "text_label": "positive", "image_label": "neutral",
                      "multimodal_label": "positive", "image_path": f"data/{i}.jpg"})
    base = build_llava(root / "base", TEXTS * 5, ARCHITECTURE, seed=0)
    records = {m: [llava_record(pair, "front", m) for pair in pairs] for m in ("both", "text", "image")}
    return {"root": root, "base": str(base), "records": records, "images": root / "raw"}


def test_text_only_sees_one_mean_colour_in_the_same_token_layout(world):
    inputs = load_inputs(world["base"])
    both = prompt_batch(inputs, world["records"]["both"], world["images"])
    text_only = prompt_batch(inputs, world["records"]["text"], world["images"])
    assert torch.equal(both["input_ids"], text_only["input_ids"])  # same prompt, same number of image tokens
    mean_colour = Image.new("RGB", (50, 50), inputs.background)
    expected = inputs.processor.image_processor([mean_colour], return_tensors="pt")["pixel_values"][0]
    assert all(torch.allclose(pixels, expected) for pixels in text_only["pixel_values"])
    assert not torch.allclose(both["pixel_values"][0], expected)
    assert text_only["pixel_values"].abs().max() < 0.05  # the processor's mean normalises to ~0


def test_image_only_has_an_empty_tweet(world):
    inputs = load_inputs(world["base"])
    both = prompt_batch(inputs, world["records"]["both"], world["images"])
    image_only = prompt_batch(inputs, world["records"]["image"], world["images"])
    assert torch.equal(both["pixel_values"], image_only["pixel_values"])
    assert (image_only["attention_mask"].sum(1) < both["attention_mask"].sum(1)).all()


def test_method_none_predicts_with_the_base_model_as_it_is(world, tmp_path):
    adapter = tmp_path / "adapters" / "1"
    untrained_adapter(world["base"], adapter, "front", "fp32")
    card = read_card(adapter)
    assert card.method == "none" and card.base_for(adapter) == str(Path(world["base"]).resolve())
    assert not list(adapter.glob("adapter_model*")), "nothing trained, no weights"
    model, inputs = load_classifier(adapter, Evaluation("fp32", merge_lora=True))
    base = load_base(world["base"], "fp32").eval()
    batch = prompt_batch(inputs, world["records"]["both"], world["images"])
    with torch.inference_mode():
        assert torch.equal(model(**batch).logits, base(**batch).logits)
    records = world["records"]["both"]
    scored = predict_records(model, inputs, records, world["images"], 3, 8, "score")
    assert all(row[f"pred_{t}"] is not None for row in scored for t in ("text", "image", "multimodal"))
    generated = predict_records(model, inputs, records, world["images"], 3, 8, "generate")
    assert len(generated) == len(records) and all("raw" in row for row in generated)
    json.dumps(generated)  # rows are JSON as the predict stage writes them


def test_train_stage_with_method_none_writes_untrained_adapters(world, tmp_path, run_stage):
    write_params(tmp_path, train__method="none")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "base.json").write_text(json.dumps({"name_or_path": world["base"]}))
    for split in ("1", "2"):
        (tmp_path / "llava" / split).mkdir(parents=True)
        (tmp_path / "llava" / split / "train.json").write_text(json.dumps(world["records"]["both"]))
    assert run_stage(tmp_path, "train.py", "base", "llava", world["images"], "adapters", "ckpt", "live", "machine.json") is None
    for split in ("1", "2"):
        assert read_card(tmp_path / "adapters" / split).method == "none"
    assert (tmp_path / "live").is_dir() and not (tmp_path / "ckpt").exists()
    assert json.loads((tmp_path / "machine.json").read_text())["pins"]["OMP_NUM_THREADS"] == "1"


def test_llava_repo_backend_refuses_text_only(tmp_path, run_stage):
    write_params(tmp_path, train__backend="llava-repo", prompt__modalities="text")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "base.json").write_text(json.dumps({"name_or_path": "b", "llava_model": "m", "vision_tower": "v"}))
    message = run_stage(tmp_path, "train.py", "base", "llava", "raw", "adapters", "ckpt", "live", "machine.json")
    assert "cannot train prompt.modalities=text" in message and "train.backend=hf" in message
