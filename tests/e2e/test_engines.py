"""The engine matrix, end to end through the real CLI on lab hosts of every suite the lab offers.

Suites and engines: bullseye (docker.io 20.10.5, Consul compiled in), bookworm (20.10.24, no Consul),
trixie (26.1.5) and forky (28.5.2), both without any cluster store (Docker 23 removed it), and a mixed
lab (bullseye + trixie) as a cluster in the middle of an upgrade. Each lab is 3 hosts: lab1 holds the
store, lab2 and lab3 run the overlay. For every suite: kv mode with consul and with etcd either converges
or is refused at preflight with nothing touched; zookeeper is refused by validate; swarm mode converges;
``overlay_mode: auto`` picks the mode that works and says why. Every scenario is applied twice and the
second run changes nothing. Labs are shared within a suite (refusals run first: they change nothing).

Each observed cell is written to ``$PROVISIONER_E2E_ENGINES_DIR/engine-matrix.json``; the last test
fails when a cell differs from ``tests/e2e/engine_matrix.json``, from which the README's table is made
(``python -m tests.engine_table --update`` takes the new cells in).

Environment: PROVISIONER_E2E_ENGINES_DIR (default /var/lib/provisioner/lab-e2e-engines; the labs use
that path with -<suite> appended) and subnets 198.18.40.0/24 to 198.18.45.0/24.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import engine_table
from tests.e2e import labkit
from tests.e2e.labkit import PLAYBOOK, cli, fresh_lab, lab_sh

pytestmark = pytest.mark.e2e

BASE = Path(os.environ.get("PROVISIONER_E2E_ENGINES_DIR", "/var/lib/provisioner/lab-e2e-engines"))
OBSERVED = BASE / "engine-matrix.json"
NETS = {"bullseye": "198.18.40.0/24", "bookworm-kv": "198.18.41.0/24", "bookworm-swarm": "198.18.42.0/24",
        "trixie": "198.18.43.0/24", "forky": "198.18.44.0/24", "mixed": "198.18.45.0/24"}  # fmt: skip
DROPIN = "/etc/systemd/system/docker.service.d/10-machine.conf"
DOCKER_HOSTS = ("lab2", "lab3")
TIMES: dict[str, float] = {}


def lab_state(name: str) -> Path:
    return BASE.with_name(f"{BASE.name}-{name}")


KV_STATE, SWARM_STATE = lab_state("bookworm-kv"), lab_state("bookworm-swarm")


# ---- helpers ---------------------------------------------------------------------------------------


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


def etcd(inventory: Path, tmp: Path, state: Path, docker: str = "") -> Path:
    kv = {"backend": "etcd", "image": "provisioner-lab/etcd:3.4", "image_archive": str(state / "etcd.tar"),
          "port": "2379"}  # fmt: skip
    return variant(inventory, tmp, "etcd", kv, docker)


def timed(name: str, command: str, inventory: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    t0 = time.monotonic()
    out = run_json(command, inventory, *extra)
    TIMES[name] = time.monotonic() - t0
    return out


def record(suite: str, key: str, value: Any) -> None:
    """One observed cell of the engine table (see tests/engine_table.py)."""
    seen = engine_table.load(OBSERVED)
    seen.setdefault(suite, {})[key] = value
    OBSERVED.parent.mkdir(parents=True, exist_ok=True)
    OBSERVED.write_text(json.dumps(seen, indent=1, sort_keys=True) + "\n")


def engine_label(state: Path, host: str) -> str:
    return sh(state, host, "dpkg-query -W -f '${Package} ${Version}' docker.io")


def record_engines(suite: str, state: Path) -> dict[str, str]:
    """Each docker host's engine as its package manager reports it; the table's first column."""
    labels = {h: engine_label(state, h) for h in DOCKER_HOSTS}
    distinct = list(dict.fromkeys(labels.values()))
    record(suite, "engine", distinct[0] if len(distinct) == 1 else ", ".join(f"{h} {v}" for h, v in labels.items()))
    return labels


def mode_label(report: dict[str, Any]) -> str:
    """The first "overlay mode X (why)" the run reported, parentheses balanced."""
    text = json.dumps(report)
    start = text.find("overlay mode ")
    assert start >= 0, f"no task said which overlay mode it used: {text[-3000:]}"
    depth, end = 0, text.index("(", start)
    for end in range(end, len(text)):  # noqa: B020 - the loop ends where the parentheses balance
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            break
    return text[start : end + 1]


def _print_times() -> None:
    for name, secs in TIMES.items():
        print(f"engines e2e: {name}: {secs:.1f}s")


@pytest.fixture(scope="module", autouse=True)
def _observations() -> Iterator[None]:
    OBSERVED.unlink(missing_ok=True)  # this run's cells only
    yield
    _print_times()


def lab_up_timed(name: str, state: Path, subnet: str, suite: str) -> Any:
    """fresh_lab, with the time `lab up` took."""
    t0 = time.monotonic()
    cm = fresh_lab(state, subnet, suite=suite)
    info = cm.__enter__()
    TIMES[f"lab up {name}"] = time.monotonic() - t0
    return cm, info


# ---- the scenarios, each applied twice -------------------------------------------------------------


def zookeeper_is_refused_by_validate(suite: str, inventory: Path, tmp: Path) -> None:
    for mode in ("kv", "auto"):
        inv = variant(inventory, tmp, f"zk-{mode}", {"backend": "zookeeper", "port": "2181"}, f"  overlay_mode: {mode}")
        for _ in (1, 2):
            res = cli("validate", "-i", str(inv), str(PLAYBOOK))
            assert res.returncode == 2, res.stdout + res.stderr
            out = " ".join((res.stdout + res.stderr).split())
            assert "zookeeper cannot be Docker's cluster store" in out and "endpointCnt.Key" in out
            assert "kv_store.backend: etcd" in out and "docker.overlay_mode: swarm" in out
            assert cli("apply", "-i", str(inv), str(PLAYBOOK)).returncode == 2
    record(suite, "zookeeper", {"outcome": "refused by validate", "detail": "exit 2, no host contacted"})


def refused_at_preflight(
    suite: str, column: str, state: Path, inventory: Path, refused: tuple[str, ...], reason: str, way_out: str
) -> str:
    """Two applies stop at preflight naming each host of ``refused`` (and no other) with ``reason`` and
    ``way_out``; no drop-in is written and Docker is not restarted. Returns lab2's refusal (table cell)."""
    before = host_state(state)
    labels = {h: engine_label(state, h) for h in DOCKER_HOSTS}
    lines: dict[str, str] = {}
    for attempt in (1, 2):
        rc, report = timed(f"{suite} {column} refusal {attempt}", "apply", inventory)
        assert rc == 1 and report["changed"] == 0, json.dumps(report, indent=1)[-3000:]
        error = report["error"]
        assert "preflight refused the run; nothing was changed on any host" in error, error
        lines = {m.group(1): m.group(2) for m in re.finditer(r"^  (lab\d+): (.*)$", error, re.M)}
        for h in DOCKER_HOSTS:
            if h in refused:
                version = labels[h].split()[1]
                assert h in lines and version in lines[h] and reason in lines[h] and way_out in lines[h], error
            else:
                assert h not in lines, error
        assert host_state(state) == before  # no drop-in written, Docker not restarted
        assert column not in sh(state, "lab1", "docker ps -a --format '{{.Names}}'")
    first = refused[0]
    detail = lines[first].replace(labels[first], "").strip()
    if set(refused) != set(DOCKER_HOSTS):
        detail = f"{first} ({labels[first]}): {detail}"
    record(suite, column, {"outcome": "refused at preflight", "detail": detail})
    return lines[first]


