"""What the stage scripts share: the right interpreter, one CPU floating-point path, validated
params, one logger each.

Only stage scripts read params.yaml; the library under src/llavac/ takes typed arguments. Every
stage script imports this module before any third-party package, so the two checks below run
before torch (or MKL, or oneDNN) has read its environment.
"""

from __future__ import annotations

import errno
import importlib.metadata
import logging
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path

CHECKOUT_SRC = Path(__file__).resolve().parents[1] / "src"

X86_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
"""The kernels' instruction set, capped at AVX2 for PyTorch's own kernels, MKL and oneDNN.

Left to themselves they pick the widest the CPU has (AVX-512 on one machine, AVX2 on the next) and
round differently: on the reference machine, PyTorch's AVX2 kernels alone turned split 1's adapter
into a different one. Every x86-64 CPU of the last decade has AVX2, so the cap gives one path
everywhere. A variable the user has already set is left alone.
"""


def _use_this_checkout() -> None:
    """Run this checkout's library, and stop on a python that lacks the project's dependencies.

    DVC runs each stage with the `python` on PATH. Without the project's environment activated that
    is the system one, which lacks the packages: the stage stops here with what to do. The library is
    put first on the path (for this process and the ones it starts: Spark's workers, the deepspeed
    launcher's), so a stage runs the code of the checkout it belongs to even when the environment's
    editable install points at another copy (`dvc exp run --temp` and queued experiments run in one).
    """
    try:
        required = [re.split(r"[ ;<>=!\[]", line, maxsplit=1)[0] for line in importlib.metadata.requires("llavac") or []
                    if "extra ==" not in line]
        for name in required:
            importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError as missing:
        sys.exit(f"error: {sys.executable} does not have the project installed (no {missing.name}); activate this "
                 "checkout's environment first: `source .venv/bin/activate` (`make test` or `make repro` creates it)")
    sys.path.insert(0, str(CHECKOUT_SRC))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT_SRC), os.environ.get("PYTHONPATH")]))


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""One CPU thread per process for PyTorch and MKL.

A kernel's reductions are split by thread, so the thread count (by default the machine's core
count) changes the rounding: on the reference machine 4 and 8 threads trained different adapters.
One thread is the same everywhere; the tiny model's small kernels lose little, and on a GPU the CPU
threads do no arithmetic that matters (torchrun sets the same value for each of its processes).
"""


def _pin_cpu_numerics() -> None:
    """Set `ONE_THREAD`, and `X86_NUMERICS` on an x86-64 machine, each unless already set."""
    pins = ONE_THREAD | (X86_NUMERICS if platform.machine().lower() in ("x86_64", "amd64") else {})
    for name, value in pins.items():
        os.environ.setdefault(name, value)


_use_this_checkout()
_pin_cpu_numerics()

from llavac.params import Params, ParamsError  # noqa: E402  (after the check above, on purpose)
from llavac.params import load_params as validate_params  # noqa: E402


def load_params() -> Params:
    """params.yaml, validated against the schema in `llavac.params`; a bad key ends the stage in one message."""
    try:
        return validate_params()
    except ParamsError as error:
        sys.exit(f"error: {error}")


def stage_logger(name: str) -> logging.Logger:
    """One logger per stage, saying what it loads, does and writes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return logging.getLogger(name)


DISK_TROUBLE = {errno.ENOSPC: "the disk is full", errno.EROFS: "the folder is read-only", errno.EACCES: "permission denied",
                errno.EDQUOT: "the disk quota is used up"}


def run(main: Callable[[], None], *expected: type[Exception]) -> None:
    """Run a stage's `main`; an OSError (a full disk, a read-only folder, a missing input) or one of the
    stage's `expected` errors ends it with one line instead of a traceback.

    Outputs are written whole or not at all (`llavac.files`), so what the failure leaves behind is
    the previous output or none.
    """
    try:
        main()
    except (OSError, *expected) as error:
        if isinstance(error, OSError) and error.errno in DISK_TROUBLE:
            sys.exit(f"error: cannot write {error.filename or 'an output'}: {DISK_TROUBLE[error.errno]} "
                     "(free space or fix the folder, then run the stage again)")
        sys.exit(f"error: {error}")
