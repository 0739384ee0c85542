"""Helpers the test files share (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
BIN = Path(sys.executable).parent
OUTPUTS = ("artifacts/", "metrics/", "plots/", "reports/", "dvclive/", "dvc.lock")
"""What the pipeline writes: left out of a project copy, as a clone before `dvc repro` lacks them."""


def command_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this venv's executables first on PATH, a git identity, and `extra`."""
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "test"), ("EMAIL", "test@example.com"))}
    return {**os.environ, **identity, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(extra or {})}


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """`cmd` in `cwd` under `command_environment(env)`; its stdout. Fails with its output."""
    result = subprocess.run(cmd, cwd=cwd, env=command_environment(env), capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def project_copy(copy: Path) -> Path:
    """The project (tracked + new files, none of the pipeline's `OUTPUTS`) at `copy`, as a fresh clone would have
    it: a git repository of one commit."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if not name.startswith(OUTPUTS) and (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    run(["git", "init", "-q"], copy)
    run(["git", "add", "-A"], copy)
    run(["git", "commit", "-qm", "clone"], copy)
    return copy


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


def committed_text(path: str | Path) -> str:
    """`path` (relative to the repository, or absolute inside it) as the checked-out commit holds it
    (`git show HEAD:path`), not as the working tree does: a local `dvc repro` or benchmark rewrites the
    working tree's copy, and a check must compare with what a clone gets."""
    name = (Path(path).relative_to(REPO) if Path(path).is_absolute() else Path(path)).as_posix()
    shown = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=REPO, capture_output=True, text=True)
    assert shown.returncode == 0, f"{name} is not committed at HEAD: run `dvc repro` and commit it ({shown.stderr.strip()})"
    return shown.stdout


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server or a rendezvous the test starts), so runs do not collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
