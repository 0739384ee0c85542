"""LoRA fine-tuning with the LLaVA-1.5 task-LoRA recipe, through the Hugging Face Trainer.

What is LLaVA's and kept exactly: LoRA on every linear layer of the language model only, the
projector trained fully at its own learning rate, loss on the answer and ``</s>`` only, square
padding of images, cosine schedule with warmup, DeepSpeed ZeRO whenever the `deepspeed` launcher
started the run (on GPUs, or on a CPU with DeepSpeed's CPU accelerator and gloo).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator
from deepspeed.utils import safe_get_full_fp32_param
from peft import LoraConfig, PeftModel, get_peft_model
from torch.utils.data import Dataset
from transformers import LlavaForConditionalGeneration, Trainer, TrainingArguments, set_seed
from transformers.trainer import TRAINER_STATE_NAME as TRAINER_STATE

from llavac.cpu_numerics import cpu_numerics_environment
from llavac.curves import mean_loss, write_curves
from llavac.data.mvsa import is_synthetic
from llavac.files import publish_folder, staging_folder
from llavac.launcher import launched_by_deepspeed
from llavac.model.adapter_card import card_for
from llavac.model.inputs import IGNORE_INDEX, TrainingCollator, fit_records
from llavac.model.loading import load_base, load_inputs, save_inputs, torch_dtype
from llavac.params import Recipe

log = logging.getLogger(__name__)

LIBRARY = Path(__file__).resolve().parent
"""This package's folder: a checkpoint belongs to the code of all its modules (`run_fingerprint`)."""
TRAINING_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "deepspeed")
"""The libraries whose version a checkpoint belongs to (`run_fingerprint`)."""
LANGUAGE_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The language model's linear layers: LLaVA's `find_all_linear_names` minus projector, tower and lm_head."""
LANGUAGE_MODEL_LINEAR = rf".*language_model.*\.({'|'.join(LANGUAGE_LINEAR_NAMES)})"
"""LoRA targets: a plain name list would also hit CLIP's q/k/v projections."""

PROJECTOR = "multi_modal_projector"


class Records(Dataset):
    """A list of LLaVA-format records; the collator does the tensor work per batch."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]


class ValidatingTrainer(Trainer):
    """The Trainer, with evaluation that leaves the CPU random generator as it found it.

    Each evaluation draws one number from the global CPU generator (its DataLoader's seed); on a CPU
    that generator also draws LoRA's dropout masks, so without this a run with a validation set and
    `lora_dropout > 0` would train a different adapter than the same run without one.
    """

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with torch.random.fork_rng(devices=[]):
            return super().evaluate(*args, **kwargs)


def lora_config(r: int, alpha: int, dropout: float) -> LoraConfig:
    """LoRA on the language model's linear layers; the projector is saved and trained in full."""
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias="none",
        target_modules=LANGUAGE_MODEL_LINEAR,
        modules_to_save=[PROJECTOR],
        task_type="CAUSAL_LM",
    )


def add_lora(model: LlavaForConditionalGeneration, recipe: Recipe) -> PeftModel:
    """Wrap `model` with the recipe's LoRA."""
    return get_peft_model(model, lora_config(recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout))


def optimizer_groups(model: torch.nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """Two AdamW groups as in LLaVA's `mm_projector_lr`: LoRA weights, and the projector at its own rate."""
    lora, projector = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (projector if PROJECTOR in name else lora).append(parameter)
    return [
        {"params": lora, "lr": recipe.learning_rate, "weight_decay": recipe.weight_decay},
        {"params": projector, "lr": recipe.projector_learning_rate, "weight_decay": 0.0},
    ]


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """(batch, sequence) bool: the positions whose logits predict a supervised token (the next label is not ignored).

    With right padding they are the answer and ``</s>`` positions shifted by one: ~6 of ~700 per pair
    at 7B, against a vocabulary of 32,064.
    """
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


class AnswerLogitsCollator:
    """`TrainingCollator`'s batches with `logits_to_keep`: the language-model head runs at the answer positions only.

    The full head would compute (batch x sequence x vocabulary) logits of which the loss reads a
    hundredth; transformers' `logits_to_keep` (a boolean mask) keeps the positions before the head.
    """

    def __init__(self, collator: TrainingCollator) -> None:
        self.collator = collator

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collator(records)
        return {**batch, "logits_to_keep": answer_positions(batch["labels"])}


def answer_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """The causal-LM loss from the kept logits ((n, vocabulary), n = the answer positions): the same terms as the full one.

    Cross-entropy of each kept position's logits against the token after it, summed and divided by
    `num_items_in_batch` (the Trainer's count of supervised tokens over the accumulated batch and the
    ranks), else by their number here: what transformers' `ForCausalLMLoss` computes from all logits.
    """
    targets = labels[:, 1:][answer_positions(labels)[:, :-1]]
    loss = torch.nn.functional.cross_entropy(outputs.logits.float(), targets.to(outputs.logits.device), reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else targets.numel())


def gradient_accumulation(recipe: Recipe, world_size: int) -> int:
    """Steps to accumulate so that per-device batch x devices x steps equals the recipe's global batch."""
    per_step = recipe.per_device_batch_size * world_size
    if recipe.global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size {recipe.global_batch_size} is not a multiple of "
            f"per_device_batch_size {recipe.per_device_batch_size} x {world_size} device(s)"
        )
    return recipe.global_batch_size // per_step


