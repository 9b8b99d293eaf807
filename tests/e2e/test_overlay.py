"""The overlay job end to end on a 3-host bullseye lab (lab1: kv, lab2/lab3: docker), through the real CLI.

The scenarios share one lab and run in order: from scratch, in sync, hand-edited drop-in, a missing
advertise interface (refused at preflight), a drop-in dockerd rejects (rollback), verify alone, verify
with the store stopped. Every apply that should converge is run twice; the second must change nothing.
Wall times of the first and second apply are printed (run with -s to see them) and kept in ``TIMES``.

Environment: PROVISIONER_E2E_LAB_DIR (default /var/lib/provisioner/lab-e2e-overlay) and
PROVISIONER_E2E_LAB_SUBNET (default 198.18.4.0/24) keep this lab apart from others on the machine.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.labkit import cli, fresh_lab, lab_sh, run_json

pytestmark = pytest.mark.e2e

STATE = Path(os.environ.get("PROVISIONER_E2E_LAB_DIR", "/var/lib/provisioner/lab-e2e-overlay"))
SUBNET = os.environ.get("PROVISIONER_E2E_LAB_SUBNET", "198.18.4.0/24")
DROPIN = "/etc/systemd/system/docker.service.d/10-machine.conf"
TIMES: dict[str, float] = {}


def http_body(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def sh(host: str, cmd: str) -> str:
    return lab_sh(STATE, host, cmd)


def docker_started(host: str) -> str:
    return sh(host, "systemctl show docker -p ActiveEnterTimestampMonotonic --value")


def tasks(report: dict[str, Any], host: str) -> list[dict[str, Any]]:
    return list(report["hosts"][host]["tasks"])


def matrix_ok(report: dict[str, Any]) -> str:
    (msg,) = [t["message"] for t in tasks(report, "lab2") if t["module"] == "overlay_verify"]
    return str(msg)


@pytest.fixture(scope="module")
def inventory() -> Iterator[Path]:
    try:
        with fresh_lab(STATE, SUBNET) as info:
            yield info.inventory_path
    finally:
        for name, secs in TIMES.items():
            print(f"overlay e2e: {name}: {secs:.1f}s")


def test_apply_from_scratch_then_in_sync(inventory: Path) -> None:
    t0 = time.monotonic()
    rc, report, err = run_json("apply", inventory)
    TIMES["first apply"] = time.monotonic() - t0
    for host, h in report["hosts"].items():
        for t in h["tasks"]:
            TIMES[f"  first apply, {host} {t['task']}"] = float(t["duration"])
    assert rc == 0, json.dumps(report, indent=1)[-4000:] + err[-2000:]
    assert report["ok"] and report["changed"] >= 5
    msg = matrix_ok(report)
    assert "all 2 hosts reach each other over ov_net1" in msg
    assert "FAIL" not in msg and msg.count("ok") >= 2
    for host in ("lab2", "lab3"):
        assert "--cluster-store=consul://" in sh(host, f"cat {DROPIN}")
        info = sh(host, "docker info --format '{{.ClusterStore}} {{.ClusterAdvertise}}'")
        assert info.startswith("consul://") and info.endswith(":2376")
    assert sh("lab1", "docker inspect -f '{{.State.Running}}' consul") == "true"

    started = {h: docker_started(h) for h in ("lab2", "lab3")}
    t0 = time.monotonic()
    rc, report, err = run_json("apply", inventory)
    TIMES["second apply"] = time.monotonic() - t0
    assert rc == 0, err[-2000:]
    assert report["changed"] == 0, json.dumps(report, indent=1)[-4000:]
    assert {h: docker_started(h) for h in ("lab2", "lab3")} == started  # nothing restarted
    assert all(c["connects"] == 1 for c in report["connections"].values())


def test_hand_edited_dropin_is_planned_and_restored_on_that_host_only(inventory: Path) -> None:
    sh("lab2", f"sed -i 's/--cluster-advertise=eth0:2376/--cluster-advertise=eth0:2377/' {DROPIN}")
    started = {h: docker_started(h) for h in ("lab2", "lab3")}
    rc, report, _ = run_json("plan", inventory)
    assert rc == 3
    assert report["hosts"]["lab2"]["changed"] == 1 and report["hosts"]["lab3"]["changed"] == 0
    (change,) = [c for t in tasks(report, "lab2") for c in t["changes"]]
    assert "-ExecStart=/usr/sbin/dockerd" in change["diff"] and "--cluster-advertise=eth0:2377" in change["diff"]
    assert "+ExecStart=/usr/sbin/dockerd" in change["diff"] and "--cluster-advertise=eth0:2376" in change["diff"]
    assert any("restarts Docker: stops" in n for n in change["notes"])

    for attempt in (1, 2):
        rc, report, err = run_json("apply", inventory)
        assert rc == 0, err[-2000:]
        assert report["changed"] == (1 if attempt == 1 else 0)
    assert "eth0:2376" in sh("lab2", f"cat {DROPIN}")
    assert docker_started("lab2") != started["lab2"]
    assert docker_started("lab3") == started["lab3"]


def test_missing_advertise_interface_is_refused_at_preflight(inventory: Path, tmp_path: Path) -> None:
    broken = tmp_path / "inventory.yml"
    # only lab3 gets the missing interface: lab2 keeps the inventory's eth0
    text = inventory.read_text()
    lab3_line = next(line for line in text.splitlines() if line.strip().startswith("lab3:"))
    broken.write_text(text.replace(lab3_line, lab3_line.replace("groups: [docker]}", "groups: [docker], "
                                                                "advertise_interface: eth9}")))  # fmt: skip
    before = sh("lab3", f"cat {DROPIN}")
    started = {h: docker_started(h) for h in ("lab2", "lab3")}
    rc, report, _ = run_json("apply", broken)
    assert rc == 1 and report["changed"] == 0
    assert "lab3: advertise interface eth9 does not exist" in report["error"]
    assert sh("lab3", f"cat {DROPIN}") == before
    assert {h: docker_started(h) for h in ("lab2", "lab3")} == started


def test_drop_in_dockerd_rejects_rolls_back(inventory: Path, tmp_path: Path) -> None:
    # dockerd 20.10 refuses a registry mirror with a path at start-up ("invalid mirror"): nothing before
    # the restart can tell, so the restart fails and the previous drop-in must come back
    broken = tmp_path / "inventory.yml"
    mirror = "  registry_mirrors: ['https://mirror.invalid/path']"
    broken.write_text(inventory.read_text().replace("  advertise_port: 2376", f"  advertise_port: 2376\n{mirror}"))
    before = sh("lab2", f"cat {DROPIN}")
    started3 = docker_started("lab3")
    for _ in (1, 2):
        rc, report, _ = run_json("apply", broken)
        assert rc == 1
        (failed,) = [t for t in tasks(report, "lab2") if t["status"] == "failed"]
        assert "previous configuration was restored and Docker is running again" in failed["message"]
        assert "invalid mirror" in failed["message"]
        assert sh("lab2", "systemctl is-active docker") == "active"
        assert sh("lab2", f"cat {DROPIN}") == before
        # rolling restart: lab3 is not touched after lab2 failed
        (skipped,) = [t for t in tasks(report, "lab3") if t["status"] == "failed"]
        assert "lab2 failed first" in skipped["message"]
    assert docker_started("lab3") == started3
    rc, report, _ = run_json("apply", inventory)
    assert rc == 0 and report["changed"] == 0


def test_verify_alone_and_with_the_store_stopped(inventory: Path) -> None:
    res = cli("verify", "-i", str(inventory))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all 2 hosts reach each other over ov_net1" in res.stdout
    res = cli("verify", "-i", str(inventory), "--network", "ov_net1", "--output", "json")
    assert res.returncode == 0 and json.loads(res.stdout)["changed"] == 0

    sh("lab1", "docker stop consul")
    try:
        res = cli("verify", "-i", str(inventory))
        assert res.returncode == 1
        out = " ".join((res.stdout + res.stderr).split())
        assert "consul store (consul://" in out and "is not healthy" in out
        assert "docker start consul" in out
        assert "prov-probe" not in sh("lab2", "docker ps -a --format '{{.Names}}'")
    finally:
        sh("lab1", "docker start consul")
    address = next(line.split("address: ")[1].split(",")[0] for line in inventory.read_text().splitlines()
                   if line.strip().startswith("lab1:"))  # fmt: skip
    deadline = time.monotonic() + 60
    while http_body(f"http://{address}:8500/v1/status/leader") in (None, '""'):
        assert time.monotonic() < deadline, "consul did not elect a leader again within 60s"
        time.sleep(1)
    # the store is back: the run brings nothing new, and the overlay works again
    rc, report, err = run_json("apply", inventory)
    assert rc == 0, json.dumps(report, indent=1)[-3000:] + err[-1000:]
    assert report["changed"] == 0
