"""container_verify end to end on a 3-host lab (bullseye by default; lab1: outside, lab2/lab3: docker),
through the real CLI.

The containers are started over the lab shell (``docker run`` on the host), the way a user's own
tooling would have left them; the inventory declares them, and ``provisioner verify`` checks them:

* on lab2, ``box`` and ``peer`` share the bridge ``back`` and reach each other; ``web`` on the bridge
  ``front`` is isolated from both (the tutorial's box-cannot-ping-httpd step);
* ``mid`` (lab2) and ``far`` (lab3) sit on same-named bridges ``shared`` of two hosts, which hand out the
  same addresses: each is keyed by its host, and no probe aims across;
* ``web`` publishes 32773 (busybox httpd behind it): lab3 exchanges bytes with it through lab2's address;
  its 32775 is bound to 127.0.0.1 and lab3 does not reach it;
* NAT out: every container reaches lab1 (``verify.outside``) and arrives there from its docker host's
  address; ``nothing`` (network_mode none) has only lo;
* then: a published port with nothing behind it fails verify, naming it; an ACCEPT in DOCKER-USER between
  ``back`` and ``shared`` on lab2 breaks isolation, and verify fails naming the pairs.

Environment: PROVISIONER_E2E_LAB_DIR (default /var/lib/provisioner/h14g-e2e),
PROVISIONER_E2E_LAB_SUBNET (default 198.18.91.0/24) and PROVISIONER_E2E_LAB_SUITE (default bullseye; a
comma-separated list such as bullseye,forky runs every scenario on each, one lab after the other, each
judged by its engine's rule set); the container networks use 198.18.92.0/24.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.e2e.labkit import cli, fresh_lab, lab_sh

pytestmark = pytest.mark.e2e

STATE = Path(os.environ.get("PROVISIONER_E2E_LAB_DIR", "/var/lib/provisioner/h14g-e2e"))
SUBNET = os.environ.get("PROVISIONER_E2E_LAB_SUBNET", "198.18.91.0/24")
# the engines the expectations are judged by: lab suites, comma separated, one lab after the other
# (bullseye: Docker 20.10.5, trixie: 26, forky: 28); a suite other than the first gets STATE-SUITE
SUITES = os.environ.get("PROVISIONER_E2E_LAB_SUITE", "bullseye").split(",")
ENGINES = {"bullseye": "20.10.5", "bookworm": "20.10.24", "trixie": "26.1.5", "forky": "28.5.2"}
NETS = {  # name -> (subnet, hosts)
    "front": ("198.18.92.0/26", ["lab2"]),
    "back": ("198.18.92.64/26", ["lab2"]),
    "shared": ("198.18.92.128/26", ["lab2", "lab3"]),
}
IMAGE = "provisioner-lab/probe:latest"
# name -> (host, networks, ports, command); the probe image is busybox: httpd answers HEAD with a 404
CONTAINERS: dict[str, tuple[str, list[str], list[str], list[str]]] = {
    "web": ("lab2", ["front"], ["32773:80", "127.0.0.1:32775:80"], ["httpd", "-f", "-p", "80", "-h", "/tmp"]),
    "box": ("lab2", ["back"], [], ["sleep", "3600"]),
    "peer": ("lab2", ["back"], [], ["sleep", "3600"]),
    "mid": ("lab2", ["shared"], [], ["sleep", "3600"]),
    "far": ("lab3", ["shared"], [], ["sleep", "3600"]),
    "nothing": ("lab3", [], [], ["sleep", "3600"]),
}
SETUP = """\
- name: images
  hosts: all
  tasks:
    - name: probe image
      docker_image: {from_inventory: verify}
