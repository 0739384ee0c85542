"""The second training backend: the LLaVA repository's own `llava/train/train.py`, and its output brought home.

`train.backend: llava-repo` runs the authors' training code (llava-torch 1.2.2.post1, in its own
environment `.venv-llava`, since it needs transformers 4.37) with the flags of
`scripts/v1_5/finetune_task_lora.sh`, mapped from the selected recipe: on GPUs under the `deepspeed`
launcher with the recipe's ZeRO config, on a CPU as `python -m llava.train.train`. Its output (a peft
LoRA over `LlavaLlamaForCausalLM` + `non_lora_trainables.bin` with the projector) is then converted into
this project's adapter format on the llava-hf base, so prediction, scoring and `llavac classify` are
shared by both backends.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file

from llavac.curves import mean_loss, write_curves
from llavac.files import folder_written_whole
from llavac.launcher import is_deepspeed, launcher_world_size
from llavac.model.adapter_card import card_for
from llavac.model.loading import load_base, load_inputs, save_inputs
from llavac.params import Recipe
from llavac.train import LANGUAGE_LINEAR_NAMES, gradient_accumulation, lora_config

LLAVA_VENV = Path(".venv-llava")
TRAINED_LLAVA_DIR = "llava-lora"
"""LLaVA's own evaluation (`builder.load_pretrained_model`) wants "llava" and "lora" in the folder name."""
LLAVA_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
LORA_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
"""peft's LoRA weights file: safetensors since peft 0.7 (LLaVA forks on a newer peft), a torch pickle before (peft 0.4-0.6)."""
NON_LORA_TRAINABLES = "non_lora_trainables.bin"
"""The trained projector, written by llava/train/train.py once training ends, with `torch.save`."""
CHECKPOINT = re.compile(r"checkpoint-\d+")
"""The Trainer's intermediate checkpoint folders inside --output_dir."""


def flag(value: Any) -> str:
    """A value as LLaVA's `HfArgumentParser` reads it (`True`, `2e-05`, `-2`)."""
    return str(value)


def llava_world_size(launcher: str, cuda: bool, local_devices: int) -> int:
    """The processes LLaVA's training runs in, which its gradient accumulation is derived from: the
    launcher's count on GPUs (`launcher_world_size`), 1 on a CPU, where `llava_train_command` starts
    one plain process whatever the launcher says."""
    return launcher_world_size(launcher, local_devices) if cuda else 1


def llava_train_command(
    llava_bin: Path, launcher: str, cuda: bool, flash_attention: bool, model: str, vision_tower: str,
    data_path: Path, image_folder: Path, output_dir: Path, recipe: Recipe, seed: int, world_size: int,
) -> list[str]:
    """The command line of `finetune_task_lora.sh` for `recipe` on our data: pure, so a test can read it.

    On GPUs: DeepSpeed's launcher (from the LLaVA environment, with the launcher's own options) runs
    `llava/train/train_mem.py` (flash-attention 2) or, where flash-attention is not installed,
    `llava.train.train` as a module; the recipe's ZeRO config, tf32, 4 data workers. On a CPU: plain
    `python -m llava.train.train`, no DeepSpeed, no tf32, no worker processes. Everywhere: wandb off
    (DVCLive curves are made from LLaVA's own log instead) and the seed passed through.
    """
    if cuda:
        options = shlex.split(launcher)[1:] if is_deepspeed(launcher) else ["--num_gpus", "1"]
        module = "llava.train.train_mem" if flash_attention else "llava.train.train"
        start = [str(llava_bin / "deepspeed"), *options, "--module", module]
    else:
        start = [str(llava_bin / "python"), "-m", "llava.train.train"]
    flags: dict[str, Any] = {
        "lora_enable": True, "lora_r": recipe.lora_r, "lora_alpha": recipe.lora_alpha,
        "lora_dropout": recipe.lora_dropout, "mm_projector_lr": recipe.projector_learning_rate,
        **({"deepspeed": recipe.deepspeed} if cuda else {}),
        "model_name_or_path": model, "version": "v1", "data_path": data_path, "image_folder": image_folder,
        "vision_tower": vision_tower, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "image_aspect_ratio": "pad",
        "group_by_modality_length": True, "bf16": recipe.precision == "bf16",
        **({"fp16": True} if recipe.precision == "fp16" else {}),
        "output_dir": output_dir, "num_train_epochs": recipe.epochs,
        "per_device_train_batch_size": recipe.per_device_batch_size, "per_device_eval_batch_size": 4,
        "gradient_accumulation_steps": gradient_accumulation(recipe, world_size),
        "evaluation_strategy": "no", "save_strategy": "steps", "save_steps": 50000, "save_total_limit": 1,
        "learning_rate": recipe.learning_rate, "weight_decay": recipe.weight_decay,
        "warmup_ratio": recipe.warmup_ratio, "lr_scheduler_type": recipe.lr_scheduler,
        "max_grad_norm": recipe.max_grad_norm, "logging_steps": 1,
        **({"tf32": True} if cuda else {}),
        "model_max_length": recipe.model_max_length, "gradient_checkpointing": recipe.gradient_checkpointing,
        "dataloader_num_workers": 4 if cuda else 0, "lazy_preprocess": True, "report_to": "none", "seed": seed,
    }
    return [*start, *(word for name, value in flags.items() for word in (f"--{name}", flag(value)))]


def ensure_llava_env(repo: Path) -> Path:
    """The LLaVA environment's `bin/`, installed by `make llava-env` (a no-op once its pins are in)."""
    result = subprocess.run(["make", "-C", str(repo), "llava-env"], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"`make llava-env` failed; the LLaVA environment is not installed:\n{result.stderr[-2000:]}")
    return repo / LLAVA_VENV / "bin"


