"""Executor behaviour with scripted fake connections: parallelism, serial batches, handlers,
failures, unreachable hosts, check mode and idempotence."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioner.connection.base import RunResult, ShellConnection
from provisioner.connection.fake import FakeConnection, serve_facts
from provisioner.engine import Executor, RunReport
from provisioner.errors import ConnectError, TaskError
from provisioner.inventory import Inventory, load_inventory
from provisioner.playbook import load_playbook

HOSTS = ["h1", "h2", "h3", "h4"]


@pytest.fixture()
def inventory(tmp_path: Path) -> Inventory:
    key = tmp_path / "key"
    key.write_text("dummy\n")
    hosts = "\n".join(f"  {h}: {{address: 198.18.0.{10 + i}, groups: [web]}}" for i, h in enumerate(HOSTS))
    inv = tmp_path / "inventory.yml"
    inv.write_text(
        f"connection:\n  private_key: {key}\n  known_hosts: {tmp_path / 'kh'}\n  host_key_policy: accept-new\n"
        f"hosts:\n{hosts}\nkv_store:\n  hosts: [h1]\n"
    )
    return load_inventory(inv)


class Cluster:
    """One fake connection per host, created on first connect, like the real connector."""

    def __init__(self, setup: Callable[[FakeConnection], None] | None = None, down: set[str] | None = None):
        self.conns: dict[str, FakeConnection] = {}
        self.connects: dict[str, int] = {}
        self.setup = setup
        self.down = down or set()
        self.files: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> ShellConnection:
        with self._lock:
            self.connects[host] = self.connects.get(host, 0) + 1
        if host in self.down:
            raise ConnectError(host, "connection refused", fix="start sshd")
        conn = FakeConnection(host, files=self.files.setdefault(host, {}))
        conn.files = self.files[host]  # persist across runs, like a real disk
        serve_facts(conn)
        if self.setup:
            self.setup(conn)
        self.conns[host] = conn
        return conn


def run(
    inventory: Inventory, tmp_path: Path, playbook: str, cluster: Cluster, *, check: bool = False, **kw: object
) -> RunReport:
    pb = tmp_path / "play.yml"
    pb.write_text(playbook)
    ex = Executor(inventory, cluster, check=check, **kw)  # type: ignore[arg-type]
    return ex.run(load_playbook(pb, inventory))


FILE_PLAY = """
- name: motd
  hosts: web
  tasks:
    - name: write motd
      file: {path: /etc/motd, content: "hello\\n", mode: "0644"}
"""


def test_apply_then_noop_one_connection_per_host(inventory: Inventory, tmp_path: Path) -> None:
    cluster = Cluster()
    first = run(inventory, tmp_path, FILE_PLAY, cluster)
    assert first.ok and first.changed == 4
    assert all(cluster.files[h]["/etc/motd"] == b"hello\n" for h in HOSTS)
    assert cluster.connects == dict.fromkeys(HOSTS, 1)
    second = run(inventory, tmp_path, FILE_PLAY, cluster)
    assert second.ok and second.changed == 0
    # a no-op run costs one connection and one round trip (the facts) per host
    assert all(c == {"connects": 1, "round_trips": 1} for c in second.connections.values())


def test_check_mode_changes_nothing_and_reports_the_diff(inventory: Inventory, tmp_path: Path) -> None:
    cluster = Cluster()
    report = run(inventory, tmp_path, FILE_PLAY, cluster, check=True)
    assert report.changed == 4 and report.ok
    assert all("/etc/motd" not in cluster.files[h] for h in HOSTS)
    task = report.to_json()["hosts"]["h1"]["tasks"][0]
    assert "+hello" in task["changes"][0]["diff"]
    assert not any(c.startswith("put") for conn in cluster.conns.values() for c in conn.calls)


def test_hosts_run_in_parallel(inventory: Inventory, tmp_path: Path) -> None:
    def slow(conn: FakeConnection) -> None:
        def respond(_c: str, _i: bytes | None) -> RunResult:
            time.sleep(0.3)
            return RunResult(0, "", "")

        conn.on(r"^sleepy$", respond=respond)

    play = "- name: p\n  hosts: all\n  tasks:\n    - command: {cmd: sleepy}\n"
    t0 = time.monotonic()
    report = run(inventory, tmp_path, play, Cluster(slow), forks=10)
    assert report.ok and report.changed == 4
    assert time.monotonic() - t0 < 1.0  # 4 x 0.3 s sequentially would be 1.2 s
    t0 = time.monotonic()
    run(inventory, tmp_path, play, Cluster(slow), forks=1)
    assert time.monotonic() - t0 >= 1.2


def test_serial_batches_finish_before_the_next_starts(inventory: Inventory, tmp_path: Path) -> None:
    order: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(conn: FakeConnection) -> None:
        def respond(cmd: str, _i: bytes | None) -> RunResult:
            with lock:
                order.append((conn.host, cmd))
            return RunResult(0, "", "")

        conn.on(r"^step", respond=respond)

    play = "- name: p\n  hosts: web\n  serial: 2\n  tasks:\n    - command: {cmd: step1}\n    - command: {cmd: step2}\n"
    assert run(inventory, tmp_path, play, Cluster(record)).ok
    first_batch = {h for h, _ in order[:4]}
    assert first_batch == {"h1", "h2"} and {h for h, _ in order[4:]} == {"h3", "h4"}
    # within a batch every host finishes step1 before any starts step2
    assert [c for _, c in order[:4]] == ["step1", "step1", "step2", "step2"]


def test_handlers_run_once_at_the_end_only_where_something_changed(inventory: Inventory, tmp_path: Path) -> None:
    cluster = Cluster(lambda c: c.on(r"^reload$").on(r"^later$"))
    cluster.files["h2"] = {"/etc/motd": b"hello\n"}  # already right on h2
    play = """
