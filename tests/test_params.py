"""params.yaml: the paper's recipe block is exactly LLaVA-1.5's finetune_task_lora.sh, and every
model block builds a Recipe and names a DeepSpeed config that exists."""

import json
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from llavac.train import Recipe

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_paper_block_is_the_llava_task_lora_recipe():
    block = PARAMS["models"]["llava-v15-7b"]
    assert block["pretrained"] == "llava-hf/llava-1.5-7b-hf"
    assert block["evaluation"] == {"precision": "fp16", "merge_lora": True}  # LLaVA's own evaluation
    assert Recipe(**block["recipe"]) == Recipe(
        lora_r=128, lora_alpha=256, lora_dropout=0.05, learning_rate=2e-4, projector_learning_rate=2e-5,
        weight_decay=0.0, warmup_ratio=0.03, lr_scheduler="cosine", max_grad_norm=1.0, epochs=1,
        per_device_batch_size=16, global_batch_size=128, precision="bf16", gradient_checkpointing=True,
        model_max_length=2048, deepspeed="configs/deepspeed/zero3.json",
    )


def test_every_model_block_builds_a_recipe_with_an_existing_deepspeed_config():
    for name, block in PARAMS["models"].items():
        recipe = Recipe(**block["recipe"])
        config = json.loads((REPO / recipe.deepspeed).read_text())
        assert config["zero_optimization"]["stage"] in (2, 3), name
        assert ("build" in block) != ("pretrained" in block), f"{name}: exactly one of build/pretrained"
    assert PARAMS["model"] in PARAMS["models"]


def test_deepspeed_configs_are_llavas():
    for stage in (2, 3):
        config = json.loads((REPO / f"configs/deepspeed/zero{stage}.json").read_text())
        assert config["zero_optimization"]["stage"] == stage
        assert config["bf16"]["enabled"] == "auto" and config["train_micro_batch_size_per_gpu"] == "auto"
        assert "optimizer" not in config and "scheduler" not in config  # the Trainer makes them
    zero3 = json.loads((REPO / "configs/deepspeed/zero3.json").read_text())["zero_optimization"]
    assert zero3["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("name", sorted(PARAMS["models"]))
def test_every_model_block_is_addressable_with_dvc_exp_run_s(name):
    """`dvc exp run -S KEY=VALUE` parses KEY with Hydra's grammar, in which a dot separates keys."""
    for key in (f"models.{name}.recipe.per_device_batch_size=8", f"models.{name}.evaluation.precision=bf16"):
        override = OverridesParser.create().parse_overrides([key])[0]
        assert override.key_or_group.split(".")[:2] == ["models", name]


def test_a_model_section_with_a_wrong_key_stops_with_the_allowed_keys(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "stages"))
    from common import settings_from

    from llavac.predict import Evaluation

    params = {"model": "tiny", "models": {"tiny": {"evaluation": {"precison": "fp32", "merge_lora": True}}}}
    with pytest.raises(SystemExit, match=r"models.tiny.evaluation has unknown keys \['precison'\] and lacks \['precision'\]"):
        settings_from(Evaluation, params, "evaluation")
    assert settings_from(Evaluation, PARAMS, "evaluation") == Evaluation(**PARAMS["models"][PARAMS["model"]]["evaluation"])
    assert settings_from(Recipe, PARAMS, "recipe") == Recipe(**PARAMS["models"][PARAMS["model"]]["recipe"])
