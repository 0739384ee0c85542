"""params.yaml: its schema catches every kind of bad value before a stage runs; the paper's recipe
block is exactly LLaVA-1.5's finetune_task_lora.sh; every model block names a DeepSpeed config that exists."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from llavac.params import ParamsError, Recipe, validate

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


def test_every_model_block_is_valid_and_names_an_existing_deepspeed_config():
    params = validate(PARAMS)
    for name, block in params.models.items():
        config = json.loads((REPO / block.recipe.deepspeed).read_text())
        assert config["zero_optimization"]["stage"] in (2, 3), name


def edited(edit) -> dict:
    """A deep copy of the repository's params with `edit` applied."""
    params = copy.deepcopy(PARAMS)
    edit(params)
    return params


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["predict"].update(batch_size=0), "predict.batch_size=0: Input should be greater than 0"),
        (lambda p: p["predict"].update(batch_size=-1), "predict.batch_size=-1: Input should be greater than 0"),
        (lambda p: p["predict"].update(batchsize=8), "predict.batchsize: unknown key"),
        (lambda p: p.update(protocol="kfold"), "protocol='kfold': Input should be 'cheema', 'random' or 'zhang'"),
        (lambda p: p.update(model="llava-v1.5-7b"), "model 'llava-v1.5-7b' is not one of: tiny, tiny-llama, llava-v15-7b"),
        (lambda p: p["models"]["tiny"]["build"].pop("vocab_size"), "a `trained` tokenizer needs `vocab_size`"),
        (lambda p: p["models"]["tiny"]["build"].pop("vision"), "models.tiny.build.vision: missing"),
        (lambda p: p["train"].update(backend="llava"), "train.backend='llava': Input should be 'hf' or 'llava-repo'"),
        (lambda p: p["models"]["tiny"]["recipe"].update(lr=1), "models.tiny.recipe.lr: unknown key"),
        (lambda p: p["models"]["tiny"]["evaluation"].update(precision="fp64"), "Input should be 'fp32', 'bf16' or 'fp16'"),
        (lambda p: p["models"]["tiny"].update(pretrained="x"), "models.tiny: give exactly one of `build:` and `pretrained:`"),
        (lambda p: p["sample"].update(min_side=200), "min_side 200 is larger than max_side 96"),
        (lambda p: p["train"].update(launcher="deepspeedx --num_gpus 8"), "'deepspeedx' is not a program on PATH"),
        (lambda p: p["data"].update(raw_dir="/data/it's"), "data.raw_dir=\"/data/it's\": holds a single quote (')"),
        (lambda p: p["splits"].update(dir="data/o'clock"), "splits.dir=\"data/o'clock\": holds a single quote (')"),
    ],
)
def test_a_bad_param_is_named_with_what_is_allowed(edit, message):
    with pytest.raises(ParamsError, match="params.yaml is not valid") as error:
        validate(edited(edit))
    assert message in str(error.value)


def test_a_stage_stops_on_bad_params_with_one_message_and_no_traceback(tmp_path):
    bad = edited(lambda p: p["predict"].update(batch_size=0))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run([sys.executable, str(REPO / "stages/sample.py"), "out"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: params.yaml is not valid (1 problem):")
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


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


def test_a_path_with_shell_glob_and_non_ascii_characters_is_a_valid_param():
    path = '/data/MVSA copy [v2] {a,b} *?, "dq" naïve $HOME `x` \\ 新'
    params = validate(edited(lambda p: (p["data"].update(raw_dir=path), p["splits"].update(dir=path))))
    assert params.data.raw_dir == params.splits.dir == path
