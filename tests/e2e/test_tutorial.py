"""The tutorial as one inventory, from scratch on a fresh lab (issue 14, deliverable 5).

`inventories/tutorial.yml` is written for the default lab (/var/lib/provisioner/lab, 198.18.0.0/24); this
test runs the very same file on a lab of its own (its own state dir and subnet, so it never touches a lab
someone is using): only the lab's state dir and the lab hosts' addresses are rewritten.

Steps, as the README walks through them: apply (timed), apply again (changes nothing, timed), verify
(every reachability and isolation the tutorial describes); then the tutorial's "connect box to docker0"
step, `inventories/tutorial-connected.yml`: apply connects the running box (same container id), a second
apply changes nothing, and verify now expects and sees box reach httpd.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.lab import LabInfo
from tests.e2e.labkit import ROOT, cli, fresh_lab, lab_sh, run_json

pytestmark = pytest.mark.e2e

STATE_DIR = Path("/var/lib/provisioner/h14t-tutorial")
SUBNET = "198.18.96.0/24"
PLAYBOOK = ROOT / "playbooks" / "overlay.yml"
VERIFY_BUDGET = 15.0  # seconds (issue 14: verify of the tutorial inventory on the lab)
FAILED = ("no reply", "isolation broken", "not run")


def for_this_lab(name: str, dest: Path) -> Path:
    """inventories/NAME with the default lab's state dir and host addresses replaced by this lab's."""
    text = (ROOT / "inventories" / name).read_text()
    text = text.replace("/var/lib/provisioner/lab/", f"{STATE_DIR}/")
    text = re.sub(r"\b198\.18\.0\.(1[1-3])\b", r"198.18.96.\1", text)
    out = dest / name
    out.write_text(text)
    return out


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    with fresh_lab(STATE_DIR, SUBNET, hosts=3) as info:
        yield info


def apply_twice(inventory: Path) -> tuple[float, float, dict[str, Any]]:
    """Apply, then apply again: the second must change nothing. Returns both wall times, the first report."""
    t0 = time.monotonic()
    rc, first, err = run_json("apply", inventory, playbook=PLAYBOOK)
    t1 = time.monotonic()
    assert rc == 0 and first["ok"], f"first apply exit {rc}: {first.get('error')}\n{err[-3000:]}"
    rc, second, err = run_json("apply", inventory, playbook=PLAYBOOK)
    t2 = time.monotonic()
    assert rc == 0 and second["ok"], f"second apply exit {rc}: {second.get('error')}\n{err[-3000:]}"
    changed = {h: [t["task"] for t in r["tasks"] if t["changed"]] for h, r in second["hosts"].items() if r["changed"]}
    assert second["changed"] == 0, f"the second apply changed something: {changed}"
    return t1 - t0, t2 - t1, first


def verify(inventory: Path) -> tuple[list[dict[str, Any]], float, str]:
    """`provisioner verify` (exit 0 expected): every pair of its JSON report, its duration, its matrices."""
    res = cli("verify", "-i", str(inventory), "--output", "json")
    report = json.loads(res.stdout)
    took = float(report["duration"])  # the run itself, as the budget means it (no interpreter start-up)
    pairs = [p for h in report["hosts"].values() for t in h["tasks"] for p in (t.get("verify") or {}).get("pairs", [])]
    bad = [p for p in pairs if p["verdict"] in FAILED]
    assert res.returncode == 0 and report["ok"] and not bad, f"verify exit {res.returncode}: {bad}\n{res.stderr}"
    return pairs, took, res.stderr


def one(pairs: list[dict[str, Any]], kind: str, source: str, destination: str) -> dict[str, Any]:
    found = [p for p in pairs if (p["kind"], p["source"], p["destination"]) == (kind, source, destination)]
    assert found, f"no {kind} check from {source} to {destination}; checks: " + ", ".join(
        sorted({f"{p['kind']} {p['source']}->{p['destination']}" for p in pairs})
    )
    return found[0]


def seen(pairs: list[dict[str, Any]], kind: str, source: str, destination: str) -> tuple[str, str]:
    p = one(pairs, kind, source, destination)
    return p["expected"], p["observed"]


REACHED, ISOLATED = ("reach", "reached"), ("isolated", "no reply")


def test_the_tutorial_from_scratch_then_box_connected_to_the_default_bridge(lab: LabInfo, tmp_path: Path) -> None:
    tutorial = for_this_lab("tutorial.yml", tmp_path)
    connected = for_this_lab("tutorial-connected.yml", tmp_path)
    lab1 = lab.hosts[0][0]

    first, second, report = apply_twice(tutorial)
    created = [c["description"] for h in report["hosts"].values() for t in h["tasks"] for c in t["changes"]]
    made = sorted(d.split()[2] for d in created if d.startswith("create container "))
    assert made == sorted(["nonebox", "hostbox", "httpd", "box", "box1", "box2", "mbox1", "mbox2", "db1", "db2"])
    pairs, took, matrices = verify(tutorial)
    print(f"\ntutorial.yml: first apply {first:.1f}s, second apply {second:.1f}s (0 changed), verify {took:.1f}s")
    print(matrices)
    # the tutorial's isolation: box (net1) and httpd (docker0) on one host do not reach each other
    assert seen(pairs, "cping", "box", "httpd") == ISOLATED
    assert seen(pairs, "cping", "httpd", "box") == ISOLATED
    # the overlay across hosts: box2 pings box1 at 198.19.1.2 (the tutorial's 10.0.0.2), and back
    assert seen(pairs, "cping", "box2", "box1") == REACHED
    assert one(pairs, "cping", "box2", "box1")["address"] == "198.19.1.2"
    assert seen(pairs, "cping", "box1", "box2") == REACHED
    # macvlan across two hosts, and the internal network between its two containers
    assert seen(pairs, "cping", "mbox1", "mbox2") == REACHED and seen(pairs, "cping", "mbox2", "mbox1") == REACHED
    assert seen(pairs, "cping", "db1", "db2") == REACHED
    # the published port 32773 exchanges bytes with a client on the other docker host
    ports = [p for p in pairs if p["kind"] == "cbytes" and p["destination"] == "httpd"]
    assert any(p["port"] == "32773/tcp" and (p["expected"], p["observed"]) == REACHED for p in ports), ports
    # NAT out to lab1 (the tutorial's www.bing.com) for every container with a way out, arriving there
    # from its docker host's address (the listener on lab1 sees the source); not from the internal network
    for name in ("httpd", "box", "box1", "box2"):
        assert any(
            (p["expected"], p["observed"]) == REACHED
            for p in pairs
            if p["kind"] == "cnat" and p["source"] == name and p["destination"] == lab1
        ), f"{name}: no NAT-out check to {lab1} that saw the docker host's address"
    for name in ("db1", "db2"):
        outs = [p for p in pairs if p["kind"] in ("cnat", "cout") and p["source"] == name]
        assert outs and all((p["expected"], p["observed"]) == ISOLATED for p in outs), outs
    # none: only lo; host: the host's interfaces
    for name in ("nonebox", "hostbox"):
        checks = [p for p in pairs if p["kind"] == "cnetns" and p["source"] == name]
        assert checks and all(p["verdict"] == "ok" for p in checks), checks
    took_first = took

    # the tutorial's next step: docker network connect bridge box (the same container, now on both)
    box_id = lab_sh(STATE_DIR, "lab2", "docker inspect -f '{{.Id}}' box")
    first, second, report = apply_twice(connected)
    steps = [s for h in report["hosts"].values() for t in h["tasks"] for c in t["changes"] for s in c["steps"]]
    assert any("docker network connect" in s and "box" in s for s in steps), steps
    assert lab_sh(STATE_DIR, "lab2", "docker inspect -f '{{.Id}}' box") == box_id, "box was recreated"
    pairs, took, matrices = verify(connected)
    print(f"tutorial-connected.yml: apply {first:.1f}s, second apply {second:.1f}s (0 changed), verify {took:.1f}s")
    print(matrices)
    assert seen(pairs, "cping", "box", "httpd") == REACHED
    assert seen(pairs, "cping", "httpd", "box") == REACHED
    slowest = max(took_first, took)
    assert slowest <= VERIFY_BUDGET, f"verify took {slowest:.1f}s, the budget is {VERIFY_BUDGET:.0f}s"
