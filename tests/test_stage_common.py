"""stages/common.py: what every stage does before its own work (interpreter check, CPU numerics from
`llavac.cpu_numerics`)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from llavac.cpu_numerics import ONE_THREAD, X86_NUMERICS

REPO = Path(__file__).resolve().parents[1]
PROBE = ("import sys; sys.path.insert(0, 'stages'); import common, torch; "
         "print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())")
PINNED = tuple(ONE_THREAD | X86_NUMERICS)
MKL_BRANCH = ("import ctypes, os, sys; sys.path.insert(0, 'stages'); import common, torch; "
              "mkl = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), 'lib', 'libtorch_cpu.so')); "
              "print(mkl.mkl_serv_cbwr_get(1))")  # MKL_CBWR_BRANCH = 1: the branch in force (mkl_cbwr.h)
MKL_CBWR_AUTO, MKL_CBWR_COMPATIBLE = 2, 3
x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the instruction-set cap is x86-64's")


def probe(code: str, **env: str) -> str:
    """What `code` prints in a fresh interpreter, with none of the pins inherited from this one."""
    clean = {k: v for k, v in os.environ.items() if k not in PINNED}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean | env, capture_output=True, text=True,
                          check=True).stdout.strip()


@x86_only
def test_a_stage_runs_torch_on_one_thread_and_the_avx2_kernels_unless_told_otherwise():
    assert probe(PROBE).split() == ["AVX2", "1"]
    assert probe(PROBE, ATEN_CPU_CAPABILITY="default").split()[0] == "DEFAULT"


@x86_only
def test_a_stage_runs_mkl_on_the_branch_every_x86_cpu_shares():
    assert int(probe(MKL_BRANCH)) == MKL_CBWR_COMPATIBLE
    # What the pin replaced: an ISA branch is honoured on Intel CPUs only; elsewhere MKL runs AUTO.
    vendor_branch = int(probe(MKL_BRANCH, MKL_CBWR="AVX2"))
    assert vendor_branch in ((10,) if "GenuineIntel" in Path("/proc/cpuinfo").read_text() else (MKL_CBWR_AUTO,))


@x86_only
def test_a_stage_switches_off_numpys_simd_groups_above_avx2_by_their_real_names():
    import numpy

    disabled = probe("import sys; sys.path.insert(0, 'stages'); import common, os; print(os.environ['NPY_DISABLE_CPU_FEATURES'])")
    assert set(disabled.split()) <= set(numpy._core._multiarray_umath.__cpu_dispatch__)  # a misspelt group is ignored silently
    features = "import sys; sys.path.insert(0, 'stages'); import common, numpy; print(numpy._core._multiarray_umath.__cpu_features__[{!r}])"
    assert all(probe(features.format(group)) == "False" for group in disabled.split())
    assert probe(features.format("X86_V3"), NPY_DISABLE_CPU_FEATURES="X86_V3") == "False"  # numpy reads the variable


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
