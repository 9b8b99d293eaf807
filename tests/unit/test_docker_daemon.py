"""docker_daemon, data-driven (the daemon cases); restart, wait and rollback on the scripted fake connection."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from provisioner.connection.base import RunResult
from provisioner.connection.fake import FakeConnection
from provisioner.engine.executor import apply_change
from provisioner.errors import TaskError
from provisioner.modules import docker_daemon
from provisioner.modules.base import NoOp
from provisioner.steps import Put
from tests.builders import (
    BASE,
    DAEMON_JSON,
    DROPIN,
    STORE,
    changes,
    ctx_for,
    facts,
    inventory,
    plan,
)

WANT_DROPIN = (
    docker_daemon.HEADER + "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS "
    "--cluster-store=consul://198.18.0.11:8500 --cluster-advertise=eth0:2376\n"
)
RUNNING_OK = {"cluster_store": STORE, "cluster_advertise": "198.18.0.12:2376"}


@dataclass
class DaemonCase:
    id: str
    facts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    inv: dict[str, Any] = field(default_factory=dict)
    # expected: "noop:<reason part>", "error:<message part>" or the change's description start
    expect: str = ""
    after: str | None = None  # expected new file content (when a file changes)
    notes: tuple[str, ...] = ()
    exclusive: str | None = "docker-restart"


DAEMON_CASES = [
    DaemonCase("fresh dropin, $DOCKER_OPTS kept bare", expect=f"write {DROPIN} and restart Docker",
               after=WANT_DROPIN, notes=("restarts Docker: stops 2 running containers", "rolling restart")),
    DaemonCase("in sync", facts=RUNNING_OK, files={DROPIN: WANT_DROPIN}, expect="noop:Docker runs with cluster store"),
    DaemonCase("file right, restart missed by an earlier run", files={DROPIN: WANT_DROPIN},
               expect="restart Docker: the running daemon uses cluster store (none)"),
    DaemonCase("file right, docker stopped", facts={**RUNNING_OK, "active": False, "state": "inactive"},
               files={DROPIN: WANT_DROPIN}, expect="restart Docker: Docker is not running (inactive)"),
    DaemonCase("hand-edited dropin restored", facts=RUNNING_OK,
               files={DROPIN: WANT_DROPIN.replace("eth0:2376", "eth1:2376")},
               expect=f"update {DROPIN} and restart Docker", after=WANT_DROPIN),
    DaemonCase("our old flags in the unit are stripped",
               facts={"base_execstart": [*BASE, "--cluster-store", "consul://old:8500", "--cluster-advertise=x:1"]},
               expect=f"write {DROPIN}", after=WANT_DROPIN),
    DaemonCase("mirrors and odd tokens", facts={"base_execstart": [*BASE, "--label", "a b", "${EXTRA}"]},
               inv={"docker": {"registry_mirrors": ["https://m.example.com"]}}, expect=f"write {DROPIN}",
               after=WANT_DROPIN.replace("$DOCKER_OPTS ", '$DOCKER_OPTS --label "a b" ${EXTRA} ').replace(
                   ":2376\n", ":2376 --registry-mirror=https://m.example.com\n")),
    DaemonCase("parallel restart", inv={"docker": {"restart": "parallel"}}, expect=f"write {DROPIN}",
               notes=("parallel restart",), exclusive=None),
    DaemonCase("live-restore keeps containers", facts={"live_restore": True}, expect=f"write {DROPIN}",
               notes=("live-restore keeps 2 running containers up",)),
    DaemonCase("advertise interface missing", inv={"docker": {"advertise_interface": "ens9"}}, expect=f"write {DROPIN}",
               notes=("interface ens9 has no address on lab2",)),
    DaemonCase("dropin mode: daemon.json sets the same option", files={DAEMON_JSON: '{"cluster-store": "x"}'},
               expect='error:--cluster-store (flag) / "cluster-store" (daemon.json)'),
    DaemonCase("daemon-json merge keeps other keys in order", inv={"docker": {"config": "daemon-json"}},
               files={DAEMON_JSON: '{"log-driver": "journald", "cluster-advertise": "old:1"}'},
               expect=f"update {DAEMON_JSON} and restart Docker",
               after='{\n  "log-driver": "journald",\n  "cluster-advertise": "eth0:2376",\n'
                     '  "cluster-store": "consul://198.18.0.11:8500"\n}\n'),
    DaemonCase("daemon-json in sync (formatting ignored)", inv={"docker": {"config": "daemon-json"}}, facts=RUNNING_OK,
               files={DAEMON_JSON: '{"cluster-store":"consul://198.18.0.11:8500","cluster-advertise":"eth0:2376"}'},
               expect="noop:Docker runs"),
    DaemonCase("daemon-json: unit flag -H conflicts with hosts key", inv={"docker": {"config": "daemon-json"}},
               files={DAEMON_JSON: '{"hosts": ["unix:///run/docker.sock"]}'},
               expect='error:-H (flag) / "hosts" (daemon.json)'),
    DaemonCase("daemon-json: invalid JSON refused", inv={"docker": {"config": "daemon-json"}},
               files={DAEMON_JSON: '{"a": '}, expect="error:is not valid JSON"),
    DaemonCase("daemon-json removes our old drop-in", inv={"docker": {"config": "daemon-json"}},
               files={DROPIN: WANT_DROPIN}, expect=f"write {DAEMON_JSON} and restart Docker"),
    DaemonCase("unknown unit command line", facts={"base_execstart": None}, expect="error:cannot tell which dockerd"),
    DaemonCase("docker not installed", facts={"installed": False}, expect="error:Docker is not installed"),
]  # fmt: skip


@pytest.mark.parametrize("case", DAEMON_CASES, ids=[c.id for c in DAEMON_CASES])
def test_docker_daemon_plan(case: DaemonCase) -> None:
    f = facts("lab2", files=case.files, **case.facts)
    inv = inventory(**case.inv)
    if case.expect.startswith("error:"):
        with pytest.raises(TaskError) as err:
            plan(docker_daemon.DockerDaemonModule(), f, inv)
        assert case.expect[6:] in str(err.value)
        assert "fix:" in str(err.value)
        return
    p = plan(docker_daemon.DockerDaemonModule(), f, inv)
    if case.expect.startswith("noop:"):
        assert isinstance(p, NoOp) and case.expect[5:] in p.reason, p
        return
    (c,) = changes(p)
    assert c.description.startswith(case.expect), c.description
    if case.after is not None:
        assert c.after == case.after
    for note in case.notes:
        assert any(note in n for n in c.notes), c.notes
    assert c.exclusive == case.exclusive
    assert {(s.mode, s.owner) for s in c.steps if isinstance(s, Put)} == {(0o644, "root:root")}


def test_daemon_json_mode_lists_the_dropin_removal() -> None:
    f = facts("lab2", files={DROPIN: WANT_DROPIN})
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f, inventory(docker={"config": "daemon-json"})))
    assert f"rm -f {DROPIN}" in c.commands


def state_responder(states: list[str]) -> Callable[[str, bytes | None], RunResult]:
    """Answers the `systemctl is-active; docker info` probe with the next scripted state."""

    def respond(_cmd: str, _stdin: bytes | None) -> RunResult:
        return RunResult(0, states.pop(0) if len(states) > 1 else states[0], "")

    return respond


def daemon_conn(restart_rc: int, states: list[str], files: dict[str, bytes] | None = None) -> FakeConnection:
    conn = FakeConnection("lab2", files=files)

    def rm(cmd: str, _stdin: bytes | None) -> RunResult:
        conn.files.pop(DROPIN, None)
        return RunResult(0, "", "")

    def rm_marker(cmd: str, _stdin: bytes | None) -> RunResult:
        conn.files.pop(docker_daemon.PENDING_MARKER, None)
        return RunResult(0, "", "")

    conn.on("^mkdir -p ", rc=0)
    conn.on(f"^rm -f {re.escape(DROPIN)}", respond=rm)
    conn.on(f"^rm -f {re.escape(docker_daemon.PENDING_MARKER)}$", respond=rm_marker)
    conn.on(r"^systemctl daemon-reload && systemctl restart docker", rc=restart_rc, times=1,
            stderr="Job for docker.service failed")  # fmt: skip
    conn.on(r"^systemctl daemon-reload; systemctl reset-failed docker; systemctl restart docker", rc=0)
    conn.on(r"^systemctl is-active docker; timeout 10 docker info", respond=state_responder(states))
    conn.on("^journalctl -u docker", stdout="dockerd: failed to parse cluster-advertise: no interface ens9\n")
    # the store's health, asked through the connection (kv_store.check_via: ssh): a leader is elected
    conn.on(r"curl -fsS -m 5 http://198\.18\.0\.11:8500/v1/status/leader", stdout='"198.18.0.11:8300"')
    return conn


def test_daemon_apply_restarts_and_waits_for_the_store() -> None:
    f = facts("lab2")
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f))
    conn = daemon_conn(0, ["activating\n", f"active\n{STORE}|198.18.0.12:2376\n"])
    apply_change(ctx_for(conn, f), c)
    assert conn.files[DROPIN].decode() == WANT_DROPIN
    # the folder may not exist yet
    folder = "mkdir -p /etc/systemd/system/docker.service.d"
    mkdir = next(i for i, call in enumerate(conn.calls) if call.startswith(folder))
    assert mkdir < conn.calls.index(f"put {DROPIN}")
    assert docker_daemon.PENDING_MARKER not in conn.files  # verified running: no restart owed
    assert not any("journalctl" in call for call in conn.calls)


def test_daemon_rollback_removes_new_file_and_docker_runs_again() -> None:
    f = facts("lab2")
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f, inventory(docker={"advertise_interface": "ens9"})))
    conn = daemon_conn(1, ["active\n|\n"])
    with pytest.raises(TaskError) as err:
        apply_change(ctx_for(conn, f), c)
    msg = str(err.value)
    assert "previous configuration was restored and Docker is running again" in msg
    assert "no interface ens9" in msg and "Job for docker.service failed" in msg
    assert DROPIN not in conn.files  # there was none before
    assert docker_daemon.PENDING_MARKER not in conn.files  # Docker runs what is on disk again
    assert any(call.startswith("systemctl daemon-reload; systemctl reset-failed docker") for call in conn.calls)


def test_daemon_rollback_restores_the_previous_file() -> None:
    old = WANT_DROPIN.replace("eth0", "eth1")
    f = facts("lab2", files={DROPIN: old}, **RUNNING_OK)
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f))
    # the restart "works" but Docker never reports the store: after the bounded wait it is rolled back
    conn = daemon_conn(0, ["failed\n"], files={DROPIN: old.encode()})
    with pytest.raises(TaskError, match=r"docker.service is failed[\s\S]*did NOT come back"):
        apply_change(ctx_for(conn, f), c)
    assert conn.files[DROPIN].decode() == old
    assert docker_daemon.PENDING_MARKER in conn.files  # Docker is down: the next run must restart it
