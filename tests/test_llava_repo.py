"""The LLaVA repository's own code against this project: the `llava-repo` backend and the format conversions.

LLaVA's side runs in .venv-llava (`make llava-env`; `make test` installs it) through `llava_side.py`:
its dataset (`preprocess_v1`, `expand2square`, its CLIP processor), its model on the LLaVA-format
checkpoint, its training script, its evaluation loader. The project's side runs here on the llava-hf
conversion. The two must agree on ids, labels, pixels, logits and the greedy answers' token ids.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from llavac.cli import main as cli
from llavac.llava_repo import (
    TRAINED_LLAVA_DIR, import_llava_lora, llava_train_command, llava_world_size, train_split_llava_repo,
)
from llavac.model.build import LLAVA_DIR, build_llava
from llavac.model.inputs import IGNORE_INDEX, TrainingCollator, prompt_batch
from llavac.model.llava_format import read_llava_config
from llavac.model.loading import load_base, load_inputs
from llavac.predict import Evaluation, generate_ids, load_classifier
from llavac.prompt import llava_record
from llavac.params import Recipe

REPO = Path(__file__).resolve().parents[1]
LLAVA_PYTHON = REPO / ".venv-llava" / "bin" / "python"
LLAVA_BIN = LLAVA_PYTHON.parent
ARCHITECTURE = {
    "vision": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 2},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 512, "initializer_range": 0.2},
    "tokenizer": "trained",
    "vocab_size": 400,
}
RECIPE = Recipe(lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=1e-2, projector_learning_rate=3e-3,
                weight_decay=0.0, warmup_ratio=0.03, lr_scheduler="cosine", max_grad_norm=1.0, epochs=2,
                per_device_batch_size=4, global_batch_size=4, precision="fp32", gradient_checkpointing=False,
                model_max_length=512, deepspeed="configs/deepspeed/zero2.json")
TEXTS = ["RT @amy: what a lovely sunny day! http://t.co/ab12 #happy", "so sad... ??", "  two  spaces\tand a tab ",
         "I hate waiting in the rain #awful", "新年快乐 ?? 😀", "line one\r\nline two", "", "trailing space "]
LABELS = [("positive", "neutral", "positive"), ("negative", "negative", "negative"), ("neutral", "positive", "positive")]

# scripts/v1_5/finetune_task_lora.sh of haotian-liu/LLaVA, flag by flag, with the paper's values.
FINETUNE_TASK_LORA = {
    "lora_enable": "True", "lora_r": "128", "lora_alpha": "256", "mm_projector_lr": "2e-05",
    "model_name_or_path": "liuhaotian/llava-v1.5-7b", "version": "v1",
    "vision_tower": "openai/clip-vit-large-patch14-336", "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": "-2", "mm_use_im_start_end": "False", "mm_use_im_patch_token": "False",
    "image_aspect_ratio": "pad", "group_by_modality_length": "True", "bf16": "True", "num_train_epochs": "1",
    "per_device_train_batch_size": "16", "per_device_eval_batch_size": "4", "gradient_accumulation_steps": "1",
    "evaluation_strategy": "no", "save_strategy": "steps", "save_steps": "50000", "save_total_limit": "1",
    "learning_rate": "0.0002", "weight_decay": "0.0", "warmup_ratio": "0.03", "lr_scheduler_type": "cosine",
    "logging_steps": "1", "tf32": "True", "model_max_length": "2048", "gradient_checkpointing": "True",
    "dataloader_num_workers": "4", "lazy_preprocess": "True",
    # Ours where the script names its own: the data, the output, the ZeRO-3 JSON's place, no wandb.
    "deepspeed": "configs/deepspeed/zero3.json", "data_path": "artifacts/llava/1/train.json",
    "image_folder": "data/MVSA_Single", "output_dir": "artifacts/checkpoints/1/llava-lora", "report_to": "none",
}


def flags_of(command: list[str]) -> dict[str, str]:
    start = next(i for i, word in enumerate(command) if word.startswith("--lora_enable"))
    words = command[start:]
    return {words[i][2:]: words[i + 1] for i in range(0, len(words), 2)}


def paper_recipe() -> Recipe:
    import yaml

    return Recipe(**yaml.safe_load((REPO / "params.yaml").read_text())["models"]["llava-v15-7b"]["recipe"])


def paper_command(launcher: str, cuda: bool, flash_attention: bool, world_size: int) -> list[str]:
    return llava_train_command(
        Path("/env/bin"), launcher, cuda, flash_attention, "liuhaotian/llava-v1.5-7b", "openai/clip-vit-large-patch14-336",
        Path("artifacts/llava/1/train.json"), Path("data/MVSA_Single"), Path("artifacts/checkpoints/1/llava-lora"),
        paper_recipe(), seed=42, world_size=world_size,
    )


def test_the_7b_command_is_finetune_task_lora_on_our_data():
    command = paper_command("deepspeed --num_gpus 8", cuda=True, flash_attention=True, world_size=8)
    assert command[:5] == ["/env/bin/deepspeed", "--num_gpus", "8", "--module", "llava.train.train_mem"]
    flags = flags_of(command)
    assert {k: flags[k] for k in FINETUNE_TASK_LORA} == FINETUNE_TASK_LORA
    # Beyond the script: train.py's defaults, spelt out, and the seed.
    assert set(flags) - set(FINETUNE_TASK_LORA) == {"lora_dropout", "max_grad_norm", "seed"}
    assert (flags["lora_dropout"], flags["max_grad_norm"], flags["seed"]) == ("0.05", "1.0", "42")


def test_fewer_gpus_accumulate_to_the_global_batch_and_a_cpu_runs_train_py_plainly():
    assert flags_of(paper_command("deepspeed --num_gpus 2", True, True, 2))["gradient_accumulation_steps"] == "4"
    no_flash = paper_command("python", cuda=True, flash_attention=False, world_size=1)
    assert no_flash[:5] == ["/env/bin/deepspeed", "--num_gpus", "1", "--module", "llava.train.train"]
    assert flags_of(no_flash)["gradient_accumulation_steps"] == "8"
    # on a CPU LLaVA's code is one plain process whatever the launcher: the global batch is accumulated there
    assert llava_world_size("deepspeed --num_gpus 2", cuda=False, local_devices=2) == 1
    assert llava_world_size("deepspeed --num_gpus 2", cuda=True, local_devices=8) == 2
    cpu = paper_command("python", cuda=False, flash_attention=False, world_size=1)
    assert cpu[:3] == ["/env/bin/python", "-m", "llava.train.train"]
    flags = flags_of(cpu)
    assert "deepspeed" not in flags and "tf32" not in flags and flags["dataloader_num_workers"] == "0"


def llava_side(*args: object) -> object:
    """Run `llava_side.py` in the LLaVA environment and load what it wrote."""
    if not LLAVA_PYTHON.is_file():
        pytest.fail("the LLaVA environment is missing: run `make llava-env` (make test does)")
    out = Path(str(args[-1]))
    result = subprocess.run([str(LLAVA_PYTHON), str(REPO / "tests" / "llava_side.py"), *map(str, args)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A built tiny base (both formats), 8 pairs with non-square images, and their LLaVA data JSON."""
    root = tmp_path_factory.mktemp("llava-repo")
    (root / "raw" / "data").mkdir(parents=True)
    records = []
    for i, text in enumerate(TEXTS):
        text_label, image_label, mm = LABELS[i % 3]
        Image.new("RGB", (20 + 9 * i, 31), (30 * i, 200 - 20 * i, 90)).save(root / "raw" / "data" / f"{i}.jpg")
        records.append(llava_record({"id": i, "text": text, "text_label": text_label, "image_label": image_label,
                                     "multimodal_label": mm, "image_path": f"data/{i}.jpg"}, "front"))
    (root / "train.json").write_text(json.dumps(records))
    hf = build_llava(root / "base", TEXTS * 5, ARCHITECTURE, seed=0)
    return {"root": root, "hf": hf, "llava": root / "base" / LLAVA_DIR, "records": records, "images": root / "raw"}


