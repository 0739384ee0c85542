"""params.yaml's schema: every knob, its type and its allowed values, checked once before a stage runs.

A typo'd key, a batch size of 0 or an unknown protocol stops the stage with one message that names
the key, the value and what is allowed, instead of a traceback deep inside a library. The
fine-tuning recipe and the evaluation settings are plain dataclasses, so the library takes them as
typed arguments without depending on this module's validation library.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

PARAMS_FILE = Path("params.yaml")

Dataset = Literal["mvsa-single", "mvsa-multiple"]
Protocol = Literal["cheema", "random", "zhang"]
SplitSource = Literal["generated", "official"]
ImagePosition = Literal["front", "inline"]
Precision = Literal["fp32", "bf16", "fp16"]
TokenizerKind = Literal["trained", "llama"]
Backend = Literal["hf", "llava-repo"]
TrainMethod = Literal["lora", "none"]
Modalities = Literal["both", "text", "image"]
PredictMode = Literal["generate", "score"]
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]
Fraction = Annotated[float, Field(ge=0, le=1)]


class ParamsError(ValueError):
    """params.yaml breaks the schema; the message lists every offending key."""


@dataclass(frozen=True)
class Recipe:
    """One model's fine-tuning recipe; the `llava-v15-7b` block of params.yaml is the paper's."""

    lora_r: PositiveInt
    lora_alpha: PositiveInt
    lora_dropout: Fraction
    learning_rate: PositiveFloat
    projector_learning_rate: PositiveFloat
    weight_decay: NonNegativeFloat
    warmup_ratio: Fraction
    lr_scheduler: Scheduler
    max_grad_norm: PositiveFloat
    epochs: PositiveFloat
    per_device_batch_size: PositiveInt
    global_batch_size: PositiveInt
    precision: Precision
    gradient_checkpointing: bool
    model_max_length: PositiveInt
    deepspeed: str


@dataclass(frozen=True)
class Evaluation:
    """How the classifier runs: the compute precision, and whether the LoRA is merged into the base."""

    precision: Precision
    merge_lora: bool


class Section(BaseModel):
    """A block of params.yaml: unknown keys are errors, values are immutable once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def shell_quotable(path: str) -> str:
    """A folder dvc.yaml passes to a stage as ``'${...}'``: any character but the single quote that would end it.

    Spaces, brackets, braces, ``*``, ``?``, commas, double quotes, ``$`` and non-ASCII letters stay literal
    inside single quotes (and Spark's readers escape Hadoop's glob characters, `preprocess.literal_path`).
    """
    if "'" in path:
        raise ValueError(
            "holds a single quote ('), which would end the quoting of the path in the stages' shell commands "
            "(dvc.yaml passes it as '${...}'); rename the folder or point to it through a symlink without one"
        )
    return path


QuotablePath = Annotated[str, AfterValidator(shell_quotable)]


class Data(Section):
    raw_dir: QuotablePath


class Sample(Section):
    seed: int
    n_pairs: PositiveInt
    min_side: PositiveInt
    max_side: PositiveInt

    @model_validator(mode="after")
    def _sides_ordered(self) -> Sample:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} is larger than max_side {self.max_side}")
        return self


class Spark(Section):
    master: str
    partitions: PositiveInt


class Splits(Section):
    seed: int
    source: SplitSource
    dir: QuotablePath
    allow_mismatches: bool


class Prompt(Section):
    image_position: ImagePosition
    modalities: Modalities


class Train(Section):
    method: TrainMethod
    backend: Backend
    launcher: str
    cpu_processes: NonNegativeInt

    @field_validator("launcher")
    @classmethod
    def _launcher_exists(cls, launcher: str) -> str:
        program = shlex.split(launcher)[0] if launcher.strip() else ""
        if not program or shutil.which(program) is None:
            raise ValueError(
                f"{program or launcher!r} is not a program on PATH: use `python`, or install the launcher "
                "(e.g. `pip install deepspeed` for `deepspeed --num_gpus N`) in the project's environment"
            )
        return launcher


class Predict(Section):
    mode: PredictMode
    batch_size: PositiveInt
    max_new_tokens: PositiveInt


class VisionBuild(Section):
    image_size: PositiveInt
    patch_size: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    num_hidden_layers: PositiveInt
    num_attention_heads: PositiveInt


class TextBuild(Section):
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    num_hidden_layers: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    max_position_embeddings: PositiveInt
    initializer_range: PositiveFloat


class Build(Section):
    vision: VisionBuild
    text: TextBuild
    tokenizer: TokenizerKind
    vocab_size: PositiveInt | None = None

    @model_validator(mode="after")
    def _trained_vocabulary_has_a_size(self) -> Build:
        if self.tokenizer == "trained" and self.vocab_size is None:
            raise ValueError("a `trained` tokenizer needs `vocab_size` (the number of pieces to learn)")
        return self


class Model(Section):
    """A model: `build` (an architecture the base_model stage initialises) or `pretrained` (a hub id or folder)."""

    build: Build | None = None
    pretrained: str | None = None
    pretrained_llava: str | None = None  # the same model in the LLaVA repository's format (train.backend=llava-repo)
    vision_tower: str | None = None  # its CLIP tower, for that format
    recipe: Recipe
    evaluation: Evaluation

    @model_validator(mode="after")
    def _one_source(self) -> Model:
        if (self.build is None) == (self.pretrained is None):
            raise ValueError("give exactly one of `build:` and `pretrained:`")
        return self


class Params(Section):
    seed: int
    dataset: Dataset
    protocol: Protocol
    model: str
    data: Data
    sample: Sample
    spark: Spark
    splits: Splits
    prompt: Prompt
    train: Train
    predict: Predict
    models: dict[str, Model]

    @model_validator(mode="after")
    def _model_known(self) -> Params:
        if self.model not in self.models:
            raise ValueError(f"model {self.model!r} is not one of: {', '.join(self.models)} (the keys under `models:`)")
        return self

    @property
    def selected(self) -> Model:
        """The `models.<model>` block the top-level `model` key selects."""
        return self.models[self.model]


def describe(error: ValidationError, source: Path) -> str:
    """One line per problem: the dotted key, the value given, and what is allowed."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            lines.append(f"  {key}: unknown key (a typo?)")
        elif problem["type"] in ("missing", "missing_argument"):
            lines.append(f"  {key}: missing")
        else:
            scalar = not isinstance(problem["input"], (dict, list))
            where = f"{key}={problem['input']!r}: " if scalar else f"{key}: " if key else ""
            lines.append(f"  {where}{problem['msg'].removeprefix('Value error, ')}")
    return f"{source} is not valid ({len(lines)} problem{'s' * (len(lines) > 1)}):\n" + "\n".join(lines)


def validate(raw: Any, source: Path = PARAMS_FILE) -> Params:
    """`raw` (params.yaml as loaded) checked against the schema; a `ParamsError` names every problem."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(describe(error, source)) from None


def load_params(path: Path = PARAMS_FILE) -> Params:
    """params.yaml (DVC has already applied any `dvc exp run -S` overrides to it), validated."""
    if not path.exists():
        raise ParamsError(f"{path} not found: run the command from the repository's root")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise ParamsError(f"{path} is not valid YAML: {error}") from None
    return validate(raw, path)
