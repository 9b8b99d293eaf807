"""The overlay job's modules, data-driven: (facts, inventory, args) -> expected changes or no-op reason.

Apply paths (image upload, store health wait, restart with rollback, network recreate, the ping matrix)
run against the scripted FakeConnection; the store's HTTP API is a real local HTTP server on loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from provisioner.connection.base import RunResult, ShellConnection
from provisioner.connection.fake import FakeConnection
from provisioner.engine.executor import apply_change
from provisioner.errors import TaskError
from provisioner.facts import ContainerFact, DockerFacts, FileFact, HostFacts, Interface, NetworkFact
from provisioner.inventory import Inventory
from provisioner.modules import docker_daemon, docker_image, docker_network, kv_store, overlay_verify
from provisioner.modules._docker import LABEL_ARGS, LABEL_IMAGE, LABEL_SPEC, archive_info, args_hash, spec_hash
from provisioner.modules.base import ApplyContext, Change, Check, Module, NoOp, Plan, PlanContext
from provisioner.steps import Put

DROPIN = "/etc/systemd/system/docker.service.d/10-machine.conf"
DAEMON_JSON = "/etc/docker/daemon.json"
BASE = ["/usr/sbin/dockerd", "-H", "fd://", "$DOCKER_OPTS"]
CONSUL_ID = "sha256:" + "c" * 64
STORE = "consul://198.18.0.11:8500"


# ---- builders ------------------------------------------------------------------------------------


def inventory(**over: Any) -> Inventory:
    doc: dict[str, Any] = {
        "hosts": {
            "lab1": {"address": "198.18.0.11", "groups": ["kv"]},
            "lab2": {"address": "198.18.0.12", "groups": ["docker"]},
            "lab3": {"address": "198.18.0.13", "groups": ["docker"]},
        },
        # the store is checked through the (fake) host connection: unit tests never open a socket off loopback
        "kv_store": {"hosts": ["lab1"], "image": "provisioner-lab/consul:1.8.7", "check_via": "ssh"},
        "networks": {"ov_net1": {"driver": "overlay", "subnet": "198.19.1.0/24"}},
        "verify": {"image": "provisioner-lab/probe:latest", "retries": 1, "ping_count": 1},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return Inventory.model_validate(doc)


def facts(
    host: str = "lab2", *, files: dict[str, str] | None = None, ip: str | None = None, **docker: Any
) -> HostFacts:
    addr = ip or {"lab1": "198.18.0.11", "lab2": "198.18.0.12", "lab3": "198.18.0.13"}.get(host, "198.18.0.99")
    d: dict[str, Any] = {
        "installed": True,
        "active": True,
        "state": "active",
        "base_execstart": BASE,
        "running_containers": 2,
        "unit_path": "/lib/systemd/system/docker.service",
    }
    d.update(docker)
    return HostFacts(
        host=host,
        interfaces={"eth0": Interface(name="eth0", up=True, addresses=[addr], cidrs=[f"{addr}/24"])},
        files={p: FileFact(exists=True, content=c, sha256=hashlib.sha256(c.encode()).hexdigest()) for p, c in
               (files or {}).items()},
        docker=DockerFacts(**d),
    )  # fmt: skip


def plan(mod: Module[Any], f: HostFacts, inv: Inventory | None = None, args: dict[str, Any] | None = None,
         all_facts: dict[str, HostFacts] | None = None, **options: Any) -> Plan:  # fmt: skip
    inv = inv or inventory()
    ctx = PlanContext(host=f.host, facts=f, inventory=inv, all_facts=all_facts or {f.host: f}, options=options)
    return mod.plan(ctx, mod.Args.model_validate(args or {}))


def changes(p: Plan) -> list[Change]:
    assert isinstance(p, list), f"expected changes, got {p!r}"
    return p


def ctx_for(conn: FakeConnection, f: HostFacts, inv: Inventory | None = None, **kw: Any) -> ApplyContext:
    return ApplyContext(host=f.host, conn=conn, facts=f, inventory=inv or inventory(), **kw)


def make_archive(path: Path, config: bytes = b'{"architecture":"amd64","config":{}}') -> str:
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["provisioner-lab/probe:latest"], "Layers": []}])
    with tarfile.open(path, "w") as tar:
        for name, data in ((cfg_name, config), ("manifest.json", manifest.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return "sha256:" + hashlib.sha256(config).hexdigest()


# ---- docker_image ---------------------------------------------------------------------------------


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "probe.tar"
    return path, make_archive(path)


PROBE_ID = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("images", "use_archive", "expect"),
    [
        # registry: present by tag -> no-op; absent -> pull
        ({"provisioner-lab/probe:latest": PROBE_ID}, False, "noop:is present"),
        ({}, False, "pull provisioner-lab/probe:latest"),
        # archive: the archive's id under the tag -> no-op (nothing uploaded)
        ({"provisioner-lab/probe:latest": "ARCHIVE"}, True, "noop:archive's image id"),
        # the archive's id loaded under another tag -> only a tag
        ({"other:1": "ARCHIVE"}, True, "tag "),
        # a different image under the tag, or nothing -> upload and load
        ({"provisioner-lab/probe:latest": PROBE_ID}, True, "load provisioner-lab/probe:latest from probe.tar"),
        ({}, True, "load provisioner-lab/probe:latest from probe.tar"),
    ],
)
def test_docker_image_plan(archive: tuple[Path, str], images: dict[str, str], use_archive: bool, expect: str) -> None:
    path, image_id = archive
    images = {k: (image_id if v == "ARCHIVE" else v) for k, v in images.items()}
    inv = inventory(verify={"image": "provisioner-lab/probe:latest", "image_archive": path if use_archive else None})
    p = plan(docker_image.DockerImageModule(), facts(images=images), inv, {"from_inventory": "verify"})
    if expect.startswith("noop:"):
        assert isinstance(p, NoOp) and expect[5:] in p.reason
    else:
        (c,) = changes(p)
        assert c.description.startswith(expect)


def test_docker_image_needs_running_docker() -> None:
    with pytest.raises(TaskError, match="Docker is not running"):
        plan(docker_image.DockerImageModule(), facts(active=False, state="inactive"), args={"image": "busybox"})


def test_docker_image_args_take_one_source() -> None:
    with pytest.raises(ValueError, match="either 'image'"):
        docker_image.DockerImageArgs.model_validate({})
    assert docker_image.DockerImageArgs.model_validate({"image": "busybox"}).image == "busybox"


def test_archive_id_is_the_config_digest(archive: tuple[Path, str]) -> None:
    path, image_id = archive
    info = archive_info(path)
    assert info.image_id == image_id
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.repo_tags == ("provisioner-lab/probe:latest",)


def test_not_an_archive_is_explained(tmp_path: Path) -> None:
    bad = tmp_path / "x.tar"
    bad.write_bytes(b"not a tar")
    with pytest.raises(TaskError, match="not a `docker save` archive"):
        archive_info(bad)


def _run_load_command(tmp_path: Path, archive: Path, data: bytes) -> tuple[subprocess.CompletedProcess[bytes], str]:
    """Run the real upload command in a local shell, with a `docker` stub that logs its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "docker.log"
    stub = bindir / "docker"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {log}\nif [ "$1" = load ]; then test -s "$3"; fi\n')
    stub.chmod(0o755)
    cmd = docker_image.load_command(archive_info(archive), "provisioner-lab/probe:latest")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    res = subprocess.run(["sh", "-c", cmd], input=data, capture_output=True, env=env, check=False)
    return res, log.read_text() if log.exists() else ""


