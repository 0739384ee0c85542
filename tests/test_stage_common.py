"""stages/common.py: what every stage does before its own work (interpreter check, CPU numerics)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = ("import sys; sys.path.insert(0, 'stages'); import common, torch; "
         "print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())")
PINNED = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the instruction-set cap is x86-64's")
def test_a_stage_runs_torch_on_one_thread_and_the_avx2_kernels_unless_told_otherwise():
    env = {k: v for k, v in os.environ.items() if k not in PINNED}
    pinned = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert pinned.stdout.split() == ["AVX2", "1"]
    chosen = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env | {"ATEN_CPU_CAPABILITY": "default"},
                            capture_output=True, text=True, check=True)
    assert chosen.stdout.split()[0] == "DEFAULT"


def test_a_stage_refuses_an_interpreter_without_this_checkout(tmp_path):
    """A python that imports llavac from elsewhere (another clone's environment) is stopped, not used."""
    other = tmp_path / "src" / "llavac"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    done = subprocess.run([sys.executable, str(REPO / "stages" / "sample.py"), "out"], cwd=tmp_path,
                          env=os.environ | {"PYTHONPATH": str(tmp_path / "src")}, capture_output=True, text=True)
    assert done.returncode == 1
    assert f"imports llavac from {other}, not from {REPO / 'src'}" in done.stderr
    assert "source .venv/bin/activate" in done.stderr and "Traceback" not in done.stderr
