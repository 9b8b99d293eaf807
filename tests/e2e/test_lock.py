"""The cluster lock over a real SSH connection: exclusive, names its holder, stale locks taken over."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.connection.ssh import SSHConnection
from provisioner.engine.lock import LockError, RunLock, read_owner, this_run
from tests.sshd import Sshd, sshd  # noqa: F401

pytestmark = pytest.mark.e2e


@pytest.fixture()
def conn(sshd: Sshd) -> Iterator[SSHConnection]:  # noqa: F811
    c = SSHConnection.open(sshd.target())
    yield c
    c.close()


def test_second_run_waits_then_names_the_holder(conn: SSHConnection, tmp_path: Path) -> None:
    path = str(tmp_path / "run.lock")
    first = RunLock(conn, this_run("apply first"), path=path)
    first.acquire(0)
    second = RunLock(conn, this_run("apply second"), path=path)
    with pytest.raises(LockError) as err:
        second.acquire(0.5)
    assert "apply first" in str(err.value) and "provisioner unlock" in str(err.value)
    first.release()
    second.acquire(0)
    assert read_owner(conn, path) == second.info
    second.release()
    assert read_owner(conn, path) is None


def test_lock_of_a_dead_process_is_taken_over(conn: SSHConnection, tmp_path: Path) -> None:
    path = str(tmp_path / "run.lock")
    dead = subprocess.Popen(["true"])
    dead.wait()
    info = this_run("killed run")
    info["pid"] = dead.pid
    RunLock(conn, info, path=path).acquire(0)  # left behind, as by kill -9
    warnings: list[str] = []
    mine = RunLock(conn, this_run("next run"), path=path)
    mine.acquire(0, warn=warnings.append)
    assert mine.held and "stale" in warnings[0] and "killed run" in warnings[0]
    mine.release()


def test_release_does_not_remove_a_lock_taken_over_by_someone_else(conn: SSHConnection, tmp_path: Path) -> None:
    path = str(tmp_path / "run.lock")
    a = RunLock(conn, this_run("a"), path=path)
    a.acquire(0)
    b = RunLock(conn, this_run("b"), path=path)
    b.acquire(0, break_lock=True)
    a.release()
    assert read_owner(conn, path) == b.info
    b.release()