def collapse_image(ids: list[int], image_id: int) -> list[int]:
    """Our ids with the run of image positions as LLaVA's single placeholder (-200)."""
    start = ids.index(image_id)
    end = start + ids.count(image_id)
    return [*ids[:start], -200, *ids[end:]]


def assert_same_training_items(llava_dir: Path, hf_dir: Path, records: list[dict], images: Path, tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text(json.dumps(records))
    reference = llava_side("dataset", llava_dir, tmp_path / "data.json", images, tmp_path / "items.pt")
    inputs = load_inputs(str(hf_dir))
    batch = TrainingCollator(inputs, images)(records)
    n_image = inputs.n_image_tokens(batch["pixel_values"])
    for row, item in enumerate(reference):
        n = int(batch["attention_mask"][row].sum())
        ids, labels = batch["input_ids"][row, :n].tolist(), batch["labels"][row, :n].tolist()
        assert collapse_image(ids, inputs.image_token_id) == item["input_ids"].tolist(), records[row]["id"]
        start = ids.index(inputs.image_token_id)
        assert labels[start : start + n_image] == [IGNORE_INDEX] * n_image
        assert [*labels[:start], IGNORE_INDEX, *labels[start + n_image :]] == item["labels"].tolist()
        assert torch.equal(batch["pixel_values"][row], item["pixel_values"]), records[row]["id"]


def test_llavas_dataset_gives_our_ids_labels_and_pixels(world, tmp_path):
    assert_same_training_items(world["llava"], world["hf"], world["records"], world["images"], tmp_path)


def test_llavas_dataset_gives_our_ids_labels_and_pixels_on_the_real_vocabulary(real_shaped_base, world, tmp_path):
    """LLaMA's 32,000 pieces and 336-pixel images: `preprocess_v1` with the slow tokenizer, as in the 7B run."""
    assert_same_training_items(real_shaped_base.parent / LLAVA_DIR, real_shaped_base, world["records"], world["images"], tmp_path)


def test_the_conversion_gives_llavas_logits(world, tmp_path):
    reference = llava_side("logits", world["llava"], world["root"] / "train.json", world["images"], tmp_path / "logits.pt")
    model = load_base(str(world["hf"]), "fp32").eval()
    batch = TrainingCollator(load_inputs(str(world["hf"])), world["images"])(world["records"])
    with torch.inference_mode():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=batch["pixel_values"]).logits
    for row, expected in enumerate(reference):
        n, vocab = expected.shape
        assert n == int(batch["attention_mask"][row].sum())
        assert (logits[row, :n, :vocab] - expected).abs().max().item() <= 1e-4
        assert torch.equal(logits[row, :n, :vocab].argmax(-1), expected.argmax(-1))