def test_upload_is_checksummed_loaded_tagged_and_removed(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, image_id = archive
    res, log = _run_load_command(tmp_path, path, path.read_bytes())
    assert res.returncode == 0, res.stderr
    load, tag = log.splitlines()
    temp = load.split()[-1]
    assert load.startswith("load -i /var/tmp/provisioner-image.")
    assert tag == f"tag {image_id} provisioner-lab/probe:latest"
    assert not Path(temp).exists()  # the temp file is always removed


def test_corrupted_upload_is_not_loaded(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = archive
    res, log = _run_load_command(tmp_path, path, path.read_bytes()[:-10] + b"corrupted!")
    assert res.returncode == 65 and b"checksum mismatch" in res.stderr
    assert log == ""  # docker was never called


def test_load_apply_reports_checksum_mismatch(archive: tuple[Path, str]) -> None:
    path, _ = archive
    inv = inventory(verify={"image": "provisioner-lab/probe:latest", "image_archive": str(path)})
    f = facts()
    (c,) = changes(plan(docker_image.DockerImageModule(), f, inv, {"from_inventory": "verify"}))
    conn = FakeConnection("lab2").on("provisioner-image", rc=65, stderr="checksum mismatch")
    with pytest.raises(TaskError, match="does not match its sha256"):
        apply_change(ctx_for(conn, f, inv), c)
    assert conn.stats.bytes_sent == path.stat().st_size  # the archive went over the connection's stdin


# ---- kv_store ---------------------------------------------------------------------------------------


def consul_container(inv: Inventory, host: str = "lab1", *, image_id: str = CONSUL_ID, labels: dict[str, str] | None
                     = None, running: bool = True) -> ContainerFact:  # fmt: skip
    b = kv_store.BACKENDS["consul"]
    opts, cmd = b.run_args(kv_store.store_node(inv, host))
    argv = [*opts, inv.kv_store.image, *cmd]
    if labels is None:
        labels = {LABEL_SPEC: spec_hash(image_id, argv), LABEL_IMAGE: image_id, LABEL_ARGS: args_hash(argv)}
    return ContainerFact(name="consul", image_id=image_id, running=running, status="running" if running else "exited",
                         labels=labels)  # fmt: skip


KV_IMAGES = {"provisioner-lab/consul:1.8.7": CONSUL_ID}
NEW_ID = "sha256:" + "d" * 64


@pytest.mark.parametrize(
    ("containers", "images", "expect"),
    [
        ([], KV_IMAGES, "create consul container (consul store on 198.18.0.11:8500)"),
        (["same"], KV_IMAGES, "noop:consul runs with the same spec"),
        (["same-stopped"], KV_IMAGES, "start consul (it is exited; same spec)"),
        (["same"], {"provisioner-lab/consul:1.8.7": NEW_ID}, "recreate consul: image changed (cccccccccccc -> dddd"),
        (["other-args"], KV_IMAGES, "recreate consul: arguments changed"),
        (["no-label"], KV_IMAGES, "recreate consul: it was not created by provisioner (no spec label)"),
    ],
)
def test_kv_store_plan(containers: list[str], images: dict[str, str], expect: str) -> None:
    inv = inventory()
    cs = []
    for kind in containers:
        c = consul_container(inv, running=kind != "same-stopped")
        if kind == "other-args":
            c = c.model_copy(update={"labels": {**c.labels, LABEL_SPEC: "0" * 16, LABEL_ARGS: "1" * 16}})
        elif kind == "no-label":
            c = c.model_copy(update={"labels": {}})
        cs.append(c)
    p = plan(kv_store.KVStoreModule(), facts("lab1", images=images, containers=cs), inv)
    if expect.startswith("noop:"):
        assert isinstance(p, NoOp) and expect[5:] in p.reason
    else:
        (change,) = changes(p)
        assert change.description.startswith(expect), change.description


def test_kv_single_host_command_publishes_on_the_host_address_only() -> None:
    (c,) = changes(plan(kv_store.KVStoreModule(), facts("lab1", images=KV_IMAGES), inventory()))
    run = c.commands[0]
    assert "docker run -d --restart unless-stopped --name consul" in run
    assert " -p 198.18.0.11:8500:8500 -h consul provisioner-lab/consul:1.8.7 agent -server " in run
    assert "-bootstrap -client=0.0.0.0" in run and "-data-dir=/consul/data" in run
    assert "0.0.0.0:8500" not in run
    assert f"--label {LABEL_SPEC}=" in run


def test_kv_publish_address_override() -> None:
    inv = inventory(kv_store={"publish_address": "198.18.0.50"})
    (c,) = changes(plan(kv_store.KVStoreModule(), facts("lab1", images=KV_IMAGES), inv))
    assert "-p 198.18.0.50:8500:8500" in c.commands[0]
    assert kv_store.cluster_store_url(inv) == "consul://198.18.0.50:8500"


def test_kv_quorum_with_three_hosts() -> None:
    inv = inventory(
        hosts={f"kv{i}": {"address": f"198.18.0.2{i}", "groups": ["kv"]} for i in (1, 2, 3)},
        kv_store={"hosts": ["kv1", "kv2", "kv3"]},
    )
    (c,) = changes(plan(kv_store.KVStoreModule(), facts("kv2", ip="198.18.0.22", images=KV_IMAGES), inv))
    run = c.commands[0]
    for part in ("--network host", "-bootstrap-expect=3", "-bind=198.18.0.22", "-advertise=198.18.0.22",
                 "-client=198.18.0.22", "-retry-join=198.18.0.21", "-retry-join=198.18.0.23", "-node=kv2"):  # fmt: skip
        assert part in run
    assert "-bootstrap " not in run and "-retry-join=198.18.0.22" not in run


def test_kv_etcd_backend_enables_v2_and_lists_every_endpoint() -> None:
    inv = inventory(kv_store={"backend": "etcd", "image": "etcd:3.4"})
    (c,) = changes(plan(kv_store.KVStoreModule(), facts("lab1", images={"etcd:3.4": CONSUL_ID}), inv))
    assert "--enable-v2=true" in c.commands[0] and "--name etcd" in c.commands[0]
    assert kv_store.cluster_store_url(inv) == "etcd://198.18.0.11:2379"


def test_kv_refuses_unsupported_backend_and_wrong_host() -> None:
    # zookeeper never works as Docker's cluster store (issue 5): the inventory itself is refused
    with pytest.raises(ValueError, match="invalid_many"):
        inventory(kv_store={"backend": "zookeeper"})
    with pytest.raises(TaskError, match=r"lab2 is not one of kv_store\.hosts"):
        plan(kv_store.KVStoreModule(), facts("lab2"), inventory())


class _Store(BaseHTTPRequestHandler):
    leader = '"127.0.0.1:8300"'

    def do_GET(self) -> None:
        body = self.leader.encode() if self.path == "/v1/status/leader" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def store() -> Iterator[tuple[int, type[_Store]]]:
    handler = type("Store", (_Store,), {})
    server = HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


def local_kv_inventory(port: int) -> Inventory:
    return inventory(hosts={"store1": {"address": "127.0.0.1", "groups": ["kv"]},
                            "lab2": {"address": "198.18.0.12", "groups": ["docker"]},
                            "lab3": {"address": "198.18.0.13", "groups": ["docker"]}},
                     kv_store={"hosts": ["store1"], "port": port, "check_via": "auto"})  # fmt: skip


def test_kv_apply_waits_for_leader_with_py_consul(store: tuple[int, type[_Store]]) -> None:
    port, _ = store
    inv = local_kv_inventory(port)
    f = facts("store1", ip="127.0.0.1", images=KV_IMAGES)
    (c,) = changes(plan(kv_store.KVStoreModule(), f, inv))
    conn = FakeConnection("store1").on(r"^docker run -d", stdout="abc\n")
    apply_change(ctx_for(conn, f, inv), c)
    assert len(conn.calls) == 1  # the leader was asked directly, not through the host


def test_kv_wait_times_out_with_container_logs(store: tuple[int, type[_Store]]) -> None:
    port, handler = store
    handler.leader = '""'  # answering, but no leader
    inv = local_kv_inventory(port)
    f = facts("store1", ip="127.0.0.1")
    conn = FakeConnection("store1").on("docker logs --tail 30 consul", stdout="agent: No cluster leader\n")
    with pytest.raises(TaskError, match=r"did not become healthy within 0s[\s\S]*No cluster leader"):
        kv_store.wait_healthy(ctx_for(conn, f, inv), kv_store.BACKENDS["consul"], timeout=0)


def test_kv_health_falls_back_to_curl_on_the_host() -> None:
    # nothing listens on this loopback port, and the fake connection cannot forward ports
    inv = local_kv_inventory(1)
    conn = FakeConnection("store1").on(r"curl -fsS -m 5 http://127.0.0.1:1/v1/status/leader", stdout='"10.0.0.1:8300"')
    assert kv_store.check_health(lambda: conn, inv, "store1") is None
    conn2 = FakeConnection("store1").on("curl", rc=7)
    assert "no answer from 127.0.0.1:1" in (kv_store.check_health(lambda: conn2, inv, "store1") or "")


# ---- docker_daemon ------------------------------------------------------------------------------------

WANT_DROPIN = (
    docker_daemon.HEADER + "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS "
    "--cluster-store=consul://198.18.0.11:8500 --cluster-advertise=eth0:2376\n"
)
RUNNING_OK = {"cluster_store": STORE, "cluster_advertise": "198.18.0.12:2376"}


@dataclass
class DaemonCase:
    id: str
    facts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    inv: dict[str, Any] = field(default_factory=dict)
    # expected: "noop:<reason part>", "error:<message part>" or the change's description start
    expect: str = ""
    after: str | None = None  # expected new file content (when a file changes)
    notes: tuple[str, ...] = ()
    exclusive: str | None = "docker-restart"


DAEMON_CASES = [
    DaemonCase("fresh dropin, $DOCKER_OPTS kept bare", expect=f"write {DROPIN} and restart Docker",
               after=WANT_DROPIN, notes=("restarts Docker: stops 2 running containers", "rolling restart")),
    DaemonCase("in sync", facts=RUNNING_OK, files={DROPIN: WANT_DROPIN}, expect="noop:Docker runs with cluster store"),
    DaemonCase("file right, restart missed by an earlier run", files={DROPIN: WANT_DROPIN},
               expect="restart Docker: the running daemon uses cluster store (none)"),
    DaemonCase("file right, docker stopped", facts={**RUNNING_OK, "active": False, "state": "inactive"},
               files={DROPIN: WANT_DROPIN}, expect="restart Docker: Docker is not running (inactive)"),
    DaemonCase("hand-edited dropin restored", facts=RUNNING_OK,
               files={DROPIN: WANT_DROPIN.replace("eth0:2376", "eth1:2376")},
               expect=f"update {DROPIN} and restart Docker", after=WANT_DROPIN),
    DaemonCase("our old flags in the unit are stripped",
               facts={"base_execstart": [*BASE, "--cluster-store", "consul://old:8500", "--cluster-advertise=x:1"]},
               expect=f"write {DROPIN}", after=WANT_DROPIN),
    DaemonCase("mirrors and odd tokens", facts={"base_execstart": [*BASE, "--label", "a b", "${EXTRA}"]},
               inv={"docker": {"registry_mirrors": ["https://m.example.com"]}}, expect=f"write {DROPIN}",
               after=WANT_DROPIN.replace("$DOCKER_OPTS ", '$DOCKER_OPTS --label "a b" ${EXTRA} ').replace(
                   ":2376\n", ":2376 --registry-mirror=https://m.example.com\n")),
    DaemonCase("parallel restart", inv={"docker": {"restart": "parallel"}}, expect=f"write {DROPIN}",
               notes=("parallel restart",), exclusive=None),
    DaemonCase("live-restore keeps containers", facts={"live_restore": True}, expect=f"write {DROPIN}",
               notes=("live-restore keeps 2 running containers up",)),
    DaemonCase("advertise interface missing", inv={"docker": {"advertise_interface": "ens9"}}, expect=f"write {DROPIN}",
               notes=("interface ens9 has no address on lab2",)),
    DaemonCase("dropin mode: daemon.json sets the same option", files={DAEMON_JSON: '{"cluster-store": "x"}'},
               expect='error:--cluster-store (flag) / "cluster-store" (daemon.json)'),
    DaemonCase("daemon-json merge keeps other keys in order", inv={"docker": {"config": "daemon-json"}},
               files={DAEMON_JSON: '{"log-driver": "journald", "cluster-advertise": "old:1"}'},
               expect=f"update {DAEMON_JSON} and restart Docker",
               after='{\n  "log-driver": "journald",\n  "cluster-advertise": "eth0:2376",\n'
                     '  "cluster-store": "consul://198.18.0.11:8500"\n}\n'),
    DaemonCase("daemon-json in sync (formatting ignored)", inv={"docker": {"config": "daemon-json"}}, facts=RUNNING_OK,
               files={DAEMON_JSON: '{"cluster-store":"consul://198.18.0.11:8500","cluster-advertise":"eth0:2376"}'},
               expect="noop:Docker runs"),
    DaemonCase("daemon-json: unit flag -H conflicts with hosts key", inv={"docker": {"config": "daemon-json"}},
               files={DAEMON_JSON: '{"hosts": ["unix:///run/docker.sock"]}'},
               expect='error:-H (flag) / "hosts" (daemon.json)'),
    DaemonCase("daemon-json: invalid JSON refused", inv={"docker": {"config": "daemon-json"}},
               files={DAEMON_JSON: '{"a": '}, expect="error:is not valid JSON"),
    DaemonCase("daemon-json removes our old drop-in", inv={"docker": {"config": "daemon-json"}},
               files={DROPIN: WANT_DROPIN}, expect=f"write {DAEMON_JSON} and restart Docker"),
    DaemonCase("unknown unit command line", facts={"base_execstart": None}, expect="error:cannot tell which dockerd"),
    DaemonCase("docker not installed", facts={"installed": False}, expect="error:Docker is not installed"),
]  # fmt: skip


@pytest.mark.parametrize("case", DAEMON_CASES, ids=[c.id for c in DAEMON_CASES])
def test_docker_daemon_plan(case: DaemonCase) -> None:
    f = facts("lab2", files=case.files, **case.facts)
    inv = inventory(**case.inv)
    if case.expect.startswith("error:"):
        with pytest.raises(TaskError) as err:
            plan(docker_daemon.DockerDaemonModule(), f, inv)
        assert case.expect[6:] in str(err.value)
        assert "fix:" in str(err.value)
        return
    p = plan(docker_daemon.DockerDaemonModule(), f, inv)
    if case.expect.startswith("noop:"):
        assert isinstance(p, NoOp) and case.expect[5:] in p.reason, p
        return
    (c,) = changes(p)
    assert c.description.startswith(case.expect), c.description
    if case.after is not None:
        assert c.after == case.after
    for note in case.notes:
        assert any(note in n for n in c.notes), c.notes
    assert c.exclusive == case.exclusive
    assert {(s.mode, s.owner) for s in c.steps if isinstance(s, Put)} == {(0o644, "root:root")}


def test_daemon_json_mode_lists_the_dropin_removal() -> None:
    f = facts("lab2", files={DROPIN: WANT_DROPIN})
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f, inventory(docker={"config": "daemon-json"})))
    assert f"rm -f {DROPIN}" in c.commands