"""
TIMES: dict[str, float] = {}


@dataclass(frozen=True)
class Lab:
    inventory: Path
    state: Path
    suite: str

    def sh(self, host: str, cmd: str) -> str:
        return lab_sh(self.state, host, cmd)


def run(lab: Lab, container: str, spec: tuple[str, list[str], list[str], list[str]]) -> None:
    host, nets, ports, command = spec
    net = f"--network {nets[0]}" if nets else "--network none"
    publish = " ".join(f"-p {p}" for p in ports)
    lab.sh(
        host,
        f"docker rm -f {container} >/dev/null 2>&1; docker run -d --name {container} {net} {publish} "
        f"{IMAGE} {' '.join(command)} >/dev/null",
    )


def write_inventory(lab_inventory: Path, dest: Path, extra: dict[str, Any] | None = None) -> Path:
    doc = YAML(typ="safe").load(lab_inventory.read_text())
    doc.pop("kv_store", None)  # no overlay here: no store, no probe matrix
    doc["networks"] = {n: {"driver": "bridge", "subnet": s, "hosts": h} for n, (s, h) in NETS.items()}
    containers = {**CONTAINERS, **(extra or {})}
    doc["containers"] = {
        name: {
            "host": host,
            "image": IMAGE,
            "command": command,
            **({"networks": nets} if nets else {"network_mode": "none"}),
            **({"ports": ports} if ports else {}),
        }
        for name, (host, nets, ports, command) in containers.items()
    }
    dest.write_text(json.dumps(doc, indent=1))  # JSON is YAML
    return dest


def verify(inventory: Path) -> tuple[int, dict[str, Any], str, float]:
    t0 = time.monotonic()
    res = cli("verify", "-i", str(inventory), "--output", "json", timeout=300)
    took = time.monotonic() - t0
    try:
        report = json.loads(res.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"verify: no JSON report (exit {res.returncode})\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.returncode, report, res.stderr, took


def check_result(report: dict[str, Any]) -> dict[str, Any]:
    (t,) = [t for h in report["hosts"].values() for t in h["tasks"] if t["module"] == "container_verify"]
    return dict(t)


def pairs(task: dict[str, Any]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(source, destination, network@host or port) -> (expected, verdict)."""
    out = {}
    for p in task["verify"]["pairs"]:
        via = p["port"] or (p["network"] + (f"@{p['network_host']}" if p["network_host"] else ""))
        out[(p["source"], p["destination"], via)] = (p["expected"], p["verdict"])
    return out


@pytest.fixture(scope="module", params=SUITES)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    suite = str(request.param)
    state = STATE if suite == SUITES[0] else STATE.with_name(f"{STATE.name}-{suite}")
    work = tmp_path_factory.mktemp(f"cv-{suite}")
    try:
        with fresh_lab(state, SUBNET, suite=suite) as info:
            lab = Lab(write_inventory(info.inventory_path, work / "inventory.yml"), state, suite)
            playbook = work / "setup.yml"
            playbook.write_text(SETUP)
            res = cli("apply", "-i", str(lab.inventory), str(playbook), timeout=600)
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
            for host in ("lab2", "lab3"):
                for name, (subnet, hosts) in NETS.items():
                    if host in hosts:
                        lab.sh(host, f"docker network create --subnet {subnet} {name} >/dev/null")
            for name, spec in CONTAINERS.items():
                run(lab, name, spec)
            yield lab
    finally:
        for name, secs in TIMES.items():
            print(f"container_verify e2e: {name}: {secs:.1f}s")


def test_verify_sees_reach_isolation_ports_nat_and_namespaces_within_budget(lab: Lab) -> None:
    rc, report, err, took = verify(lab.inventory)
    TIMES[f"verify on {lab.suite}"] = took
    task = check_result(report)
    print(task["message"])
    assert rc == 0, task["message"] + err[-2000:]
    got = pairs(task)
    assert got[("box", "peer", "back@lab2")] == got[("peer", "box", "back@lab2")] == ("reach", "ok")
    for src, dst, net in [
        ("box", "web", "front@lab2"),
        ("peer", "web", "front@lab2"),
        ("web", "box", "back@lab2"),
        ("mid", "web", "front@lab2"),
        ("web", "mid", "shared@lab2"),
    ]:
        assert got[(src, dst, net)] == ("isolated", "ok"), (src, dst, net)
    assert got[("lab3", "web", "32773/tcp")] == ("reach", "ok")
    assert got[("lab3", "web", "32775/tcp")] == ("isolated", "ok")  # bound to 127.0.0.1 on lab2
    for name, host in [("web", "lab2"), ("box", "lab2"), ("far", "lab3")]:
        assert got[(name, "lab1", f"verify.outside@{host}")] == ("reach", "ok")
    assert got[("nothing", "nothing", "none@lab3")] == ("reach", "ok")
    # same-named bridges of two hosts: never aimed across (mid and far may even have one address)
    assert not any({s, d} == {"mid", "far"} for s, d, _ in got)
    assert f"Docker {ENGINES[lab.suite]}" in task["verify"]["rule_sets"]["lab2"]
    msg = task["message"]
    assert "front@lab2: ping from (row) to (column)" in msg and "(NAT out as 198.18.91.12): ok" in msg
    assert max(len(line) for line in msg.splitlines()) <= 72  # the terminal indents it by 6
    assert took <= 15, f"verify took {took:.1f}s (budget 15 s)"