def converges(suite: str, column: str, state: Path, inventory: Path, expect_mode: str) -> dict[str, Any]:
    """First apply changes things and its ping matrix passes; the second changes nothing and restarts
    nothing; `verify` passes. Returns the first report."""
    rc, report = timed(f"{suite} {column} first apply", "apply", inventory)
    assert rc == 0, json.dumps(report, indent=1)[-4000:]
    assert report["changed"] >= 3
    assert mode_label(report).startswith(f"overlay mode {expect_mode} ")
    verified = messages(report, "overlay_verify")["lab2"]
    assert "all 2 hosts reach each other over ov_net1" in verified and "FAIL" not in verified
    started = host_state(state)
    rc, again = timed(f"{suite} {column} second apply", "apply", inventory)
    assert rc == 0 and again["changed"] == 0, json.dumps(again, indent=1)[-4000:]
    assert host_state(state) == started
    res = cli("verify", "-i", str(inventory))
    assert res.returncode == 0 and "all 2 hosts reach each other" in res.stdout, res.stdout + res.stderr
    how = {"kv": f"{column}:// cluster store on lab2+lab3", "swarm": "manager lab2, worker lab3, attachable overlay"}
    detail = f"{how[expect_mode]}; ping matrix 2x2 over ov_net1; re-run changed 0"
    record(suite, column, {"outcome": "converges", "detail": detail})
    return report


