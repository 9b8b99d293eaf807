"""One run at a time: a cluster-wide lock held on the first kv host.

The lock is a directory (``mkdir`` is atomic) with an ``owner`` file describing the run that holds it:
who, from which machine, which process, since when, doing what. A second run waits up to its lock
timeout, then fails naming the holder. A lock whose owner process provably no longer exists (same
machine, pid gone or reused) is stale and is taken over with a warning; any other lock is only
broken explicitly (``provisioner unlock`` or ``--break-lock``).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioner.connection.base import ShellConnection, q
from provisioner.errors import ProvisionerError, RemoteError

LOCK_DIR = "/var/lib/provisioner/run.lock"


class LockError(ProvisionerError):
    """Another run holds the cluster lock."""


def _machine_id() -> str:
    for p in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(p).read_text().strip()
        except OSError:
            continue
    return socket.gethostname()


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a live pid from a reused one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_run(command: str | None = None) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "owner": f"{getpass.getuser()}@{socket.gethostname()}",
        "machine_id": _machine_id(),
        "pid": pid,
        "pid_start": _proc_start(pid),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command or " ".join(sys.argv),
    }


def is_stale(owner: dict[str, Any]) -> bool:
    """True only when we can prove the holder is dead: it ran on this machine and its process is gone."""
    if owner.get("machine_id") != _machine_id():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    start = _proc_start(pid)
    return start is None or start != owner.get("pid_start")


def describe(owner: dict[str, Any]) -> str:
    return (
        f"{owner.get('owner', '?')} (pid {owner.get('pid', '?')}) since {owner.get('started', '?')}: "
        f"{owner.get('command', '?')}"
    )


@dataclass
class RunLock:
    conn: ShellConnection
    info: dict[str, Any]
    path: str = LOCK_DIR
    held: bool = False

    def _try(self, break_lock: bool) -> dict[str, Any] | None:
        """One round trip: take the lock, or return the current owner."""
        d = q(self.path)
        owner = q(json.dumps(self.info))
        force = f"rm -rf {d}; " if break_lock else ""
        res = self.conn.run(
            f"mkdir -p {q(self.path.rsplit('/', 1)[0])} && {force}"
            f"if mkdir {d} 2>/dev/null; then printf %s {owner} > {d}/owner && echo @@ACQUIRED; "
            f"else cat {d}/owner 2>/dev/null || echo '{{}}'; fi",
            sudo=True,
        )
        if not res.ok:
            raise RemoteError(self.conn.host, "take the run lock", res.rc, res.output)
        if "@@ACQUIRED" in res.stdout:
            self.held = True
            return None
        try:
            found = json.loads(res.stdout.strip() or "{}")
        except json.JSONDecodeError:
            found = {}
        return found if isinstance(found, dict) else {}

    def acquire(
        self, timeout: float, *, break_lock: bool = False, warn: Callable[[str], None] = lambda _m: None
    ) -> bool:
        """Take the lock; True when another run held it first (what was read before may be outdated)."""
        deadline = time.monotonic() + max(0.0, timeout)
        owner = self._try(break_lock)
        waited = owner is not None
        while owner is not None:
            if is_stale(owner):
                warn(f"taking over a stale run lock on {self.conn.host}: {describe(owner)} (that process is gone)")
                owner = self._try(True)
                continue
            if time.monotonic() >= deadline:
                who = describe(owner) if owner else "a run that left no owner record"
                raise LockError(
                    f"another run holds the cluster lock on {self.conn.host} ({self.path}): {who}\n"
                    "    fix: wait for it and retry, pass --lock-timeout SECONDS to wait longer; if that run is "
                    "dead, break the lock with `provisioner unlock -i INVENTORY`"
                )
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
            owner = self._try(False)
        return waited

    def release(self) -> None:
        if not self.held:
            return
        # only remove the lock if it is still ours (it may have been broken and retaken)
        d = q(self.path)
        mine = q(json.dumps(self.info))
        self.conn.run(f'[ "$(cat {d}/owner 2>/dev/null)" = {mine} ] && rm -rf {d}', sudo=True)
        self.held = False


def read_owner(conn: ShellConnection, path: str = LOCK_DIR) -> dict[str, Any] | None:
    data = conn.get(f"{path}/owner")
    if data is None:
        return None
    try:
        found = json.loads(data.decode() or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def break_lock(conn: ShellConnection, path: str = LOCK_DIR) -> None:
    conn.check(f"rm -rf {q(path)}", what="could not remove the run lock")
