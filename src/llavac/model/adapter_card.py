"""What an adapter folder says about itself, so prediction rebuilds exactly the inputs it was trained on.

`llavac.json` beside the LoRA weights names the base model, the prompt's image position, the
tokenization rule, the training precision, the label words and answer template, and the recipe.
Prediction and `llavac classify` read it instead of asking the user to repeat any of it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llavac.files import write_json
from llavac.labels import LABELS
from llavac.prompt import ANSWER_TEMPLATE, EOS

CARD_FILE = "llavac.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterCard:
    """The facts about one trained adapter that its predictions depend on."""

    base: str
    """A hub id, or the base model's folder relative to the adapter folder (so the pair can move)."""
    image_position: str
    tokenizer_rule: str
    """`sentencepiece` (LLaVA's slow tokenizer, reproduced) or `tokenizer` (the model's own, chunk-wise)."""
    precision: str
    """The training compute precision; trainable weights and optimizer state are fp32 regardless."""
    recipe: dict[str, Any]
    method: str = "lora"
    """`lora`: the folder holds a trained LoRA and projector; `none` (`train.method: none`): only the base's
    processor, and prediction runs the base model as it is (the zero-shot baseline)."""
    labels: tuple[str, ...] = LABELS
    answer_template: str = ANSWER_TEMPLATE + EOS
    synthetic_sample: bool = False
    """Whether it was trained on the embedded synthetic sample (`llavac classify` then warns); False for
    real data and for cards written before this field existed."""

    def write(self, adapter_dir: Path) -> None:
        write_json(adapter_dir / CARD_FILE, asdict(self))

    def base_for(self, adapter_dir: Path) -> str:
        """The base model as `from_pretrained` takes it, from wherever the caller runs."""
        local = adapter_dir / self.base
        if local.is_dir():
            return str(local.resolve())
        if self.base.startswith("."):  # stored relative to the adapter; a hub id never starts with a dot
            raise FileNotFoundError(
                f"the base model of {adapter_dir} is missing: it was trained on the folder {local.resolve()}. "
                "Rebuild it there (`dvc repro base_model` in the checkout that trained the adapter), or move "
                "the adapter and its base together, keeping their relative location."
            )
        return self.base


def card_for(base: str, adapter_dir: Path, **facts: Any) -> AdapterCard:
    """A card whose `base` is stored relative to `adapter_dir` when it is a local folder."""
    stored = os.path.relpath(Path(base).resolve(), adapter_dir.resolve()) if Path(base).is_dir() else base
    return AdapterCard(base=stored, **facts)


def read_card(adapter_dir: Path) -> AdapterCard:
    """The card of `adapter_dir`, read from its `llavac.json`.

    A card written by a newer LLaVAC may hold fields this version does not know: they are ignored,
    with one logged warning naming them. A card written by another version may lack a field this
    version needs and has no default for.

    Raises:
        FileNotFoundError: the folder holds no `llavac.json` (no trained adapter).
        ValueError: the card lacks a required field (named, with the adapter folder).
    """
    path = adapter_dir / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{adapter_dir} (seen from {Path.cwd()}) holds no trained adapter ({CARD_FILE} is missing): pass "
            "--adapter with the folder of one (in a LLaVAC checkout, `dvc repro train` writes artifacts/adapters/<split>)"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    known = {field.name: field for field in fields(AdapterCard)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        log.warning(
            "%s: ignoring field(s) this LLaVAC version does not know: %s (written by another version?)",
            path,
            ", ".join(unknown),
        )
    missing = [
        name
        for name, field in known.items()
        if name not in data and field.default is MISSING and field.default_factory is MISSING
    ]
    if missing:
        raise ValueError(
            f"{path} lacks the required field(s) {', '.join(missing)}: the adapter in {adapter_dir} was written "
            "by another LLaVAC version or edited by hand; retrain it (`dvc repro train`) or add the field(s)"
        )
    kept = {name: value for name, value in data.items() if name in known}
    if "labels" in kept:
        kept["labels"] = tuple(kept["labels"])
    return AdapterCard(**kept)
