"""A scripted connection for unit tests: passed in where a real one would be, never patched in.

Commands are answered by the first matching rule (a regular expression searched in the command);
``put``/``get`` work on an in-memory file system so file modules can be tested end to end.
An unscripted command answers exit 127, so a test notices commands it did not expect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from provisioner.connection.base import ConnectionStats, RunResult, ShellConnection

Responder = Callable[[str, bytes | None], RunResult]


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    respond: Responder
    times: int | None  # None: unlimited


class FakeConnection(ShellConnection):
    def __init__(self, host: str = "fake", files: dict[str, bytes] | None = None) -> None:
        self.host = host
        self.stats = ConnectionStats(connects=1)
        self.files: dict[str, bytes] = dict(files or {})
        self.modes: dict[str, int] = {}
        self.calls: list[str] = []
        self.closed = False
        self._rules: list[_Rule] = []

    def on(
        self,
        pattern: str,
        rc: int = 0,
        stdout: str = "",
        stderr: str = "",
        *,
        times: int | None = None,
        respond: Responder | None = None,
    ) -> FakeConnection:
        """Script an answer for commands matching ``pattern``; returns self for chaining."""
        fixed = RunResult(rc, stdout, stderr)
        self._rules.append(_Rule(re.compile(pattern), respond or (lambda _c, _i: fixed), times))
        return self

    def _exec(self, cmd: str, stdin: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        if self.closed:
            raise RuntimeError("FakeConnection used after close()")
        self.calls.append(cmd)
        for rule in self._rules:
            if rule.times == 0 or not rule.pattern.search(cmd):
                continue
            if rule.times is not None:
                rule.times -= 1
            res = rule.respond(cmd, stdin)
            return res.rc, res.stdout.encode(), res.stderr.encode()
        return 127, b"", f"fake: unscripted command: {cmd}".encode()

    def put(self, data: bytes, path: str, *, mode: int = 0o644, owner: str | None = None) -> None:
        self.stats.round_trips += 1
        self.stats.bytes_sent += len(data)
        self.calls.append(f"put {path}")
        self.files[path] = data
        self.modes[path] = mode

    def get(self, path: str) -> bytes | None:
        self.stats.round_trips += 1
        self.calls.append(f"get {path}")
        return self.files.get(path)

    def close(self) -> None:
        self.closed = True