- name: p
  hosts: [h1, h2]
  tasks:
    - name: motd
      file: {path: /etc/motd, content: "hello\\n"}
      notify: reload it
    - name: again
      file: {path: /etc/issue, content: "x"}
      notify: [reload it]
    - command: {cmd: later}
  handlers:
    - name: reload it
      command: {cmd: reload}
"""
    report = run(inventory, tmp_path, play, cluster)
    assert report.ok
    h1 = [c for c in cluster.conns["h1"].calls if c in ("reload", "later")]
    assert h1 == ["later", "reload"]  # once, after the last task
    h2 = [c for c in cluster.conns["h2"].calls if c == "reload"]
    assert h2 == ["reload"]  # /etc/issue changed there


def test_handler_not_run_without_change(inventory: Inventory, tmp_path: Path) -> None:
    cluster = Cluster(lambda c: c.on(r"^reload$"))
    for h in ("h1",):
        cluster.files[h] = {"/etc/motd": b"hello\n"}
    play = """
- name: p
  hosts: h1
  tasks:
    - file: {path: /etc/motd, content: "hello\\n"}
      notify: r
  handlers:
    - name: r
      command: {cmd: reload}
"""
    assert run(inventory, tmp_path, play, cluster).changed == 0
    assert "reload" not in cluster.conns["h1"].calls


def test_one_host_failing_does_not_stop_the_others(inventory: Inventory, tmp_path: Path) -> None:
    def setup(conn: FakeConnection) -> None:
        conn.on(r"^first$", rc=1 if conn.host == "h2" else 0, stderr="boom")
        conn.on(r"^second$")

    play = "- name: p\n  hosts: web\n  tasks:\n    - command: {cmd: first}\n    - command: {cmd: second}\n"
    report = run(inventory, tmp_path, play, Cluster(setup))
    assert not report.ok and report.failed == 1
    assert "boom" in report.hosts["h2"].results[0].message
    for h in ("h1", "h3", "h4"):
        assert [r.status for r in report.hosts[h].results] == ["changed", "changed"]
    assert [r.status for r in report.hosts["h2"].results] == ["failed"]


def test_any_errors_fatal_stops_the_play(inventory: Inventory, tmp_path: Path) -> None:
    def setup(conn: FakeConnection) -> None:
        conn.on(r"^first$", rc=1 if conn.host == "h2" else 0).on(r"^second$")

    play = (
        "- name: p\n  hosts: web\n  any_errors_fatal: true\n"
        "  tasks:\n    - command: {cmd: first}\n    - command: {cmd: second}\n"
    )
    report = run(inventory, tmp_path, play, Cluster(setup))
    assert "any_errors_fatal" in report.error
    assert all(len(report.hosts[h].results) == 1 for h in HOSTS)


def test_max_fail_percentage(inventory: Inventory, tmp_path: Path) -> None:
    def setup(conn: FakeConnection) -> None:
        conn.on(r"^first$", rc=1 if conn.host == "h2" else 0).on(r"^second$")

    body = "  tasks:\n    - command: {cmd: first}\n    - command: {cmd: second}\n"
    ok = run(inventory, tmp_path, "- name: p\n  hosts: web\n  max_fail_percentage: 30\n" + body, Cluster(setup))
    assert not ok.error and ok.hosts["h1"].changed == 2
    stop = run(inventory, tmp_path, "- name: p\n  hosts: web\n  max_fail_percentage: 20\n" + body, Cluster(setup))
    assert "max_fail_percentage" in stop.error and stop.hosts["h1"].changed == 1


def test_unreachable_host_is_reported_and_others_finish(inventory: Inventory, tmp_path: Path) -> None:
    report = run(inventory, tmp_path, FILE_PLAY, Cluster(down={"h3"}))
    assert report.unreachable == 1 and report.hosts["h3"].unreachable
    assert "connection refused" in report.hosts["h3"].unreachable_reason
    assert report.changed == 3 and not report.ok
    assert report.to_json()["hosts"]["h3"]["unreachable"] is True


def test_run_once_and_when(inventory: Inventory, tmp_path: Path) -> None:
    cluster = Cluster(lambda c: c.on(r"^once$").on(r"^debian$").on(r"^never$"))
    play = """