def keep_trainables_in_fp32(model: torch.nn.Module) -> None:
    """Mixed precision as DeepSpeed does it: the frozen base computes in bf16, trained weights stay fp32.

    With the Trainer's `bf16=True` the forward pass runs under autocast; the LoRA weights, the
    projector and AdamW's state stay fp32, so a 2e-5 step on a projector weight of ~0.01 (below half
    a bf16 ulp) is applied instead of rounded away.
    """
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()


def trained_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trained tensor of `model` (LoRA and projector), whole and in fp32, keyed as in `named_parameters`.

    Under DeepSpeed each comes from DeepSpeed's fp32 master copy (`safe_get_full_fp32_param`): under
    ZeRO-3 a parameter holds only this rank's partition, and in bf16 the model's copy has lost the
    master's low bits. That gathering is a collective: every rank calls this, in the same order.
    """
    weights = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            master = safe_get_full_fp32_param(parameter)
            weights[name] = (parameter if master is None else master).detach().float().cpu()
    return weights


def training_arguments(recipe: Recipe, out_dir: Path, seed: int, use_deepspeed: bool, validate: bool = False) -> TrainingArguments:
    """The Trainer's arguments for `recipe`; with `use_deepspeed`, the recipe's ZeRO config file; with
    `validate`, the validation loss at the end of every epoch (a curve only: no model selection, as
    in the paper, which trains a fixed number of epochs).

    The Trainer fills the config's "auto" values (micro batch, global batch, accumulation, bf16/fp16,
    bucket sizes) from these arguments; the file itself is passed as it is.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.per_device_batch_size,
        per_device_eval_batch_size=recipe.per_device_batch_size,
        eval_strategy="epoch" if validate else "no",
        prediction_loss_only=True,  # the answer-only head keeps no logits worth gathering
        gradient_accumulation_steps=gradient_accumulation(recipe, world_size),
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        warmup_steps=recipe.warmup_ratio,  # transformers 5 reads a float in [0, 1) as a ratio
        lr_scheduler_type=recipe.lr_scheduler,
        max_grad_norm=recipe.max_grad_norm,
        bf16=recipe.precision == "bf16",
        fp16=recipe.precision == "fp16",
        tf32=recipe.precision == "bf16" and torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # bf16 on a CPU (autocast) is refused without it
        activation_checkpointing=recipe.gradient_checkpointing,  # transformers 5's name for it
        deepspeed=recipe.deepspeed if use_deepspeed else None,
        seed=seed,
        data_seed=seed,
        logging_steps=1,  # as finetune_task_lora.sh: a 7B split is only ~28 optimizer steps
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=False,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning needs a GPU to copy to
        disable_tqdm=False,
    )


def run_fingerprint(
    base: str, records: list[dict[str, Any]], recipe: Recipe, seed: int, validation_records: list[dict[str, Any]] | None = None
) -> str:
    """A hash of everything that defines a split's training run, so a resume never mixes two runs.

    The inputs: the base model (its path, and every file's name, size and modification time, so a
    rebuilt base is another run even at the same path), the records and validation records (their
    losses are part of the run's history), the recipe and the seed. The code: every module of this
    package, and the versions of the libraries that train (`TRAINING_LIBRARIES`). An edit anywhere in
    the library while a run is interrupted therefore restarts it: safer than restoring the end of a
    run that other code trained, which DVC (re-running the stage because its code changed) would
    then publish. On a CPU the kernels' instruction set, the thread count and the variables of
    `llavac.cpu_numerics` change the rounding, so they are part of the run; on a GPU the CPU does no
    arithmetic that matters. So is the launch: a DeepSpeed checkpoint (optimizer state sharded per
    rank) resumes only under DeepSpeed with as many ranks.
    """
    code = hashlib.sha256()
    for module in sorted(LIBRARY.rglob("*.py")):
        code.update(module.relative_to(LIBRARY).as_posix().encode() + b"\0" + module.read_bytes() + b"\0")
    base_files = ([(file.relative_to(base).as_posix(), file.stat().st_size, file.stat().st_mtime_ns)
                   for file in sorted(Path(base).rglob("*")) if file.is_file()] if Path(base).is_dir() else None)
    facts: dict[str, Any] = {
        "base": base, "base_files": base_files, "records": records, "validation_records": validation_records,
        "recipe": asdict(recipe), "seed": seed, "code": code.hexdigest(),
        "versions": {name: importlib.metadata.version(name) for name in TRAINING_LIBRARIES},
    }
    if launched_by_deepspeed():
        facts["deepspeed_ranks"] = int(os.environ["WORLD_SIZE"])
    if not torch.cuda.is_available():
        facts["cpu"] = [torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), cpu_numerics_environment()]
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def discard_foreign_checkpoints(checkpoint_dir: Path, fingerprint: str) -> None:
    """Delete checkpoints left by a different run (`run_fingerprint`), then stamp the folder.

    The checkpoints live outside DVC's outputs, so nothing else would notice that they are stale.
    """
    stamp = checkpoint_dir / "run-fingerprint.txt"
    if checkpoint_dir.is_dir() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