def auto_picks(suite: str, state: Path, inventory: Path, mode: str, why: str) -> str:
    """On a lab already converged in ``mode``: `auto` picks that mode, says why, changes nothing."""
    for attempt in (1, 2):
        rc, report = timed(f"{suite} auto {attempt}", "apply", inventory)
        assert rc == 0 and report["changed"] == 0, json.dumps(report, indent=1)[-4000:]
        label = mode_label(report)
        assert label.startswith(f"overlay mode {mode} (auto: ") and why in label, label
    res = cli("verify", "-i", str(inventory))
    assert res.returncode == 0 and "all 2 hosts reach each other" in res.stdout, res.stdout + res.stderr
    detail = label.removeprefix(f"overlay mode {mode} (").removesuffix(")")
    record(suite, "auto", {"outcome": mode, "detail": detail})
    return detail


def check_swarm(state: Path) -> None:
    net = sh(state, "lab2", "docker network inspect ov_net1 -f '{{.Attachable}} {{.Scope}} {{.Driver}}'")
    assert net == "true swarm overlay"
    assert sh(state, "lab3", "docker info --format '{{.Swarm.LocalNodeState}}'") == "active"
    assert all(dropin == "absent" for _, dropin in host_state(state).values())


# ---- bullseye: docker.io 20.10.5, every kv backend compiled in -------------------------------------


def test_bullseye_consul_etcd_and_swarm_converge_and_auto_picks_kv(tmp_path: Path) -> None:
    state, net = lab_state("bullseye"), NETS["bullseye"]
    cm, info = lab_up_timed("bullseye", state, net, "bullseye")
    try:
        labels = record_engines("bullseye", state)
        assert all(v.startswith("docker.io 20.10.5+dfsg1") for v in labels.values()), labels
        zookeeper_is_refused_by_validate("bullseye", info.inventory_path, tmp_path)
        converges("bullseye", "consul", state, info.inventory_path, "kv")
        assert sh(state, "lab2", "docker info --format '{{.ClusterStore}}'") == "consul://198.18.40.11:8500"
        auto = variant(info.inventory_path, tmp_path, "auto", docker="  overlay_mode: auto")
        auto_picks("bullseye", state, auto, "kv", "every docker host can use consul://")
    finally:
        cm.__exit__(None, None, None)
    with fresh_lab(state, net, suite="bullseye") as info:
        converges("bullseye", "etcd", state, etcd(info.inventory_path, tmp_path, state), "kv")
        assert sh(state, "lab3", "docker info --format '{{.ClusterStore}}'") == "etcd://198.18.40.11:2379"
    with fresh_lab(state, net, suite="bullseye") as info:
        swarm = variant(info.inventory_path, tmp_path, "swarm", docker="  overlay_mode: swarm")
        converges("bullseye", "swarm", state, swarm, "swarm")
        check_swarm(state)


# ---- bookworm: docker.io 20.10.24, Consul patched out; two labs shared by several scenarios ----------


