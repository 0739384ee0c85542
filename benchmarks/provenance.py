"""Where a benchmark's figures come from: the code version, the machine, its load, the library versions.

Every script in `benchmarks/` writes its results JSON through `write_result`, which adds one
`provenance` block:

    run = Provenance()                 # first thing: the load average before the work
    ...                               # measure
    write_result(path, results, run)  # results + {"provenance": {...}}, written whole or not at all

The block holds `git_commit` (HEAD of the checkout the script ran from, or `$LLAVAC_GIT_COMMIT` where
the copy has no `.git`, as on a device machine), `git_dirty` (uncommitted changes to tracked files,
so a figure from edited code is marked), `started_utc`/`finished_utc`, the 1/5/15-minute load
averages at start and end (`os.getloadavg`: on a shared machine other jobs slow every figure, and
this says by how much the machine was busy), the machine (CPU model and count, memory, GPU name)
and the versions of the packages that set the speed.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llavac.files import write_json

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "peft", "accelerate", "deepspeed", "pyspark")
"""The packages whose versions are recorded (those installed)."""


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def code_version(repo: Path = REPO) -> dict[str, Any]:
    """`{"git_commit": sha or None, "git_dirty": bool or None}` of `repo`.

    Without git or a `.git` (a copied working tree), the commit is `$LLAVAC_GIT_COMMIT` if set, and
    `git_dirty` is None (unknown).
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                                 text=True, check=True).stdout
        return {"git_commit": commit, "git_dirty": bool(changes.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": os.environ.get("LLAVAC_GIT_COMMIT"), "git_dirty": None}


def machine() -> dict[str, Any]:
    """CPU model and logical core count, memory in GiB, OS, Python, and the CUDA device's name (None without one)."""
    cpuinfo = Path("/proc/cpuinfo")
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), None) if cpuinfo.exists() else None
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name()
    except ImportError:
        pass
    return {
        "cpu_model": cpu_model or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    """Installed versions of `PACKAGES` (a missing one is left out)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


@dataclass
class Provenance:
    """A benchmark run's start (created first thing): its time, the machine's load and the code version."""

    started_utc: str = field(default_factory=_utc_now)
    load_average_start: list[float] = field(default_factory=_load_average)
    code: dict[str, Any] = field(default_factory=code_version)  # at the start: what ran, even if HEAD moves meanwhile

    def finish(self) -> dict[str, Any]:
        """The `provenance` block, taken now (at the end of the work)."""
        return {
            **self.code,
            "started_utc": self.started_utc,
            "finished_utc": _utc_now(),
            "load_average_1_5_15min": {"start": self.load_average_start, "end": _load_average()},
            "machine": machine(),
            "versions": versions(),
        }


def write_result(path: Path, results: dict[str, Any], run: Provenance) -> Path:
    """Write `results` plus `{"provenance": run.finish()}` to `path` as JSON (atomically); return `path`."""
    return write_json(path, {**results, "provenance": run.finish()})
