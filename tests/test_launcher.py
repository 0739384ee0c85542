"""How many processes `train.launcher` starts, for every form of DeepSpeed's runner, and what is refused.

Expected counts are worked out by hand from the runner's documented semantics: 8 devices on this
node without a hostfile; with the hostfile, worker-0 has 4 slots and worker-1 has 8.
"""

from __future__ import annotations

import pytest

from llavac.launcher import is_deepspeed, launched_by_deepspeed, launcher_world_size

HOSTFILE = "worker-0 slots=4\nworker-1 slots=8\n"


@pytest.fixture
def hosts(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts").write_text(HOSTFILE)
    return "hosts"


@pytest.mark.parametrize("launcher, world_size", [
    ("python", 1),
    ("python -u", 1),
    ("deepspeed", 8),                                  # every local device
    ("/opt/env/bin/deepspeed --num_gpus 2", 2),        # by path
    ("deepspeed --num_gpus 4", 4),
    ("deepspeed --num_gpus=4", 4),
    ("deepspeed --num_accelerators 3", 3),             # the runner's alias
    ("deepspeed --num_gpus 2 --num_nodes 1", 2),
    ("deepspeed --include localhost:0,1", 2),
    ("deepspeed --include=localhost:0,1", 2),
    ("deepspeed -i localhost:1,2,5", 3),
    ("deepspeed --exclude localhost:0", 7),
    ("deepspeed -e localhost:0,7", 6),
    ("deepspeed --exclude=localhost:3", 7),
])
def test_world_size_on_one_node(launcher, world_size):
    assert launcher_world_size(launcher, local_devices=8) == world_size


@pytest.mark.parametrize("launcher, world_size", [
    ("deepspeed --hostfile hosts", 12),                # 4 + 8 slots
    ("deepspeed --hostfile=hosts", 12),
    ("deepspeed -H hosts", 12),
    ("deepspeed -H hosts --num_nodes 1", 4),           # the first node only
    ("deepspeed -H hosts --num_nodes=2 --num_gpus 2", 4),
    ("deepspeed -H hosts --num_gpus 3", 6),            # 3 per node, both nodes
    ("deepspeed -H hosts -i worker-1", 8),
    ("deepspeed -H hosts --include worker-1:0,1@worker-0", 6),
    ("deepspeed -H hosts -e worker-1", 4),
    ("deepspeed -H hosts --exclude worker-0:0,1@worker-1:7", 9),
])
def test_world_size_from_a_hostfile(hosts, launcher, world_size):
    assert launcher_world_size(launcher, local_devices=1) == world_size


def test_a_cpu_machine_counts_ranks_as_asked():
    """DeepSpeed's CPU accelerator has one device per NUMA node: --num_gpus N starts N CPU ranks regardless."""
    assert launcher_world_size("deepspeed --num_gpus 2", local_devices=1) == 2
    assert launcher_world_size("deepspeed", local_devices=1) == 1


@pytest.mark.parametrize("launcher, message", [
    ("deepspeed --num_nodes 2", "needs a hostfile"),
    ("deepspeed --hostfile missing-hosts", "missing-hosts, which does not exist"),
    ("deepspeed --num_gpus 2 --include localhost:0", "--num_nodes/--num_gpus together with --include/--exclude"),
    ("deepspeed --num_nodes 1 -e localhost:0", "--num_nodes/--num_gpus together with --include/--exclude"),
    ("deepspeed --num_gpus two", "invalid int value: 'two'"),
    ("deepspeed --gpus 2", "unrecognized arguments: --gpus"),
    ("deepspeed -i localhost:9", "No slot '9' specified on host 'localhost'"),
    ("deepspeed -e localhost", "leaves no process to start"),
])
def test_what_cannot_be_counted_is_refused_with_a_message(launcher, message):
    with pytest.raises(ValueError, match="train.launcher") as refused:
        launcher_world_size(launcher, local_devices=8)
    assert message in str(refused.value)


def test_a_machine_without_devices_needs_a_process_count():
    with pytest.raises(ValueError, match="give --num_gpus N"):
        launcher_world_size("deepspeed", local_devices=0)


def test_a_malformed_hostfile_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts").write_text("worker-0 slots=4\nworker-0 slots=2\n")
    with pytest.raises(ValueError, match="hostfile hosts"):
        launcher_world_size("deepspeed -H hosts", local_devices=1)


def test_the_launchers_environment_not_the_hardware_decides(monkeypatch):
    assert is_deepspeed("deepspeed --num_gpus 2") and is_deepspeed("/x/deepspeed") and not is_deepspeed("python")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_by_deepspeed()
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_by_deepspeed()
