"""docker_container, data-driven: (inventory containers, the live containers as `docker inspect` shows them)
-> the changes planned; every drift kind of the issue is a case. The live side is what Docker 20.10 prints
for a container made from a spec (``inspected``), edited the way a hand would (`docker update --restart
no`, `docker network disconnect`, `docker stop`, a tag moved), and read through the real fact sections.

Then: secrets stay out of every rendering and reach the host only in a 0600 file; through the executor,
--prune is optional (apply without it leaves the container and says so, the other containers still
converge), --adopt is required (apply without it refuses); a network recreated on another host marks that
host's facts stale, so the containers task reconnects what the recreation disconnected.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisioner.connection.base import RunResult
from provisioner.connection.fake import FakeConnection, serve_facts
from provisioner.engine import Executor
from provisioner.engine.executor import apply_change
from provisioner.errors import TaskError
from provisioner.facts import ADDRESSES, CONTAINER_CONFIG, MARK, HostFacts, header, parse_facts
from provisioner.inventory import Inventory, load_inventory
from provisioner.modules._docker import LABEL_SPEC
from provisioner.modules.base import Change, NoOp
from provisioner.modules.docker_container import LABEL, DockerContainerModule, Wanted
from provisioner.playbook import load_playbook
from provisioner.steps import Put, Run
from tests.builders import changes, ctx_for, inventory, make_archive, plan

PROBE = "provisioner-lab/probe:latest"
PROBE_ID = "sha256:" + "a" * 64
OTHER_ID = "sha256:" + "b" * 64
ARCHIVE_CONFIG = b'{"architecture":"amd64","config":{"Cmd":["sh"]}}'
ARCHIVE_ID = "sha256:" + hashlib.sha256(ARCHIVE_CONFIG).hexdigest()
SECRET = "hunter2-s3cret"
NETWORKS = {
    "ov_net1": {"driver": "overlay", "subnet": "198.19.1.0/24"},
    "net1": {"driver": "bridge", "subnet": "198.19.2.0/24"},
    "net2": {"driver": "bridge", "subnet": "198.19.3.0/24"},
}
BOX: dict[str, Any] = {
    "host": "lab2",
    "image": PROBE,
    "command": ["sleep", "infinity"],
    "networks": {"net1": {"ipv4_address": "198.19.2.10", "aliases": ["b"]}},
    "env": {"A": "1"},
    "ports": ["32773:80"],
}
MODULE = DockerContainerModule()


def inv_of(containers: dict[str, dict[str, Any]], **over: Any) -> Inventory:
    return inventory(networks=NETWORKS, containers=containers, **over)


def _id(name: str) -> str:
    return (name.encode().hex() * 64)[:64]


def inspected(
    inv: Inventory,
    name: str,
    *,
    image_id: str = PROBE_ID,
    running: bool = True,
    restart: str | None = None,
    networks: dict[str, tuple[str, list[str]]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`docker inspect` of the container Docker 20.10 makes from the inventory's spec of ``name``, with the
    given edits: ``networks`` name -> (requested address, aliases), ``labels`` replacing all its labels."""
    w = Wanted(name, inv.containers[name])
    spec, cid = w.spec, _id(name)
    if networks is None:
        networks = {n: (str(a.ipv4_address or ""), list(a.aliases)) for n, a in w.networks.items()}
    mode: str = spec.network_mode or next(iter(w.networks), "default")
    if spec.network_mode is not None:
        networks = {spec.network_mode: ("", [])}
    policy, _, count = (restart or spec.restart).partition(":")
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in spec.ports:
        bindings.setdefault(f"{p.container_port}/{p.proto}", []).append(
            {"HostIp": p.address or "", "HostPort": str(p.host_port or "")}
        )
    return {
        "Id": cid,
        "Name": f"/{name}",
        "Image": image_id,
        "Args": (spec.command or ["/bin/sh"])[1:],
        "State": {"Running": running, "Status": "running" if running else "exited"},
        "Config": {
            "Image": spec.image,
            "Cmd": spec.command or ["/bin/sh"],
            "Entrypoint": None,
            "Env": [f"{k}={v}" for k, v in spec.env_values().items()] + ["PATH=/bin"],
            "Labels": w.labels() if labels is None else labels,
            "Volumes": {v: {} for v in spec.volumes if ":" not in v} or None,
        },
        "HostConfig": {
            "NetworkMode": mode,
            "RestartPolicy": {"Name": policy, "MaximumRetryCount": int(count or 0)},
            "PortBindings": bindings,
            "Binds": [v for v in spec.volumes if ":" in v] or None,
        },
        "NetworkSettings": {
            "Networks": {
                n: {
                    "IPAMConfig": {"IPv4Address": ip} if ip else None,
                    "Aliases": [*aliases, cid[:12]] if n not in ("bridge", "none", "host") else None,
                    "NetworkID": _id(n),
                    "IPAddress": ip or "10.0.0.9",
                }
                for n, (ip, aliases) in networks.items()
            }
        },
        "Mounts": [],
    }


