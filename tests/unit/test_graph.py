"""`provisioner graph`: the topology model, DOT and Mermaid (golden files), drift marks, the CLI's errors.

Golden files live in tests/unit/golden/; after a deliberate change to the drawing, regenerate them with
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_graph.py`` and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.facts import (
    ContainerAddress,
    ContainerFact,
    DockerFacts,
    DockerFirewall,
    HostFacts,
    Interface,
    Masquerade,
    NetworkFact,
    OSFacts,
    PublishedPort,
)
from provisioner.graph import output_format, to_dot, to_mermaid
from provisioner.inventory import Inventory, load_inventory
from provisioner.topology import Topology, build, node_id

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[2]

INVENTORY = """\
connection: {host_key_policy: accept-new, known_hosts: known_hosts, connect_timeout: 1, retries: 0, port: 1}
hosts:
  consul: {address: 198.18.50.10, groups: [kv]}
  host1: {address: 198.18.50.11, groups: [docker]}
  host2: {address: 198.18.50.12, groups: [docker], advertise_interface: ens3}
kv_store: {backend: consul, hosts: [consul]}
networks:
  ov_net1: {driver: overlay, subnet: 198.18.51.0/24}
  net1: {driver: bridge, subnet: 198.18.52.0/24, gateway: 198.18.52.1}
  mv1: {driver: macvlan, subnet: 198.18.53.0/24, ip_range: 198.18.53.192/27, parent: eth1}
