"""Results of a run: per task and host, per host, and for the whole run (the JSON report)."""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from provisioner.modules.base import FLAGS, Change

Status = Literal["ok", "changed", "failed", "skipped", "unreachable"]


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def redact_data(value: Any, secrets: tuple[str, ...]) -> Any:
    """``redact`` through every string of a JSON-like value (a check's structured result)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets): redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v, secrets) for v in value]
    return value


def diff_kind(line: str) -> str:
    """What one line of a unified diff is: 'file', 'add', 'del', 'hunk' or '' (context)."""
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    if line.startswith("@@"):
        return "hunk"
    return ""


def unified_diff(change: Change) -> str:
    """The unified diff of a file change ('' when the change is not about file content)."""
    if change.path is None or change.after is None:
        return ""
    before = change.before or ""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        change.after.splitlines(keepends=True),
        fromfile=f"{change.path} (on host)" if change.before is not None else "/dev/null",
        tofile=f"{change.path} (wanted)",
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return redact("".join(out), change.secrets)


@dataclass
class TaskResult:
    play: str
    task: str
    module: str
    host: str
    status: Status
    message: str = ""
    changes: list[Change] = field(default_factory=list)
    duration: float = 0.0
    # seconds from the start of the run to the start of this task on this host (set when recorded)
    started: float | None = None
    # the message is the result itself (e.g. the ping matrix): always shown, even when ok
    report: bool = False
    # a check's structured result (e.g. every pair of the ping matrix), the JSON report's "verify"
    data: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "play": self.play,
            "task": self.task,
            "module": self.module,
            "status": self.status,
            "changed": self.status == "changed",
            "message": self.message,
            "duration": round(self.duration, 3),
            "started": round(self.started, 3) if self.started is not None else None,
            "changes": [
                {
                    "description": redact(c.description, c.secrets),
                    "path": c.path,
                    "diff": unified_diff(c),
                    "steps": [redact(cmd, c.secrets) for cmd in c.commands],
                    # the same list under its first name, for readers of earlier reports
                    "commands": [redact(cmd, c.secrets) for cmd in c.commands],
                    "rollback": [redact(s.render(), c.secrets) for s in c.rollback],
                    "requires": FLAGS.get(c.requires, c.requires) if c.requires else None,
                    "notes": [redact(n, c.secrets) for n in c.notes],
                }
                for c in self.changes
            ],
        }
        if self.data is not None:
            out["verify"] = self.data
        return out


@dataclass
class HostReport:
    name: str
    results: list[TaskResult] = field(default_factory=list)
    unreachable: bool = False
    unreachable_reason: str = ""

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def changed(self) -> int:
        return self.count("changed")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def ok(self) -> bool:
        return not self.unreachable and self.failed == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "failed": self.failed,
            "unreachable": self.unreachable,
            "unreachable_reason": self.unreachable_reason,
            "ok_tasks": self.count("ok"),
            "skipped": self.count("skipped"),
            "tasks": [r.to_json() for r in self.results],
        }


@dataclass
class RunReport:
    mode: Literal["plan", "apply", "verify"]
    hosts: dict[str, HostReport] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    duration: float = 0.0
    # run-level problem that is not any single host's (e.g. preflight refused)
    error: str = ""
    connections: dict[str, dict[str, int]] = field(default_factory=dict)

    def host(self, name: str) -> HostReport:
        if name not in self.hosts:
            self.hosts[name] = HostReport(name)
        return self.hosts[name]

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    @property
    def failed(self) -> int:
        return sum(1 for h in self.hosts.values() if h.failed and not h.unreachable)

    @property
    def unreachable(self) -> int:
        return sum(1 for h in self.hosts.values() if h.unreachable)

    @property
    def ok(self) -> bool:
        return not self.error and self.failed == 0 and self.unreachable == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "changed": self.changed,
            "failed": self.failed,
            "unreachable": self.unreachable,
            "error": self.error,
            "duration": round(self.duration, 3),
            "connections": self.connections,
            "hosts": {name: h.to_json() for name, h in self.hosts.items()},
        }
