"""The shell commands of the README and of docs/ run exactly as written, in order, on a fresh clone.

Every fenced ```bash block is executed, the README's first, then each docs/ page's in name order,
unless a command is listed in SKIPPED with the reason it cannot run here (real data, a GPU, root,
the network beyond the package index, or this very suite).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SHARING = "the sharing commands run in tests/test_remote.py, against a folder and an SSH server"

SKIPPED = {
    "sudo ": "installs system packages as root",
    'python -c "import torch; assert torch.cuda.is_available()': "needs a CUDA GPU",
    "make test": "runs the suite this test is part of",
    "pytest": "runs the suite this test is part of",
    "mkdir -p data && unzip": "needs the real MVSA-Single archive",
    "llavac fetch-splits": "downloads from GitHub (network beyond the package index)",
    "dvc add data": "needs the real MVSA-Single folder",
    "dvc remote add": SHARING,
    "git add .dvc/config": SHARING,
    "dvc push": SHARING,
    "git clone REPO_URL": SHARING,
    "dvc pull": SHARING,
    "hf download": "downloads 7B weights from the Hugging Face hub",
    "dvc exp run -n llavac-": "the paper's run: real data, LLaVA-1.5-7B weights, GPUs",
    "dvc exp run -S dataset=mvsa-multiple -S data.raw_dir=": "needs the real MVSA-Multiple folder",
    "deepspeed": "needs GPUs",
    "dvc exp run --queue": "three whole pipeline runs; DVC's queue and grid run in tests/test_experiments.py (a seed grid)",
    "llavac compare --paired EXP_A": "names two experiments of the reader's; tests/test_experiments.py runs it on two",
    "dvc exp run -S train.method": "a whole pipeline run; its result is benchmarks/results/ablations-cpu.json",
    "dvc exp run -S prompt.modalities": "a whole pipeline run; its result is benchmarks/results/ablations-cpu.json",
}


def readme_commands(readme: str) -> list[str]:
    """The commands of every ```bash block, in order; continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^ *```bash\n(.*?)^ *```", readme, flags=re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        for line in joined.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def documentation_commands() -> list[str]:
    """The commands of README.md, then of every docs/*.md in name order."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return [command for page in pages for command in readme_commands(page.read_text(encoding="utf-8"))]


def skip_reason(command: str) -> str | None:
    return next((reason for prefix, reason in SKIPPED.items() if command.startswith(prefix)), None)


def test_readme_blocks_are_parsed_into_commands():
    readme = "text\n```bash\nmake repro   # runs it\n# a comment\ndvc exp run \\\n    -S a=1 \\\n    -S b=2\n```\n```python\nx\n```\n"
    assert readme_commands(readme) == ["make repro", "dvc exp run -S a=1 -S b=2"]


@pytest.mark.slow
def test_every_cpu_command_of_the_readme_and_docs_runs_on_a_fresh_clone(tmp_path):
    commands = documentation_commands()
    runnable = [c for c in commands if skip_reason(c) is None]
    assert "make repro" in runnable and len(runnable) >= 5, runnable
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    script = "set -euo pipefail\n" + "".join(f"echo {shlex.quote('$ ' + c)} >&2\n{c}\n" for c in runnable)
    done = subprocess.run(["bash", "-c", script], cwd=clone, capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, f"a README or docs/ command failed:\n{done.stderr[-4000:]}"
    ran = [line[2:] for line in done.stderr.splitlines() if line.startswith("$ ")]
    assert ran == runnable
