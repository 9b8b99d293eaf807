"""Faults on the fake connection: lost connections (what is retried and what never is) and the restart a
killed run owes (the pending-restart marker of docker_daemon)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioner.connection.base import RunResult, ShellConnection
from provisioner.connection.fake import FakeConnection, serve_facts
from provisioner.engine import Executor, RunReport
from provisioner.engine.executor import apply_change
from provisioner.errors import ConnectError
from provisioner.facts import FileFact
from provisioner.inventory import Inventory, load_inventory
from provisioner.modules import docker_daemon
from provisioner.playbook import load_playbook
from tests.builders import DROPIN, STORE, changes, ctx_for, facts, inventory, plan
from tests.unit.test_docker_daemon import RUNNING_OK, WANT_DROPIN, daemon_conn

HOSTS = ["h1", "h2"]
MARKER = docker_daemon.PENDING_MARKER
ADV = RUNNING_OK["cluster_advertise"]


def lost(host: str) -> ConnectError:
    return ConnectError(host, "SSH connection to 198.18.0.10:22 lost while running a command", "check the host")


class Dropping(FakeConnection):
    """A fake whose writes drop the connection while ``drop_puts`` > 0 (shared by the host's connections)."""

    drop_puts: dict[str, int]

    def put(self, data: bytes, path: str, *, mode: int = 0o644, owner: str | None = None) -> None:
        if self.drop_puts.get(self.host, 0) > 0:
            self.drop_puts[self.host] -= 1
            raise lost(self.host)
        super().put(data, path, mode=mode, owner=owner)


class Cluster:
    """Hands out a new fake connection per connect; disks and the count of runs of `step` persist."""

    def __init__(self, *, drop_facts: int = 0, drop_step: int = 0, drop_puts: int = 0) -> None:
        self.files: dict[str, dict[str, bytes]] = {h: {} for h in HOSTS}
        self.connects = dict.fromkeys(HOSTS, 0)
        self.steps = dict.fromkeys(HOSTS, 0)
        self.drop_facts = dict.fromkeys(HOSTS, drop_facts)
        self.drop_step = {"h1": drop_step, "h2": 0}  # only h1's command step loses its connection
        self.drop_puts = {"h1": drop_puts, "h2": 0}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> ShellConnection:
        with self._lock:
            self.connects[host] += 1
        conn = Dropping(host, files=self.files[host])
        conn.files = self.files[host]
        conn.drop_puts = self.drop_puts

        def facts_or_drop(cmd: str, stdin: bytes | None) -> RunResult:
            raise lost(host)

        def step(cmd: str, _stdin: bytes | None) -> RunResult:
            with self._lock:
                self.steps[host] += 1  # the command ran on the host ...
            if self.drop_step[host] > 0:
                self.drop_step[host] -= 1
                raise lost(host)  # ... but its answer never came back
            return RunResult(0, "", "")

        if self.drop_facts[host] > 0:
            self.drop_facts[host] -= 1
            conn.on(r"^sh -s$", respond=facts_or_drop, times=1)
        serve_facts(conn)
        conn.on(r"^step", respond=step)
        return conn


@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    key = tmp_path / "key"
    key.write_text("dummy\n")
    path = tmp_path / "inventory.yml"
    path.write_text(
        f"connection:\n  private_key: {key}\n  known_hosts: {tmp_path / 'kh'}\n  host_key_policy: accept-new\n"
        "hosts:\n  h1: {address: 198.18.0.10, groups: [web]}\n  h2: {address: 198.18.0.11, groups: [web]}\n"
        "kv_store:\n  hosts: [h1]\n"
    )
    return load_inventory(path)


def run(inv: Inventory, tmp_path: Path, play: str, cluster: Callable[[str], ShellConnection]) -> RunReport:
    pb = tmp_path / "play.yml"
    pb.write_text(play)
    return Executor(inv, cluster, check=False).run(load_playbook(pb, inv))


FILE_PLAY = '- name: p\n  hosts: web\n  tasks:\n    - file: {path: /etc/motd, content: "hi\\n"}\n'
STEP_PLAY = "- name: p\n  hosts: web\n  tasks:\n    - command: {cmd: step}\n"


def test_facts_are_gathered_again_on_a_new_connection_after_a_drop(inv: Inventory, tmp_path: Path) -> None:
    # each host's first facts round trip is lost; facts are a read: reconnect and gather once more
    cluster = Cluster(drop_facts=1)
    report = run(inv, tmp_path, FILE_PLAY, cluster)
    assert report.ok, report.to_json()
    assert report.changed == 2
    assert cluster.connects == {"h1": 2, "h2": 2}
    assert report.connections["h1"]["connects"] == 2


def test_an_idempotent_write_is_retried_once_on_a_new_connection(inv: Inventory, tmp_path: Path) -> None:
    cluster = Cluster(drop_puts=1)
    report = run(inv, tmp_path, FILE_PLAY, cluster)
    assert report.ok and report.changed == 2
    assert cluster.files["h1"]["/etc/motd"] == b"hi\n"
    assert cluster.connects["h1"] == 2 and cluster.connects["h2"] == 1


def test_a_write_lost_twice_marks_the_host_unreachable(inv: Inventory, tmp_path: Path) -> None:
    cluster = Cluster(drop_puts=2)  # one retry, not a loop
    report = run(inv, tmp_path, FILE_PLAY, cluster)
    assert not report.ok
    assert report.hosts["h1"].unreachable and "lost" in report.hosts["h1"].unreachable_reason
    assert report.hosts["h2"].changed == 1  # the other host finished
    assert cluster.connects["h1"] == 2


def test_a_command_is_never_run_twice_after_a_drop(inv: Inventory, tmp_path: Path) -> None:
    cluster = Cluster(drop_step=1)
    report = run(inv, tmp_path, STEP_PLAY, cluster)
    assert cluster.steps == {"h1": 1, "h2": 1}  # h1's command ran once; not repeated blindly
    assert cluster.connects["h1"] == 1  # no reconnect for a step that is not retry-safe
    doc = report.to_json()
    assert doc["unreachable"] == 1 and doc["hosts"]["h1"]["unreachable"]
    assert "lost while running a command" in doc["hosts"]["h1"]["unreachable_reason"]
    assert doc["hosts"]["h2"]["changed"] == 1 and doc["hosts"]["h2"]["ok"]


def test_retry_policy_defaults() -> None:
    from provisioner.modules.base import Change, Check

    assert Change("run something").retry_safe is False  # unknown side effects: never repeated
    assert Check("read", run=lambda _ctx: "").retry_safe is True


# ---- the restart a killed run owes ------------------------------------------------------------------


def test_marker_is_written_before_the_config_and_kept_when_the_run_dies_in_the_restart() -> None:
    f = facts("lab2")
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f))

    def killed(_cmd: str, _stdin: bytes | None) -> RunResult:
        raise lost("lab2")

    conn = FakeConnection("lab2").on("^mkdir -p ").on("systemctl restart docker", respond=killed)
    conn.on(r"curl -fsS -m 5 http://198\.18\.0\.11:8500/v1/status/leader", stdout='"198.18.0.11:8300"')
    with pytest.raises(ConnectError):
        apply_change(ctx_for(conn, f), c)
    assert conn.calls.index(f"put {MARKER}") < conn.calls.index(f"put {DROPIN}")
    assert conn.files[DROPIN].decode() == WANT_DROPIN
    assert conn.files[MARKER].decode().strip() == docker_daemon.config_hash(
        [docker_daemon.FileOp(DROPIN, None, WANT_DROPIN)],
        docker_daemon.desired(inventory(), "lab2", f),
    )


