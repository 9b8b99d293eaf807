"""What the lab e2e tests share: running the real CLI, reading its JSON report, a shell on a lab host."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from provisioner.lab import LabInfo, lab_down, lab_exec, lab_up

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "overlay.yml"


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m provisioner ARGS` from the project's root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def run_json(
    command: str, inventory: Path, *extra: str, playbook: Path = PLAYBOOK, timeout: float = 600
) -> tuple[int, dict[str, Any], str]:
    """Exit code, JSON report and stderr of `provisioner COMMAND -i INVENTORY PLAYBOOK --output json`."""
    res = cli(command, "-i", str(inventory), str(playbook), "--output", "json", *extra, timeout=timeout)
    try:
        report = json.loads(res.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{command}: no JSON report (exit {res.returncode})\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.returncode, report, res.stderr


def lab_sh(state: Path, host: str, cmd: str) -> str:
    """Run ``cmd`` on a lab host from the outside (not over SSH); it must succeed."""
    rc, out = lab_exec(host, cmd, state_dir=state)
    assert rc == 0, f"{host}: {cmd} exited {rc}: {out}"
    return out.strip()


@contextmanager
def fresh_lab(state: Path, subnet: str, suite: str = "bullseye", hosts: int = 3) -> Iterator[LabInfo]:
    """A lab brought up from nothing (whatever an earlier run left is removed first), always taken down
    afterwards; the host image stays in the lab's engine so the next test module starts quickly."""
    lab_down(state_dir=state, keep_image=True)
    try:
        yield lab_up(hosts=hosts, suite=suite, subnet=subnet, state_dir=state)
    finally:
        lab_down(state_dir=state, keep_image=True)