def sections(containers: list[dict[str, Any]], images: dict[str, str] | None = None) -> dict[str, str]:
    """Bodies of the facts sections a host with these containers and images prints."""
    images = {PROBE: PROBE_ID} if images is None else images
    return {
        "info": json.dumps({"ServerVersion": "20.10.5+dfsg1", "ContainersRunning": len(containers)}),
        "images": "\n".join(f"{ref} {iid}" for ref, iid in images.items()),
        "inspect": json.dumps(containers),
    }


def host_facts(host: str, containers: list[dict[str, Any]], images: dict[str, str] | None = None) -> HostFacts:
    body = "".join(f"\n@@PROV@@ {k}\n{v}\n" for k, v in sections(containers, images).items())
    return parse_facts(host, body, sections=[ADDRESSES, CONTAINER_CONFIG])


Live = Callable[[Inventory, Inventory], list[dict[str, Any]]]


@dataclass
class Case:
    id: str
    declared: dict[str, dict[str, Any]] = field(default_factory=lambda: {"box": BOX})
    # the live containers, from (declared inventory, inventory they were made from)
    live: Live = lambda inv, was: [inspected(was, "box")]
    # the spec the live containers were made from (default: the declared one)
    was: dict[str, dict[str, Any]] | None = None
    images: dict[str, str] | None = None
    host: str = "lab2"
    # each change's description start, in order; or "noop:<part of the reason>"
    expect: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # parts of the notes of the last change
    steps: tuple[str, ...] = ()  # parts of the steps of the last change, in order
    absent: tuple[str, ...] = ()  # not in any step
    requires: str | None = None  # of the last change
    optional: bool = False


def _edit(**over: Any) -> dict[str, Any]:
    return {**BOX, **over}


