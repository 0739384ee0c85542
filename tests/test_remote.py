"""A run shared the DVC way: `dvc push` where it ran, `git clone` + `dvc pull` elsewhere, nothing retrained.

Two real remotes: a local folder (a lab's shared disk) and SSH (`dvc-ssh`) to an OpenSSH server this
module starts on 127.0.0.1 with a port, host key and client key of its own, and stops at the end. The
pushed run is conftest's `reproduced` (the DAG on the embedded default, run once for the session).
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO, command_environment, free_port, run

pytestmark = pytest.mark.slow

SSHD = Path("/usr/sbin/sshd")
INSTALL_SSHD = "apt-get install -y openssh-server (Debian/Ubuntu; .ci/run does it)"


class SSHServer:
    """An OpenSSH server on 127.0.0.1: key authentication only, for this user, with files under `root`."""

    def __init__(self, root: Path) -> None:
        if not SSHD.is_file():
            pytest.fail(f"{SSHD} is missing: the SSH remote test needs an OpenSSH server; install it: {INSTALL_SSHD}")
        root.mkdir(parents=True)
        self.root, self.port, self.user = root, free_port(), getpass.getuser()
        self.client_key, host_key = root / "client_key", root / "host_key"
        for key in (self.client_key, host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        shutil.copy(f"{self.client_key}.pub", root / "authorized_keys")
        key_type, public_key = Path(f"{host_key}.pub").read_text().split()[:2]
        self.known_hosts = f"[127.0.0.1]:{self.port} {key_type} {public_key}\n"  # a line of ~/.ssh/known_hosts
        (root / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", f"PidFile {root / 'sshd.pid'}",
            "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "",
        ]))
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation folder, which a package install creates
        self.process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"sshd stopped at its start: {self.process.stdout.read()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"sshd did not listen on 127.0.0.1:{self.port} within 20 s")

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    server = SSHServer(tmp_path_factory.mktemp("sshd") / "server")
    yield server
    server.stop()


@pytest.fixture
def home(tmp_path: Path, sshd: SSHServer) -> dict[str, str]:
    """A HOME whose ~/.ssh/known_hosts knows the test server (what `ssh-keyscan` or a first login gives a user)."""
    (tmp_path / "home/.ssh").mkdir(parents=True)
    (tmp_path / "home/.ssh/known_hosts").write_text(sshd.known_hosts)
    return {"HOME": str(tmp_path / "home")}


def remote_settings(kind: str, sshd: SSHServer, storage: Path) -> tuple[str, list[list[str]]]:
    """The remote's URL, and the `dvc remote modify --local` lines a user of it sets (credentials stay out of git)."""
    if kind == "folder":
        return str(storage), []
    return sshd.url(storage), [["dvc", "remote", "modify", "--local", "shared", "keyfile", str(sshd.client_key)]]


def commit_the_run(repo: Path) -> None:
    """Commit what `dvc repro` wrote to git (dvc.lock, metrics/, plots/, ...), as the README says to after a run."""
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "the pipeline's run", "--allow-empty"], repo)


@pytest.mark.parametrize("kind", ["folder", "ssh"])
def test_a_pushed_run_is_pulled_into_a_clone_with_nothing_to_rerun(kind, reproduced, sshd, home, tmp_path):
    url, credentials = remote_settings(kind, sshd, tmp_path / "storage")
    commit_the_run(reproduced)
    run(["dvc", "remote", "add", "-d", "--force", "shared", url], reproduced)
    for line in credentials:
        run(line, reproduced)
    run(["git", "add", ".dvc/config"], reproduced)
    run(["git", "commit", "-qm", f"DVC remote: {kind}"], reproduced)
    run(["dvc", "push"], reproduced, home)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(reproduced), str(clone)], tmp_path)
    for line in credentials:
        run(line, clone)
    run(["dvc", "pull"], clone, home)
    assert "up to date" in run(["dvc", "status"], clone), "dvc status after the pull"
    repro = run(["dvc", "repro"], clone, home)
    assert "Running stage" not in repro and "up to date" in repro, repro
    assert run(["git", "status", "--porcelain"], clone) == ""
    assert (clone / "artifacts/adapters/1/adapter_model.safetensors").read_bytes() == \
        (reproduced / "artifacts/adapters/1/adapter_model.safetensors").read_bytes()
    out = tmp_path / "one.jsonl"
    run(["llavac", "classify", "--adapter", "artifacts/adapters/1", "--image", "artifacts/sample/MVSA_Single/data/1.jpg",
         "--text", "what a lovely day", "--out", str(out)], clone)
    row = json.loads(out.read_text().splitlines()[0])
    assert {row["pred_text"], row["pred_image"], row["pred_multimodal"]} <= {"negative", "neutral", "positive"}


def failed(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    """What a failing DVC command prints (its exit status must be non-zero), DVC's warnings about the
    crypto library's deprecations left out."""
    done = subprocess.run(cmd, cwd=cwd, env=command_environment(env), capture_output=True, text=True)
    assert done.returncode != 0, f"{' '.join(cmd)} succeeded"
    return "\n".join(line for line in (done.stdout + done.stderr).splitlines() if "Deprecat" not in line)


def test_sharing_fails_with_dvcs_reason_without_a_remote_with_a_silent_one_and_with_missing_objects(reproduced, sshd,
                                                                                                     home, tmp_path):
    """The three ways sharing fails, each with the line docs/paper-run.md quotes."""
    commit_the_run(reproduced)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(reproduced), str(clone)], tmp_path)
    shutil.copy(REPO / ".dvc/config", clone / ".dvc/config")  # the project's own: no remote
    assert "no remote specified" in failed(["dvc", "push"], clone, home)
    assert "No remote provided and no default remote set" in failed(["dvc", "pull"], clone, home)
    silent = f"ssh://{sshd.user}@127.0.0.1:{free_port()}/nowhere"
    run(["dvc", "remote", "add", "-d", "shared", silent], clone)
    run(["dvc", "remote", "modify", "--local", "shared", "timeout", "5"], clone)
    said = failed(["dvc", "pull"], clone, home)
    assert "failed to connect to ssh" in said and "Connect call failed ('127.0.0.1'" in said, said
    (tmp_path / "empty").mkdir()
    run(["dvc", "remote", "modify", "--local", "--unset", "shared", "timeout"], clone)  # an SSH option only
    run(["dvc", "remote", "add", "-d", "--force", "shared", str(tmp_path / "empty")], clone)
    said = failed(["dvc", "pull"], clone, home)
    assert "do not exist neither locally nor on remote" in said and "Checkout failed" in said, said
    assert "artifacts/adapters" in said, said