"""


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    path = tmp_path / "cluster.yml"
    path.write_text(INVENTORY)
    return load_inventory(path)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"{path} missing: run with UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 after a deliberate change)"


def _net(name: str, driver: str, subnet: str, **kw: object) -> NetworkFact:
    scope = "global" if driver == "overlay" else "local"
    return NetworkFact(name=name, driver=driver, scope=scope, subnets=[subnet], attachable=True, **kw)  # type: ignore[arg-type]


def _facts(host: str, addr: str, iface: str = "eth0", sections: tuple[str, ...] = (), **docker: object) -> HostFacts:
    d = DockerFacts(
        installed=True,
        active=True,
        state="active",
        server_version="20.10.5+dfsg1",
        package="docker.io",
        package_version="20.10.5+dfsg1-1+deb11u2",
        **docker,  # type: ignore[arg-type]
    )
    return HostFacts(
        host=host,
        os=OSFacts(id="debian", pretty_name="Debian GNU/Linux 11 (bullseye)"),
        interfaces={iface: Interface(name=iface, up=True, addresses=[addr], cidrs=[f"{addr}/24"])},
        docker=d,
        sections=list(sections),
    )


def live_facts() -> dict[str, HostFacts | str]:
    store = "consul://198.18.50.10:8500"
    consul = _facts(
        "consul",
        "198.18.50.10",
        networks=[_net("bridge", "bridge", "172.17.0.0/16")],
        containers=[ContainerFact(name="consul", image="hashicorp/consul:1.15", running=True, status="running")],
    )
    host1 = _facts(
        "host1",
        "198.18.50.11",
        cluster_store=store,
        cluster_advertise="eth0:2376",
        networks=[
            _net("bridge", "bridge", "172.17.0.0/16"),
            _net("host", "host", ""),
            _net("ov_net1", "overlay", "198.18.51.0/24"),
            _net("net1", "bridge", "198.18.54.0/24"),  # other subnet: different
            _net("scratch", "bridge", "172.20.0.0/16"),  # not in the inventory: extra
        ],
        containers=[
            ContainerFact(
                name="web",
                image="nginx:1.25",
                running=True,
                status="running",
                networks=["ov_net1", "net1"],
                addresses={
                    "ov_net1": ContainerAddress(ipv4="198.18.51.2"),
                    "net1": ContainerAddress(ipv4="198.18.54.2"),
                },
                ports=[PublishedPort(container_port=80, host_port=8080)],
            ),
            ContainerFact(name="prov-probe-ov_net1-host1", image="busybox", labels={"provisioner.probe": "1"}),
        ],
    )
    # host2 misses its cluster store and the macvlan network; host "consul" is fine
    host2 = _facts(
        "host2",
        "198.18.50.12",
        iface="ens3",
        # the firewall section was read: net1 has no MASQUERADE rule on host2, docker0 has one
        sections=("firewall",),
        firewall=DockerFirewall(rules_read=True, masquerade=[Masquerade(source="172.17.0.0/16", not_out="docker0")]),
        networks=[
            _net("bridge", "bridge", "172.17.0.0/16"),
            _net("ov_net1", "overlay", "198.18.51.0/24"),
            _net("net1", "bridge", "198.18.52.0/24", gateways=["198.18.52.1"]),
        ],
    )
    return {"consul": consul, "host1": host1, "host2": host2}


def test_inventory_drawing_matches_golden(inv: Inventory) -> None:
    topo = build(inv)
    _golden("cluster.dot", to_dot(topo))
    _golden("cluster.mmd", to_mermaid(topo))


def test_live_drawing_matches_golden(inv: Inventory) -> None:
    topo = build(inv, live_facts())
    _golden("cluster-live.dot", to_dot(topo))
    _golden("cluster-live.mmd", to_mermaid(topo))


def test_same_input_same_bytes(inv: Inventory) -> None:
    assert to_dot(build(inv, live_facts())) == to_dot(build(inv, live_facts()))
    assert to_mermaid(build(inv)) == to_mermaid(build(inv))


def _node(topo: Topology, nid: str) -> tuple[str, tuple[str, ...]]:
    for n in [*topo.shared, *(n for b in topo.hosts for n in b.nodes)]:
        if n.id == nid:
            return n.mark, n.lines
    raise AssertionError(f"no node {nid}; have {sorted(topo.node_ids())}")


def test_inventory_shows_what_the_tutorial_shows(inv: Inventory) -> None:
    topo = build(inv)
    assert [b.name for b in topo.hosts] == ["consul", "host1", "host2"]
    assert not topo.findings and not topo.live
    # the overlay spans both docker hosts (VXLAN over each one's advertise interface), not the store host
    vxlan = {(e.src, e.dst) for e in topo.edges if e.kind == "vxlan"}
    assert vxlan == {
        (node_id("net", "", "ov_net1"), node_id("if", h, i)) for h, i in [("host1", "eth0"), ("host2", "ens3")]
    }
    # a bridge per docker host with its NAT way out; macvlan hangs off its parent, without NAT
    assert (node_id("net", "host2", "net1"), node_id("if", "host2", "ens3"), "nat") in {
        (e.src, e.dst, e.kind) for e in topo.edges
    }
    assert (node_id("net", "host1", "mv1"), node_id("if", "host1", "eth1"), "parent") in {
        (e.src, e.dst, e.kind) for e in topo.edges
    }
    # each host its own slice of the macvlan subnet (slice 0 left for the gateway and shims)
    assert "range 198.18.53.32/27" in _node(topo, node_id("net", "host1", "mv1"))[1]
    assert "range 198.18.53.64/27" in _node(topo, node_id("net", "host2", "mv1"))[1]
    # each dockerd points at the store
    stores = {(e.src, e.dst) for e in topo.edges if e.kind == "store"}
    assert stores == {(node_id("dockerd", h), node_id("store", "consul")) for h in ("host1", "host2")}


def test_live_marks_drift(inv: Inventory) -> None:
    topo = build(inv, live_facts())
    assert _node(topo, node_id("net", "host1", "net1"))[0] == "different"
    assert _node(topo, node_id("net", "host1", "scratch"))[0] == "extra"
    assert _node(topo, node_id("net", "host2", "mv1"))[0] == "missing"
    assert _node(topo, node_id("dockerd", "host2"))[0] == "missing"
    assert _node(topo, node_id("net", "host2", "net1"))[0] == ""
    assert _node(topo, node_id("net", "host1", "bridge"))[1][0] == "docker0 (default bridge)"
    # containers from the facts, attached to their networks; probes are not drawn
    web = node_id("ctr", "host1", "web")
    assert {e.dst for e in topo.edges if e.src == web} == {
        node_id("net", "", "ov_net1"),
        node_id("net", "host1", "net1"),
    }
    assert node_id("ctr", "host1", "prov-probe-ov_net1-host1") not in topo.node_ids()
    # each attachment labelled with the container's address there; the published port comes in from the host
    labels = {(e.dst, e.label) for e in topo.edges if e.src == web}
    assert (node_id("net", "", "ov_net1"), "198.18.51.2") in labels
    assert [(e.src, e.label) for e in topo.edges if e.kind == "publish"] == [
        (node_id("if", "host1", "eth0"), "-p *:8080 -> 80/tcp")
    ]
    # NAT as the nat table has it (host2's firewall section was read): docker0 has its rule, net1 none
    nat = {e.src: (e.label, e.mark) for e in topo.edges if e.kind == "nat"}
    assert nat[node_id("net", "host2", "bridge")] == ("NAT out (MASQUERADE)", "")
    assert nat[node_id("net", "host2", "net1")] == ("no MASQUERADE rule: no way out", "missing")
    assert nat[node_id("net", "host1", "net1")] == ("NAT out (MASQUERADE)", "")  # no firewall facts: as configured
    assert topo.findings == [
        "host1: bridge network net1 different: subnet: 198.18.54.0/24 on the host, 198.18.52.0/24 in the inventory",
        "host1: macvlan network mv1 missing",
        "host1: interface eth1 missing",
        "host1: bridge network scratch extra: not in the inventory",
        "host2: dockerd cluster store missing (runs with none, wants consul://198.18.50.10:8500)",
        "host2: NAT for net1 (198.18.52.0/24) missing in the nat table",
        "host2: macvlan network mv1 missing",
        "host2: interface eth1 missing",
    ]
    assert not topo.unreachable


def test_unreachable_host_is_drawn_and_marked(inv: Inventory) -> None:
    live = live_facts()
    live["host2"] = "host2: connection refused by 198.18.50.12:22\n    fix: start sshd"
    topo = build(inv, live)
    box = next(b for b in topo.hosts if b.name == "host2")
    assert box.mark == "unreachable"
    assert "UNREACHABLE: host2: connection refused by 198.18.50.12:22" in box.lines
    assert {n.mark for n in box.nodes} == {"unknown"}
    assert topo.unreachable == ["host2"]
    assert "host2: unreachable (host2: connection refused by 198.18.50.12:22)" in topo.findings
    assert "style host__host2 stroke:#cc0000" in to_mermaid(topo)


def test_swarm_mode_draws_joins_not_the_store(tmp_path: Path) -> None:
    path = tmp_path / "swarm.yml"
    path.write_text(
        INVENTORY.replace(
            "kv_store: {backend: consul, hosts: [consul]}", "kv_store: {hosts: [consul]}\ndocker: {overlay_mode: swarm}"
        )
    )
    topo = build(load_inventory(path))
    assert not [e for e in topo.edges if e.kind == "store"]
    assert [(e.src, e.dst) for e in topo.edges if e.kind == "swarm"] == [
        (node_id("dockerd", "host2"), node_id("dockerd", "host1"))
    ]
    assert "swarm manager" in _node(topo, node_id("dockerd", "host1"))[1]


def test_ids_never_collide() -> None:
    names = ["a-b", "a_b", "a.b", "a__b", "a_2db", "ab"]
    assert len({node_id("net", h, n) for h in names for n in names}) == len(names) ** 2


def test_labels_are_escaped() -> None:
    from provisioner.graph import _dq, _mq

    assert _dq('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert _mq(['a "b" <c> & d']) == '"a #quot;b#quot; #lt;c#gt; #amp; d"'


@pytest.mark.parametrize("name", ["x.jpg", "x", "x.svg.txt"])
def test_unknown_extension_is_refused(name: str) -> None:
    from provisioner.errors import UsageError

    with pytest.raises(UsageError, match="unknown picture format"):
        output_format(Path(name))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_bad_output_paths(tmp_path: Path) -> None:
    (tmp_path / "cluster.yml").write_text(INVENTORY)
    inv = str(tmp_path / "cluster.yml")
    (tmp_path / "adir.svg").mkdir()
    for out, says in [
        (tmp_path / "x.jpg", "unknown picture format '.jpg'"),
        (tmp_path / "missing" / "x.svg", "does not exist"),
        (tmp_path / "adir.svg", "is a folder"),
    ]:
        res = _cli("graph", "-i", inv, "-o", str(out))
        assert res.returncode == 2, res.stderr
        assert says in res.stderr and "fix:" in res.stderr
        assert "Traceback" not in res.stderr


def test_cli_unwritable_file(tmp_path: Path) -> None:
    # /proc takes no new files, even from root
    (tmp_path / "cluster.yml").write_text(INVENTORY)
    res = _cli("graph", "-i", str(tmp_path / "cluster.yml"), "-o", "/proc/provisioner-graph.dot")
    assert res.returncode == 2, res.stderr
    assert "cannot write /proc/provisioner-graph.dot" in res.stderr and "fix:" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_writes_text_forms(tmp_path: Path) -> None:
    (tmp_path / "cluster.yml").write_text(INVENTORY)
    for ext in ("dot", "mmd"):
        res = _cli("graph", "-i", str(tmp_path / "cluster.yml"), "-o", str(tmp_path / f"out.{ext}"))
        assert res.returncode == 0, res.stderr
        assert (tmp_path / f"out.{ext}").read_text() == (GOLDEN / f"cluster.{ext}").read_text()
    res = _cli("graph", "-i", str(tmp_path / "cluster.yml"))
    assert res.returncode == 0 and res.stdout == (GOLDEN / "cluster.dot").read_text()


def test_cli_without_graphviz_writes_text_and_says_how(tmp_path: Path) -> None:
    (tmp_path / "cluster.yml").write_text(INVENTORY)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no `dot` there
    res = _cli("graph", "-i", str(tmp_path / "cluster.yml"), "-o", str(tmp_path / "out.svg"), env=env)
    assert res.returncode == 1, res.stderr
    assert "apt-get install graphviz" in res.stderr and f"dot -Tsvg {tmp_path / 'out.dot'}" in res.stderr
    assert (tmp_path / "out.dot").read_text() == (GOLDEN / "cluster.dot").read_text()
    assert (tmp_path / "out.mmd").is_file() and not (tmp_path / "out.svg").exists()


@pytest.mark.skipif(not Path("/usr/bin/dot").exists(), reason="Graphviz is not installed (bin/setup installs it)")
@pytest.mark.parametrize("ext", ["svg", "png"])
def test_cli_renders_with_graphviz(tmp_path: Path, ext: str) -> None:
    (tmp_path / "cluster.yml").write_text(INVENTORY)
    res = _cli("graph", "-i", str(tmp_path / "cluster.yml"), "-o", str(tmp_path / f"out.{ext}"))
    assert res.returncode == 0, res.stderr
    data = (tmp_path / f"out.{ext}").read_bytes()
    if ext == "svg":
        assert b"<svg" in data and b"ov_net1" in data and b"NAT out" in data
    else:
        assert data.startswith(b"\x89PNG")


def test_cli_live_with_unreachable_hosts_draws_them_and_exits_1(tmp_path: Path) -> None:
    # port 1 on loopback refuses at once: every host is unreachable, the picture is still written
    (tmp_path / "cluster.yml").write_text(INVENTORY.replace("198.18.50.", "127.0.50."))
    res = _cli("graph", "-i", str(tmp_path / "cluster.yml"), "--live", "-o", str(tmp_path / "live.dot"))
    assert res.returncode == 1, res.stderr
    dot = (tmp_path / "live.dot").read_text()
    assert dot.count("UNREACHABLE: ") == 3 and "Traceback" not in res.stderr
    assert "host1: unreachable" in res.stderr


def test_inventory_without_store_draws_bridges_only(tmp_path: Path) -> None:
    path = tmp_path / "bridges.yml"
    path.write_text(
        "connection: {host_key_policy: accept-new, known_hosts: known_hosts}\n"
        "hosts:\n  a: {address: 198.18.50.21}\n  b: {address: 198.18.50.22}\n"
        "networks:\n  net1: {driver: bridge, subnet: 198.18.52.0/24}\n"
    )
    topo = build(load_inventory(path))
    assert not [n for b in topo.hosts for n in b.nodes if n.kind == "store"]
    assert not [e for e in topo.edges if e.kind in ("store", "swarm", "vxlan")]
    assert {(e.src, e.kind) for e in topo.edges if e.kind == "nat"} == {
        (node_id("net", h, "net1"), "nat") for h in ("a", "b")
    }


def test_local_networks_go_where_their_hosts_say(tmp_path: Path) -> None:
    path = tmp_path / "placed.yml"
    path.write_text(INVENTORY.replace("parent: eth1}", "parent: eth1, hosts: [host2]}"))
    topo = build(load_inventory(path))
    ids = topo.node_ids()
    assert node_id("net", "host2", "mv1") in ids and node_id("net", "host1", "mv1") not in ids
    assert node_id("net", "host1", "net1") in ids and node_id("net", "consul", "net1") not in ids


def test_ipvlan_internal_and_live_slices(tmp_path: Path) -> None:
    path = tmp_path / "kinds.yml"
    path.write_text(
        "connection: {host_key_policy: accept-new, known_hosts: known_hosts}\n"
        "hosts:\n  a: {address: 198.18.50.21}\n  b: {address: 198.18.50.22}\n"
        "networks:\n"
        "  iv: {driver: ipvlan, subnet: 198.18.53.0/24, parent: eth0, mode: l2}\n"
        "  back: {driver: bridge, subnet: 198.18.52.0/24, internal: true}\n"
    )
    inv = load_inventory(path)
    topo = build(inv)
    assert ("ipvlan on parent (no NAT)", "parent") in {
        (e.label, e.kind) for e in topo.edges if e.src == node_id("net", "a", "iv")
    }
    assert "mode l2" in _node(topo, node_id("net", "a", "iv"))[1]
    assert "internal: no way out" in _node(topo, node_id("net", "a", "back"))[1]
    assert not [e for e in topo.edges if e.src == node_id("net", "a", "back")]  # no NAT edge
    # a host's live slice is kept (docker_network never moves one): not drift, and drawn as it is
    live = {
        h: _facts(
            h,
            addr,
            networks=[
                _net(
                    "iv",
                    "ipvlan",
                    "198.18.53.0/24",
                    ip_ranges=["198.18.53.96/27"],
                    options={"parent": "eth0", "ipvlan_mode": "l2"},
                ),
                _net("back", "bridge", "198.18.52.0/24"),
            ],
        )
        for h, addr in (("a", "198.18.50.21"), ("b", "198.18.50.22"))
    }
    topo = build(inv, dict(live))
    mark, lines = _node(topo, node_id("net", "a", "iv"))
    assert mark == ""
    assert "range 198.18.53.96/27" in lines
    assert not [f for f in topo.findings if "iv" in f], topo.findings


def _pair(src: str, dst: str, net: str, verdict: str, expected: str = "reach", cause: str = "") -> dict[str, object]:
    return {
        "kind": "ping",
        "source": src,
        "destination": dst,
        "network": net,
        "network_host": None,
        "expected": expected,
        "observed": "reached" if verdict == "ok" and expected == "reach" else "no reply",
        "verdict": verdict,
        "cause": cause or None,
    }


def test_checks_colour_the_links(inv: Inventory) -> None:
    pairs = [
        _pair("host1", "host2", "ov_net1", "ok"),
        _pair("host2", "host1", "ov_net1", "no reply", cause="no reply from 198.18.51.254 over ov_net1"),
    ]
    topo = build(inv, checks=pairs)
    vxlan = {e.dst: e for e in topo.edges if e.kind == "vxlan"}
    # both hosts take part in the failed pair: both links are broken, the cause on them
    for iface in (node_id("if", "host1", "eth0"), node_id("if", "host2", "ens3")):
        assert vxlan[iface].check == "broken"
        assert vxlan[iface].label == "VXLAN: BROKEN: no reply from 198.18.51.254 over ov_net1"
    assert "checks: 2 link(s) broken (red in the drawing)" in topo.findings
    dot = to_dot(topo)
    assert 'color="#cc0000", label="VXLAN: BROKEN: no reply' in dot
    assert "linkStyle" in to_mermaid(topo)

    topo = build(inv, checks=[_pair("host1", "host2", "ov_net1", "ok"), _pair("host2", "host1", "ov_net1", "ok")])
    assert {e.check for e in topo.edges if e.kind == "vxlan"} == {"reached"}
    # a container pair expected isolated, and isolated: its attachment is drawn as isolated
    live = live_facts()
    topo = build(inv, live, checks=[_pair("web", "db", "net1", "ok", expected="isolated")])
    attach = [e for e in topo.edges if e.kind == "attach" and e.network == "net1"]
    assert [e.check for e in attach] == ["isolated"]


def test_cli_verify_report_errors(tmp_path: Path) -> None:
    (tmp_path / "cluster.yml").write_text(INVENTORY)
    (tmp_path / "empty.json").write_text('{"ok": true, "hosts": {}}')
    (tmp_path / "bad.json").write_text("{not json")
    for name, says in [
        ("missing.json", "cannot read it"),
        ("bad.json", "not a JSON report"),
        ("empty.json", "no check"),
    ]:
        res = _cli("graph", "-i", str(tmp_path / "cluster.yml"), "--verify", str(tmp_path / name))
        assert res.returncode == 2, res.stderr
        assert says in res.stderr and "verify -i INVENTORY --output json" in res.stderr
        assert "Traceback" not in res.stderr
    report = {"hosts": {"host1": {"tasks": [{"verify": {"pairs": [_pair("host1", "host2", "ov_net1", "ok")]}}]}}}
    (tmp_path / "last.json").write_text(__import__("json").dumps(report))
    res = _cli("graph", "-i", str(tmp_path / "cluster.yml"), "--verify", str(tmp_path / "last.json"))
    assert res.returncode == 0, res.stderr
    assert 'color="#1b9e1b"' in res.stdout  # the checked links, green


CONTAINERS = """\
containers:
  web:
    host: host1
    image: "nginx:1.25"
    networks: {ov_net1: {}, net1: {ipv4_address: 198.18.52.10}}
    ports: ["8080:80"]
  db: {host: host2, image: "postgres:16", networks: [bridge]}