def test_the_conversion_keeps_every_weight_and_appends_image_and_pad(world):
    llava = load_file(world["llava"] / "model.safetensors")
    hf = load_base(str(world["hf"]), "fp32")
    n_pieces = llava["model.embed_tokens.weight"].shape[0]
    assert torch.equal(hf.get_input_embeddings().weight[:n_pieces], llava["model.embed_tokens.weight"])
    assert torch.equal(hf.lm_head.weight[:n_pieces], llava["lm_head.weight"])
    assert hf.get_input_embeddings().weight.shape[0] % 64 == 0
    assert (hf.config.image_token_index, hf.config.text_config.pad_token_id) == (n_pieces, n_pieces + 1)
    assert torch.equal(hf.model.multi_modal_projector.linear_2.bias, llava["model.mm_projector.2.bias"])
    assert read_llava_config(world["llava"])["mm_vision_tower"] == str(world["llava"] / "vision_tower")


TIE = 1e-2
"""Two tokens whose logits are closer than this are a near-tie, decided by where the two implementations' arithmetic
differs. On the prompt their logits agree within 1e-4; in full `make test` runs (never alone) a pair parted once at a
gap of 2.8e-3 after its first generated token. A real difference parts pairs by whole logits (a corrupted id: 3.4)."""


@pytest.fixture(scope="module")
def llava_trained(world) -> dict:
    """The LLaVA repository's training run on the tiny LLaVA-format base, converted to our adapter."""
    root = world["root"]
    output_dir = root / "ckpt" / TRAINED_LLAVA_DIR
    command = llava_train_command(LLAVA_BIN, "python", False, False, str(world["llava"]), str(world["llava"] / "vision_tower"),
                                  root / "train.json", world["images"], output_dir, RECIPE, seed=0, world_size=1)
    result = train_split_llava_repo(command, output_dir, str(world["hf"]), root / "adapter", root / "live", RECIPE)
    return {"result": result, "output_dir": output_dir, "adapter": root / "adapter"}


