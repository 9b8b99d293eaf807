"""For every module: apply runs exactly the steps plan printed, and sends nothing a step does not show.

Each case plans a change from facts (the shared builders), applies it on the scripted fake connection
with the trace on, and compares: the steps apply started, in order, are the change's printed steps, and
every command and put the connection received was sent inside a step whose printed text contains it.
The real-lab version of this test is tests/e2e/test_plan_equals_apply.py.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provisioner.connection.fake import FakeConnection
from provisioner.engine.executor import apply_change
from provisioner.facts import ContainerFact, HostFacts, NetworkFact
from provisioner.inventory import Inventory
from provisioner.modules import (
    command,
    docker_container,
    docker_daemon,
    docker_image,
    docker_network,
    file,
    kv_store,
    swarm,
)
from provisioner.modules.base import Change, Module
from tests.builders import ADDR, DROPIN, STORE, changes, ctx_for, facts, inventory, plan

LEADER = r"curl -fsS -m 5 http://198\.18\.0\.11:8500/v1/status/leader"


def probe_archive(path: Path) -> Path:
    config = b'{"architecture":"amd64","config":{}}'
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["provisioner-lab/probe:latest"], "Layers": []}])
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", manifest.encode()), ("c.json", config)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


Case = tuple[str, Module[Any], dict[str, Any], Callable[[Path], tuple[Inventory, HostFacts, dict[str, HostFacts]]]]


def _lab(inv: Inventory, f: HostFacts) -> tuple[Inventory, HostFacts, dict[str, HostFacts]]:
    return inv, f, {f.host: f}


def _containers(t: Path) -> tuple[Inventory, HostFacts, dict[str, HostFacts]]:
    """A container to create from an archive with a secret env value (env file put, create, connect, start),
    one whose restart policy was changed by hand, and a managed one no longer declared (removed)."""
    (t / "pw").write_text("s3cret-pw\n")
    box = {"host": "lab2", "image": "provisioner-lab/probe:latest", "image_archive": str(probe_archive(t / "p.tar")),
           "env": {"PW": {"from_file": str(t / "pw")}}, "networks": ["net1", "bridge"]}
    inv = inventory(networks={"net1": {"driver": "bridge", "subnet": "198.19.2.0/24"}},
                    containers={"box": box, "web": {"host": "lab2", "image": "provisioner-lab/probe:latest"}})
    web = docker_container.Wanted("web", inv.containers["web"])
    live = [ContainerFact(name="web", image=web.spec.image, running=True, labels=web.labels(), networks=["bridge"],
                          restart_policy="no", cmd=[], network_mode="bridge"),
            ContainerFact(name="old", labels={docker_container.LABEL: "x"})]
    return _lab(inv, facts("lab2", containers=live))


CASES: list[Case] = [
    ("file", file.FileModule(), {"path": "/etc/motd", "content": "hi\n", "mode": "0640"},
     lambda _t: _lab(inventory(), facts())),
    ("command", command.CommandModule(), {"cmd": "touch /var/tmp/x", "creates": "/var/tmp/x"},
     lambda _t: _lab(inventory(), facts())),
    ("docker_image", docker_image.DockerImageModule(), {"from_inventory": "verify"},
     lambda t: _lab(inventory(verify={"image_archive": str(probe_archive(t / "probe.tar"))}), facts())),
    ("kv_store", kv_store.KVStoreModule(), {},
     lambda _t: _lab(inventory(), facts("lab1", containers=[ContainerFact(name="consul", labels={})]))),
    ("docker_daemon", docker_daemon.DockerDaemonModule(), {}, lambda _t: _lab(inventory(), facts("lab2"))),
    ("docker_network", docker_network.DockerNetworkModule(), {},
     lambda _t: _lab(inventory(), facts("lab2", cluster_store=STORE, networks=[
         NetworkFact(name="ov_net1", driver="overlay", scope="global", subnets=["198.19.9.0/24"], attachable=True)]))),
    # a local macvlan with a shim: its slice, then the shim's unit written (Put) and started
    ("docker_network_macvlan", docker_network.DockerNetworkModule(), {},
     lambda _t: (inventory(kv_store=None, networks={"macnet": {
         "driver": "macvlan", "subnet": "198.18.86.0/24", "parent": "eth0", "shim": True}}), facts("lab2"),
         {"lab2": facts("lab2"), "lab3": facts("lab3")})),
    ("docker_container", docker_container.DockerContainerModule(), {}, _containers),
    ("swarm", swarm.SwarmModule(), {},
     lambda _t: (inventory(docker={"overlay_mode": "swarm"}), facts("lab3"), {
         "lab3": facts("lab3"),
         "lab2": facts("lab2", swarm_state="active", swarm_manager=True, swarm_cluster_id="c1", swarm_node_id="m1"),
     })),
]  # fmt: skip


def scripted(host: str) -> FakeConnection:
    """A host that answers every command the modules send, the way a healthy host would."""
    conn = FakeConnection(host)
    conn.on(LEADER, stdout='"198.18.0.11:8300"')
    conn.on(r"^systemctl is-active docker; timeout 10 docker info",
            stdout=f"active\n{STORE}|{ADDR.get(host, '')}:2376\n")  # fmt: skip
    conn.on("join-token -q worker", stdout="SWMTKN-1-sekret\n")
    conn.on("", rc=0)
    return conn


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_apply_runs_what_plan_printed(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, module, args, build = case
    inv, f, all_facts = build(tmp_path)
    planned: list[Change] = changes(
        plan(module, f, inv, args, all_facts={**all_facts, f.host: f}, recreate_networks=True)
    )
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("PROVISIONER_TRACE", str(trace))
    conns = {h: scripted(h) for h in {*all_facts, f.host, "lab1"}}
    ctx = ctx_for(conns[f.host], f, inv, connection_to=lambda h: conns[h], all_facts=all_facts)
    for change in planned:
        apply_change(ctx, change)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    ran = [e["text"] for e in events if e["kind"] == "step"]
    assert ran == [s for c in planned for s in c.commands], f"{name}: apply ran other steps than plan printed"
    sent = [e for e in events if e["kind"] != "step"]
    assert sent, f"{name}: nothing was sent"
    for e in sent:
        assert e["step"] is not None and e["text"] in e["step"], f"{name}: {e['text']!r} not shown by {e['step']!r}"
    assert "SWMTKN-1-sekret" not in trace.read_text()
    # and every command a connection received is one the trace saw (nothing bypasses the connection)
    received = [c for conn in conns.values() for c in conn.calls if not c.startswith(("put ", "get "))]
    assert len(received) == sum(1 for e in sent if e["kind"] == "cmd"), (received, sent)


def test_a_command_a_step_does_not_show_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioner.steps import Call

    sneaky = Change("sneaky", steps=[Call("wait for nothing", lambda ctx, _s: ctx.conn.run("rm -rf /srv/data"))])
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("PROVISIONER_TRACE", str(trace))
    conn = scripted("lab2")
    apply_change(ctx_for(conn, facts("lab2")), sneaky)
    (sent,) = [json.loads(line) for line in trace.read_text().splitlines() if '"cmd"' in line]
    assert sent["text"] not in sent["step"]  # the check above would fail such a module
    assert DROPIN  # (the builders' paths are the modules' real ones)


def test_a_steps_progress_line_reaches_the_live_display() -> None:
    from provisioner.steps import Run

    said: list[str] = []
    ctx = ctx_for(scripted("lab2"), facts("lab2"))
    ctx.log = said.append
    apply_change(ctx, Change("restart", steps=[Run("true", progress="restarting Docker"), Run("true")]))
    assert said == ["restarting Docker"]