def state_responder(states: list[str]) -> Callable[[str, bytes | None], RunResult]:
    """Answers the `systemctl is-active; docker info` probe with the next scripted state."""

    def respond(_cmd: str, _stdin: bytes | None) -> RunResult:
        return RunResult(0, states.pop(0) if len(states) > 1 else states[0], "")

    return respond


def daemon_conn(restart_rc: int, states: list[str], files: dict[str, bytes] | None = None) -> FakeConnection:
    conn = FakeConnection("lab2", files=files)

    def rm(cmd: str, _stdin: bytes | None) -> RunResult:
        conn.files.pop(DROPIN, None)
        return RunResult(0, "", "")

    def rm_marker(cmd: str, _stdin: bytes | None) -> RunResult:
        conn.files.pop(docker_daemon.PENDING_MARKER, None)
        return RunResult(0, "", "")

    conn.on("^mkdir -p ", rc=0)
    conn.on(f"^rm -f {re.escape(DROPIN)}", respond=rm)
    conn.on(f"^rm -f {re.escape(docker_daemon.PENDING_MARKER)}$", respond=rm_marker)
    conn.on(r"^systemctl daemon-reload && systemctl restart docker", rc=restart_rc, times=1,
            stderr="Job for docker.service failed")  # fmt: skip
    conn.on(r"^systemctl daemon-reload; systemctl reset-failed docker; systemctl restart docker", rc=0)
    conn.on(r"^systemctl is-active docker; timeout 10 docker info", respond=state_responder(states))
    conn.on("^journalctl -u docker", stdout="dockerd: failed to parse cluster-advertise: no interface ens9\n")
    # the store's health, asked through the connection (kv_store.check_via: ssh): a leader is elected
    conn.on(r"curl -fsS -m 5 http://198\.18\.0\.11:8500/v1/status/leader", stdout='"198.18.0.11:8300"')
    return conn


