"""Engines that cannot do the classic recipe, end to end on bookworm lab hosts through the real CLI.

Debian 12's docker.io (20.10.24+dfsg1) has no Consul backend. One lab (lab1: kv, lab2/lab3: docker)
serves the key-value scenarios, in order: the classic Consul inventory stops at preflight with nothing
touched; ZooKeeper is refused before anything is contacted; the way out (etcd) passes the whole job;
a restart while the store is down is refused instead of leaving a silently broken overlay; swarm mode
is refused on daemons that run with a cluster store. A second lab runs the job in swarm mode
(``overlay_mode: auto`` picks it on these engines), including a node that belongs to another swarm.
Every scenario is applied twice; the second run changes nothing.

Environment: PROVISIONER_E2E_ENGINES_DIR (default /var/lib/provisioner/lab-e2e-engines-kv, and the
same with -swarm) and subnets 198.18.6.0/24 and 198.18.7.0/24 keep these labs apart from others.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import labkit
from tests.e2e.labkit import PLAYBOOK, cli, fresh_lab, lab_sh

pytestmark = pytest.mark.e2e

BASE = os.environ.get("PROVISIONER_E2E_ENGINES_DIR", "/var/lib/provisioner/lab-e2e-engines-kv")
KV_STATE = Path(BASE)
SWARM_STATE = Path(BASE.removesuffix("-kv") + "-swarm")
KV_SUBNET, SWARM_SUBNET = "198.18.6.0/24", "198.18.7.0/24"
DROPIN = "/etc/systemd/system/docker.service.d/10-machine.conf"
DOCKER_HOSTS = ("lab2", "lab3")
TIMES: dict[str, float] = {}


def run_json(command: str, inventory: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    rc, report, _ = labkit.run_json(command, inventory, *extra)
    return rc, report


def sh(state: Path, host: str, cmd: str) -> str:
    return lab_sh(state, host, cmd)


def host_state(state: Path) -> dict[str, tuple[str, str]]:
    """docker host -> (when docker.service last became active, whether our drop-in exists)."""
    return {
        h: (
            sh(state, h, "systemctl show docker -p ActiveEnterTimestampMonotonic --value"),
            sh(state, h, f"test -e {DROPIN} && echo present || echo absent"),
        )
        for h in DOCKER_HOSTS
    }


def messages(report: dict[str, Any], module: str) -> dict[str, str]:
    return {h: t["message"] for h, r in report["hosts"].items() for t in r["tasks"] if t["module"] == module}


def variant(inventory: Path, tmp: Path, name: str, kv: dict[str, str] | None = None, docker: str = "") -> Path:
    """The lab inventory with kv_store keys replaced and lines added under docker:."""
    lines = []
    section = ""
    for line in inventory.read_text().splitlines():
        if line and not line.startswith(" "):
            section = line.rstrip(":")
        key = line.strip().split(":", 1)[0]
        if section == "kv_store" and kv and key in kv:
            line = f"  {key}: {kv[key]}"
        lines.append(line)
        if line == "docker:" and docker:
            lines.append(docker)
    out = tmp / f"{name}.yml"
    out.write_text("\n".join(lines) + "\n")
    return out


def timed(name: str, command: str, inventory: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    t0 = time.monotonic()
    out = run_json(command, inventory, *extra)
    TIMES[name] = time.monotonic() - t0
    return out


@pytest.fixture(scope="module", autouse=True)
def _print_times() -> Iterator[None]:
    yield
    for name, secs in TIMES.items():
        print(f"engines e2e: {name}: {secs:.1f}s")


@pytest.fixture(scope="module")
def kv_lab() -> Iterator[Path]:
    with fresh_lab(KV_STATE, KV_SUBNET, suite="bookworm") as info:
        yield info.inventory_path


@pytest.fixture(scope="module")
def etcd_inventory(kv_lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return variant(
        kv_lab,
        tmp_path_factory.mktemp("etcd"),
        "etcd",
        {"backend": "etcd", "image": "provisioner-lab/etcd:3.4", "image_archive": str(KV_STATE / "etcd.tar"),
         "port": "2379"},
    )  # fmt: skip


def test_classic_consul_inventory_stops_at_preflight_with_nothing_touched(kv_lab: Path) -> None:
    before = host_state(KV_STATE)
    assert all(dropin == "absent" for _, dropin in before.values())
    for attempt in (1, 2):
        rc, report = timed(f"consul refusal {attempt}", "apply", kv_lab)
        assert rc == 1 and report["changed"] == 0
        error = report["error"]
        assert "preflight refused the run; nothing was changed" in error
        for host in DOCKER_HOSTS:
            assert f"{host}: docker.io 20.10.24+dfsg1" in error and "cannot use consul://" in error
        assert "use kv_store.backend: etcd, or docker.overlay_mode: swarm" in error
        assert host_state(KV_STATE) == before  # no drop-in written, Docker not restarted
        assert "consul" not in sh(KV_STATE, "lab1", "docker ps -a --format '{{.Names}}'")


def test_zookeeper_is_refused_before_anything_is_contacted(kv_lab: Path, tmp_path: Path) -> None:
    before = host_state(KV_STATE)
    for mode in ("kv", "auto"):
        inv = variant(kv_lab, tmp_path, f"zk-{mode}", {"backend": "zookeeper", "port": "2181"},
                      f"  overlay_mode: {mode}")  # fmt: skip
        res = cli("validate", "-i", str(inv), str(PLAYBOOK))
        assert res.returncode == 2
        out = " ".join((res.stdout + res.stderr).split())
        assert "zookeeper cannot be Docker's cluster store" in out and "endpointCnt.Key" in out
        assert "kv_store.backend: etcd" in out and "docker.overlay_mode: swarm" in out
        for _ in (1, 2):
            assert cli("apply", "-i", str(inv), str(PLAYBOOK)).returncode == 2
    assert host_state(KV_STATE) == before


def test_etcd_store_runs_the_whole_job_then_is_in_sync(etcd_inventory: Path) -> None:
    rc, report = timed("etcd first apply", "apply", etcd_inventory)
    assert rc == 0, json.dumps(report, indent=1)[-4000:]
    assert report["changed"] >= 5
    msg = messages(report, "overlay_verify")["lab2"]
    assert "all 2 hosts reach each other over ov_net1" in msg and "FAIL" not in msg
    for host in DOCKER_HOSTS:
        info = sh(KV_STATE, host, "docker info --format '{{.ClusterStore}} {{.ClusterAdvertise}}'")
        assert info.startswith("etcd://198.18.6.11:2379 ") and info.endswith(":2376")
    started = host_state(KV_STATE)
    rc, report = timed("etcd second apply", "apply", etcd_inventory)
    assert rc == 0 and report["changed"] == 0, json.dumps(report, indent=1)[-4000:]
    assert host_state(KV_STATE) == started
    res = cli("verify", "-i", str(etcd_inventory))
    assert res.returncode == 0 and "all 2 hosts reach each other" in res.stdout, res.stdout + res.stderr


def test_restart_while_the_store_is_down_is_refused(etcd_inventory: Path, tmp_path: Path) -> None:
    # a new registry mirror forces a restart; the store is stopped and the kv host left out of the run
    forced = variant(etcd_inventory, tmp_path, "mirror", docker="  registry_mirrors: ['https://mirror.invalid']")
    before = host_state(KV_STATE)
    dropins = {h: sh(KV_STATE, h, f"cat {DROPIN}") for h in DOCKER_HOSTS}
    sh(KV_STATE, "lab1", "docker stop etcd")
    try:
        for _ in (1, 2):
            rc, report = run_json("apply", forced, "--limit", "lab2,lab3")
            assert rc == 1 and report["changed"] == 0
            msg = messages(report, "docker_daemon")["lab2"]
            assert "not restarting Docker: the etcd store (etcd://198.18.6.11:2379) is not healthy" in msg
            assert "never finds its peers" in msg and "docker start etcd" in msg
            assert "lab2 failed first" in messages(report, "docker_daemon")["lab3"]
            assert host_state(KV_STATE) == before
            assert {h: sh(KV_STATE, h, f"cat {DROPIN}") for h in DOCKER_HOSTS} == dropins
        # verify sees the dead store too, before any probe runs
        res = cli("verify", "-i", str(etcd_inventory))
        assert res.returncode == 1 and "etcd store (etcd://" in res.stdout + res.stderr
    finally:
        sh(KV_STATE, "lab1", "docker start etcd")
    # the whole job in order: the store comes back first, then the restarts, and the matrix is green
    rc, report = run_json("apply", forced)
    assert rc == 0, json.dumps(report, indent=1)[-4000:]
    assert "all 2 hosts reach each other" in messages(report, "overlay_verify")["lab2"]
    rc, report = run_json("apply", forced)
    assert rc == 0 and report["changed"] == 0


def test_swarm_mode_refused_where_docker_runs_with_a_cluster_store(etcd_inventory: Path, tmp_path: Path) -> None:
    inv = variant(etcd_inventory, tmp_path, "swarm", docker="  overlay_mode: swarm")
    before = host_state(KV_STATE)
    for _ in (1, 2):
        rc, report = run_json("apply", inv)
        assert rc == 1 and report["changed"] == 0
        assert "lab2: Docker runs with cluster store etcd://" in report["error"]
        assert "or use docker.overlay_mode: kv" in report["error"]
    assert host_state(KV_STATE) == before


# ---- swarm mode on a lab of its own ----------------------------------------------------------------


@pytest.fixture(scope="module")
def swarm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with fresh_lab(SWARM_STATE, SWARM_SUBNET, suite="bookworm") as info:
        # the classic Consul inventory with overlay_mode: auto, as a user following the refusal would write it
        yield variant(info.inventory_path, tmp_path_factory.mktemp("swarm"), "auto", docker="  overlay_mode: auto")


def test_swarm_mode_runs_the_whole_job_then_is_in_sync(swarm_lab: Path) -> None:
    rc, report = timed("swarm first apply", "apply", swarm_lab)
    assert rc == 0, json.dumps(report, indent=1)[-4000:]
    daemon = messages(report, "docker_daemon")
    for h in DOCKER_HOSTS:
        assert "overlay mode swarm (auto: lab2: docker.io 20.10.24" in daemon[h] and "no restart" in daemon[h]
    assert "swarm needs no key-value store" in messages(report, "kv_store")["lab1"]
    assert "all 2 hosts reach each other over ov_net1" in messages(report, "overlay_verify")["lab2"]
    net = sh(SWARM_STATE, "lab2", "docker network inspect ov_net1 -f '{{.Attachable}} {{.Scope}} {{.Driver}}'")
    assert net == "true swarm overlay"
    assert sh(SWARM_STATE, "lab3", "docker info --format '{{.Swarm.LocalNodeState}}'") == "active"
    assert "consul" not in sh(SWARM_STATE, "lab1", "docker ps -a --format '{{.Names}}'")
    assert all(dropin == "absent" for _, dropin in host_state(SWARM_STATE).values())

    started = host_state(SWARM_STATE)
    rc, report = timed("swarm second apply", "apply", swarm_lab)
    assert rc == 0 and report["changed"] == 0, json.dumps(report, indent=1)[-4000:]
    assert "already in this swarm" in messages(report, "swarm")["lab3"]
    assert host_state(SWARM_STATE) == started
    res = cli("verify", "-i", str(swarm_lab))
    assert res.returncode == 0 and "all 2 hosts reach each other" in res.stdout, res.stdout + res.stderr


def test_node_in_another_swarm_is_drift_not_moved(swarm_lab: Path) -> None:
    sh(SWARM_STATE, "lab3", "docker swarm leave --force && docker swarm init --advertise-addr 198.18.7.13")
    theirs = sh(SWARM_STATE, "lab3", "docker info --format '{{.Swarm.Cluster.ID}}'")
    for _ in (1, 2):
        rc, report = run_json("apply", swarm_lab)
        assert rc == 1 and report["changed"] == 0
        msg = messages(report, "swarm")["lab3"]
        assert f"lab3 is in another swarm ({theirs})" in msg and "docker swarm leave --force" in msg
        assert sh(SWARM_STATE, "lab3", "docker info --format '{{.Swarm.Cluster.ID}}'") == theirs
    sh(SWARM_STATE, "lab3", "docker swarm leave --force")
    rc, report = run_json("apply", swarm_lab)
    assert rc == 0 and report["changed"] == 1, json.dumps(report, indent=1)[-4000:]
    assert "all 2 hosts reach each other" in messages(report, "overlay_verify")["lab2"]
    rc, report = run_json("apply", swarm_lab)
    assert rc == 0 and report["changed"] == 0
