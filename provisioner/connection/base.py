"""The Connection protocol every transport implements, and the shell helpers built on it.

A connection's one primitive is ``exec``: run a shell command on the host, optionally feeding stdin,
and return exit code, stdout and stderr as bytes. ``run``, ``put`` and ``get`` are built on it, so
each of them costs exactly one round trip whatever the transport is.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, runtime_checkable

from provisioner import trace
from provisioner.errors import RemoteError

_STATS_LOCK = threading.Lock()

# exit code `get` uses to tell "no such file" from a failing cat
_MISSING_RC = 44

# What a command may read on stdin: bytes, or a stream (a binary file object read to its end, or an
# iterable of byte chunks) sent in pieces, so a large upload is never held in memory as a whole.
Stdin = bytes | BinaryIO | Iterable[bytes]
STDIN_CHUNK = 32768  # one SSH packet (paramiko's default maximum packet size)


def stdin_chunks(stdin: Stdin, size: int = STDIN_CHUNK) -> Iterator[bytes]:
    """``stdin`` as chunks of at most ``size`` bytes, without copying a large buffer again per chunk."""
    if isinstance(stdin, bytes | bytearray | memoryview):
        view = memoryview(stdin)
        for i in range(0, len(view), size):
            yield bytes(view[i : i + size])
        return
    read = getattr(stdin, "read", None)
    if read is not None:
        while chunk := read(size):
            yield bytes(chunk)
        return
    for piece in stdin:
        yield from stdin_chunks(piece, size)


@dataclass(frozen=True)
class RunResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def output(self) -> str:
        """stdout and stderr together, for error messages."""
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


@dataclass
class ConnectionStats:
    """What a connection cost; the cost-model tests read these."""

    connects: int = 0
    round_trips: int = 0
    bytes_sent: int = 0
    commands: list[str] = field(default_factory=list)


@runtime_checkable
class Connection(Protocol):
    host: str
    stats: ConnectionStats

    def run(
        self, cmd: str, *, sudo: bool = False, timeout: float | None = None, stdin: Stdin | None = None
    ) -> RunResult: ...

    def put(self, data: bytes, path: str, *, mode: int = 0o644, owner: str | None = None) -> None: ...

    def get(self, path: str) -> bytes | None: ...

    def close(self) -> None: ...


def q(value: object) -> str:
    """Quote one value for a POSIX shell."""
    return shlex.quote(str(value))


def put_command(path: str, mode: int, owner: str | None) -> str:
    """Shell that writes stdin to ``path`` atomically: temp file in the same directory, fsync, rename.

    A reader never sees a half-written file; a failure (full disk, killed connection) leaves the old
    file in place and removes the temp file.
    """
    directory = path.rsplit("/", 1)[0] or "/"
    chown = f' && chown {q(owner)} "$t"' if owner else ""
    return (
        f"t=$(mktemp {q(path + '.prov-XXXXXX')}) || exit 1; "
        f"trap 'rm -f \"$t\"' EXIT; "
        f'cat > "$t" && chmod {mode:o} "$t"{chown} && sync "$t" && mv -f "$t" {q(path)} '
        f"&& trap - EXIT && sync {q(directory)}"
    )


def put_label(path: str, mode: int, owner: str | None) -> str:
    """How a put is printed, in a plan and in the trace alike."""
    return f"put {path} (mode {mode:04o}{f', owner {owner}' if owner else ''}, atomic)"


def get_command(path: str) -> str:
    return f"if [ -e {q(path)} ]; then cat {q(path)}; else exit {_MISSING_RC}; fi"


class ShellConnection:
    """Implements run/put/get on top of one primitive, ``_exec``; transports subclass it."""

    host: str
    stats: ConnectionStats
    # True when commands must be wrapped in sudo to act as root
    needs_become: bool = False

    def _exec(self, cmd: str, stdin: Stdin | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        raise NotImplementedError

    def _wrap(self, cmd: str, sudo: bool) -> str:
        if sudo and self.needs_become:
            return f"sudo -n -H sh -c {q(cmd)}"
        return cmd

    def exec_bytes(
        self,
        cmd: str,
        *,
        sudo: bool = False,
        timeout: float | None = None,
        stdin: Stdin | None = None,
        traced: tuple[str, str] | None = None,
    ) -> tuple[int, bytes, bytes]:
        """``traced``: (kind, text) to write to the trace instead of the command (e.g. a put)."""
        trace.sent(self.host, *(traced or ("cmd", cmd)))
        with _STATS_LOCK:  # hosts' commands may run from several threads at once
            self.stats.round_trips += 1
            self.stats.commands.append(cmd)
            if isinstance(stdin, bytes) and stdin:
                self.stats.bytes_sent += len(stdin)
        if stdin is not None and not isinstance(stdin, bytes):
            stdin = self._counted(stdin)
        return self._exec(self._wrap(cmd, sudo), stdin, timeout)

    def _counted(self, stdin: Stdin) -> Iterator[bytes]:
        for chunk in stdin_chunks(stdin):
            with _STATS_LOCK:
                self.stats.bytes_sent += len(chunk)
            yield chunk

    def run(
        self, cmd: str, *, sudo: bool = False, timeout: float | None = None, stdin: Stdin | None = None
    ) -> RunResult:
        rc, out, err = self.exec_bytes(cmd, sudo=sudo, timeout=timeout, stdin=stdin)
        return RunResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def check(
        self,
        cmd: str,
        *,
        sudo: bool = True,
        timeout: float | None = None,
        stdin: Stdin | None = None,
        what: str = "",
        fix: str = "",
    ) -> RunResult:
        """run() that raises RemoteError (host, command, exit code, output tail) on failure."""
        res = self.run(cmd, sudo=sudo, timeout=timeout, stdin=stdin)
        if not res.ok:
            raise RemoteError(self.host, cmd, res.rc, res.output, fix=fix, what=what)
        return res

    def put(self, data: bytes, path: str, *, mode: int = 0o644, owner: str | None = None) -> None:
        cmd = put_command(path, mode, owner)
        rc, out, err = self.exec_bytes(cmd, sudo=True, stdin=data, traced=("put", put_label(path, mode, owner)))
        if rc != 0:
            raise RemoteError(
                self.host,
                f"write {path}",
                rc,
                (out + err).decode("utf-8", "replace"),
                what=f"could not write {path}",
                fix="check that the directory exists, the disk is not full and the user may write there",
            )

    def get(self, path: str) -> bytes | None:
        rc, out, err = self.exec_bytes(get_command(path), sudo=True)
        if rc == _MISSING_RC:
            return None
        if rc != 0:
            raise RemoteError(self.host, f"read {path}", rc, err.decode("utf-8", "replace"))
        return out

    def close(self) -> None:  # pragma: no cover - transports override
        pass
