"""What `train.launcher` starts: how many training processes, counted the way DeepSpeed's runner counts them.

`python ...` is one process. `deepspeed [options]` is DeepSpeed's runner (`deepspeed/launcher/runner.py`);
its own functions parse the options (`parse_args`: `--num_gpus`, `--num_nodes`, `-i/--include`,
`-e/--exclude`, `-H/--hostfile`, with `=` or a space), read the hostfile (`fetch_hostfile`: lines
`HOST slots=N`) and filter it (`parse_inclusion_exclusion`, `apply_num_nodes_and_gpus`), so the count
here is the count the runner starts.

Without a hostfile the runner's pool is this machine with `local_devices` slots: DeepSpeed's accelerator's
`device_count()`, i.e. the visible GPUs on CUDA; on a CPU, DeepSpeed's CPU accelerator counts one device
per NUMA node that has cores (or `LOCAL_SIZE` when set), so a bare `deepspeed` on a one-socket CPU
machine starts one rank and `--num_gpus N` starts N ranks whatever the core count.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
from pathlib import Path

from deepspeed.launcher import runner


def launched_by_deepspeed() -> bool:
    """Whether the `deepspeed` launcher started this process: it gives each copy `LOCAL_RANK` and `WORLD_SIZE`.

    The launcher, not the hardware, decides: on a CPU DeepSpeed runs on its CPU accelerator with
    gloo, and a plain `python` start on a GPU trains without it (DeepSpeed would look for MPI).
    """
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_deepspeed(launcher: str) -> bool:
    """Whether `train.launcher` is DeepSpeed's runner (`deepspeed ...`, possibly by path)."""
    words = shlex.split(launcher)
    return bool(words) and Path(words[0]).name == "deepspeed"


def launcher_options(launcher: str) -> runner.argparse.Namespace:
    """The options of a `deepspeed ...` launcher, parsed by DeepSpeed's runner itself.

    Raises ValueError with the runner's own complaint for an option it does not know or a bad value.
    """
    complaint = io.StringIO()
    try:
        with contextlib.redirect_stderr(complaint):
            # The runner wants the training script after its options; its name does not matter here.
            return runner.parse_args([*shlex.split(launcher)[1:], "stages/train.py"])
    except SystemExit:
        message = complaint.getvalue().strip().splitlines()[-1:] or ["error: bad options"]
        raise ValueError(f"train.launcher {launcher!r}: DeepSpeed's runner refuses it: {message[0].split('error: ', 1)[-1]}") from None


def launcher_world_size(launcher: str, local_devices: int) -> int:
    """How many training processes `launcher` starts: what gradient accumulation is derived from.

    `local_devices` is what the runner finds on this machine without a hostfile (see the module
    docstring). Raises ValueError, in one line saying what to change, for what the runner would refuse
    or what cannot be counted: a named hostfile that is missing, `--num_nodes` > 1 without one, node or
    GPU counts together with `--include`/`--exclude`, a filter that leaves no process, no devices.
    """
    if not is_deepspeed(launcher):
        return 1
    options = launcher_options(launcher)
    named_hostfile = options.hostfile != runner.DLTS_HOSTFILE
    if named_hostfile and not Path(options.hostfile).is_file():
        raise ValueError(f"train.launcher {launcher!r} names the hostfile {options.hostfile}, which does not exist "
                         "(write one line `HOST slots=N` per node, or drop --hostfile)")
    try:
        pool = runner.fetch_hostfile(options.hostfile)
    except ValueError as error:
        raise ValueError(f"train.launcher {launcher!r}: hostfile {options.hostfile}: {error}") from None
    if (options.num_nodes >= 0 or options.num_gpus >= 0) and (options.include or options.exclude):
        raise ValueError(f"train.launcher {launcher!r}: DeepSpeed's runner refuses --num_nodes/--num_gpus together "
                         "with --include/--exclude; use one or the other")
    if not pool:
        if options.num_nodes > 1:
            raise ValueError(f"train.launcher {launcher!r}: --num_nodes {options.num_nodes} needs a hostfile naming "
                             "the nodes (--hostfile FILE, lines `HOST slots=N`)")
        if local_devices < 1 and options.num_gpus < 1:
            raise ValueError(f"train.launcher {launcher!r}: this machine has no device for DeepSpeed; give --num_gpus N")
        pool = {"localhost": local_devices}
    try:
        active = runner.parse_inclusion_exclusion(pool, options.include, options.exclude)
    except ValueError as error:
        raise ValueError(f"train.launcher {launcher!r}: {error}") from None
    active = runner.apply_num_nodes_and_gpus(active, options.num_nodes, options.num_gpus)
    world_size = sum(len(slots) for slots in active.values())
    if world_size < 1:
        raise ValueError(f"train.launcher {launcher!r} leaves no process to start; include at least one slot")
    return world_size