"""The name of a folder the Trainer saves a checkpoint in (`transformers.trainer_utils.PREFIX_CHECKPOINT_DIR`)."""


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint that was saved to the end, after deleting any that were not.

    The Trainer writes a checkpoint's `trainer_state.json` last, and deletes the previous checkpoint
    only after it; a kill during a save leaves a newer folder without that file (or with a torn one)
    next to the previous, complete checkpoint, from which the run resumes instead.

    Only folders named `checkpoint-<int>` (the Trainer's own pattern, `CHECKPOINT_NAME`) are
    checkpoints; anything else matching `checkpoint-*` (a `checkpoint-28.bak/` copy, a file) is left
    alone, with one logged warning naming it.
    """
    candidates = sorted(checkpoint_dir.glob("checkpoint-*"))
    strays = [path.name for path in candidates if not (path.is_dir() and CHECKPOINT_NAME.fullmatch(path.name))]
    if strays:
        log.warning(
            "%s: skipping %s: not a Trainer checkpoint folder (checkpoint-<int>)", checkpoint_dir, ", ".join(strays)
        )
    numbered = sorted(
        (path for path in candidates if path.name not in strays),
        key=lambda path: int(CHECKPOINT_NAME.fullmatch(path.name)[1]),
        reverse=True,
    )
    for checkpoint in numbered:
        try:
            json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
            return checkpoint
        except (OSError, ValueError):
            shutil.rmtree(checkpoint)
    return None


def train_split(
    base: str,
    records: list[dict[str, Any]],
    image_folder: Path,
    out_dir: Path,
    checkpoint_dir: Path,
    live_dir: Path,
    recipe: Recipe,
    seed: int,
    image_position: str,
    validation_records: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Fine-tune `base` on one split's training records; write the adapter, projector, processor and curves.

    With `validation_records` (the split's validation set) the validation loss is computed at the end
    of every epoch, on the same answer tokens as the training loss, and drawn beside it.

    Checkpoints go to `checkpoint_dir`, outside the stage's DVC outputs (which DVC deletes before a
    run); they hold the projector too, as a peft `modules_to_save`. A run of the same inputs, code
    and CPU numerics (`run_fingerprint`) continues from the last complete checkpoint, so an
    interrupted split resumes where it stopped and a finished one restores its end; the Trainer
    restores the optimizer, scheduler, RNG and data order, so the adapter is the one an
    uninterrupted run writes. Checkpoints of any other run are deleted first.

    Under the `deepspeed` launcher every rank runs this: DeepSpeed with the recipe's ZeRO config
    (bf16 compute with fp32 masters when the recipe says bf16), the adapter gathered whole from the
    fp32 masters, rank 0 alone writing the outputs while the others wait (docs/deepspeed.md).
    """
    use_deepspeed = launched_by_deepspeed()
    if use_deepspeed and recipe.precision == "fp16" and not get_accelerator().is_fp16_supported():
        raise ValueError(f"precision fp16 under DeepSpeed needs fp16 kernels, which DeepSpeed's {get_accelerator().device_name()} "
                         "accelerator lacks here (a CPU needs AVX512-FP16 or AMX-FP16); use bf16 or fp32")
    if use_deepspeed:
        # The process group ZeRO-3's partitioned loading counts ranks in. On GPUs the Trainer would
        # start it too; under `use_cpu` it starts only torch's, which DeepSpeed does not see.
        deepspeed.init_distributed()  # the accelerator's backend: nccl on CUDA, gloo on a CPU
    # With ZeRO-3, TrainingArguments must exist before from_pretrained so weights load partitioned.
    args = training_arguments(recipe, checkpoint_dir, seed, use_deepspeed, validate=bool(validation_records))
    main_process = args.process_index == 0
    # Rank 0 deletes stale and torn checkpoints while the others wait; then they all pick the same one.
    # (The checkpoint folder is one folder for all ranks: a shared disk when they span nodes.)
    with args.main_process_first(local=False, desc="checkpoint cleanup"):
        if main_process:
            discard_foreign_checkpoints(checkpoint_dir, run_fingerprint(base, records, recipe, seed, validation_records))
        checkpoint = last_complete_checkpoint(checkpoint_dir)
    base_model = load_base(base, recipe.precision)
    # LoRA's A matrices are drawn here, before the Trainer would seed anything; seeded after the
    # loading, whose use of the generator differs between a plain load and ZeRO-3's partitioned one.
    set_seed(seed)
    model = add_lora(base_model, recipe)
    inputs = load_inputs(base, model.config, recipe.model_max_length)
    fitted, truncated = fit_records(inputs, records)  # an over-long tweet is cut here, never fails a step
    validation = Records(fit_records(inputs, validation_records)[0]) if validation_records else None
    if use_deepspeed:
        # DeepSpeed keeps its own fp32 master copy and needs one dtype across the model (ZeRO-3 fails otherwise).
        model.to(torch_dtype(recipe.precision))
    else:
        keep_trainables_in_fp32(model)
    if recipe.gradient_checkpointing:
        model.enable_input_require_grads()
    trainer = ValidatingTrainer(
        model=model,
        args=args,
        train_dataset=Records(fitted),
        eval_dataset=validation,
        data_collator=AnswerLogitsCollator(TrainingCollator(inputs, image_folder)),
        compute_loss_func=answer_loss,
        optimizer_cls_and_kwargs=(torch.optim.AdamW, {"params": optimizer_groups(model, recipe)}),
    )
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    weights = trained_weights(model)  # on every rank: under DeepSpeed it gathers across them
    if main_process:
        staging = staging_folder(out_dir)
        model.save_pretrained(str(staging), state_dict=weights)
        save_inputs(inputs, staging)
        card_for(
            base, out_dir, image_position=image_position, tokenizer_rule=inputs.encoder.rule,
            precision=recipe.precision, recipe=asdict(recipe), synthetic_sample=is_synthetic(image_folder),
        ).write(staging)
        publish_folder(staging, out_dir)
        write_curves(trainer.state.log_history, live_dir, {"truncated_pairs": sum(map(bool, truncated))})
    trainer.accelerator.wait_for_everyone()  # no rank goes on before the adapter and curves are whole
    return {
        "train_loss": mean_loss(trainer.state.log_history),  # the Trainer's counts only this session's steps
        "steps": result.global_step,
        "truncated_pairs": sum(map(bool, truncated)),
        "samples_per_second": result.metrics["train_samples_per_second"],
        "history": trainer.state.log_history,
    }


def split_processes(requested: int, n_splits: int, deepspeed_launch: bool) -> int:
    """How many splits to train at once: `requested` (0: one per CPU this process may run on), at most
    `n_splits`; 1 on a GPU or under the `deepspeed` launcher, whose processes are its ranks.

    On a CPU each split's process runs one thread (`llavac.cpu_numerics`), so processes side by side
    change nothing in the bytes a split trains (the pipeline test trains one again alone and compares).
    """
    if deepspeed_launch or torch.cuda.is_available():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(n_splits, requested or cpus))


