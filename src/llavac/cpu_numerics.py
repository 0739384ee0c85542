"""The CPU floating-point pins: the environment variables that fix which kernels torch, MKL, oneDNN,
numpy and OpenBLAS run, and the record of the class of machine a training run rounds on.

What they buy (docs/design.md, *Determinism*): the same bytes again on one machine, and on machines
of one class (`numerics_class`); across classes no bitwise promise, as no library makes one.

The libraries read these variables once, when they load, so `pin_cpu_numerics` runs before any of
them is imported (`stages/common.py` calls it first thing in every stage, `tests/conftest.py` before
the suite imports torch). This module imports nothing but the standard library, on purpose.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

X86_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE",
                "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE": "Haswell"}
"""One instruction-set path, AVX2, for every numeric library a stage runs, on any x86-64 CPU that has it.

Left to themselves the libraries pick the widest kernels the CPU has (AVX-512 on one machine, AVX2
on the next) and round differently: on the reference machine, PyTorch's AVX2 kernels alone turned
split 1's adapter into a different one. So PyTorch's own kernels and oneDNN are capped at AVX2,
numpy's SIMD groups above AVX2 are switched off (the group names are those of the numpy that
pyproject.toml pins; LLaVA's own environment, numpy 1.26, knows other names and ignores these with
an ImportWarning Python hides) and OpenBLAS runs its Haswell (AVX2) kernels: every x86-64 CPU of the
last decade has AVX2. MKL takes an ISA branch only on Intel CPUs: on any other it silently runs
`AUTO` (Intel's CNR guide; measured on an AMD EPYC, `mkl_branch()` is 2, AUTO, under
`MKL_CBWR=AVX2`), and an AVX2 and an AVX-512 EPYC then wrote different label probabilities. So MKL
runs `COMPATIBLE`, the one branch Intel gives for every x86 CPU, Intel or not (SSE2; its float32
products are 2-4x slower, `docs/design.md`).
"""

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
"""One CPU thread per process for PyTorch, MKL and numpy's OpenBLAS.

A kernel's reductions are split by thread, so the thread count (by default the machine's core
count) changes the rounding: on the reference machine 4 and 8 threads trained different adapters.
One thread is the same everywhere; the tiny model's small kernels lose little, and on a GPU the CPU
threads do no arithmetic that matters (torchrun sets the same value for each of its processes).
"""

MKL_CBWR_BRANCH, MKL_CBWR_AUTO, MKL_CBWR_COMPATIBLE, MKL_CBWR_AVX2 = 1, 2, 3, 10
"""`mkl_cbwr.h`'s constants: the query for the branch in force, and three of the branches."""


def is_x86_64() -> bool:
    """Whether this machine is x86-64, where `X86_NUMERICS` applies."""
    return platform.machine().lower() in ("x86_64", "amd64")


def pin_cpu_numerics() -> dict[str, tuple[str, str]]:
    """Set `ONE_THREAD`, and `X86_NUMERICS` on an x86-64 machine, each unless already set.

    A variable the user has set is left alone (a deliberate choice wins), and returned as
    `{name: (their value, the pin)}` when it differs from the pin, so the caller can say that the
    run's numbers may then differ from the committed ones.
    """
    pins = ONE_THREAD | (X86_NUMERICS if is_x86_64() else {})
    for name, value in pins.items():
        os.environ.setdefault(name, value)
    return {name: (os.environ[name], value) for name, value in pins.items() if os.environ[name] != value}


def cpu_numerics_environment() -> dict[str, str | None]:
    """The value (None if unset) of every variable `pin_cpu_numerics` sets, as this process sees it.

    These are requests: what the libraries do with them is theirs (`mkl_branch` reads MKL's answer).
    """
    return {name: os.environ.get(name) for name in ONE_THREAD | X86_NUMERICS}


def mkl_branch() -> int:
    """The CNR branch MKL runs in this process (`MKL_CBWR_*`), asked of the MKL inside torch's CPU library.

    Imports torch (call it after `pin_cpu_numerics`). `mkl_serv_cbwr_get` is MKL's internal name for
    `mkl_cbwr_get`, the one torch 2.13's `libtorch_cpu.so` exports; AttributeError on a build
    without MKL (not x86-64).
    """
    import ctypes

    import torch

    library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    return int(library.mkl_serv_cbwr_get(MKL_CBWR_BRANCH))


CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_tile")
"""The instruction-set flags of `/proc/cpuinfo` a numeric library may branch on despite the pins."""


def _cpuinfo() -> dict[str, str]:
    """The first processor's `key: value` lines of `/proc/cpuinfo` ({} where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0].splitlines()
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _cache_sizes() -> dict[str, str]:
    """CPU 0's cache sizes by level and type (`{"L1d": "48K", "L2": "2048K", ...}`), from sysfs."""
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / name).read_text().strip() for name in ("level", "type", "size"))
        except OSError:
            continue
        sizes[f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")] = size
    return sizes


def route_cpu_convolutions_through_aten() -> None:
    """Turn PyTorch's oneDNN (`mkldnn`) kernels off, so a CPU convolution (CLIP's patch embedding) runs ATen's
    own: an unfolding and an MKL product, under MKL's `COMPATIBLE` branch like every other product.

    oneDNN picks its convolution kernel and blocking by the CPU it finds, and no variable pins that
    choice: on an Intel Xeon, capping oneDNN at SSE4.1 instead of AVX2 changed the patch embedding's
    output and, from there, 1,852 of the 2,742 operations of two training steps; with oneDNN off the
    same change moved none (`benchmarks/numerics_trace.py`, docs/design.md). Imports torch; the
    flag is per process, and only CPU tensors read it. `load_base` calls it, so every process that
    runs a model through the library (train, predict, classify) has it.
    """
    import torch

    torch.backends.mkldnn.enabled = False


def numerics_class() -> dict[str, object]:
    """What decides the rounding of a CPU training run in this process: two runs whose classes are equal
    give the same bytes; two whose classes differ may not.

    The CPU (vendor, model, the instruction-set flags a library may still branch on, its cache sizes),
    the pins as this process sees them, the branch MKL runs, whether oneDNN is on, the thread count,
    and the versions of torch, MKL and oneDNN (from `torch.__config__.show()`). Imports torch
    (call it after `pin_cpu_numerics`). Written next to the adapters by the train stage
    (`reports/machine.json`), so a clone knows on what class of machine its `dvc.lock` was made.
    """
    import torch

    cpu = _cpuinfo()
    build = torch.__config__.show()
    version_of = {name: re.search(pattern, build) for name, pattern in
                  (("mkl", r"Math Kernel Library Version ([\d.]+)"), ("onednn", r"MKL-DNN (v[\w.]+)"))}
    return {
        "machine": platform.machine(),
        "cpu_vendor": cpu.get("vendor_id"),
        "cpu_model": cpu.get("model name"),
        "cpu_features": [flag for flag in CPU_FEATURES if flag in cpu.get("flags", "").split()],
        "cache": _cache_sizes(),
        "pins": cpu_numerics_environment(),
        "mkl_branch": mkl_branch() if is_x86_64() else None,
        "onednn_enabled": torch.backends.mkldnn.enabled,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **{name: match[1] if match else None for name, match in version_of.items()},
    }
