"""Local-scope networks end to end on a 3-host lab (bullseye; PROVISIONER_E2E_LOCAL_SUITE), through the real CLI.

lab2 and lab3 are the docker group (lab1 is spare until it joins the macvlan). The scenarios share the
lab and run in order: a bridge with every key and a macvlan with a shim, converged twice; two containers
per host on the macvlan, all addresses distinct, every pair reaching, each host reaching its own
containers through its shim; the shim back after a host restart without an apply, and a shim deleted by
hand is drift that apply restores; a third host joining the macvlan moves no other host's slice, network
or container address; an ipvlan network refused at preflight (this kernel has none) with nothing created.
Every apply is run twice; the second must change nothing.

The lab host's eth0 sits on the lab bridge, so a macvlan on parent eth0 spans the lab hosts; its subnet
is not routed on this machine, so nothing leaves the lab segment.

Environment: PROVISIONER_E2E_LOCAL_DIR (default /var/lib/provisioner/h14f-e2e) and
PROVISIONER_E2E_LOCAL_SUBNET (default 198.18.88.0/24; the macvlan takes 198.18.89.0/24, the bridge
198.18.87.0/24 inside the hosts, the refused ipvlan names 198.18.86.0/24).
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from provisioner.lab import LabInfo, lab_up
from tests.e2e.labkit import fresh_lab, lab_sh, run_json

pytestmark = pytest.mark.e2e

STATE = Path(os.environ.get("PROVISIONER_E2E_LOCAL_DIR", "/var/lib/provisioner/h14f-e2e"))
SUBNET = os.environ.get("PROVISIONER_E2E_LOCAL_SUBNET", "198.18.88.0/24")
SUITE = os.environ.get("PROVISIONER_E2E_LOCAL_SUITE", "bullseye")  # e.g. bookworm: the shim unit there too
MACVLAN_SUBNET = "198.18.89.0/24"
BRIDGE_SUBNET = "198.18.87.0/24"
IPVLAN_SUBNET = "198.18.86.0/24"  # never created: preflight refuses it
PLAYBOOK = """\
- name: local networks
  hosts: all
  tasks:
    - name: probe image
      docker_image: {from_inventory: verify}
    - name: networks
      docker_network: {}
"""
TIMES: dict[str, float] = {}


def sh(host: str, cmd: str) -> str:
    return lab_sh(STATE, host, cmd)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    with fresh_lab(STATE, SUBNET, suite=SUITE, hosts=3) as info:
        yield info


@pytest.fixture(scope="module", autouse=True)
def _print_times() -> Iterator[None]:
    yield
    print("\nlocal networks, wall times: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMES.items()))


@pytest.fixture(scope="module")
def playbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("local") / "networks.yml"
    p.write_text(PLAYBOOK)
    return p


def write_inventory(lab: LabInfo, path: Path, macvlan_hosts: list[str], extra: dict[str, Any] | None = None) -> Path:
    """The lab's inventory without the store; lab1 out of the docker group; the local networks."""
    yaml = YAML()
    doc = yaml.load(lab.inventory_path.read_text())
    doc["hosts"]["lab1"]["groups"] = ["spare"]
    del doc["kv_store"]
    doc["networks"] = {
        "net1": {"driver": "bridge", "subnet": BRIDGE_SUBNET, "gateway": "198.18.87.254",
                 "ip_range": "198.18.87.128/25", "internal": True,
                 "options": {"com.docker.network.driver.mtu": "1400"}},
        "macnet": {"driver": "macvlan", "subnet": MACVLAN_SUBNET, "parent": "eth0", "mode": "bridge",
                   "shim": True, "hosts": macvlan_hosts},
        **(extra or {}),
    }  # fmt: skip
    with path.open("w") as f:
        yaml.dump(doc, f)
    return path


def apply_twice(inv: Path, playbook: Path, label: str) -> dict[str, Any]:
    """Apply, then apply again: the second run changes nothing; plan then finds nothing (exit 0)."""
    t0 = time.monotonic()
    rc, first, err = run_json("apply", inv, playbook=playbook)
    TIMES[f"{label} first"] = time.monotonic() - t0
    assert rc == 0 and first["ok"], (first.get("error"), err[-2000:])
    t0 = time.monotonic()
    rc, second, err = run_json("apply", inv, playbook=playbook)
    TIMES[f"{label} second"] = time.monotonic() - t0
    assert rc == 0 and second["changed"] == 0, (second, err[-2000:])
    rc, planned, _ = run_json("plan", inv, playbook=playbook)
    assert rc == 0 and planned["changed"] == 0, planned
    return first


def changed_lines(report: dict[str, Any], host: str) -> list[str]:
    """What docker_network changed (or would change) on a host."""
    tasks = [t for t in report["hosts"][host]["tasks"] if t["module"] == "docker_network"]
    return [c["description"] for t in tasks for c in t.get("changes", [])]


