"""What the stage scripts share: the right interpreter, one CPU floating-point path, validated
params, one logger each.

Only stage scripts read params.yaml; the library under src/llavac/ takes typed arguments. Every
stage script imports this module before any third-party package, so the interpreter check and the
CPU pins (`llavac.cpu_numerics`) take effect before torch (or MKL, or oneDNN) has read its environment.
"""

from __future__ import annotations

import errno
import importlib.metadata
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

CHECKOUT_SRC = Path(__file__).resolve().parents[1] / "src"


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


def _pin_cpu_numerics() -> None:
    """Pin the CPU numerics (`llavac.cpu_numerics`, standard library only: it loads no numeric library),
    and say in one line each where the user's own setting of a pinned variable wins."""
    from llavac.cpu_numerics import pin_cpu_numerics

    for name, (theirs, pin) in pin_cpu_numerics().items():
        print(f"note: {name}={theirs} is set, so this stage does not use the pin {name}={pin} (llavac.cpu_numerics): "
              "its numbers may differ from the committed ones", file=sys.stderr)


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
