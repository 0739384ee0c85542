"""One floating-point path on every CPU: the environment variables that fix how torch, MKL, oneDNN,
numpy and OpenBLAS round, and what a training run records of them.

The libraries read these variables once, when they load, so `pin_cpu_numerics` runs before any of
them is imported (`stages/common.py` calls it first thing in every stage, `tests/conftest.py` before
the suite imports torch). This module imports nothing but the standard library, on purpose.
"""

from __future__ import annotations

import os
import platform

X86_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE",
                "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE": "Haswell"}
"""One instruction-set path for every numeric library a stage runs, whatever x86-64 CPU it is on.

Left to themselves the libraries pick the widest kernels the CPU has (AVX-512 on one machine, AVX2
on the next) and round differently: on the reference machine, PyTorch's AVX2 kernels alone turned
split 1's adapter into a different one. PyTorch's own kernels, oneDNN, numpy's SIMD loops and its
OpenBLAS are capped at AVX2 (numpy's groups above AVX2 switched off), which every x86-64 CPU of the
last decade has. MKL takes an ISA branch only on Intel CPUs: on any other it silently runs `AUTO`
(Intel's CNR guide; measured on an AMD EPYC, `mkl_serv_cbwr_get` reports branch 2, AUTO, under
`MKL_CBWR=AVX2`), and an AVX2 and an AVX-512 EPYC then wrote different label probabilities. So MKL
runs `COMPATIBLE`, the one branch Intel gives for every x86 CPU, Intel or not (SSE2; its matrix
products are 2-4x slower, `docs/design.md`). A variable the user has already set is left alone.
"""


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
"""One CPU thread per process for PyTorch, MKL and numpy's OpenBLAS.

A kernel's reductions are split by thread, so the thread count (by default the machine's core
count) changes the rounding: on the reference machine 4 and 8 threads trained different adapters.
One thread is the same everywhere; the tiny model's small kernels lose little, and on a GPU the CPU
threads do no arithmetic that matters (torchrun sets the same value for each of its processes).
"""


def pin_cpu_numerics() -> None:
    """Set `ONE_THREAD`, and `X86_NUMERICS` on an x86-64 machine, each unless already set."""
    pins = ONE_THREAD | (X86_NUMERICS if platform.machine().lower() in ("x86_64", "amd64") else {})
    for name, value in pins.items():
        os.environ.setdefault(name, value)


def cpu_numerics_in_force() -> dict[str, str | None]:
    """The value (None if unset) of every variable `pin_cpu_numerics` sets, as this process sees it."""
    return {name: os.environ.get(name) for name in ONE_THREAD | X86_NUMERICS}