def network(host: str, name: str) -> dict[str, str]:
    out = sh(host, f"docker network inspect -f '{{{{.Id}}}} {{{{.Internal}}}} {{{{range .IPAM.Config}}}}"
                   f"{{{{.IPRange}}}}{{{{end}}}}' {name}")  # fmt: skip
    nid, internal, rng = [*out.split(), "", "", ""][:3]
    return {"id": nid, "internal": internal, "ip_range": rng}


def run_containers(host: str, names: list[str]) -> dict[str, str]:
    """Start containers on macnet (as the test's own, restarted with the host); name -> address."""
    out: dict[str, str] = {}
    for n in names:
        sh(host, f"docker rm -f {n} >/dev/null 2>&1; docker run -d --name {n} --restart unless-stopped "
                 f"--network macnet provisioner-lab/probe:latest sleep 1000000 >/dev/null")  # fmt: skip
        out[n] = sh(host, f"docker inspect -f '{{{{.NetworkSettings.Networks.macnet.IPAddress}}}}' {n}")
    return out


def addresses(host: str, names: list[str]) -> dict[str, str]:
    return {n: sh(host, f"docker inspect -f '{{{{.NetworkSettings.Networks.macnet.IPAddress}}}}' {n}") for n in names}


def reaches(host: str, cmd_prefix: str, address: str) -> bool:
    out = lab_sh(STATE, host, f"{cmd_prefix}ping -c1 -W2 {address} >/dev/null 2>&1 && echo yes || echo no")
    return out == "yes"


def restart_lab_host(lab: LabInfo, host: str) -> None:
    """Restart a lab host's container (its network namespace, /run and every interface made at run time go,
    as in a reboot), then wait until its sshd and docker are back."""
    from provisioner.lab import engine, paths, state

    st = state.load(STATE, paths.lab_id(STATE))
    rec = next(h for h in st.hosts if h.name == host)
    client = engine.connect(st.engine_url)
    try:
        client.containers.get(rec.container).restart(timeout=30)
    finally:
        client.close()
    lab_up(hosts=len(lab.hosts), suite=lab.suite, subnet=lab.subnet, state_dir=STATE)


CONTAINERS = {"lab2": ["m2a", "m2b"], "lab3": ["m3a", "m3b"]}


def test_bridge_and_macvlan_with_shims_converge(lab: LabInfo, playbook: Path, tmp_path: Path) -> None:
    inv = write_inventory(lab, tmp_path / "inv.yml", ["lab2", "lab3"])
    first = apply_twice(inv, playbook, "two hosts")
    slices = {"lab2": "198.18.89.32/27", "lab3": "198.18.89.64/27"}
    for host, shim in (("lab2", "198.18.89.31"), ("lab3", "198.18.89.30")):
        lines = changed_lines(first, host)
        assert f"create network macnet (macvlan, {MACVLAN_SUBNET}, slice {slices[host]} (computed))" in lines
        assert any(
            line.startswith(f"shim shim-macnet for macnet: {shim} on eth0, route {slices[host]}") for line in lines
        )
        assert network(host, "net1")["internal"] == "true"
        assert network(host, "net1")["ip_range"] == "198.18.87.128/25"
        assert network(host, "macnet")["ip_range"] == slices[host]
        assert sh(host, "systemctl is-enabled provisioner-shim-macnet.service") == "enabled"
    assert changed_lines(first, "lab1") == []  # not in the docker group, not in macnet's hosts


def test_macvlan_containers_on_two_hosts_all_distinct_all_reach(lab: LabInfo) -> None:
    addr = {h: run_containers(h, names) for h, names in CONTAINERS.items()}
    every = {n: a for per in addr.values() for n, a in per.items()}
    assert len(set(every.values())) == len(every), every
    for host, per in addr.items():
        rng = ipaddress.ip_network(network(host, "macnet")["ip_range"])
        assert all(ipaddress.ip_address(a) in rng for a in per.values()), (host, per, rng)
    failed = [
        (src, dst)
        for per in CONTAINERS.values()
        for src in per
        for dst, a in every.items()
        if dst != src and not reaches(_host_of(src), f"docker exec {src} ", a)
    ]
    assert failed == [], f"pairs that do not reach: {failed}"
    # each host reaches its own containers through its shim (without one the kernel passes nothing)
    for host, per in addr.items():
        assert all(reaches(host, "", a) for a in per.values()), (host, per)


def _host_of(container: str) -> str:
    return next(h for h, names in CONTAINERS.items() if container in names)


