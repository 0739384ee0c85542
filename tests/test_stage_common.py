"""stages/common.py: what every stage does before its own work (interpreter check, CPU numerics from
`llavac.cpu_numerics`)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from llavac.cpu_numerics import MKL_CBWR_AUTO, MKL_CBWR_AVX2, MKL_CBWR_COMPATIBLE, ONE_THREAD, X86_NUMERICS, is_x86_64

REPO = Path(__file__).resolve().parents[1]
PINNED = tuple(ONE_THREAD | X86_NUMERICS)
PINNED_PROBE = "import sys; sys.path.insert(0, 'stages'); import common; "
"""The start of a probe: what a stage does first."""
PROBE = PINNED_PROBE + "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"
x86_linux = pytest.mark.skipif(not is_x86_64() or platform.system() != "Linux",
                               reason="the instruction-set pins are x86-64's; the CPU's vendor is read from /proc/cpuinfo")


def run_probe(code: str, **env: str) -> subprocess.CompletedProcess:
    """`code` run in a fresh interpreter, with none of the pins inherited from this one (plus `env`)."""
    clean = {k: v for k, v in os.environ.items() if k not in PINNED}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean | env, capture_output=True, text=True, check=True)


def probe(code: str, **env: str) -> str:
    """What `run_probe(code, **env)` prints."""
    return run_probe(code, **env).stdout.strip()


@x86_linux
def test_a_stage_runs_torch_on_one_thread_and_the_avx2_kernels_unless_told_otherwise():
    assert probe(PROBE).split() == ["AVX2", "1"]
    assert probe(PROBE, ATEN_CPU_CAPABILITY="default").split()[0] == "DEFAULT"


@x86_linux
def test_a_stage_runs_mkl_on_the_branch_every_x86_cpu_shares():
    mkl = PINNED_PROBE + "from llavac.cpu_numerics import mkl_branch; print(mkl_branch())"
    assert int(probe(mkl)) == MKL_CBWR_COMPATIBLE
    # What the pin replaced: an ISA branch is honoured on Intel CPUs only; elsewhere MKL runs AUTO.
    intel = "GenuineIntel" in Path("/proc/cpuinfo").read_text()
    assert int(probe(mkl, MKL_CBWR="AVX2")) == (MKL_CBWR_AVX2 if intel else MKL_CBWR_AUTO)


@x86_linux
def test_a_stage_runs_numpys_openblas_on_its_avx2_kernels_and_one_thread():
    blas = PINNED_PROBE + ("import numpy, threadpoolctl; "
                           "print([(i['architecture'], i['num_threads']) for i in threadpoolctl.threadpool_info() "
                           "if i['internal_api'] == 'openblas'])")
    assert probe(blas) == "[('Haswell', 1)]"


@x86_linux
def test_a_stage_switches_off_numpys_simd_groups_above_avx2_by_their_real_names():
    import numpy

    disabled = X86_NUMERICS["NPY_DISABLE_CPU_FEATURES"].split()
    assert set(disabled) <= set(numpy._core._multiarray_umath.__cpu_dispatch__)  # a misspelt group is ignored silently
    features = PINNED_PROBE + "import numpy; print(numpy._core._multiarray_umath.__cpu_features__[{!r}])"
    assert all(probe(features.format(group)) == "False" for group in disabled)
    assert probe(features.format("X86_V3"), NPY_DISABLE_CPU_FEATURES="X86_V3") == "False"  # numpy reads the variable


def test_a_stage_says_when_the_users_own_setting_of_a_pin_wins():
    done = run_probe(PINNED_PROBE + "import os; print(os.environ['OMP_NUM_THREADS'])", OMP_NUM_THREADS="4")
    assert done.stdout.strip() == "4"
    assert done.stderr.strip() == ("note: OMP_NUM_THREADS=4 is set, so this stage does not use the pin OMP_NUM_THREADS=1 "
                                   "(llavac.cpu_numerics): its numbers may differ from the committed ones")


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
