"""Running local commands for the lab: output streamed to progress, failures turned into LabError."""

from __future__ import annotations

import shlex
import subprocess
from collections import deque
from collections.abc import Sequence

from provisioner.errors import LabError
from provisioner.lab.progress import Step


def run(cmd: Sequence[str], *, step: Step | None = None, fix: str = "", what: str = "", cwd: str | None = None) -> str:
    """Run a command, feed each output line to `step`, return the output; raise LabError on failure."""
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, errors="replace"
        )
    except FileNotFoundError as exc:
        raise LabError(
            f"{what or 'lab'}: program {cmd[0]!r} is not installed\n"
            f"    fix: {fix or f'install it (apt-get install {cmd[0]})'}"
        ) from exc
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=20)
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        tail.append(line.rstrip())
        if step is not None and line.strip():
            step.update(line)
    rc = proc.wait()
    if rc != 0:
        text = f"{what or 'lab'}: command failed (exit {rc}): {shlex.join(cmd)}"
        text += "".join(f"\n    | {t}" for t in tail)
        if fix:
            text += f"\n    fix: {fix}"
        raise LabError(text)
    return "".join(lines)


def try_run(cmd: Sequence[str]) -> tuple[int, str]:
    """Run a command for inspection; a missing program counts as exit 127."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            list(cmd), capture_output=True, text=True, check=False, errors="replace"
        )
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    return done.returncode, done.stdout + done.stderr