"""


def test_inventory_containers_drawn_and_compared(tmp_path: Path) -> None:
    path = tmp_path / "apps.yml"
    path.write_text(INVENTORY + CONTAINERS)
    inv = load_inventory(path)
    topo = build(inv)  # wanted: the containers, their fixed address, the published port, docker0 on host2
    web, db = node_id("ctr", "host1", "web"), node_id("ctr", "host2", "db")
    assert {(e.dst, e.label) for e in topo.edges if e.src == web} == {
        (node_id("net", "", "ov_net1"), ""),
        (node_id("net", "host1", "net1"), "198.18.52.10"),
    }
    assert [(e.src, e.label) for e in topo.edges if e.dst == web] == [
        (node_id("if", "host1", "eth0"), "-p *:8080 -> 80/tcp")
    ]
    assert [e.dst for e in topo.edges if e.src == db] == [node_id("net", "host2", "bridge")]
    assert _node(topo, node_id("net", "host2", "bridge"))[1] == ("docker0 (default bridge)",)
    assert not topo.findings
    # live: web runs with another address on net1 (different), db is not there (missing)
    topo = build(inv, live_facts())
    assert _node(topo, web)[0] == "different"
    assert _node(topo, db)[0] == "missing"
    assert "host1: container web different: address on net1 198.18.54.2, wants 198.18.52.10" in topo.findings
    assert "host2: container db missing" in topo.findings
