"""Faults injected into a real 3-host bullseye lab (lab1: kv, lab2/lab3: docker), through the real CLI.

Every scenario ends by checking what must hold afterwards (``assert_sound``): Docker runs on every
docker host, no half-written file or leftover temp file next to the drop-in, no run lock left behind;
and a re-run converges with the expected number of changes, then a further run changes nothing.

The scenarios switch the cluster between two configurations, ``base`` (the lab's inventory) and
``mirror`` (the same plus a registry mirror): each switch rewrites the drop-in and needs a rolling restart
on both docker hosts, which is the window the faults aim at. The mirror is never contacted (Docker only
uses it to pull).

Environment: PROVISIONER_E2E_FAULTS_DIR (default /var/lib/provisioner/lab-e2e-faults) and
PROVISIONER_E2E_FAULTS_SUBNET (default 198.18.12.0/24) keep this lab apart from others on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.lab import engine as lab_engine
from provisioner.lab import lab_down, lab_exec, lab_up
from provisioner.lab import paths as lab_paths
from provisioner.lab import state as lab_state
from tests.e2e.labkit import PLAYBOOK, ROOT, lab_sh, run_json

pytestmark = pytest.mark.e2e

STATE = Path(os.environ.get("PROVISIONER_E2E_FAULTS_DIR", "/var/lib/provisioner/lab-e2e-faults"))
SUBNET = os.environ.get("PROVISIONER_E2E_FAULTS_SUBNET", "198.18.12.0/24")
DROPIN_DIR = "/etc/systemd/system/docker.service.d"
DROPIN = f"{DROPIN_DIR}/10-machine.conf"
MARKER = "/var/lib/provisioner/pending-restart-docker"
LOCK = "/var/lib/provisioner/run.lock"
MIRROR = "http://198.18.12.250:5000"  # inside the lab subnet; never contacted
DOCKER_HOSTS = ("lab2", "lab3")


# ---- helpers --------------------------------------------------------------------------------------


def apply(inventory: Path, *extra: str, playbook: Path = PLAYBOOK) -> tuple[int, dict[str, Any], str]:
    return run_json("apply", inventory, *extra, playbook=playbook)


def converge(inventory: Path, first_changes: int | None = None) -> dict[str, Any]:
    """Apply until in sync: the first run may change things (``first_changes`` when given), the second none."""
    rc, report, err = apply(inventory)
    assert rc == 0, json.dumps(report, indent=1)[-4000:] + err[-2000:]
    if first_changes is not None:
        assert report["changed"] == first_changes, json.dumps(report, indent=1)[-4000:]
    rc, again, err = apply(inventory)
    assert rc == 0 and again["changed"] == 0, json.dumps(again, indent=1)[-4000:] + err[-2000:]
    return report


def sh(host: str, cmd: str) -> str:
    return lab_sh(STATE, host, cmd)


def docker_started(host: str) -> str:
    return sh(host, "systemctl show docker -p ActiveEnterTimestampMonotonic --value")


def wait_active(host: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while lab_exec(host, "systemctl is-active -q docker", state_dir=STATE)[0] != 0:
        assert time.monotonic() < deadline, f"Docker on {host} is not active after {timeout:.0f}s"
        time.sleep(1)


def assert_sound(dropins: dict[str, str] | None = None) -> None:
    """What must hold after any fault: Docker runs, files are whole, nothing left behind."""
    for host in DOCKER_HOSTS:
        wait_active(host)
        leftovers = sh(host, f"ls -A {DROPIN_DIR} /var/lib/provisioner 2>/dev/null | grep -c prov- || true")
        assert leftovers == "0", f"{host}: temp files left behind: {sh(host, f'ls -la {DROPIN_DIR}')}"
        text = sh(host, f"cat {DROPIN}")
        assert text.startswith("# Written by provisioner") and "--cluster-store=consul://" in text
        assert text.rstrip().endswith(":2376") or "--registry-mirror=" in text.splitlines()[-1]
        if dropins is not None:
            assert text == dropins[host].strip()


def lock_owner() -> dict[str, Any] | None:
    rc, out = lab_exec("lab1", f"cat {LOCK}/owner", state_dir=STATE)
    return json.loads(out) if rc == 0 else None


def container(host: str) -> Any:
    st = lab_state.load(STATE, lab_paths.lab_id(STATE))
    rec = next(h for h in st.hosts if h.name == host)
    return lab_engine.connect(st.engine_url).containers.get(rec.container)


class Background:
    """`provisioner apply` in a subprocess whose combined output is watched line by line."""

    def __init__(self, inventory: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "apply", "-i", str(inventory), str(PLAYBOOK), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "200"},
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        with self._seen:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._seen.wait(0.5)):
                    pytest.fail(f"never saw {text!r}; output:\n{self.output[-4000:]}")
                self._seen.wait(min(1.0, max(0.01, left)))

    def finish(self, timeout: float = 600) -> int:
        rc = self.proc.wait(timeout)
        time.sleep(0.2)  # let the reader drain the pipe
        return rc

    @property
    def output(self) -> str:
        return "".join(self.lines)


# ---- the lab --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    info = lab_up(hosts=3, suite="bullseye", subnet=SUBNET, state_dir=STATE)
    base = info.inventory_path
    mirror = tmp_path_factory.mktemp("faults") / "mirror.yml"
    mirror.write_text(base.read_text().replace("  advertise_port: 2376\n", f"  advertise_port: 2376\n"
                                               f"  registry_mirrors: [{MIRROR}]\n"))  # fmt: skip
    assert MIRROR in mirror.read_text()
    try:
        converge(base)
        yield {"base": base, "mirror": mirror}
    finally:
        lab_down(state_dir=STATE, keep_image=True)


def test_store_is_published_on_the_cluster_address_only(lab: dict[str, Path]) -> None:
    address = next(a for n, a in lab_up_hosts(lab["base"]) if n == "lab1")
    ports = sh("lab1", "docker port consul")
    assert ports == f"8500/tcp -> {address}:8500", ports
    assert "0.0.0.0" not in sh("lab1", "docker inspect -f '{{json .HostConfig.PortBindings}}' consul")


def lab_up_hosts(inventory: Path) -> list[tuple[str, str]]:
    out = []
    for line in inventory.read_text().splitlines():
        s = line.strip()
        if s.startswith("lab") and "address:" in s:
            out.append((s.split(":", 1)[0], s.split("address: ")[1].split(",")[0]))
    return out


def test_two_concurrent_applies_never_interleave(lab: dict[str, Path]) -> None:
    started = {h: docker_started(h) for h in DOCKER_HOSTS}
    first = Background(lab["mirror"])
    first.wait_for("TASK cluster store and advertise address")  # the lock is held from before facts
    owner = lock_owner()
    assert owner is not None and owner["pid"] == first.proc.pid

    # no waiting: fails at once, naming the holder; nothing of the first run is disturbed
    rc, report, _err = apply(lab["mirror"], "--lock-timeout", "0")
    assert rc == 1 and report["changed"] == 0
    assert f"(pid {first.proc.pid})" in report["error"] and "provisioner unlock" in report["error"]
    # waiting: starts only once the first run has finished, then finds nothing left to do
    second = Background(lab["mirror"], "--lock-timeout", "300", "--output", "json")
    assert first.finish() == 0, first.output[-4000:]
    assert second.finish() == 0, second.output[-4000:]
    second_report = json.loads(second.output[second.output.index("{\n") :])
    assert second_report["changed"] == 0
    restarted = {h: docker_started(h) for h in DOCKER_HOSTS}
    assert all(restarted[h] != started[h] for h in DOCKER_HOSTS)  # the first run restarted each once ...
    assert lock_owner() is None
    assert_sound()
    converge(lab["base"], first_changes=2)  # ... and back: one restart per docker host


def test_sigkill_during_rolling_restart_then_rerun(lab: dict[str, Path]) -> None:
    before = {h: sh(h, f"cat {DROPIN}") for h in DOCKER_HOSTS}
    run = Background(lab["mirror"])
    run.wait_for("lab2: restarting Docker")
    run.proc.send_signal(signal.SIGKILL)
    run.finish()
    wait_active("lab2")
    # lab2 has its new drop-in and the restart it owes recorded; lab3 was never touched
    assert MIRROR in sh("lab2", f"cat {DROPIN}")
    assert sh("lab2", f"cat {MARKER}")
    assert sh("lab3", f"cat {DROPIN}") == before["lab3"]
    assert lab_exec("lab3", f"test -e {MARKER}", state_dir=STATE)[0] != 0
    owner = lock_owner()  # the killed run could not release its lock ...
    assert owner is not None and owner["pid"] == run.proc.pid
    assert_sound()

    # ... the next run proves the holder dead, takes the lock over, restarts lab2 (marker) and lab3 (file)
    rc, report, err = apply(lab["mirror"])
    assert rc == 0, json.dumps(report, indent=1)[-4000:] + err[-2000:]
    assert "taking over a stale run lock" in err and f"(pid {run.proc.pid})" in err
    assert report["changed"] == 2
    (lab2_change,) = [c for t in report["hosts"]["lab2"]["tasks"] for c in t["changes"]]
    assert "did not finish restarting Docker" in lab2_change["description"]
    assert "--registry-mirror" in sh("lab2", "ps -o args= -C dockerd")
    for host in DOCKER_HOSTS:
        assert lab_exec(host, f"test -e {MARKER}", state_dir=STATE)[0] != 0
    rc, report, _ = apply(lab["mirror"])
    assert rc == 0 and report["changed"] == 0
    assert_sound()
    converge(lab["base"], first_changes=2)


def test_sigterm_mid_restart_finishes_that_host_releases_the_lock(lab: dict[str, Path]) -> None:
    run = Background(lab["mirror"])
    run.wait_for("lab2: restarting Docker")
    run.proc.send_signal(signal.SIGTERM)
    rc = run.finish()
    assert rc != 0
    # the in-flight restart was finished and verified (no marker); lab3 queued, so dropped
    assert lab_exec("lab2", f"test -e {MARKER}", state_dir=STATE)[0] != 0
    assert "--registry-mirror" in sh("lab2", "ps -o args= -C dockerd")
    assert MIRROR not in sh("lab3", f"cat {DROPIN}")
    assert lock_owner() is None
    assert_sound()
    rc, report, _ = apply(lab["mirror"])
    assert rc == 0 and report["changed"] == 1 and report["hosts"]["lab3"]["changed"] == 1
    converge(lab["base"], first_changes=2)


def test_docker_host_stopped_mid_run(lab: dict[str, Path]) -> None:
    run = Background(lab["mirror"], "--output", "json")
    run.wait_for("lab2: restarting Docker")
    lab3 = container("lab3")
    lab3.stop(timeout=5)
    try:
        rc = run.finish()
        out = run.output
        report = json.loads(out[out.index("{\n") :])
        assert rc == 1
        lab3_report = report["hosts"]["lab3"]
        assert lab3_report["unreachable"] or lab3_report["failed"], json.dumps(report, indent=1)[-3000:]
        why = lab3_report["unreachable_reason"] or json.dumps(lab3_report["tasks"])
        assert "lab3" in why and ("lost" in why or "198.18.12.13" in why)
        lab2_tasks = report["hosts"]["lab2"]["tasks"]
        assert any(t["module"] == "docker_daemon" and t["status"] == "changed" for t in lab2_tasks)
        # lab2 finished its own work; what fails there is only what needs lab3 (the cross-host checks)
        for t in lab2_tasks:
            assert t["status"] != "failed" or "lab3" in t["message"], json.dumps(t, indent=1)
        wait_active("lab2")
    finally:
        lab3.start()
    lab_up(hosts=3, suite="bullseye", subnet=SUBNET, state_dir=STATE)  # waits until lab3's sshd answers
    assert_sound()
    rc, report, err = apply(lab["mirror"])
    assert rc == 0, json.dumps(report, indent=1)[-4000:] + err[-2000:]
    assert report["hosts"]["lab3"]["changed"] == 1 and report["hosts"]["lab2"]["changed"] == 0
    rc, report, _ = apply(lab["mirror"])
    assert rc == 0 and report["changed"] == 0
    converge(lab["base"], first_changes=2)


def test_kv_container_killed_between_plays(lab: dict[str, Path], tmp_path: Path) -> None:
    playbook = tmp_path / "kill-store.yml"
    plays = PLAYBOOK.read_text().split("\n- name: docker daemons")
    playbook.write_text(
        plays[0].rstrip()
        + "\n\n- name: the store dies\n  hosts: kv_store\n  tasks:\n"
        + "    - command: {cmd: docker kill consul}\n"
        + "\n- name: docker daemons"
        + plays[1]
    )
    dropins = {h: sh(h, f"cat {DROPIN}") for h in DOCKER_HOSTS}
    started = {h: docker_started(h) for h in DOCKER_HOSTS}
    rc, report, _err = apply(lab["mirror"], playbook=playbook)
    assert rc == 1, json.dumps(report, indent=1)[-4000:]
    (failed,) = [t for t in report["hosts"]["lab2"]["tasks"] if t["status"] == "failed"]
    assert "not restarting Docker" in failed["message"] and "not healthy" in failed["message"]
    assert "docker start consul" in failed["message"]
    # nothing was restarted into a dead store; files untouched; lab3 never started its turn
    assert {h: docker_started(h) for h in DOCKER_HOSTS} == started
    assert_sound(dropins)
    for host in DOCKER_HOSTS:
        assert lab_exec(host, f"test -e {MARKER}", state_dir=STATE)[0] != 0
    # the normal playbook starts the store again, then restarts both daemons
    report = converge(lab["mirror"], first_changes=3)
    assert any("start consul" in c["description"] for t in report["hosts"]["lab1"]["tasks"] for c in t["changes"])
    converge(lab["base"], first_changes=2)


def test_changed_host_key_refuses_and_touches_nothing(lab: dict[str, Path]) -> None:
    sh("lab3", "rm -rf /root/keys && mkdir /root/keys && cp -a /etc/ssh/ssh_host_* /root/keys/")
    sh("lab3", "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && systemctl restart ssh")
    try:
        dropins = {h: sh(h, f"cat {DROPIN}") for h in DOCKER_HOSTS}
        started = {h: docker_started(h) for h in DOCKER_HOSTS}
        rc, report, _err = apply(lab["mirror"])  # lab2 would change, lab3's key is wrong
        assert rc == 1
        assert report["changed"] == 0 and report["hosts"]["lab3"]["unreachable"]
        reason = report["hosts"]["lab3"]["unreachable_reason"]
        assert "SSH HOST KEY CHANGED" in reason and "man-in-the-middle" in reason
        assert "nothing was changed on any host" in report["error"]
        assert {h: docker_started(h) for h in DOCKER_HOSTS} == started
        assert_sound(dropins)
        assert lock_owner() is None
    finally:
        sh("lab3", "cp -a /root/keys/. /etc/ssh/ && systemctl restart ssh")
    rc, report, _ = apply(lab["base"])
    assert rc == 0 and report["changed"] == 0


def test_full_disk_while_writing_the_dropin(lab: dict[str, Path]) -> None:
    old = sh("lab2", f"cat {DROPIN}")
    started = docker_started("lab2")
    sh("lab2", f"cp {DROPIN} /root/dropin && mount -t tmpfs -o size=16k prov-full {DROPIN_DIR} && "
               f"cp /root/dropin {DROPIN} && (dd if=/dev/zero of={DROPIN_DIR}/fill bs=1k 2>/dev/null || true) && "
               "systemctl daemon-reload")  # fmt: skip
    try:
        rc, report, _err = apply(lab["mirror"])
        assert rc == 1
        (failed,) = [t for t in report["hosts"]["lab2"]["tasks"] if t["status"] == "failed"]
        msg = failed["message"]
        assert f"could not write {DROPIN}" in msg and "No space left on device" in msg, msg
        assert "disk" in msg and DROPIN_DIR in msg
        assert sh("lab2", f"cat {DROPIN}") == old  # the old file is intact
        assert docker_started("lab2") == started  # and Docker was not restarted
        assert "prov-" not in sh("lab2", f"ls -A {DROPIN_DIR}")
        assert report["hosts"]["lab3"]["changed"] == 0  # rolling: stops at the first failure
    finally:
        sh("lab2", f"umount {DROPIN_DIR} && systemctl daemon-reload")
    assert_sound()
    converge(lab["mirror"], first_changes=2)
    converge(lab["base"], first_changes=2)