def test_a_shim_survives_a_host_restart_and_a_missing_one_is_drift(
    lab: LabInfo, playbook: Path, tmp_path: Path
) -> None:
    inv = write_inventory(lab, tmp_path / "inv.yml", ["lab2", "lab3"])
    pid1 = "cut -d' ' -f22 /proc/1/stat"  # when the host's init started (clock ticks since the kernel booted)
    before = sh("lab3", pid1)
    t0 = time.monotonic()
    restart_lab_host(lab, "lab3")
    TIMES["lab3 restart until ready"] = time.monotonic() - t0
    assert sh("lab3", pid1) != before, "lab3 was not restarted"
    # a new network namespace: the shim is there again because its unit made it at boot
    assert sh("lab3", "systemctl is-active provisioner-shim-macnet.service") == "active"
    assert "198.18.89.30/32" in sh("lab3", "ip -br addr show shim-macnet")
    own = addresses("lab3", CONTAINERS["lab3"])
    deadline = time.monotonic() + 20
    while not all(reaches("lab3", "", a) for a in own.values()) and time.monotonic() < deadline:
        time.sleep(1)
    assert all(reaches("lab3", "", a) for a in own.values()), f"lab3 no longer reaches {own} after its restart"
    rc, planned, _ = run_json("plan", inv, playbook=playbook)
    assert rc == 0 and planned["changed"] == 0, "the restart left drift"
    # a shim deleted by hand: plan says so (exit 3), apply puts it back, the second apply changes nothing
    sh("lab2", "ip link del shim-macnet")
    assert not reaches("lab2", "", run_containers_addresses("lab2")[0])
    rc, planned, _ = run_json("plan", inv, playbook=playbook)
    assert rc == 3, planned
    assert any("no interface shim-macnet" in line for line in changed_lines(planned, "lab2"))
    apply_twice(inv, playbook, "shim restored")
    assert all(reaches("lab2", "", a) for a in run_containers_addresses("lab2"))


def run_containers_addresses(host: str) -> list[str]:
    return list(addresses(host, CONTAINERS[host]).values())


def test_a_third_host_moves_no_slice_network_or_address(lab: LabInfo, playbook: Path, tmp_path: Path) -> None:
    before = {h: (network(h, "macnet"), addresses(h, names)) for h, names in CONTAINERS.items()}
    # lab1 comes first in the inventory: its computed slice is lab2's, so it takes the first free one
    inv = write_inventory(lab, tmp_path / "inv.yml", ["lab2", "lab3", "lab1"])
    first = apply_twice(inv, playbook, "third host")
    assert changed_lines(first, "lab2") == [] and changed_lines(first, "lab3") == []
    assert {h: (network(h, "macnet"), addresses(h, names)) for h, names in CONTAINERS.items()} == before
    lab1 = network("lab1", "macnet")
    assert lab1["ip_range"] == "198.18.89.96/27", lab1
    assert any(
        "slice 198.18.89.96/27 (first free: 198.18.89.32/27 is taken)" in x for x in changed_lines(first, "lab1")
    )
    new = run_containers("lab1", ["m1a", "m1b"])
    every = [*new.values(), *(a for _, per in before.values() for a in per.values())]
    assert len(set(every)) == len(every), every
    assert all(reaches("lab1", "docker exec m1a ", a) for a in every if a != new["m1a"])
    assert all(reaches("lab1", "", a) for a in new.values())  # lab1's own shim


def test_a_host_removed_from_the_middle_moves_no_other(lab: LabInfo, playbook: Path, tmp_path: Path) -> None:
    hosts = {"lab1": ["m1a", "m1b"], "lab3": CONTAINERS["lab3"]}
    before = {h: (network(h, "macnet"), addresses(h, names)) for h, names in hosts.items()}
    # lab2 leaves macnet's hosts (its network stays: the tool removes none, and its slice stays taken)
    inv = write_inventory(lab, tmp_path / "inv.yml", ["lab3", "lab1"])
    first = apply_twice(inv, playbook, "middle host removed")
    assert all(changed_lines(first, h) == [] for h in ("lab1", "lab2", "lab3")), first
    assert {h: (network(h, "macnet"), addresses(h, names)) for h, names in hosts.items()} == before


def test_ipvlan_is_refused_at_preflight_and_nothing_is_created(lab: LabInfo, playbook: Path, tmp_path: Path) -> None:
    # on a VLAN sub-interface of eth0 (eth0 itself carries macnet); Docker would create eth0.50 itself
    ipnet = {"ipnet": {"driver": "ipvlan", "subnet": IPVLAN_SUBNET, "parent": "eth0.50", "mode": "l2",
                       "hosts": ["lab2", "lab3"]}}  # fmt: skip
    inv = write_inventory(lab, tmp_path / "inv.yml", ["lab2", "lab3", "lab1"], ipnet)
    nets = {h: sh(h, "docker network ls --format '{{.Name}}' | sort; ip -o link show | wc -l") for h in lab.host_suites}
    for _ in range(2):
        rc, report, _ = run_json("apply", inv, playbook=playbook)
        assert rc == 1 and report["changed"] == 0, report
        error = report["error"]
        assert error.startswith("preflight refused the run; nothing was changed on any host")
        for host in ("lab2", "lab3"):
            assert f"{host}: network ipnet (ipvlan): the kernel of {host}" in error
            assert "has no ipvlan (`ip link add ... type ipvlan` says: Error: Unknown device type.)" in error
        # no network, no VLAN sub-interface, nothing else changed on any host (not even the drifted bridge)
        assert {h: sh(h, "docker network ls --format '{{.Name}}' | sort; ip -o link show | wc -l")
                for h in lab.host_suites} == nets  # fmt: skip
