"""dvc.yaml's code dependencies are exactly the project modules each stage script imports.

A missing dependency lets DVC skip a stage whose code changed; a surplus one re-runs stages (ten 7B
trainings) for nothing. Both are derived here from the import graph, so neither can creep back in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The project file of an importable name (`common` is the stages' shared module), if it is ours."""
    if name == "common":
        return Path("stages/common.py")
    if name != "llavac" and not name.startswith("llavac."):
        return None
    stem = Path("src", *name.split("."))
    for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
        if (REPO / candidate).is_file():
            return candidate
    return None


def imported_files(script: Path) -> set[Path]:
    """Every project file `script` imports, directly or through other project modules."""
    found: set[Path] = set()
    pending = [script]
    while pending:
        tree = ast.parse((REPO / pending.pop()).read_text())
        names: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from llavac.data import mvsa` imports the submodule too.
                names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            path = module_file(name)
            if path and path not in found:
                found.add(path)
                pending.append(path)
    return found


def declared_code(stage: dict) -> set[Path]:
    """The stage's deps that are project code (folders expanded to their Python files)."""
    files: set[Path] = set()
    for dep in stage.get("deps", []):
        path = Path(dep)
        if not str(path).startswith(("src/", "stages/")):
            continue
        if (REPO / path).is_dir():
            files |= {p.relative_to(REPO) for p in (REPO / path).rglob("*.py")}
        else:
            files.add(path)
    return files


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_code_deps_are_its_imports(name):
    script = Path("stages") / STAGES[name]["cmd"].split("stages/", 1)[1].split()[0]
    expected = imported_files(script) | {script}
    expected = {p for p in expected if p.name != "__init__.py" or (REPO / p).stat().st_size}
    declared = declared_code(STAGES[name])
    assert not expected - declared, f"{name}: dvc.yaml lacks {sorted(map(str, expected - declared))}"
    assert not declared - expected, f"{name}: dvc.yaml lists unused {sorted(map(str, declared - expected))}"