def _train_split_job(job: dict[str, Any]) -> dict[str, Any]:
    """`train_split(**job)`: a top-level function, so a process pool can send it to a fresh interpreter."""
    return train_split(**job)


def train_splits(jobs: list[dict[str, Any]], processes: int) -> Iterator[dict[str, Any]]:
    """`train_split(**job)` for each job, in order; with `processes` > 1, that many at a time, each in a fresh
    interpreter (`spawn`: it inherits the CPU pins through the environment). Yields each split's result
    as `train_split` returns it, in the order of `jobs`; a split that fails raises its exception here.
    """
    if processes <= 1:
        for job in jobs:
            yield train_split(**job)
        return
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_train_split_job, jobs)


def untrained_adapter(base: str, out_dir: Path, image_position: str, precision: str) -> None:
    """`train.method: none`: an adapter folder that stands for `base` as it is, for the zero-shot baseline.

    It holds the base's processor and a card of method `none`, no weights: prediction loads the base
    model unchanged and asks it the same prompt (`predict.load_classifier`).
    """
    inputs = load_inputs(base)
    staging = staging_folder(out_dir)
    save_inputs(inputs, staging)
    card_for(base, out_dir, image_position=image_position, tokenizer_rule=inputs.encoder.rule, precision=precision,
             recipe={}, method="none").write(staging)
    publish_folder(staging, out_dir)