def test_daemon_apply_restarts_and_waits_for_the_store() -> None:
    f = facts("lab2")
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f))
    conn = daemon_conn(0, ["activating\n", f"active\n{STORE}|198.18.0.12:2376\n"])
    apply_change(ctx_for(conn, f), c)
    assert conn.files[DROPIN].decode() == WANT_DROPIN
    # the folder may not exist yet
    folder = "mkdir -p /etc/systemd/system/docker.service.d"
    mkdir = next(i for i, call in enumerate(conn.calls) if call.startswith(folder))
    assert mkdir < conn.calls.index(f"put {DROPIN}")
    assert docker_daemon.PENDING_MARKER not in conn.files  # verified running: no restart owed
    assert not any("journalctl" in call for call in conn.calls)


def test_daemon_rollback_removes_new_file_and_docker_runs_again() -> None:
    f = facts("lab2")
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f, inventory(docker={"advertise_interface": "ens9"})))
    conn = daemon_conn(1, ["active\n|\n"])
    with pytest.raises(TaskError) as err:
        apply_change(ctx_for(conn, f), c)
    msg = str(err.value)
    assert "previous configuration was restored and Docker is running again" in msg
    assert "no interface ens9" in msg and "Job for docker.service failed" in msg
    assert DROPIN not in conn.files  # there was none before
    assert docker_daemon.PENDING_MARKER not in conn.files  # Docker runs what is on disk again
    assert any(call.startswith("systemctl daemon-reload; systemctl reset-failed docker") for call in conn.calls)