def test_a_published_port_with_nothing_behind_it_fails_verify(lab: Lab, tmp_path: Path) -> None:
    hollow = ("lab2", ["front"], ["32774:80"], ["sleep", "3600"])
    run(lab, "hollow", hollow)
    try:
        inv = write_inventory(lab.state / "inventory.yml", tmp_path / "hollow.yml", {"hollow": hollow})
        rc, report, _, _ = verify(inv)
        task = check_result(report)
        assert rc == 1, task["message"]
        got = pairs(task)
        assert got[("lab3", "hollow", "32774/tcp")] == ("reach", "no reply")
        assert got[("lab3", "web", "32773/tcp")] == ("reach", "ok")
        # from another host Docker 20.10 DNATs the port to the container, which refuses; docker-proxy (from the
        # host itself, or on other engines) accepts and closes without a byte: either way the check fails
        flat = " ".join(task["message"].split())
        assert "lab3 -> hollow (198.18.91.12:32774) over 32774/tcp: no reply" in flat
        (p,) = [p for p in task["verify"]["pairs"] if p["destination"] == "hollow" and p["port"]]
        assert p["likely_cause"].startswith("nothing listens behind 32774/tcp in hollow"), p
    finally:
        lab.sh("lab2", "docker rm -f hollow >/dev/null")


def test_an_accept_in_docker_user_breaks_isolation_and_verify_names_the_pairs(lab: Lab) -> None:
    bridge = {
        n: lab.sh("lab2", f"echo br-$(docker network inspect -f '{{{{slice .Id 0 12}}}}' {n})")
        for n in ("back", "shared")
    }
    rules = [
        f"-i {bridge['back']} -o {bridge['shared']} -j ACCEPT",
        f"-i {bridge['shared']} -o {bridge['back']} -j ACCEPT",
    ]
    # Docker 28 also drops a container's address in raw PREROUTING from any interface but its own bridge
    # (seen on forky: the DOCKER-USER ACCEPTs alone left box unable to reach mid): accept ahead of that too
    raw = [f"-i {b} -j ACCEPT" for b in bridge.values()] if int(ENGINES[lab.suite].split(".")[0]) >= 28 else []
    for r in rules:
        lab.sh("lab2", f"iptables -I DOCKER-USER {r}")
    for r in raw:
        lab.sh("lab2", f"iptables -t raw -I PREROUTING {r}")
    try:
        # the rules do break isolation (so what follows tests verify, not iptables)
        mid = lab.sh("lab2", "docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' mid")
        lab.sh("lab2", f"docker exec box ping -c 1 -W 2 {mid} >/dev/null")
        rc, report, _, _ = verify(lab.inventory)
        task = check_result(report)
        assert rc == 1, task["message"]
        got = pairs(task)
        broken = [
            ("box", "mid", "shared@lab2"),
            ("peer", "mid", "shared@lab2"),
            ("mid", "box", "back@lab2"),
            ("mid", "peer", "back@lab2"),
        ]
        for src, dst, net in broken:
            assert got[(src, dst, net)] == ("isolated", "isolation broken"), (src, dst, net)
        for src, dst, net in [("box", "web", "front@lab2"), ("web", "box", "back@lab2"), ("mid", "web", "front@lab2")]:
            assert got[(src, dst, net)] == ("isolated", "ok"), (src, dst, net)  # front is still kept apart
        flat = " ".join(task["message"].split())
        assert "box -> mid" in flat and "isolation broken: it reached, but must not" in flat
        assert "DOCKER-USER on lab2 accepts traffic before Docker's isolation: -A DOCKER-USER -i br-" in flat
    finally:
        for r in rules:
            lab.sh("lab2", f"iptables -D DOCKER-USER {r}")
        for r in raw:
            lab.sh("lab2", f"iptables -t raw -D PREROUTING {r}")
    rc, report, _, _ = verify(lab.inventory)
    assert rc == 0, check_result(report)["message"]
