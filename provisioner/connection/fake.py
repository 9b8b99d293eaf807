"""A scripted connection for unit tests: passed in where a real one would be, never patched in.

Commands are answered by the first matching rule (a regular expression searched in the command);
``put``/``get`` work on an in-memory file system so file modules can be tested end to end.
An unscripted command answers exit 127, so a test notices commands it did not expect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from provisioner import trace
from provisioner.connection.base import ConnectionStats, RunResult, ShellConnection, Stdin, put_label, stdin_chunks

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

    def _exec(self, cmd: str, stdin: Stdin | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        if self.closed:
            raise RuntimeError("FakeConnection used after close()")
        if stdin is not None and not isinstance(stdin, bytes):
            stdin = b"".join(stdin_chunks(stdin))  # a streamed upload, read to its end as a host would
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
        trace.sent(self.host, "put", put_label(path, mode, owner))
        self.calls.append(f"put {path}")
        self.files[path] = data
        self.modes[path] = mode

    def get(self, path: str) -> bytes | None:
        self.stats.round_trips += 1
        self.calls.append(f"get {path}")
        return self.files.get(path)

    def close(self) -> None:
        self.closed = True


def serve_facts(conn: FakeConnection, sections: dict[str, str] | None = None) -> FakeConnection:
    """Answer the facts script from the script's JSON header, never its shell text: each section the
    header asks for gets its body from ``sections`` (e.g. ``{"info": <docker info JSON>}``; a section with
    no fixture prints nothing, as with a missing tool), files from the fake's in-memory files, probes from
    the fake's scripted answer to the probe's command."""
    import base64

    from provisioner.facts import MARK, header

    fixed = {"os": "ID=debian\nVERSION_ID=12", "user": "0\nroot", "init": "systemd", **(sections or {})}

    def respond(_cmd: str, stdin: bytes | None) -> RunResult:
        head = header((stdin or b"").decode())
        out = [f"\n{MARK} {name}\n{fixed[name]}\n" for name in head["sections"] if name in fixed]
        for i, path in enumerate(head["files"]):
            data = conn.files.get(path)
            body = ""
            if data is not None:
                body = f"{conn.modes.get(path, 0o644):o} root:root\n{base64.b64encode(data).decode()}"
            out.append(f"\n{MARK} file:{i}\n{body}\n")
        for i, cmd in enumerate(head["probes"].values()):
            rc, _o, _e = conn._exec(cmd, None, None)
            out.append(f"\n{MARK} probe:{i}\n{rc}\n")
        return RunResult(0, "".join(out), "")

    return conn.on(r"^sh -s$", respond=respond)
