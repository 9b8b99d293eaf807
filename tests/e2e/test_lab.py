"""The local lab on this machine: real systemd hosts with sshd and dockerd, reached over real SSH."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.connect import ssh_connector
from provisioner.errors import LabError
from provisioner.inventory import load_inventory
from provisioner.lab import LabInfo, lab_down, lab_exec, lab_status, lab_up
from provisioner.lab import engine as lab_engine
from provisioner.lab import hosts as lab_hosts
from provisioner.lab import paths as lab_paths

pytestmark = pytest.mark.e2e

# Machine-wide (like the default lab) so a later run recognises leftovers of a killed one; its own
# subnet so it never meets a lab other tests bring up on the default one.
STATE_DIR = Path("/var/lib/provisioner/lab-e2e-lab")
SUBNET = "198.18.2.0/24"


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    started = time.monotonic()
    info = lab_up(hosts=3, subnet=SUBNET, state_dir=STATE_DIR)
    print(f"\nlab up (3 bullseye hosts): {time.monotonic() - started:.1f}s")
    yield info
    lab_down(state_dir=STATE_DIR)


def ssh(info: LabInfo, address: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh", "-i", str(info.key_path),
            "-o", f"UserKnownHostsFile={info.known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "GlobalKnownHostsFile=/dev/null",
            f"root@{address}", command,
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_ssh_to_every_host_with_lab_key_and_strict_known_hosts(lab: LabInfo) -> None:
    assert [name for name, _ in lab.hosts] == ["lab1", "lab2", "lab3"]
    for name, address in lab.hosts:
        done = ssh(lab, address, "hostname; id -u")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [name, "0"]


def test_known_hosts_holds_the_real_keys(lab: LabInfo, tmp_path: Path) -> None:
    _name, address = lab.hosts[1]
    # a wrong key for the host must make strict checking refuse: proves the file is what is checked
    other = lab.known_hosts_path.read_text().splitlines()[0].split()[1:]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{address} {' '.join(other)}\n")
    bad = LabInfo(lab.state_dir, lab.inventory_path, lab.key_path, wrong, lab.hosts, lab.engine, lab.archives)
    done = ssh(bad, address, "true")
    assert done.returncode == 255 and "host key" in done.stderr.lower()


def test_inventory_validates_and_docker_works_over_its_connections(lab: LabInfo) -> None:
    inv = load_inventory(lab.inventory_path)
    assert inv.groups()["kv"] == ["lab1"] and inv.groups()["docker"] == ["lab2", "lab3"]
    assert inv.kv_store.image_archive == lab.archives["consul"]
    connect = ssh_connector(inv)
    for name, _ in lab.hosts:
        conn = connect(name)
        try:
            out = conn.check("docker info --format '{{json .}}'").stdout
        finally:
            conn.close()
        facts = json.loads(out)
        assert facts["ServerVersion"].startswith("20.10.5"), facts["ServerVersion"]
        assert facts["Name"] == name


def test_archives_are_docker_save_tars_of_the_named_images(lab: LabInfo) -> None:
    for key in ("consul", "probe"):
        assert lab.archives[key].is_file()
    _name, address = lab.hosts[1]
    with lab.archives["probe"].open("rb") as fh:
        done = subprocess.run(
            ["ssh", "-i", str(lab.key_path), "-o", f"UserKnownHostsFile={lab.known_hosts_path}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{address}",
             "docker load && docker run --rm provisioner-lab/probe:latest ping -c 1 -W 2 " + lab.hosts[2][1]],
            stdin=fh, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 packets received" in done.stdout


def test_status_and_exec(lab: LabInfo) -> None:
    st = lab_status(STATE_DIR)
    assert st.up and st.engine_running and [h.state for h in st.hosts] == ["ready"] * 3
    rc, out = lab_exec("lab3", "systemctl is-active docker; exit 3", state_dir=STATE_DIR)
    assert (rc, out.strip()) == (3, "active")
    with pytest.raises(LabError, match="no lab host 'lab9'"):
        lab_exec("lab9", "true", state_dir=STATE_DIR)


def test_memory_per_host_is_modest(lab: LabInfo) -> None:
    client = lab_engine.connect(lab.engine)
    try:
        lid = lab_paths.lab_id(STATE_DIR)
        for name, _ in lab.hosts:
            mem = lab_hosts.memory_usage(client, lab_paths.container_name(lid, name))
            print(f"{name}: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in mem.items()))
            assert mem, "no memory figures from the host's cgroup"
            assert mem["working_set"] < 400 * 2**20
    finally:
        client.close()


def test_second_up_is_idempotent_and_fast(lab: LabInfo) -> None:
    before = lab.known_hosts_path.read_text()
    started = time.monotonic()
    again = lab_up(hosts=3, subnet=SUBNET, state_dir=STATE_DIR)
    took = time.monotonic() - started
    print(f"warm up (lab already up): {took:.1f}s")
    assert again.hosts == lab.hosts and lab.known_hosts_path.read_text() == before
    assert took < 30


def test_up_on_a_subnet_in_use_is_refused(tmp_path: Path) -> None:
    bridge, cidr = "plabtest9", "198.18.3.1/24"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", cidr, "dev", bridge], check=True)
        with pytest.raises(LabError) as err:
            lab_up(hosts=1, subnet="198.18.3.0/24", state_dir=tmp_path / "lab")
    finally:
        subprocess.run(["ip", "link", "delete", bridge], check=False)
    text = str(err.value)
    assert "198.18.3.0/24 is already in use" in text
    assert f"interface {bridge} (bridge) has {cidr}" in text and f"ip link delete {bridge}" in text
    assert not (tmp_path / "lab" / "docker.sock").exists()  # refused before any engine was started


def _kill_lab_processes(state_dir: Path) -> int:
    """SIGKILL, by pid, every process of this lab's engine (as when a session is stopped): container
    inits first, then the shims, containerd and dockerd. Returns how many were killed."""
    mine: list[int] = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"{state_dir}/" in argv:
                mine.append(int(proc.name))
    inits = []
    for pid in mine:
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            inits += [int(c) for c in children.read_text().split()]
    for group in (inits, mine):
        for pid in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(1)
    return len(inits) + len(mine)


def test_up_recovers_from_a_killed_engine(lab: LabInfo) -> None:
    state = json.loads((STATE_DIR / "state.json").read_text())
    assert _kill_lab_processes(STATE_DIR) >= 5  # 3 host inits, 3 shims, containerd, dockerd
    assert not lab_engine.pid_is_our_dockerd(state["dockerd_pid"], state["data_root"])
    # what a killed engine leaves in the kernel: its bridge (with the subnet's route) and mounts
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout)
    assert state["bridge"] in {link["ifname"] for link in links}
    again = lab_up(hosts=3, subnet=SUBNET, state_dir=STATE_DIR)
    assert again.hosts == lab.hosts
    for name, address in again.hosts:
        done = ssh(again, address, "hostname && systemctl is-active -q docker")
        assert done.returncode == 0 and done.stdout.strip() == name, done.stderr


def test_down_leaves_nothing_behind(lab: LabInfo) -> None:
    state = json.loads((STATE_DIR / "state.json").read_text())
    bridge, pid, data_root = state["bridge"], state["dockerd_pid"], state["data_root"]
    assert bridge and pid and data_root
    lab_down(state_dir=STATE_DIR)
    assert not lab_engine.pid_is_our_dockerd(pid, data_root)
    assert not Path(data_root).exists()  # containers and volumes lived there
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout)
    assert bridge not in {link["ifname"] for link in links}
    routes = json.loads(subprocess.run(["ip", "-j", "route"], capture_output=True, text=True, check=True).stdout)
    net = ipaddress.ip_network(SUBNET)
    assert not [r for r in routes if r["dst"] != "default" and ipaddress.ip_network(r["dst"]).overlaps(net)]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert bridge not in rules and "198.18.2." not in rules
    assert str(STATE_DIR) not in Path("/proc/self/mountinfo").read_text()
    assert not lab.inventory_path.exists()
    assert lab_status(STATE_DIR).up is False