CASES = [
    # ---- in sync, created, removed by hand ----------------------------------------------------------
    Case("in sync", expect=("noop:box runs as declared",)),
    Case("missing: created on its first network, then started", live=lambda inv, was: [],
         expect=("create container box (provisioner-lab/probe:latest on net1)",),
         steps=("docker create --name box", f"--label {LABEL}=", "--restart unless-stopped", "--env A=1",
                "--publish 32773:80", "--network net1 --ip 198.19.2.10 --network-alias b", PROBE,
                "sleep infinity", "docker start box"), absent=("docker rm",)),
    Case("missing with three networks: the others connected before it starts", live=lambda inv, was: [],
         declared={"box": _edit(networks={"net1": None, "ov_net1": {"ipv4_address": "198.19.1.5"}, "bridge": None})},
         expect=("create container box",),
         steps=("--network net1 provisioner", "docker network connect --ip 198.19.1.5 ov_net1 box",
                "docker network connect bridge box", "docker start box")),
    Case("missing, its image not on the host: pulled first", live=lambda inv, was: [], images={},
         expect=("pull provisioner-lab/probe:latest (for box)", "create container box")),
    Case("network_mode none", live=lambda inv, was: [],
         declared={"nonebox": {"host": "lab2", "image": PROBE, "network_mode": "none"}},
         expect=("create container nonebox (provisioner-lab/probe:latest on network_mode none)",),
         steps=("--network none", "docker start nonebox"), absent=("network connect",)),
    Case("no networks declared: Docker's bridge, in sync",
         declared={"plain": {"host": "lab2", "image": PROBE}}, live=lambda inv, was: [inspected(inv, "plain")],
         expect=("noop:plain runs as declared",)),
    Case("declared on another host: nothing here", host="lab3", live=lambda inv, was: [],
         expect=("noop:no container is declared on lab3",)),
    # ---- drift a recreation fixes, named field by field -----------------------------------------------
    Case("image changed in the inventory", declared={"box": _edit(image="provisioner-lab/probe:v2")},
         was={"box": BOX}, images={PROBE: PROBE_ID, "provisioner-lab/probe:v2": PROBE_ID},
         expect=("recreate container box (image differs)",),
         notes=("image: provisioner-lab/probe:latest on the host, provisioner-lab/probe:v2 declared",
                "gets a new id"),
         steps=("docker rm -f box", "docker create --name box", "provisioner-lab/probe:v2", "docker start box")),
    Case("its tag now points at another image id", images={PROBE: OTHER_ID},
         expect=("recreate container box (image differs)",),
         notes=("image: the container runs aaaaaaaaaaaa, provisioner-lab/probe:latest is bbbbbbbbbbbb on the host",)),
    Case("command changed", declared={"box": _edit(command=["sleep", "1"])}, was={"box": BOX},
         expect=("recreate container box (command differs)",),
         notes=('command: ["sleep", "infinity"] on the host, ["sleep", "1"] declared',)),
    Case("command back to the image's default: only the fields label can tell",
         declared={"box": {k: v for k, v in BOX.items() if k != "command"}}, was={"box": BOX},
         expect=("recreate container box (command differs)",),
         notes=("command: changed in the inventory since the container was created; declared: (none)",)),
    Case("env value changed", declared={"box": _edit(env={"A": "2"})}, was={"box": BOX},
         expect=("recreate container box (env differs)",), notes=("env: A differs on the host",)),
    Case("env var removed: only the fields label can tell", declared={"box": _edit(env={})}, was={"box": BOX},
         expect=("recreate container box (env differs)",),
         notes=("env: changed in the inventory since the container was created",)),
    Case("ports changed", declared={"box": _edit(ports=["127.0.0.1:8080:80"])}, was={"box": BOX},
         expect=("recreate container box (ports differ)",),
         notes=('ports: ["*:32773:80/tcp"] on the host, ["127.0.0.1:8080:80/tcp"] declared',)),
    Case("volumes in sync", declared={"box": _edit(volumes=["/srv:/data:ro", "/cache"])},
         expect=("noop:box runs as declared",)),
    Case("volume added", declared={"box": _edit(volumes=["/srv:/data:ro"])}, was={"box": BOX},
         expect=("recreate container box (volumes differ)",), steps=("--volume /srv:/data:ro",)),
    Case("label changed", declared={"box": _edit(labels={"tier": "db"})}, was={"box": _edit(labels={"tier": "web"})},
         expect=("recreate container box (labels differ)",), notes=("labels: tier differs on the host",)),
    Case("network_mode host declared, the container is on networks",
         declared={"box": {**{k: v for k, v in BOX.items() if k not in ("networks", "ports")}, "network_mode": "host"}},
         was={"box": BOX}, expect=("recreate container box (ports, network_mode differ)",),
         notes=("network_mode: (none) on the host, host declared",), steps=("--network host",)),
    Case("archive holds another image than the container runs: loaded, then recreated",
         declared={"box": _edit(image_archive="ARCHIVE")}, images={PROBE: PROBE_ID},
         expect=("load provisioner-lab/probe:latest from probe.tar", "recreate container box (image differs)"),
         notes=("(in probe.tar)",)),
    Case("two containers of one ref: loaded from the archive one of them names, never pulled",
         live=lambda inv, was: [], images={},
         declared={"box": BOX, "box2": _edit(networks=["net2"], ports=[], image_archive="ARCHIVE")},
         expect=("load provisioner-lab/probe:latest from probe.tar", "create container box", "create container box2")),
    Case("the tag of an archive's image moved by hand: tagged back, the container kept",
         declared={"box": _edit(image_archive="ARCHIVE")},
         live=lambda inv, was: [inspected(was, "box", image_id=ARCHIVE_ID)],
         images={PROBE: OTHER_ID, "other:1": ARCHIVE_ID}, expect=("tag 4123d45220ba as provisioner-lab/probe:latest",)),
    # ---- drift fixed in place: the container keeps its id ---------------------------------------------
    Case("restart policy changed by hand (docker update --restart no)",
         live=lambda inv, was: [inspected(was, "box", restart="no")],
         expect=("update container box: restart policy no -> unless-stopped",),
         steps=("docker update --restart unless-stopped box",), absent=("docker rm", "docker create")),
    Case("restart policy changed in the inventory", declared={"box": _edit(restart="on-failure:3")}, was={"box": BOX},
         expect=("update container box: restart policy unless-stopped -> on-failure:3",),
         steps=("docker update --restart on-failure:3 box",), absent=("docker rm",)),
    Case("network disconnected by hand", live=lambda inv, was: [inspected(was, "box", networks={})],
         expect=("update container box: connect to net1",),
         steps=("docker network connect --ip 198.19.2.10 --alias b net1 box",), absent=("docker rm",)),
    Case("the tutorial's step: box connected to bridge too, without recreation",
         declared={"box": _edit(networks={"net1": {"ipv4_address": "198.19.2.10", "aliases": ["b"]}, "bridge": None})},
         was={"box": BOX}, expect=("update container box: connect to bridge",),
         steps=("docker network connect bridge box",), notes=("keeps its id",), absent=("docker rm", "docker create")),
    Case("a network removed from the inventory: disconnected",
         declared={"box": BOX}, was={"box": _edit(networks={"net1": {"ipv4_address": "198.19.2.10",
                                                                      "aliases": ["b"]}, "net2": None})},
         expect=("update container box: disconnect from net2",), steps=("docker network disconnect net2 box",)),
    Case("a network connected by hand: disconnected",
         live=lambda inv, was: [inspected(was, "box", networks={"net1": ("198.19.2.10", ["b"]), "net2": ("", [])})],
         expect=("update container box: disconnect from net2",)),
    Case("address changed on a network: reconnected",
         declared={"box": _edit(networks={"net1": {"ipv4_address": "198.19.2.11", "aliases": ["b"]}})},
         was={"box": BOX}, expect=("update container box: reconnect to net1 (address 198.19.2.10 -> 198.19.2.11)",),
         steps=("docker network disconnect net1 box", "docker network connect --ip 198.19.2.11 --alias b net1 box")),
    Case("alias removed: reconnected", declared={"box": _edit(networks={"net1": {"ipv4_address": "198.19.2.10"}})},
         was={"box": BOX}, expect=('update container box: reconnect to net1 (aliases ["b"] -> (none))',)),
    Case("stopped by hand: started", live=lambda inv, was: [inspected(was, "box", running=False)],
         expect=("update container box: start it (it is exited)",), steps=("docker start box",),
         absent=("docker rm",)),
    # ---- absent, undeclared, unmanaged --------------------------------------------------------------
    Case("state absent: removed", declared={"box": _edit(state="absent")}, was={"box": BOX},
         expect=("remove container box (state: absent)",), steps=("docker rm -f box",)),
    Case("state absent and gone", declared={"box": _edit(state="absent")}, live=lambda inv, was: [],
         expect=("noop:box absent as declared",)),
    Case("state absent, not ours: only with --adopt", declared={"box": _edit(state="absent")}, was={"box": BOX},
         live=lambda inv, was: [inspected(was, "box", labels={})],
         expect=("remove container box (state: absent), which provisioner did not create",), requires="adopt"),
    Case("a managed container no longer declared: drift, removed with --prune",
         declared={"box": BOX}, was={"box": BOX, "old": _edit(networks=["net2"], ports=[])},
         live=lambda inv, was: [inspected(was, "box"), inspected(was, "old")],
         expect=("remove undeclared container old (provisioner created it; no longer in the inventory)",),
         steps=("docker rm -f old",), requires="prune", optional=True),
    Case("a managed container declared on another host now", host="lab2",
         declared={"box": _edit(host="lab3")}, was={"box": BOX},
         expect=("remove undeclared container box (provisioner created it; declared on lab3 now)",),
         requires="prune", optional=True),
    Case("an unmanaged container of a declared name: replaced only with --adopt",
         live=lambda inv, was: [inspected(was, "box", labels={"maintainer": "someone"})],
         expect=("replace container box: it exists (provisioner-lab/probe:latest, running) but provisioner did "
                 "not create it",),
         steps=("docker rm -f box", "docker create --name box", "docker start box"), requires="adopt"),
    Case("unmanaged containers of other names are not ours to judge",
         was={"box": BOX, "theirs": _edit(ports=[], networks=["net2"])},
         live=lambda inv, was: [inspected(was, "box"), inspected(was, "theirs", labels={})],
         expect=("noop:box runs as declared",)),
    Case("the store's container (kv_store's labels) is not a managed workload", host="lab1", declared={},
         was={"consul": {"host": "lab1", "image": PROBE, "network_mode": "host"}},
         live=lambda inv, was: [inspected(was, "consul", labels={LABEL_SPEC: "abc"})],
         expect=("noop:no container is declared on lab1",)),
]  # fmt: skip


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "probe.tar"
    assert make_archive(path, config=ARCHIVE_CONFIG) == ARCHIVE_ID
    return path


