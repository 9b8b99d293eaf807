"""Builders shared by the unit tests: an inventory, a host's facts, a plan and an apply context.

One place, so a module's test file holds its cases as data and nothing else. ``inventory(**over)``
merges each given section into a three-host lab inventory (lab1: the store, lab2 and lab3: docker);
``facts(host, **docker)`` is a host whose Docker runs, with the given DockerFacts fields.
"""

from __future__ import annotations

import hashlib
import hashlib as _hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from provisioner.connection.fake import FakeConnection
from provisioner.facts import DockerFacts, FileFact, HostFacts, Interface
from provisioner.inventory import Inventory
from provisioner.modules.base import ApplyContext, Change, Module, Plan, PlanContext

DROPIN = "/etc/systemd/system/docker.service.d/10-machine.conf"
DAEMON_JSON = "/etc/docker/daemon.json"
BASE = ["/usr/sbin/dockerd", "-H", "fd://", "$DOCKER_OPTS"]
CONSUL_ID = "sha256:" + "c" * 64
STORE = "consul://198.18.0.11:8500"
ADDR = {"lab1": "198.18.0.11", "lab2": "198.18.0.12", "lab3": "198.18.0.13"}


def inventory(**over: Any) -> Inventory:
    """The lab inventory; a section given as a dict is merged into the default one; ``networks`` and
    anything not a dict (e.g. ``kv_store=None`` to drop the store) replace it."""
    doc: dict[str, Any] = {
        "hosts": {
            "lab1": {"address": ADDR["lab1"], "groups": ["kv"]},
            "lab2": {"address": ADDR["lab2"], "groups": ["docker"]},
            "lab3": {"address": ADDR["lab3"], "groups": ["docker"]},
        },
        # the store is checked through the (fake) host connection: unit tests never open a socket off loopback
        "kv_store": {"hosts": ["lab1"], "image": "provisioner-lab/consul:1.8.7", "check_via": "ssh"},
        "networks": {"ov_net1": {"driver": "overlay", "subnet": "198.19.1.0/24"}},
        "verify": {"image": "provisioner-lab/probe:latest", "retries": 1, "ping_count": 1},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict) and key != "networks":
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return Inventory.model_validate({k: v for k, v in doc.items() if v is not None})


def facts(
    host: str = "lab2",
    *,
    files: dict[str, str] | None = None,
    ip: str | None = None,
    addresses: list[str] | None = None,
    init: str = "systemd",
    probes: dict[str, int] | None = None,
    **docker: Any,
) -> HostFacts:
    """A host whose Docker runs; ``docker`` sets DockerFacts fields, ``addresses`` eth0's (default: the
    host's lab address, or ``ip``)."""
    addr = ip or ADDR.get(host, "198.18.0.99")
    addresses = [addr] if addresses is None else addresses
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
        init=init,
        probes=dict(probes or {}),
        interfaces={"eth0": Interface(name="eth0", up=True, addresses=addresses, cidrs=[f"{a}/24" for a in addresses])},
        files={
            p: FileFact(exists=True, content=c, sha256=hashlib.sha256(c.encode()).hexdigest())
            for p, c in (files or {}).items()
        },
        docker=DockerFacts(**d),
    )


def plan(
    mod: Module[Any],
    f: HostFacts,
    inv: Inventory | None = None,
    args: dict[str, Any] | None = None,
    all_facts: dict[str, HostFacts] | None = None,
    **options: Any,
) -> Plan:
    inv = inv or inventory()
    ctx = PlanContext(host=f.host, facts=f, inventory=inv, all_facts=all_facts or {f.host: f}, options=options)
    return mod.plan(ctx, mod.Args.model_validate(args or {}))


def changes(p: Plan) -> list[Change]:
    assert isinstance(p, list), f"expected changes, got {p!r}"
    return p


def ctx_for(conn: FakeConnection, f: HostFacts, inv: Inventory | None = None, **kw: Any) -> ApplyContext:
    return ApplyContext(host=f.host, conn=conn, facts=f, inventory=inv or inventory(), **kw)


def make_archive(path: Path, config: bytes = b'{"architecture":"amd64","config":{}}') -> str:
    cfg_name = _hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["provisioner-lab/probe:latest"], "Layers": []}])
    with tarfile.open(path, "w") as tar:
        for name, data in ((cfg_name, config), ("manifest.json", manifest.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return "sha256:" + _hashlib.sha256(config).hexdigest()


class FakeStore(BaseHTTPRequestHandler):
    """A Consul that answers /v1/status/leader on loopback (a real HTTP server, for the health waits)."""

    leader = '"127.0.0.1:8300"'

    def do_GET(self) -> None:
        body = self.leader.encode() if self.path == "/v1/status/leader" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def serve_fake_store() -> Iterator[tuple[int, type[FakeStore]]]:
    """(port, handler class) of a FakeStore on loopback while the generator runs."""
    handler = type("Store", (FakeStore,), {})
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
