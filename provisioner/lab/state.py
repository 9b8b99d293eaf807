"""state.json: everything the lab created, so `down` and a later `up` can find and clean it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioner.errors import LabError

STATE_FILE = "state.json"
VERSION = 1


@dataclass
class HostRecord:
    name: str
    address: str
    container: str
    volume: str
    suite: str = ""  # "" in state files written before mixed labs: the lab's suite
    image: str = ""


@dataclass
class LabState:
    lab_id: str
    subnet: str = ""
    suite: str = ""
    engine_url: str = ""
    engine_owned: bool = False  # True: a private dockerd we started (pid below) and must stop
    dockerd_pid: int | None = None
    data_root: str = ""
    exec_root: str = ""
    network: str = ""
    bridge: str = ""
    image: str = ""
    hosts: list[HostRecord] = field(default_factory=list)
    # rules this lab added, each as iptables arguments after the table: ["-t", "filter", "FORWARD", ...]
    iptables_rules: list[list[str]] = field(default_factory=list)
    archives: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> LabState:
        try:
            data: dict[str, Any] = json.loads(text)
            data.pop("version", None)
            hosts = [HostRecord(**h) for h in data.pop("hosts", [])]
            return cls(hosts=hosts, **data)
        except (ValueError, TypeError) as exc:
            raise LabError(
                f"{where}: lab state file is unreadable ({exc})\n"
                f"    fix: inspect it; if no lab is running, remove it (rm {where}) and run `provisioner lab up`"
            ) from exc

    @property
    def is_empty(self) -> bool:
        return not (self.engine_owned or self.network or self.hosts or self.iptables_rules)


def load(state_dir: Path, lab_id: str) -> LabState:
    path = state_dir / STATE_FILE
    if not path.exists():
        return LabState(lab_id=lab_id)
    return LabState.from_json(path.read_text(), path)


def save(state_dir: Path, st: LabState) -> None:
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(st.to_json())
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """One lab command at a time per state directory."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / "lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fh, fcntl.LOCK_EX)  # another lab command runs on this state dir: wait for it
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
