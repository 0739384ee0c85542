"""Helpers the test files share (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(folder: Path, **overrides: Any) -> dict[str, Any]:
    """The repository's params.yaml with `overrides` applied ("splits__dir" sets splits.dir), written
    to `folder` for a stage run there.

    Stages validate the whole file, so a test changes only what it is about and keeps the rest valid.
    """
    params = copy.deepcopy(REPO_PARAMS)
    for dotted, value in overrides.items():
        *parents, key = dotted.split("__")
        block = params
        for parent in parents:
            block = block[parent]
        block[key] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return params