def test_a_present_marker_forces_the_restart_even_when_nothing_differs() -> None:
    marker = FileFact(exists=True, content="0123456789abcdef\n")
    in_sync = facts("lab2", files={DROPIN: WANT_DROPIN}, cluster_store=STORE, cluster_advertise=ADV)
    assert not isinstance(plan(docker_daemon.DockerDaemonModule(), in_sync), list)  # in sync: no-op
    in_sync.files[MARKER] = marker
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), in_sync))
    assert c.path is None and c.description.startswith("restart Docker:")
    assert "did not finish restarting Docker" in c.description and "0123456789ab" in c.description
    conn = daemon_conn(0, [f"active\n{STORE}|198.18.0.12:2376\n"], files={MARKER: b"0123456789abcdef\n"})
    apply_change(ctx_for(conn, in_sync), c)
    assert MARKER not in conn.files  # verified: the debt is paid
    assert any(call.startswith("systemctl daemon-reload && systemctl restart docker") for call in conn.calls)


def test_mirrors_change_that_docker_info_does_not_show_is_not_lost() -> None:
    # run 1 wrote the drop-in with a registry mirror and died before restarting; the running daemon still
    # reports the right store/advertise, so without the marker the next run would see nothing to do
    inv = inventory(docker={"registry_mirrors": ["http://198.18.0.1:5000"]})
    f = facts("lab2", cluster_store=STORE, cluster_advertise=ADV)
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f, inv))
    assert c.after is not None and "--registry-mirror=http://198.18.0.1:5000" in c.after
    after = facts("lab2", files={DROPIN: c.after}, cluster_store=STORE, cluster_advertise=ADV)
    assert not isinstance(plan(docker_daemon.DockerDaemonModule(), after, inv), list)
    after.files[MARKER] = FileFact(exists=True, content="x\n")
    assert changes(plan(docker_daemon.DockerDaemonModule(), after, inv))


def test_docker_daemon_watches_its_marker() -> None:
    mod = docker_daemon.DockerDaemonModule()
    assert MARKER in mod.watch(mod.Args(), inventory())


def test_a_changed_host_key_anywhere_stops_the_run_before_any_host_changes(inv: Inventory, tmp_path: Path) -> None:
    from provisioner.errors import HostKeyError

    cluster = Cluster()

    def connect(host: str) -> ShellConnection:
        if host == "h2":
            raise HostKeyError(host, "host key for 198.18.0.11 CHANGED (a man-in-the-middle attack?)", "check it")
        return cluster(host)

    report = run(inv, tmp_path, FILE_PLAY, connect)
    assert not report.ok and report.changed == 0
    assert "/etc/motd" not in cluster.files["h1"]  # h1 passed the check, and still nothing was written
    assert "does not match known_hosts; nothing was changed on any host" in report.error
    assert report.hosts["h2"].unreachable and "man-in-the-middle" in report.hosts["h2"].unreachable_reason