@pytest.fixture(scope="class")
def kv_lab() -> Iterator[Path]:
    cm, info = lab_up_timed("bookworm", KV_STATE, NETS["bookworm-kv"], "bookworm")
    try:
        yield info.inventory_path
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="class")
def etcd_inventory(kv_lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return etcd(kv_lab, tmp_path_factory.mktemp("etcd"), KV_STATE)


@pytest.fixture(scope="class")
def swarm_lab() -> Iterator[Path]:
    cm, info = lab_up_timed("bookworm swarm", SWARM_STATE, NETS["bookworm-swarm"], "bookworm")
    try:
        yield info.inventory_path
    finally:
        cm.__exit__(None, None, None)


class TestBookworm:
    """The kv lab serves the store scenarios, then the swarm lab the swarm ones; both go with the class."""

    def test_classic_consul_inventory_stops_at_preflight_with_nothing_touched(
        self, kv_lab: Path, tmp_path: Path
    ) -> None:
        labels = record_engines("bookworm", KV_STATE)
        assert all(v.startswith("docker.io 20.10.24+dfsg1") for v in labels.values()), labels
        refused_at_preflight("bookworm", "consul", KV_STATE, kv_lab, DOCKER_HOSTS,
                             "cannot use consul:// (its consul backend is not in this build)",
                             "use kv_store.backend: etcd, or docker.overlay_mode: swarm")  # fmt: skip
        zookeeper_is_refused_by_validate("bookworm", kv_lab, tmp_path)

    def test_etcd_store_runs_the_whole_job_then_is_in_sync(self, etcd_inventory: Path) -> None:
        converges("bookworm", "etcd", KV_STATE, etcd_inventory, "kv")
        for host in DOCKER_HOSTS:
            info = sh(KV_STATE, host, "docker info --format '{{.ClusterStore}} {{.ClusterAdvertise}}'")
            assert info.startswith("etcd://198.18.41.11:2379 ") and info.endswith(":2376")

    def test_restart_while_the_store_is_down_is_refused(self, etcd_inventory: Path, tmp_path: Path) -> None:
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
                assert "not restarting Docker: the etcd store (etcd://198.18.41.11:2379) is not healthy" in msg
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

    def test_swarm_mode_refused_where_docker_runs_with_a_cluster_store(
        self, etcd_inventory: Path, tmp_path: Path
    ) -> None:
        inv = variant(etcd_inventory, tmp_path, "swarm", docker="  overlay_mode: swarm")
        before = host_state(KV_STATE)
        for _ in (1, 2):
            rc, report = run_json("apply", inv)
            assert rc == 1 and report["changed"] == 0
            assert "lab2: Docker runs with cluster store etcd://" in report["error"]
            assert "or use docker.overlay_mode: kv" in report["error"]
        assert host_state(KV_STATE) == before

    # swarm mode on a lab of its own

    def test_swarm_mode_runs_the_whole_job_then_auto_picks_it(self, swarm_lab: Path, tmp_path: Path) -> None:
        swarm = variant(swarm_lab, tmp_path, "swarm", docker="  overlay_mode: swarm")
        report = converges("bookworm", "swarm", SWARM_STATE, swarm, "swarm")
        for h in DOCKER_HOSTS:
            assert "no restart" in messages(report, "docker_daemon")[h]
        assert "swarm needs no key-value store" in messages(report, "kv_store")["lab1"]
        assert "consul" not in sh(SWARM_STATE, "lab1", "docker ps -a --format '{{.Names}}'")
        check_swarm(SWARM_STATE)
        # the classic Consul inventory with overlay_mode: auto, as a user following the refusal would write it
        auto = variant(swarm_lab, tmp_path, "auto", docker="  overlay_mode: auto")
        auto_picks("bookworm", SWARM_STATE, auto, "swarm", "lab2: docker.io 20.10.24+dfsg1")

    def test_node_in_another_swarm_is_drift_not_moved(self, swarm_lab: Path, tmp_path: Path) -> None:
        auto = variant(swarm_lab, tmp_path, "auto", docker="  overlay_mode: auto")
        sh(SWARM_STATE, "lab3", "docker swarm leave --force && docker swarm init --advertise-addr 198.18.42.13")
        theirs = sh(SWARM_STATE, "lab3", "docker info --format '{{.Swarm.Cluster.ID}}'")
        for _ in (1, 2):
            rc, report = run_json("apply", auto)
            assert rc == 1 and report["changed"] == 0
            msg = messages(report, "swarm")["lab3"]
            assert f"lab3 is in another swarm ({theirs})" in msg and "docker swarm leave --force" in msg
            assert sh(SWARM_STATE, "lab3", "docker info --format '{{.Swarm.Cluster.ID}}'") == theirs
        sh(SWARM_STATE, "lab3", "docker swarm leave --force")
        rc, report = run_json("apply", auto)
        assert rc == 0 and report["changed"] == 1, json.dumps(report, indent=1)[-4000:]
        assert "all 2 hosts reach each other" in messages(report, "overlay_verify")["lab2"]
        rc, report = run_json("apply", auto)
        assert rc == 0 and report["changed"] == 0


# ---- trixie (Docker 26) and forky (Docker 28): no cluster store at all -----------------------------

NO_STORE = "has no --cluster-store (removed in Docker 23), so no key-value store overlay"


@pytest.mark.parametrize(("suite", "version"), [("trixie", "26.1.5+dfsg1"), ("forky", "28.5.2+dfsg")])
def test_engines_without_cluster_store_refuse_kv_and_converge_in_swarm(
    suite: str, version: str, tmp_path: Path
) -> None:
    state = lab_state(suite)
    cm, info = lab_up_timed(suite, state, NETS[suite], suite)
    try:
        labels = record_engines(suite, state)
        assert all(v.startswith(f"docker.io {version}") for v in labels.values()), labels
        zookeeper_is_refused_by_validate(suite, info.inventory_path, tmp_path)
        refused_at_preflight(suite, "consul", state, info.inventory_path, DOCKER_HOSTS, NO_STORE,
                             "use docker.overlay_mode: swarm")  # fmt: skip
        refused_at_preflight(suite, "etcd", state, etcd(info.inventory_path, tmp_path, state), DOCKER_HOSTS,
                             NO_STORE, "use docker.overlay_mode: swarm")  # fmt: skip
        swarm = variant(info.inventory_path, tmp_path, "swarm", docker="  overlay_mode: swarm")
        converges(suite, "swarm", state, swarm, "swarm")
        check_swarm(state)
        auto = variant(info.inventory_path, tmp_path, "auto", docker="  overlay_mode: auto")
        auto_picks(suite, state, auto, "swarm", f"lab2: docker.io {version}")
    finally:
        cm.__exit__(None, None, None)


# ---- a cluster in the middle of an upgrade: lab1, lab3 bullseye (20.10.5), lab2 trixie (26.1.5) ------


def test_mixed_cluster_runs_one_mode_everywhere_or_names_the_blocking_host(tmp_path: Path) -> None:
    suite, state = "bullseye,trixie", lab_state("mixed")
    cm, info = lab_up_timed("bullseye,trixie", state, NETS["mixed"], suite)
    try:
        labels = record_engines(suite, state)
        assert labels["lab2"].startswith("docker.io 26.1.5") and labels["lab3"].startswith("docker.io 20.10.5")
        zookeeper_is_refused_by_validate(suite, info.inventory_path, tmp_path)
        # kv: only the trixie host is refused, and nothing changes on the bullseye one either
        for column, inv in (("consul", info.inventory_path), ("etcd", etcd(info.inventory_path, tmp_path, state))):
            refused_at_preflight(suite, column, state, inv, ("lab2",), NO_STORE, "use docker.overlay_mode: swarm")

        # lab3 still runs with a cluster store (as before the upgrade): neither mode works on every host
        auto = variant(info.inventory_path, tmp_path, "auto", docker="  overlay_mode: auto")
        sh(state, "lab3", "printf '%s' '{\"cluster-store\": \"consul://198.18.45.11:8500\", "
                          "\"cluster-advertise\": \"eth0:2376\"}' > /etc/docker/daemon.json "
                          "&& systemctl restart docker")  # fmt: skip
        try:
            before = host_state(state)
            for _ in (1, 2):
                rc, report = run_json("apply", auto)
                assert rc == 1 and report["changed"] == 0, json.dumps(report, indent=1)[-3000:]
                error = blocked = report["error"]
                assert "lab3: Docker runs with cluster store consul://198.18.45.11:8500" in error, error
                assert f"kv mode is no way out (lab2: {labels['lab2']} {NO_STORE})" in error, error
                assert not re.search(r"^  lab2:", error, re.M), error  # lab2 can run swarm: it blocks nothing
                assert host_state(state) == before
        finally:
            sh(state, "lab3", "rm -f /etc/docker/daemon.json && systemctl restart docker")

        # swarm on every host: a 26.1.5 manager with a 20.10.5 worker; then auto picks it for the same reason
        swarm = variant(info.inventory_path, tmp_path, "swarm", docker="  overlay_mode: swarm")
        converges(suite, "swarm", state, swarm, "swarm")
        check_swarm(state)
        detail = auto_picks(suite, state, auto, "swarm", f"auto: lab2: {labels['lab2']} {NO_STORE})")
        lab3 = re.search(r"^  lab3: ([^,;]*)", blocked, re.M)
        assert lab3 is not None
        blocked_cell = f"while lab3 still ran with a cluster store: refused at preflight on lab3 ({lab3.group(1)})"
        record(suite, "auto", {"outcome": "swarm", "detail": f"{detail}; {blocked_cell}, kv named as no way out"})
    finally:
        cm.__exit__(None, None, None)


# ---- last: what was seen is what the README says ---------------------------------------------------


def test_readme_engine_table_holds_what_was_seen() -> None:
    seen = engine_table.load(OBSERVED)
    assert seen, f"no observations in {OBSERVED}"
    stale = engine_table.differences(engine_table.load(engine_table.COMMITTED), seen)
    assert not stale, (
        "the engines behaved differently from tests/e2e/engine_matrix.json (the README's table):\n  "
        + "\n  ".join(stale)
        + f"\nif that is right: python -m tests.engine_table --update {OBSERVED}"
    )