def has_flash_attention(llava_bin: Path) -> bool:
    """Whether the LLaVA environment can import flash-attention (what `train_mem.py` insists on)."""
    return subprocess.run([str(llava_bin / "python"), "-c", "import flash_attn"], capture_output=True).returncode == 0


def language_lora_key(key: str) -> str:
    """A LLaVA LoRA key (`base_model.model.model.layers.0...`) under llava-hf's module path."""
    return key.replace("base_model.model.model.layers.", "base_model.model.model.language_model.layers.", 1)


def projector_key(key: str) -> str:
    """A LLaVA projector key (`base_model.model.model.mm_projector.0.weight`) under llava-hf's names."""
    head, tail = key.split("mm_projector.", 1)
    index, parameter = tail.split(".", 1)
    return f"{head}multi_modal_projector.{ {'0': 'linear_1', '2': 'linear_2'}[index] }.{parameter}"


def read_lora_weights(path: Path) -> dict[str, torch.Tensor]:
    """A peft LoRA state dict from `adapter_model.safetensors` or (older peft) `adapter_model.bin`."""
    if path.suffix == ".safetensors":
        return load_file(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def import_llava_lora(lora_dir: Path, base: str, out_dir: Path, image_position: str, recipe: dict[str, Any]) -> Path:
    """Convert a LLaVA-repository LoRA run into this project's adapter on the llava-hf `base`; return `out_dir`.

    The LoRA A/B matrices move to llava-hf's module names, the trained projector from
    `non_lora_trainables.bin` becomes the adapter's `modules_to_save` copy; every tensor must land
    (a key left over or a LoRA weight left untouched is an error, not a silent partial adapter).
    """
    config_file = lora_dir / "adapter_config.json"
    non_lora_file = lora_dir / NON_LORA_TRAINABLES
    weights_file = next((lora_dir / name for name in LORA_WEIGHTS if (lora_dir / name).is_file()), None)
    if not config_file.is_file() or weights_file is None:
        raise FileNotFoundError(
            f"{lora_dir} is not a LLaVA LoRA run: it needs adapter_config.json, {' or '.join(LORA_WEIGHTS)} and "
            f"{NON_LORA_TRAINABLES} (what llava/train/train.py writes with --lora_enable True)"
        )
    if not non_lora_file.is_file():
        raise FileNotFoundError(
            f"{lora_dir} has the LoRA ({weights_file.name}) but no {NON_LORA_TRAINABLES}, the projector LLaVA trains "
            "beside it. llava/train/train.py writes that file (and config.json) only when training ends, into "
            f"--output_dir{f' (here {lora_dir.parent})' if CHECKPOINT.fullmatch(lora_dir.name) else ''}; a Trainer "
            "checkpoint-N/ folder never holds it. Import the finished --output_dir instead"
        )
    adapter = json.loads(config_file.read_text())
    targets = set(adapter["target_modules"])
    if targets != set(LANGUAGE_LINEAR_NAMES):
        raise ValueError(f"{lora_dir}: LoRA on {sorted(targets)}; LLaVA-1.5's recipe (and this project) puts it on {sorted(LANGUAGE_LINEAR_NAMES)}")
    model = get_peft_model(load_base(base, "fp32"), lora_config(adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]))
    lora = read_lora_weights(weights_file)
    projector = torch.load(non_lora_file, map_location="cpu", weights_only=True)
    state = {language_lora_key(k): v.float() for k, v in lora.items()} | {projector_key(k): v.float() for k, v in projector.items()}
    result = set_peft_model_state_dict(model, state)
    lora_names = {name for name, _ in model.named_parameters() if ".lora_" in name}
    untouched = {name for name in lora_names if name.replace(".default", "") not in state}
    if result.unexpected_keys or untouched:
        raise ValueError(f"{lora_dir}: keys with no place in the llava-hf model {sorted(result.unexpected_keys)[:5]}; "
                         f"LoRA weights not in the checkpoint {sorted(untouched)[:5]}")
    llava_config = json.loads((lora_dir / "config.json").read_text())
    # LLaVA's train.py keeps its --model_max_length in the config: the limit prediction then keeps.
    inputs = load_inputs(base, model.config, llava_config.get("tokenizer_model_max_length"))
    with folder_written_whole(out_dir) as staging:  # as the hf backend's adapters: whole or not at all
        model.save_pretrained(str(staging))
        save_inputs(inputs, staging)
        card_for(
            base, out_dir, image_position=image_position, tokenizer_rule=inputs.encoder.rule,
            precision=LLAVA_DTYPES.get(llava_config.get("torch_dtype"), "fp32"), recipe=recipe,
        ).write(staging)
    return out_dir


def train_split_llava_repo(
    command: list[str], output_dir: Path, base: str, out_dir: Path, live_dir: Path, recipe: Recipe,
) -> dict[str, Any]:
    """Run LLaVA's training (`command`, from `llava_train_command`), then convert its LoRA and curves.

    LLaVA moves ``<image>`` to the front of every human turn itself, so its adapters are `front` ones.
    """
    shutil.rmtree(output_dir, ignore_errors=True)  # LLaVA would resume from a stale run's checkpoints
    output_dir.mkdir(parents=True)
    if subprocess.run(command).returncode:
        raise RuntimeError(f"LLaVA's training failed (its log is above); the command was: {shlex.join(command)}")
    state = json.loads((output_dir / "trainer_state.json").read_text())
    write_curves(state["log_history"], live_dir)
    import_llava_lora(output_dir, base, out_dir, "front", {**asdict(recipe), "backend": "llava-repo"})
    return {"train_loss": mean_loss(state["log_history"]), "steps": state["global_step"], "history": state["log_history"]}
