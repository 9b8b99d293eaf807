"""The Docker engine the lab runs on: one the user names, or a private dockerd under the state dir.

The private dockerd has its own data root, exec root, socket, pid file and containerd namespaces, and
does not touch iptables (`--iptables=false`): two dockerds managing the same DOCKER chains flush each
other's rules. The lab adds the one forwarding rule its bridge needs itself and records it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.errors import LabError
from provisioner.lab import paths

if TYPE_CHECKING:
    import docker


@dataclass(frozen=True)
class PrivatePaths:
    data_root: Path
    exec_root: Path
    socket: Path
    pidfile: Path
    config: Path
    log: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


def private_paths(state_dir: Path) -> PrivatePaths:
    return PrivatePaths(
        data_root=state_dir / "docker",
        exec_root=state_dir / "run",
        socket=state_dir / "docker.sock",
        pidfile=state_dir / "dockerd.pid",
        config=state_dir / "dockerd.json",
        log=state_dir / "dockerd.log",
    )


def requested_engine(engine: str | None) -> str | None:
    """The engine the user named (--engine, then DOCKER_HOST), or None for a private one."""
    return engine or os.environ.get("DOCKER_HOST") or None


def pid_is_our_dockerd(pid: int | None, data_root: str) -> bool:
    """True when `pid` is alive and is a dockerd using `data_root` (guards against pid reuse)."""
    if not pid or not data_root:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [a.decode(errors="replace") for a in argv]
    return bool(words) and words[0].endswith("dockerd") and data_root in words


def start_private(state_dir: Path, lab_id: str) -> int:
    """Start a private dockerd; returns its pid once its API answers."""
    p = private_paths(state_dir)
    longest = p.exec_root / "containerd" / "containerd-debug.sock"
    if len(str(longest)) > paths.MAX_SOCKET_PATH or len(str(p.socket)) > paths.MAX_SOCKET_PATH:
        raise LabError(
            f"lab state dir {state_dir} is too deep: dockerd's unix sockets under it would exceed the "
            "108-byte path limit\n    fix: use a shorter PROVISIONER_LAB_DIR / --state-dir"
        )
    for d in (p.data_root, p.exec_root):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    p.config.write_text("{}\n")  # never read the system's /etc/docker/daemon.json
    for stale in (p.socket, p.pidfile):
        stale.unlink(missing_ok=True)
    argv = [
        "dockerd",
        "--config-file", str(p.config),
        "--data-root", str(p.data_root),
        "--exec-root", str(p.exec_root),
        "--pidfile", str(p.pidfile),
        "-H", p.url,
        "--containerd-namespace", f"plab-{lab_id}",
        "--containerd-plugins-namespace", f"plab-{lab_id}-plugins",
        "--bridge=none",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
    ]  # fmt: skip
    try:
        with open(p.log, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
    except FileNotFoundError as exc:
        raise LabError(
            "the lab needs a Docker engine and dockerd is not installed\n"
            "    fix: apt-get install docker.io, or point the lab at an engine with --engine URL"
        ) from exc
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(
                f"private dockerd exited at start (exit {proc.returncode})\n{_log_tail(p.log)}\n"
                f"    fix: read {p.log}; another dockerd may use the same paths"
            )
        if p.socket.exists():
            try:
                connect(p.url).close()
                return proc.pid
            except LabError:
                pass
        time.sleep(0.3)
    stop_private(proc.pid, str(p.data_root))
    raise LabError(f"private dockerd did not answer within 60s\n{_log_tail(p.log)}\n    fix: read {p.log}")


def stop_private(pid: int | None, data_root: str, timeout: float = 40) -> None:
    if not pid_is_our_dockerd(pid, data_root):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_is_our_dockerd(pid, data_root):
        _reap(pid)
        time.sleep(0.2)
    if pid_is_our_dockerd(pid, data_root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _log_tail(log: Path, lines: int = 12) -> str:
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join(f"    | {line}" for line in tail)


def connect(url: str) -> docker.DockerClient:
    import docker
    import docker.errors
    import requests

    try:
        client = docker.DockerClient(base_url=url, timeout=300)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise LabError(
            f"cannot reach the Docker engine at {url}: {exc}\n"
            "    fix: start it, or give another with --engine URL / DOCKER_HOST (unset both for a private one)"
        ) from exc
    return client


def engine_facts(client: docker.DockerClient) -> dict[str, object]:
    info = client.info()
    return {k: info.get(k) for k in ("ServerVersion", "Driver", "CgroupVersion", "CgroupDriver")}


def dump(obj: object) -> str:
    return json.dumps(obj, indent=2, default=str)