- name: p
  hosts: web
  tasks:
    - command: {cmd: once}
      run_once: true
    - command: {cmd: debian}
      when: os.id == "debian"
    - command: {cmd: never}
      when: os.id == "alpine"
"""
    report = run(inventory, tmp_path, play, cluster)
    assert report.ok
    assert sum("once" in c.calls for c in cluster.conns.values()) == 1
    assert all("debian" in c.calls and "never" not in c.calls for c in cluster.conns.values())
    assert report.hosts["h1"].count("skipped") == 1


def test_limit(inventory: Inventory, tmp_path: Path) -> None:
    cluster = Cluster()
    report = run(inventory, tmp_path, FILE_PLAY, cluster, limit=["h2"])
    assert report.changed == 1 and set(cluster.conns) == {"h2"}


def test_exclusive_changes_roll_one_host_at_a_time_and_stop_at_first_failure(
    inventory: Inventory, tmp_path: Path
) -> None:
    from provisioner.modules.base import Change, Module, ModuleArgs, PlanContext, register

    active: list[str] = []
    seen: list[str] = []

    class RollArgs(ModuleArgs):
        pass

    from provisioner.steps import Call

    class Roll(Module[RollArgs]):
        name = "test_roll"
        Args = RollArgs

        def plan(self, ctx: PlanContext, args: RollArgs) -> list[Change]:
            def apply(actx: object, _state: object) -> None:
                active.append(ctx.host)
                assert len(active) == 1, "two hosts restarted at once"
                time.sleep(0.05)
                seen.append(ctx.host)
                active.remove(ctx.host)
                if ctx.host == "h3":
                    raise TaskError("docker did not come back")

            return [Change("restart", steps=[Call("restart", apply)], exclusive="restart")]

    register(Roll)
    report = run(inventory, tmp_path, "- name: p\n  hosts: web\n  tasks:\n    - test_roll: {}\n", Cluster())
    assert seen == ["h1", "h2", "h3"]  # inventory order, h4 never touched
    assert report.hosts["h4"].results[0].status == "failed"
    assert "h3 failed first" in report.hosts["h4"].results[0].message


def test_preflight_refusal_stops_the_run_before_any_change(inventory: Inventory, tmp_path: Path) -> None:
    from provisioner.modules.base import Module, ModuleArgs, NoOp, PlanContext, register

    class PickyArgs(ModuleArgs):
        pass

    class Picky(Module[PickyArgs]):
        name = "test_picky"
        Args = PickyArgs

        def preflight(self, ctx: PlanContext, args: PickyArgs) -> list[str]:
            return ["engine too new; use swarm mode"] if ctx.host == "h4" else []

        def plan(self, ctx: PlanContext, args: PickyArgs) -> NoOp:
            return NoOp("fine")

    register(Picky)
    cluster = Cluster()
    play = FILE_PLAY + "- name: later\n  hosts: web\n  tasks:\n    - test_picky: {}\n"
    report = run(inventory, tmp_path, play, cluster)
    assert not report.ok and "h4: engine too new; use swarm mode" in report.error
    # the file task of the first play did not run anywhere: preflight covers the whole playbook
    assert all("/etc/motd" not in cluster.files[h] for h in HOSTS)
    assert report.hosts["h4"].results[0].module == "preflight"