def _with_archive(containers: dict[str, dict[str, Any]], archive: Path) -> dict[str, dict[str, Any]]:
    return {n: {**c, "image_archive": str(archive)} if c.get("image_archive") else c for n, c in containers.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_docker_container_plan(case: Case, archive: Path) -> None:
    inv = inv_of(_with_archive(case.declared, archive))
    was = inv_of(_with_archive(case.was, archive)) if case.was is not None else inv
    f = host_facts(case.host, case.live(inv, was), case.images)
    p = plan(MODULE, f, inv)
    if case.expect[0].startswith("noop:"):
        assert isinstance(p, NoOp) and case.expect[0][5:] in p.reason, p
        return
    got = changes(p)
    assert len(got) == len(case.expect), [c.description for c in got]
    for c, want in zip(got, case.expect, strict=True):
        assert c.description.startswith(want), c.description
    last = got[-1]
    for note in case.notes:
        assert any(note in n for n in last.notes), last.notes
    text = "\n".join(last.commands)
    pos = 0
    for part in case.steps:
        found = text.find(part, pos)
        assert found >= 0, f"{part!r} not in (or out of order in)\n{text}"
        pos = found
    for part in case.absent:
        assert part not in text, text
    assert last.requires == case.requires and last.optional == case.optional


def test_a_fresh_apply_leaves_nothing_to_do() -> None:
    """What the create steps make (as Docker shows it) is judged in sync: no change on the next run."""
    declared = {
        "box": _edit(networks={"net1": {"ipv4_address": "198.19.2.10", "aliases": ["b", "c"]}, "ov_net1": None,
                               "bridge": None}, volumes=["/srv:/data", "/cache"], labels={"tier": "web"},
                     restart="on-failure:5", env={"A": "1", "B": "x y"}),
        "hostbox": {"host": "lab2", "image": PROBE, "network_mode": "host"},
    }  # fmt: skip
    inv = inv_of(declared)
    f = host_facts("lab2", [inspected(inv, "box"), inspected(inv, "hostbox")])
    p = plan(MODULE, f, inv)
    assert isinstance(p, NoOp) and p.reason == "box, hostbox run as declared"


# ---- secrets ---------------------------------------------------------------------------------------


@pytest.fixture()
def secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("H14E_DB_PASSWORD", SECRET)
    yield


def test_secret_env_reaches_docker_in_a_0600_file_and_no_printed_step(
    secret_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = inv_of({"box": _edit(env={"A": "1", "PW": {"from_env": "H14E_DB_PASSWORD"}})})
    (c,) = changes(plan(MODULE, host_facts("lab2", []), inv))
    assert c.secrets == (SECRET,)
    rendered = [c.description, *c.commands, *c.notes, *(s.render() for s in c.rollback)]
    assert not any(SECRET in r for r in rendered), rendered
    (put,) = [s for s in c.steps if isinstance(s, Put)]
    assert put.mode == 0o600 and put.data == f"PW={SECRET}\n".encode()
    assert any(f"--env-file {put.path}" in cmd for cmd in c.commands)
    assert any(cmd == f"rm -f {put.path}" for cmd in c.commands)  # gone once the container exists
    assert "--env A=1" in c.commands[1] and "PW" not in c.commands[1].split("--env-file")[0]
    # applied with the trace on: the secret is in no traced line, only in the file the host received
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("PROVISIONER_TRACE", str(trace))
    conn = FakeConnection("lab2").on("", rc=0)
    apply_change(ctx_for(conn, host_facts("lab2", []), inv), c)
    assert SECRET not in trace.read_text()
    assert conn.files[put.path] == put.data and conn.modes[put.path] == 0o600


def test_a_changed_secret_is_drift_without_showing_it(secret_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = inv_of({"box": _edit(env={"PW": {"from_env": "H14E_DB_PASSWORD"}})})
    live = inspected(inv, "box")
    assert plan(MODULE, host_facts("lab2", [live]), inv) == NoOp("box runs as declared")
    monkeypatch.setenv("H14E_DB_PASSWORD", "another-one")
    changed = inv_of({"box": _edit(env={"PW": {"from_env": "H14E_DB_PASSWORD"}})})
    (c,) = changes(plan(MODULE, host_facts("lab2", [live]), changed))
    assert c.description == "recreate container box (env differs)"
    assert c.notes[0] == "env: PW differs on the host (or are not set there)"
    # the label a plan prints records that PW is a secret, never its value: the same label either way
    assert Wanted("box", changed.containers["box"]).labels() == Wanted("box", inv.containers["box"]).labels()


def test_facts_hold_no_env_value(secret_env: None) -> None:
    inv = inv_of({"box": _edit(env={"PW": {"from_env": "H14E_DB_PASSWORD"}})})
    f = host_facts("lab2", [inspected(inv, "box")])
    assert SECRET not in f.model_dump_json()
    box = f.docker.container("box")
    assert box is not None and set(box.env_digests) == {"PW", "PATH"}


# ---- preflight --------------------------------------------------------------------------------------


def test_preflight_refuses_aliases_on_the_default_bridge_and_multiline_secrets(tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    pem.write_text("-----BEGIN-----\nabc\n-----END-----\n")
    inv = inv_of({
        "box": _edit(networks={"bridge": {"aliases": ["web"]}}),
        "db": _edit(networks=["net2"], ports=[], env={"KEY": {"from_file": str(pem)}}),
    })  # fmt: skip
    from provisioner.modules.base import PlanContext

    f = host_facts("lab2", [])
    reasons = MODULE.preflight(PlanContext("lab2", f, inv), MODULE.Args())
    assert len(reasons) == 2
    assert "container box: Docker's default bridge has no network-scoped aliases" in reasons[0]
    assert "container db: env KEY holds a line break" in reasons[1] and "abc" not in reasons[1]


def test_docker_not_running() -> None:
    f = HostFacts(host="lab2")
    with pytest.raises(TaskError, match="Docker is not running") as err:
        plan(MODULE, f, inv_of({"box": BOX}))
    assert "fix:" in str(err.value)
    assert isinstance(plan(MODULE, HostFacts(host="lab3"), inv_of({"box": BOX})), NoOp)


def test_one_container_by_name_leaves_the_others_alone() -> None:
    inv = inv_of({"box": BOX, "box2": _edit(networks=["net2"], ports=[])})
    f = host_facts("lab2", [])
    (c,) = changes(plan(MODULE, f, inv, {"name": "box2"}))
    assert c.description.startswith("create container box2")
    with pytest.raises(TaskError, match="'nope' is not in the inventory"):
        plan(MODULE, f, inv, {"name": "nope"})


# ---- through the executor: --prune is optional, --adopt required ---------------------------------------


class Host:
    """A fake docker host whose facts show whatever ``containers`` holds when they are gathered."""

    def __init__(self, name: str, containers: list[dict[str, Any]]) -> None:
        self.name = name
        self.containers = containers
        self.conn = FakeConnection(name)

    def connect(self) -> FakeConnection:
        def facts(_cmd: str, stdin: bytes | None) -> RunResult:
            head = header((stdin or b"").decode())
            body = {"os": "ID=debian", "user": "0\nroot", "init": "systemd", **sections(self.containers)}
            return RunResult(0, "".join(f"\n{MARK} {n}\n{body[n]}\n" for n in head["sections"] if n in body), "")

        self.conn = FakeConnection(self.name).on(r"^sh -s$", respond=facts).on("", rc=0)
        return self.conn


def run(tmp_path: Path, inv_text: str, hosts: dict[str, Host], **options: Any) -> Any:
    inv_path = tmp_path / "inventory.yml"
    inv_path.write_text(inv_text)
    inv = load_inventory(inv_path)
    pb_path = tmp_path / "pb.yml"
    pb_path.write_text("- name: containers\n  hosts: all\n  tasks:\n    - docker_container: {}\n")
    pb = load_playbook(pb_path, inv)
    ex = Executor(inv, lambda h: hosts[h].connect(), check=False, options=options)
    return ex.run(pb)


INV = """
connection: {{private_key: {key}, known_hosts: {kh}, host_key_policy: accept-new}}
hosts:
  lab2: {{address: 198.18.0.12, groups: [docker]}}
networks:
  net2: {{driver: bridge, subnet: 198.19.3.0/24}}
containers:
  box: {{host: lab2, image: provisioner-lab/probe:latest, networks: [net2]}}
"""


def _inv_text(tmp_path: Path, extra: str = "") -> str:
    key = tmp_path / "key"
    key.write_text("k\n")
    return INV.format(key=key, kh=tmp_path / "kh") + extra


def test_apply_without_prune_converges_the_rest_and_says_what_it_left(tmp_path: Path) -> None:
    text = _inv_text(tmp_path)
    old_inv = load_inventory_text(tmp_path, text + "  old: {host: lab2, image: provisioner-lab/probe:latest}\n")
    host = Host("lab2", [inspected(old_inv, "old")])
    report = run(tmp_path, text, {"lab2": host})
    (r,) = report.hosts["lab2"].results
    assert r.status == "changed" and report.ok
    assert [c.description for c in r.changes] == ["create container box (provisioner-lab/probe:latest on net2)"]
    assert "left as is, since this needs --prune" in r.message and "remove undeclared container old" in r.message
    assert not any("docker rm -f old" in c for c in host.conn.calls)
    # box exists now: only the leftover remains, reported on an ok task; --prune removes it
    host.containers.append(inspected(old_inv, "box"))
    report = run(tmp_path, text, {"lab2": host})
    (r,) = report.hosts["lab2"].results
    assert r.status == "ok" and report.ok and report.changed == 0 and r.report
    assert "remove undeclared container old" in r.message
    report = run(tmp_path, text, {"lab2": host}, prune=True)
    (r,) = report.hosts["lab2"].results
    assert r.status == "changed" and "docker rm -f old" in host.conn.calls


def test_apply_without_adopt_refuses_an_unmanaged_container_of_a_declared_name(tmp_path: Path) -> None:
    text = _inv_text(tmp_path)
    inv = load_inventory_text(tmp_path, text)
    host = Host("lab2", [inspected(inv, "box", labels={})])
    report = run(tmp_path, text, {"lab2": host})
    (r,) = report.hosts["lab2"].results
    assert r.status == "failed" and not report.ok
    assert "not applied, since this needs --adopt" in r.message and "fix: pass --adopt" in r.message
    assert not any(c.startswith("docker rm") for c in host.conn.calls)
    report = run(tmp_path, text, {"lab2": host}, adopt=True)
    (r,) = report.hosts["lab2"].results
    assert r.status == "changed" and "docker rm -f box" in host.conn.calls


def load_inventory_text(tmp_path: Path, text: str) -> Inventory:
    p = tmp_path / "other.yml"
    p.write_text(text)
    return load_inventory(p)


def test_a_step_on_another_host_makes_that_hosts_facts_stale(tmp_path: Path) -> None:
    """A network recreated on the first docker host disconnects containers on the others (a step run over
    their connection): their facts are gathered again before the next task, so the containers task sees
    the container off its network and connects it back, in the same run."""
    from provisioner.modules.base import Module, ModuleArgs, PlanContext, register

    gathered: list[str] = []

    class _Args(ModuleArgs):
        pass

    @register
    class _Remote(Module[_Args]):
        name = "test_remote_step"
        Args = _Args

        def plan(self, ctx: PlanContext, args: _Args) -> list[Change]:
            return [Change("disconnect box on lab3", steps=[Run("docker network disconnect -f net2 box", host="lab3")])]

    key = tmp_path / "key"
    key.write_text("k\n")
    inv_path = tmp_path / "inventory.yml"
    inv_path.write_text(
        f"connection: {{private_key: {key}, known_hosts: {tmp_path / 'kh'}, host_key_policy: accept-new}}\n"
        "hosts:\n  lab2: {address: 198.18.0.12}\n  lab3: {address: 198.18.0.13}\n"
    )
    inv = load_inventory(inv_path)
    pb_path = tmp_path / "pb.yml"
    pb_path.write_text(
        "- name: one\n  hosts: lab2\n  tasks:\n    - test_remote_step: {}\n"
        "- name: two\n  hosts: lab3\n  tasks:\n    - command: {cmd: 'true', creates: /nothing}\n"
    )
    conns: dict[str, FakeConnection] = {}

    def connect(h: str) -> FakeConnection:
        conn = serve_facts(FakeConnection(h))
        conn.on("", rc=0)
        original = conn._exec

        def counted(cmd: str, stdin: Any, timeout: float | None) -> tuple[int, bytes, bytes]:
            if cmd == "sh -s":
                gathered.append(h)
            return original(cmd, stdin, timeout)

        conn._exec = counted  # type: ignore[method-assign]
        conns[h] = conn
        return conn

    try:
        report = Executor(inv, connect, check=False).run(load_playbook(pb_path, inv))
    finally:
        from provisioner.modules import base

        base._REGISTRY.pop("test_remote_step", None)
    assert report.ok, report.to_json()
    assert "docker network disconnect -f net2 box" in conns["lab3"].calls
    assert gathered.count("lab3") == 2  # gathered at the start, and again after lab2's step changed it


def test_env_file_paths_are_per_container() -> None:
    from provisioner.modules.docker_container import env_file

    assert env_file("box") != env_file("box2") and env_file("box").startswith("/run/")
    assert os.path.basename(env_file("box")) == "provisioner-container-box.env"


# ---- the container_config section on what real engines print ----------------------------------------


@pytest.mark.parametrize("engine", ["docker-20.10-bullseye.out", "docker-26-trixie.out", "docker-28-forky.out"])
def test_container_config_section_on_captured_engines(engine: str) -> None:
    text = (Path(__file__).parent / "data" / "facts" / engine).read_text()
    d = parse_facts("lab", text, sections=[CONTAINER_CONFIG]).docker
    web, stopped = d.container("web"), d.container("stopped")
    assert web is not None and stopped is not None
    assert web.cmd == ["sleep", "3600"] and web.entrypoint == [] and web.network_mode == "h13fnet"
    assert set(web.env_digests) == {"PATH"} and "/bin" not in web.env_digests["PATH"]
    assert (web.restart_policy, web.restart_max_retries) == ("no", 0)
    got = {(p.host_ip, p.host_port, p.container_port, p.proto) for p in web.port_bindings}
    assert got == {("127.0.0.1", 5353, 53, "udp"), ("", 8080, 80, "tcp")}  # as requested, on every engine
    assert [(p.host_port, p.container_port) for p in stopped.port_bindings] == [(9090, 90)]
    assert web.binds == [] and web.volumes == [] and web.mounts == []
    # not asked for: left empty
    plain = parse_facts("lab", text).docker.container("web")
    assert plain is not None and plain.cmd == [] and plain.env_digests == {}