def test_daemon_rollback_restores_the_previous_file() -> None:
    old = WANT_DROPIN.replace("eth0", "eth1")
    f = facts("lab2", files={DROPIN: old}, **RUNNING_OK)
    (c,) = changes(plan(docker_daemon.DockerDaemonModule(), f))
    # the restart "works" but Docker never reports the store: after the bounded wait it is rolled back
    conn = daemon_conn(0, ["failed\n"], files={DROPIN: old.encode()})
    with pytest.raises(TaskError, match=r"docker.service is failed[\s\S]*did NOT come back"):
        apply_change(ctx_for(conn, f), c)
    assert conn.files[DROPIN].decode() == old
    assert docker_daemon.PENDING_MARKER in conn.files  # Docker is down: the next run must restart it


# ---- docker_network ---------------------------------------------------------------------------------


def ov(**over: Any) -> NetworkFact:
    base: dict[str, Any] = {"name": "ov_net1", "driver": "overlay", "scope": "global", "subnets": ["198.19.1.0/24"],
                            "gateways": ["198.19.1.1"], "attachable": True,
                            "options": {"com.docker.network.driver.overlay.vxlanid_list": "4097"}}  # fmt: skip
    base.update(over)
    return NetworkFact(**base)


@pytest.mark.parametrize(
    ("networks", "options", "expect"),
    [
        ([], {}, "create network ov_net1 (overlay, 198.19.1.0/24)"),
        ([ov()], {}, "noop:ov_net1 exist with the inventory's settings"),
        # drift that only a destructive change fixes: planned (plan exits 3), carried out only with the flag
        ([ov(subnets=["198.19.9.0/24"])], {}, "flag:recreate network ov_net1: subnet: 198.19.9.0/24 on the host"),
        ([ov(attachable=False)], {}, "flag:recreate network ov_net1: attachable: False on the host, True in"),
        ([ov(subnets=["198.19.9.0/24"])], {"recreate_networks": True}, "recreate network ov_net1: subnet"),
    ],
)
def test_docker_network_plan(networks: list[NetworkFact], options: dict[str, Any], expect: str) -> None:
    f = facts("lab2", networks=networks, cluster_store=STORE)
    p = plan(docker_network.DockerNetworkModule(), f, **options)
    if expect.startswith("noop:"):
        assert isinstance(p, NoOp) and expect[5:] in p.reason
        return
    (c,) = changes(p)
    assert c.description.startswith(expect.removeprefix("flag:"))
    assert c.requires == ("recreate_networks" if expect.startswith(("flag:", "recreate")) else None)


