"""The typed steps a change is made of: what ``plan`` prints is what ``apply`` runs.

A ``Change`` holds a list of steps. The executor renders each one (``plan``, the JSON report's
``steps``) and runs the same objects in the same order (``apply``), so the two cannot drift apart.

* ``Run``: one shell command on this host (or, with ``host``, on another host of the run over that
  host's one connection). It can feed a local file on stdin and capture its output as a secret that
  later steps use (``@@name@@`` in their command) and that every rendering masks.
* ``Put``: write a file atomically (the connection's ``put`` primitive).
* ``Wait``: repeat one read-only command until its output says done, or time out.
* ``Call``: a local function with a label, for waits that do not touch a host (an HTTP health check
  from here) and rollbacks. Never a way to run remote commands that the plan does not show.

Every command sent to a host is written to the trace (``provisioner.trace``) under the step that sent
it, which is how the tests prove that plan and apply agree.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from provisioner import trace
from provisioner.connection.base import RunResult, ShellConnection, put_label
from provisioner.errors import ConnectError, ProvisionerError, RemoteError, TaskError

if TYPE_CHECKING:
    from provisioner.modules.base import ApplyContext

_SECRET_REF = re.compile(r"@@([a-z_][a-z0-9_]*)@@")
MASK = "***"


class StepState:
    """What the steps of one change share while it is applied: secrets captured by earlier steps."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        # while rollback steps run: the error that made the change fail
        self.failure: BaseException | None = None

    def fill(self, command: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.secrets:
                raise TaskError(f"internal: step uses secret {name!r} before a step captured it")
            return self.secrets[name]

        return _SECRET_REF.sub(sub, command)

    def mask(self, text: str) -> str:
        for value in self.secrets.values():
            if value:
                text = text.replace(value, MASK)
        return text


class WaitFailed(TaskError):
    """A Wait step gave up; ``why`` is the last reason it was not done."""

    def __init__(self, message: str, why: str, fix: str = "") -> None:
        self.why = why
        super().__init__(message, fix=fix)


def masked(command: str) -> str:
    """A command as printed: captured secrets shown as ***."""
    return _SECRET_REF.sub(MASK, command)


class Step(Protocol):
    def render(self) -> str: ...
    def run(self, ctx: ApplyContext, state: StepState) -> None: ...


def _conn(ctx: ApplyContext, host: str | None) -> ShellConnection:
    if host is None or host == ctx.host or ctx.connection_to is None:
        return ctx.conn
    return ctx.connection_to(host)


@dataclass(frozen=True)
class Run:
    command: str
    host: str | None = None  # another host of the run (its one connection); None: this host
    sudo: bool = True
    timeout: float | None = None
    stdin: Path | None = None  # a local file streamed to the command's stdin
    capture: str | None = None  # keep stdout (stripped) as a secret for later steps: @@capture@@
    what: str = ""  # for the error: what could not be done
    fix: str = ""
    # exit codes that mean something specific: rc -> (message, fix)
    known: tuple[tuple[int, str, str], ...] = ()
    # a progress line for the live display as the step starts ("restarting Docker")
    progress: str = ""

    def render(self) -> str:
        text = masked(self.command)
        if self.stdin is not None:
            text += f" < {self.stdin}"
        return f"{self.host}: {text}" if self.host else text

    def run(self, ctx: ApplyContext, state: StepState) -> None:
        conn = _conn(ctx, self.host)
        command = state.fill(self.command)
        try:
            if self.stdin is not None:
                try:
                    with self.stdin.open("rb") as data:
                        res = conn.run(command, sudo=self.sudo, timeout=self.timeout, stdin=data)
                except OSError as e:
                    raise TaskError(
                        f"{ctx.host}: cannot read {self.stdin}: {e}",
                        fix="check that the file exists and is readable, or fix the inventory",
                    ) from e
            else:
                res = conn.run(command, sudo=self.sudo, timeout=self.timeout)
            self._judge(conn, res)
        except ConnectError as e:
            raise ConnectError(conn.host, state.mask(str(e).split(": ", 1)[-1])) from None
        except ProvisionerError as e:
            if not state.secrets:
                raise
            raise TaskError(state.mask(str(e))) from None
        if self.capture:
            state.secrets[self.capture] = res.stdout.strip()
            trace.add_secrets(state.secrets[self.capture])

    def _judge(self, conn: ShellConnection, res: RunResult) -> None:
        if res.ok:
            return
        for rc, message, fix in self.known:
            if res.rc == rc:
                raise TaskError(f"{conn.host}: {message}", fix=fix)
        raise RemoteError(conn.host, masked(self.command), res.rc, res.output, what=self.what, fix=self.fix)


@dataclass(frozen=True)
class Put:
    path: str
    data: bytes = field(repr=False)
    mode: int = 0o644
    owner: str | None = "root:root"

    def render(self) -> str:
        return put_label(self.path, self.mode, self.owner)

    def run(self, ctx: ApplyContext, state: StepState) -> None:
        ctx.conn.put(self.data, self.path, mode=self.mode, owner=self.owner)


@dataclass(frozen=True)
class Wait:
    """Run ``command`` (read-only) until ``until`` says done; ``until`` returns (True, _) when done,
    (False, why) to give up at once, (None, why) to try again after ``interval``."""

    command: str
    until: Callable[[RunResult], tuple[bool | None, str]]
    label: str  # what is waited for, e.g. "Docker is active with cluster store consul://..."
    timeout: float = 60.0
    interval: float = 1.0
    what: str = ""  # the error's first words when the wait fails
    fix: str = ""
    progress: str = ""

    def render(self) -> str:
        return f"wait up to {self.timeout:.0f} s until {self.label}: {self.command}"

    def run(self, ctx: ApplyContext, state: StepState) -> None:
        why = self.wait(ctx)
        if why is not None:
            raise WaitFailed(f"{ctx.host}: {self.what or 'timed out'}: {why}", why, fix=self.fix)

    def wait(self, ctx: ApplyContext) -> str | None:
        """None once done, else the last reason it was not."""
        deadline = time.monotonic() + self.timeout
        while True:
            res = ctx.conn.run(self.command, sudo=True, timeout=max(10.0, self.interval * 5))
            done, why = self.until(res)
            if done:
                return None
            if done is False or time.monotonic() >= deadline:
                return why or f"not done within {self.timeout:.0f} s"
            time.sleep(self.interval)


@dataclass(frozen=True)
class Call:
    """A local function: a wait that reads nothing from a host's shell, or a rollback. A rollback
    reads ``state.failure``, and the error it raises (if any) is the one reported for the change."""

    label: str
    fn: Callable[[ApplyContext, StepState], None]

    def render(self) -> str:
        return self.label

    def run(self, ctx: ApplyContext, state: StepState) -> None:
        self.fn(ctx, state)
