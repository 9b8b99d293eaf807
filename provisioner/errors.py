"""One root error type. Every message says what went wrong, where, and how to fix it.

Third-party exceptions (paramiko, socket, docker, pydantic, YAML) are translated into these at the
boundary with ``raise ... from``; the CLI prints ``str(err)`` and exits with ``err.exit_code`` and never
shows a traceback for them.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_CHANGES_PENDING = 3


class ProvisionerError(Exception):
    """Root of every error the tool reports to the operator."""

    exit_code: int = EXIT_FAILED


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located as precisely as we can."""

    file: str
    line: int | None  # 1-based
    column: int | None  # 1-based
    field: str  # dotted path, e.g. "hosts.host1.address"; "" for the document itself
    message: str
    fix: str = ""

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        # a key with control characters in it is itself the mistake: show it escaped
        name = self.field if self.field.isprintable() else repr(self.field)
        field = f" {name}:" if self.field else ""
        text = f"{where}:{field} {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


class InputError(ProvisionerError):
    """Invalid inventory, playbook or command-line input. Nothing was contacted."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


class UsageError(ProvisionerError):
    """A bad command-line invocation that is not about a file."""

    exit_code = 2


class ConnectError(ProvisionerError):
    """A host could not be reached or authenticated: the host is *unreachable*."""

    def __init__(self, host: str, message: str, fix: str = "") -> None:
        self.host = host
        text = f"{host}: {message}"
        if fix:
            text += f"\n    fix: {fix}"
        super().__init__(text)


class HostKeyError(ConnectError):
    """The host's SSH key is unknown (strict policy) or has changed."""


class RemoteError(ProvisionerError):
    """A command on a host failed: names the host, the command, its exit code and output tail."""

    def __init__(self, host: str, command: str, rc: int, output: str, fix: str = "", what: str = "") -> None:
        self.host = host
        self.command = command
        self.rc = rc
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-15:])
        head = what or "command failed"
        text = f"{host}: {head} (exit {rc}): {command}"
        if tail:
            text += "\n" + "\n".join(f"    | {line}" for line in tail.splitlines())
        if fix:
            text += f"\n    fix: {fix}"
        super().__init__(text)


class TaskError(ProvisionerError):
    """A module could not plan or apply on a host, for a reason it can explain."""

    def __init__(self, message: str, fix: str = "") -> None:
        text = message if not fix else f"{message}\n    fix: {fix}"
        super().__init__(text)


class LabError(ProvisionerError):
    """The local lab could not be brought up, inspected or torn down."""
