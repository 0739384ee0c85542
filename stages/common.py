"""What the stage scripts share: reading params.yaml, picking the model block, one logger each.

Only stage scripts read params.yaml; the library under src/llavac/ takes typed arguments.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml

PARAMS_FILE = Path("params.yaml")
Settings = TypeVar("Settings")


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file (DVC has already applied any `dvc exp run -S` overrides to it)."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def choose(value: str, allowed: list[str] | tuple[str, ...], key: str) -> str:
    """Return `value` if allowed, else stop with one message naming the allowed values."""
    if value not in allowed:
        sys.exit(f"error: params.yaml {key}={value!r} is not one of: {', '.join(allowed)}")
    return value


def model_block(params: dict[str, Any]) -> dict[str, Any]:
    """The `models.<model>` block selected by the top-level `model` key.

    DVC cannot interpolate a nested key such as ``${models.${model}}``, so the choice is resolved here.
    """
    name = choose(params["model"], list(params["models"]), "model")
    return params["models"][name]


def settings_from(cls: type[Settings], params: dict[str, Any], section: str) -> Settings:
    """`models.<model>.<section>` as `cls`; an unknown or missing key is named, with the allowed ones."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    block = model_block(params).get(section, {})
    given = set(block)
    if given != fields:
        sys.exit(
            f"error: models.{params['model']}.{section} has unknown keys {sorted(given - fields)} and lacks "
            f"{sorted(fields - given)}; the keys are: {', '.join(sorted(fields))}"
        )
    return cls(**block)


def stage_logger(name: str) -> logging.Logger:
    """One logger per stage, saying what it loads, does and writes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return logging.getLogger(name)


def numbered_dirs(parent: Path, produced_by: str) -> list[Path]:
    """The split folders `1`, `2`, ... under `parent`, in numeric order; a clear error if there are none."""
    dirs = sorted((d for d in parent.glob("*") if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    if not dirs:
        sys.exit(f"error: no split folders under {parent}: run `dvc repro {produced_by}` first")
    return dirs
