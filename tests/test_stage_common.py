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


def test_a_stage_runs_its_own_checkouts_library_whatever_the_environment_points_at(tmp_path):
    """`dvc exp run --temp` runs a copy of the repository with an environment installed from the original."""
    other = tmp_path / "src" / "llavac"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    probe = "import sys; sys.path.insert(0, 'stages'); import common, llavac, os; print(llavac.__file__, os.environ['PYTHONPATH'])"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=os.environ | {"PYTHONPATH": str(tmp_path / "src")},
                          capture_output=True, text=True, check=True)
    module, path = done.stdout.split()
    assert module == str(REPO / "src" / "llavac" / "__init__.py")
    assert path.split(os.pathsep)[0] == str(REPO / "src")  # and so do the processes it starts


def test_a_stage_refuses_a_python_without_the_project(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a stage run in this process may have set it
    done = subprocess.run([str(tmp_path / "bare" / "bin" / "python"), str(REPO / "stages" / "sample.py"), "out"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "does not have the project installed" in done.stderr and "source .venv/bin/activate" in done.stderr
    assert "Traceback" not in done.stderr