def test_llava_training_writes_an_adapter_and_curves(llava_trained, world):
    assert llava_trained["result"]["steps"] == 4  # 8 records / batch 4 x 2 epochs
    assert (llava_trained["adapter"] / "adapter_model.safetensors").is_file()
    assert (world["root"] / "live" / "plots" / "metrics" / "loss.tsv").read_text().count("\n") == 5  # header + 4 steps
    base = load_base(str(world["hf"]), "fp32").model.multi_modal_projector.linear_1.weight
    trained = load_classifier(llava_trained["adapter"], Evaluation("fp32", merge_lora=True))[0].model.multi_modal_projector.linear_1.weight
    assert not torch.allclose(base, trained), "the projector LLaVA trained must replace the base's"


def test_the_converted_adapter_predicts_what_llava_predicts(llava_trained, world, tmp_path):
    reference = llava_side("generate", llava_trained["output_dir"], world["llava"], world["root"] / "train.json",
                           world["images"], 8, tmp_path / "answers.pt")
    model, inputs = load_classifier(llava_trained["adapter"], Evaluation("fp32", merge_lora=True))
    ours = generate_ids(model, inputs, world["records"], world["images"], batch_size=8, max_new_tokens=8)
    # LLaVA generates from embeddings, so transformers 4.37 starts each output with the BOS id it seeds generation
    # with (LLaVA's evaluation drops it when decoding); after it come the new ids, end-of-sequence included.
    bos = inputs.encoder.bos_id
    assert all(ids[0] == bos for ids in reference), reference
    # The token ids themselves: our batched rows against LLaVA's one at a time. A model trained 4 steps has
    # near-ties: where a pair's answers part, our logits at that step (fed LLaVA's answer so far) must hold LLaVA's
    # token and ours within TIE, and one pair at most may part.
    expected = [ids[1:] for ids in reference]
    parted = [k for k, (mine, theirs) in enumerate(zip(ours, expected, strict=True)) if mine != theirs]
    assert len(parted) <= 1, f"pairs {parted} differ: ours {[ours[k] for k in parted]}, LLaVA's {[expected[k] for k in parted]}"
    for k in parted:
        step = next(j for j, (a, b) in enumerate(zip(ours[k], expected[k])) if a != b)
        batch = prompt_batch(inputs, world["records"][k : k + 1], world["images"])
        so_far = torch.tensor([expected[k][:step]], dtype=batch["input_ids"].dtype)
        batch["input_ids"] = torch.cat([batch["input_ids"], so_far], dim=1)
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        with torch.no_grad():
            logits = model(**batch).logits[0, -1]
        gap = float(logits[ours[k][step]] - logits[expected[k][step]])
        assert 0 <= gap < TIE, f"pair {k} parts at step {step} with a logit gap of {gap}, not a tie: ours {ours[k]}, LLaVA's {expected[k]}"
    assert len({tuple(ids) for ids in ours}) > 1, f"the answers must differ across the pairs to prove anything: {ours}"
    assert any(len(ids) > 1 for ids in ours), "answers must be real generations"


def test_import_llava_cli_converts_a_lora_run_and_a_model(llava_trained, world, tmp_path):
    cli(["import-llava", str(llava_trained["output_dir"]), str(tmp_path / "adapter"), "--base", str(world["hf"])])
    ours = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    stage = load_file(llava_trained["adapter"] / "adapter_model.safetensors")
    assert ours.keys() == stage.keys() and all(torch.equal(ours[k], stage[k]) for k in ours)
    cli(["import-llava", str(world["llava"]), str(tmp_path / "hf")])
    again, built = load_base(str(tmp_path / "hf"), "fp32").state_dict(), load_base(str(world["hf"]), "fp32").state_dict()
    assert again.keys() == built.keys() and all(torch.equal(again[k], built[k]) for k in again)