def test_network_create_command_has_every_setting() -> None:
    inv = inventory(networks={"ov_net1": {"subnet": "198.19.1.0/24", "gateway": "198.19.1.254",
                                          "ip_range": "198.19.1.128/25", "options": {"mtu": 1400}}})  # fmt: skip
    (c,) = changes(plan(docker_network.DockerNetworkModule(), facts("lab2", cluster_store=STORE), inv))
    assert c.commands == [
        "docker network create --driver overlay --subnet 198.19.1.0/24 --gateway 198.19.1.254 "
        "--ip-range 198.19.1.128/25 --attachable --opt mtu=1400 ov_net1"
    ]


def test_network_drift_names_containers_on_every_host() -> None:
    drifted = ov(subnets=["198.19.9.0/24"])
    web = ContainerFact(name="web", networks=["ov_net1"], running=True)
    lab2 = facts("lab2", networks=[drifted], cluster_store=STORE)
    lab3 = facts("lab3", networks=[drifted], cluster_store=STORE, containers=[web])
    (c,) = changes(plan(docker_network.DockerNetworkModule(), lab2, all_facts={"lab2": lab2, "lab3": lab3}))
    assert c.notes == ["disconnects: lab3: web"] and c.requires == "recreate_networks"
    assert c.commands[0] == "lab3: docker network disconnect -f ov_net1 web"
    conns = {"lab2": FakeConnection("lab2").on("", rc=0), "lab3": FakeConnection("lab3").on("", rc=0)}
    apply_change(ctx_for(conns["lab2"], lab2, connection_to=lambda h: conns[h]), c)
    assert conns["lab3"].calls == ["docker network disconnect -f ov_net1 web"]
    assert conns["lab2"].calls[0].startswith("docker network rm ov_net1 && docker network create")