def test_import_llava_refuses_what_it_cannot_convert(llava_trained, tmp_path):
    with pytest.raises(SystemExit, match="holds no LLaVA checkpoint"):
        cli(["import-llava", str(tmp_path), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="needs --base"):
        cli(["import-llava", str(llava_trained["output_dir"]), str(tmp_path / "out")])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"target_modules": ["q_proj"]}))
    with pytest.raises(SystemExit, match="is not a LLaVA LoRA run"):
        cli(["import-llava", str(broken), str(tmp_path / "out"), "--base", "x"])


def test_import_reads_a_safetensors_lora_like_the_bin_one(llava_trained, world, tmp_path):
    """peft >= 0.7 writes adapter_model.safetensors (LLaVA forks on it have no .bin): the same tensors give the same adapter."""
    run = tmp_path / TRAINED_LLAVA_DIR
    run.mkdir()
    for name in ("adapter_config.json", "non_lora_trainables.bin", "config.json"):
        shutil.copyfile(llava_trained["output_dir"] / name, run / name)
    lora = torch.load(llava_trained["output_dir"] / "adapter_model.bin", map_location="cpu", weights_only=True)
    save_file({key: tensor.clone() for key, tensor in lora.items()}, run / "adapter_model.safetensors")
    import_llava_lora(run, str(world["hf"]), tmp_path / "adapter", "front", {})
    ours = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    stage = load_file(llava_trained["adapter"] / "adapter_model.safetensors")
    assert ours.keys() == stage.keys() and all(torch.equal(ours[k], stage[k]) for k in ours)


def test_a_trainer_checkpoint_is_refused_naming_the_missing_projector_and_where_llava_writes_it(tmp_path):
    output_dir = tmp_path / TRAINED_LLAVA_DIR
    checkpoint = output_dir / "checkpoint-50"  # what LLaVA's Trainer saves every --save_steps: LoRA only
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text(json.dumps({"target_modules": ["q_proj"]}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 2)},
              checkpoint / "adapter_model.safetensors")
    with pytest.raises(SystemExit, match=rf"has the LoRA \(adapter_model.safetensors\) but no non_lora_trainables.bin.*"
                                         rf"only when training ends, into --output_dir \(here {re.escape(str(output_dir))}\)"):
        cli(["import-llava", str(checkpoint), str(tmp_path / "out"), "--base", "x"])


def test_import_refuses_lora_on_other_layers(llava_trained, world, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("adapter_model.bin", "non_lora_trainables.bin", "config.json"):
        (copy / name).write_bytes((llava_trained["output_dir"] / name).read_bytes())
    config = json.loads((llava_trained["output_dir"] / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["q_proj", "v_proj"]}))
    with pytest.raises(ValueError, match="LoRA on"):
        import_llava_lora(copy, str(world["hf"]), tmp_path / "out", "front", {})


@pytest.mark.parametrize("change, message", [
    ({"prompt__image_position": "inline"}, "always moves <image> to the front"),
    ({"model": "llava-v15-7b", "models__llava-v15-7b__pretrained_llava": None}, "needs the model in LLaVA's format"),
])
def test_the_train_stage_refuses_what_llava_repo_cannot_train(tmp_path, change, message):
    import sys

    from helpers import write_params
    from llavac.model.loading import write_pointer

    params = write_params(tmp_path, train__backend="llava-repo", **change)
    block = params["models"][params["model"]]
    write_pointer(tmp_path / "base", block.get("pretrained", "base/llava-hf"), block.get("pretrained_llava", "base/llava"),
                  block.get("vision_tower", "base/llava/vision_tower"))
    result = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "base", "llava", "images", "adapters",
                             "checkpoints", "dvclive", "machine.json"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