def test_network_seen_elsewhere_means_this_docker_lost_the_store() -> None:
    lab2 = facts("lab2", cluster_store=STORE)
    lab3 = facts("lab3", networks=[ov()], cluster_store=STORE)
    with pytest.raises(TaskError, match="exists on lab3 but lab2 does not see it"):
        plan(docker_network.DockerNetworkModule(), lab2, all_facts={"lab2": lab2, "lab3": lab3})


def test_overlay_needs_a_cluster_store() -> None:
    with pytest.raises(TaskError, match="no cluster store"):
        plan(docker_network.DockerNetworkModule(), facts("lab2"))


# ---- overlay_verify ------------------------------------------------------------------------------------


class ProbeHost:
    """A fake docker host answering the probe start/ping/cleanup scripts."""

    def __init__(self, name: str, ip: str, unreachable: set[str] | None = None) -> None:
        self.name, self.ip = name, ip
        self.unreachable = unreachable or set()
        self.conn = FakeConnection(name)
        self.conn.on(r"^sh -s$", respond=self.script)
        self.conn.on(rf"^docker rm -f prov-probe-ov_net1-{name} ", rc=0)
        self.started = False

    def script(self, _cmd: str, stdin: bytes | None) -> RunResult:
        text = (stdin or b"").decode()
        if f"n=prov-probe-ov_net1-{self.name};" in text and "s ov_net1 --ip 198.19.1." in text:
            assert f"--label provisioner.probe={self.name} " in text
            self.started = True
            return RunResult(0, f"@@V@@ ov_net1 ok {self.ip} prov-probe-ov_net1-{self.name}\n", "")
        lines = []
        for m in re.finditer(rf"^p prov-probe-ov_net1-{self.name} (\S+) ov_net1 (\S+) &$", text, re.M):
            ok = m.group(2) not in self.unreachable
            lines.append(f"@@V@@ ov_net1 {m.group(2)} {'ok' if ok else 'FAIL'}")
        return RunResult(0, "\n".join(lines) + "\n", "")


def run_matrix(port: int, unreachable: dict[str, set[str]] | None = None) -> tuple[str, dict[str, ProbeHost]]:
    inv = local_kv_inventory(port)
    ips = {"lab2": "198.19.1.2", "lab3": "198.19.1.3"}
    hosts = {h: ProbeHost(h, ip, (unreachable or {}).get(h)) for h, ip in ips.items()}
    f = facts("lab2", cluster_store=f"consul://127.0.0.1:{port}")
    p = plan(overlay_verify.OverlayVerifyModule(), f, inv, verify=True)
    assert isinstance(p, Check)

    def connection_to(h: str) -> ShellConnection:
        if h == "store1":
            raise AssertionError("the store answers directly; no connection to the kv host needed")
        return hosts[h].conn

    try:
        return p.run(ctx_for(hosts["lab2"].conn, f, inv, connection_to=connection_to)), hosts
    except TaskError as e:
        return "ERROR " + str(e), hosts


def test_verify_all_pairs_ok(store: tuple[int, type[_Store]]) -> None:
    out, hosts = run_matrix(store[0])
    assert out.startswith("all 2 hosts reach each other over ov_net1")
    assert re.search(r"^lab2\s+-\s+ok$", out, re.M) and re.search(r"^lab3\s+ok\s+-$", out, re.M)
    for h in hosts.values():
        assert h.started and any(c.startswith(f"docker rm -f prov-probe-ov_net1-{h.name} ") for c in h.conn.calls)
        assert h.conn.stats.round_trips == 3  # start, ping all, clean up


def test_verify_failure_names_the_pair_and_still_removes_probes(store: tuple[int, type[_Store]]) -> None:
    out, hosts = run_matrix(store[0], unreachable={"lab3": {"lab2"}})
    assert out.startswith("ERROR overlay check failed")
    assert "lab3 -> lab2 (198.19.1.2) over ov_net1: no reply" in out
    assert re.search(r"^lab3\s+FAIL\s+-$", out, re.M)
    assert "UDP 4789" in out and "7946" in out and "MTU" in out and "NAT" in out
    for h in hosts.values():
        assert any(c.startswith(f"docker rm -f prov-probe-ov_net1-{h.name} ") for c in h.conn.calls)


def test_verify_says_the_store_is_down_before_starting_probes() -> None:
    # nothing listens on loopback port 1: the store is down; the kv host's curl fails too
    inv = local_kv_inventory(1)
    kv = FakeConnection("store1").on("curl", rc=7)
    lab2 = ProbeHost("lab2", "198.19.1.2")
    f = facts("lab2")
    p = plan(overlay_verify.OverlayVerifyModule(), f, inv, verify=True)
    assert isinstance(p, Check)
    with pytest.raises(TaskError, match=r"the consul store \(consul://127.0.0.1:1\) is not healthy"):
        p.run(ctx_for(lab2.conn, f, inv, connection_to=lambda h: kv if h == "store1" else lab2.conn))
    assert not lab2.started


def test_verify_unknown_network_is_refused() -> None:
    with pytest.raises(TaskError, match="'nope' is not in the inventory"):
        plan(overlay_verify.OverlayVerifyModule(), facts("lab2"), args={"network": "nope"})


def test_apply_runs_the_ping_matrix_only_when_the_run_changed_something() -> None:
    inv = inventory()
    f = facts("lab2")
    mod = overlay_verify.OverlayVerifyModule()
    args = mod.Args.model_validate({})

    def ctx(changed: int, **options: Any) -> PlanContext:
        return PlanContext(host="lab2", facts=f, inventory=inv, options=options, run_changed=changed)

    skipped = mod.plan(ctx(0), args)
    assert isinstance(skipped, NoOp) and "provisioner verify" in skipped.reason
    assert isinstance(mod.plan(ctx(2), args), Check)
    assert isinstance(mod.plan(ctx(0, verify=True), args), Check)  # `provisioner verify` always runs it
    always = inv.model_copy(update={"verify": inv.verify.model_copy(update={"on_apply": "always"})})
    assert isinstance(mod.plan(PlanContext(host="lab2", facts=f, inventory=always), args), Check)
