"""Each optional fact section, parsed from what real engines printed, and asked for by a module.

The fixtures in data/facts are the full output of the facts script with every section, captured on lab
hosts running Debian's docker.io 20.10 (bullseye), 26 (trixie) and 28 (forky), each with a user network
(IPv4 + IPv6) holding a container that publishes 8080->80/tcp and 127.0.0.1:5353->53/udp, a container on
the default bridge, and a created, never started container with -p 9090:90.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from provisioner.connection.base import ShellConnection
from provisioner.connection.fake import FakeConnection, serve_facts
from provisioner.engine import Executor
from provisioner.facts import (
    ADDRESSES,
    ENGINE,
    FIREWALL,
    PORTS,
    DockerFirewall,
    HostFacts,
    all_sections,
    default_sections,
    gather,
    parse_facts,
)
from provisioner.facts.firewall import parse_rules, setting
from provisioner.inventory import Inventory, load_inventory
from provisioner.modules import base as modules_base
from provisioner.modules.base import Module, ModuleArgs, NoOp, Plan, PlanContext
from provisioner.playbook import load_playbook

DATA = Path(__file__).parent / "data" / "facts"
ENGINES = {"20.10": "docker-20.10-bullseye.out", "26": "docker-26-trixie.out", "28": "docker-28-forky.out"}


def captured(engine: str, sections: Iterable[str] | str = "all") -> HostFacts:
    text = (DATA / ENGINES[engine]).read_text()
    return parse_facts("lab", text, files=["/etc/docker/daemon.json"], probes=["t"], sections=sections)


@pytest.mark.parametrize("engine", ENGINES)
def test_default_sections_of_each_engine(engine: str) -> None:
    f = captured(engine, ())
    d = f.docker
    assert d.active and d.server_version is not None and d.server_version.startswith(engine)
    assert {"bridge", "h13fnet", "host", "none"} == {n.name for n in d.networks}
    assert {"web", "plain", "stopped"} == {c.name for c in d.containers}
    assert f.probes == {"t": 0} and f.sections == default_sections()
    # optional sections stay empty when not asked for
    web = d.container("web")
    assert web is not None and web.addresses == {} and web.ports == [] and d.driver == ""
    assert d.firewall == DockerFirewall()


@pytest.mark.parametrize(
    ("engine", "cgroup", "seccomp", "warned"),
    [("20.10", "1", "name=seccomp,profile=default", False), ("26", "1", "name=seccomp,profile=builtin", False),
     ("28", "2", "name=seccomp,profile=builtin", True)],
)  # fmt: skip
def test_engine_section(engine: str, cgroup: str, seccomp: str, warned: bool) -> None:
    d = captured(engine, [ENGINE]).docker
    assert d.driver == "overlay2" and d.cgroup_version == cgroup and d.kernel_version and d.architecture == "x86_64"
    assert d.operating_system.startswith("Debian GNU/Linux")
    assert seccomp in d.security_options
    assert bool(d.warnings) is warned  # 28 on cgroup v2 without controllers: "No memory limit support", ...
    assert d.ipv4_forwarding is True and d.default_address_pools == []


def test_engine_section_reads_address_pools() -> None:
    info = {"ServerVersion": "26.1.5", "DefaultAddressPools": [{"Base": "198.18.64.0/18", "Size": 24}]}
    d = parse_facts("h", f"\n@@PROV@@ info\n{json.dumps(info)}\n", sections=[ENGINE]).docker
    assert d.default_address_pools == [{"Base": "198.18.64.0/18", "Size": "24"}]
    assert d.bridge_nf_iptables is None and d.warnings == []


@pytest.mark.parametrize("engine", ENGINES)
def test_addresses_section(engine: str) -> None:
    d = captured(engine, [ADDRESSES]).docker
    web, plain, stopped = (d.container(n) for n in ("web", "plain", "stopped"))
    assert web is not None and plain is not None and stopped is not None
    net = d.network("h13fnet")
    assert net is not None
    a = web.addresses["h13fnet"]
    assert (a.ipv4, a.ipv4_prefix, a.gateway, a.ipv6, a.ipv6_prefix) == (
        "172.18.0.2",
        16,
        "172.18.0.1",
        "fd00:13f::2",
        64,
    )
    assert a.network_id == net.id and len(a.mac.split(":")) == 6 and "webalias" in a.aliases
    assert a.requested_ipv4 == ""  # Docker chose the address
    assert ("web" in a.dns_names) is (engine != "20.10")  # DNSNames appeared in API 1.44 (Docker 25)
    assert plain.addresses["bridge"].ipv4 == "172.17.0.2" and plain.addresses["bridge"].ipv6 == ""
    assert list(stopped.addresses) == ["bridge"] and stopped.addresses["bridge"].ipv4 == ""


@pytest.mark.parametrize("engine", ENGINES)
def test_ports_section(engine: str) -> None:
    d = captured(engine, [PORTS]).docker
    web, plain, stopped = (d.container(n) for n in ("web", "plain", "stopped"))
    assert web is not None and plain is not None and stopped is not None
    got = {(p.host_ip, p.host_port, p.container_port, p.proto) for p in web.ports}
    want = {("127.0.0.1", 5353, 53, "udp"), ("0.0.0.0", 8080, 80, "tcp")}
    if engine == "20.10":
        want.add(("::", 8080, 80, "tcp"))  # 20.10 also binds the IPv6 wildcard
    assert got == want
    assert plain.ports == []
    # never started: the bindings it was created with (no host address given)
    assert [(p.host_ip, p.host_port, p.container_port, p.proto) for p in stopped.ports] == [("", 9090, 90, "tcp")]


@pytest.mark.parametrize("engine", ENGINES)
def test_firewall_section(engine: str) -> None:
    fw = captured(engine, [FIREWALL]).docker.firewall
    assert fw.dockerd_running and fw.argv[0] == "/usr/sbin/dockerd" and fw.config_file == "/etc/docker/daemon.json"
    assert (fw.iptables, fw.ip_forward, fw.userland_proxy, fw.kernel_ip_forward) == (True, True, True, True)
    assert fw.rules_read and fw.forward_policy == "DROP" and fw.isolation_chains
    assert {"DOCKER", "DOCKER-USER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"} <= set(fw.filter_chains)
    new_in_28 = {"DOCKER-FORWARD", "DOCKER-BRIDGE", "DOCKER-CT"}
    assert (new_in_28 <= set(fw.filter_chains)) is (engine == "28")
    assert fw.has_chain("DOCKER") and "DOCKER" in fw.nat_chains
    bridges = {m.not_out: m.source for m in fw.masquerade if m.not_out}
    assert bridges["docker0"] == "172.17.0.0/16"
    assert [s for b, s in bridges.items() if b.startswith("br-")] == ["172.18.0.0/16"]
    # 20.10 and 26 add a hairpin MASQUERADE per published port; 28 does not
    assert any(not m.not_out for m in fw.masquerade) is (engine != "28")


def test_firewall_settings_as_dockerd_runs_them() -> None:
    # the command line wins, then daemon.json, then Docker's default (true)
    argv = ["/usr/sbin/dockerd", "--iptables=false", "--ip-forward", "-H", "fd://"]
    config = {"userland-proxy": False, "iptables": True}
    assert setting(argv, config, "iptables") is False
    assert setting(argv, config, "ip-forward") is True
    assert setting(argv, config, "userland-proxy") is False
    assert setting(["dockerd", "--userland-proxy=0"], {}, "userland-proxy") is False
    assert setting(["dockerd", "--iptables=T"], {"iptables": False}, "iptables") is True
    assert setting(["dockerd"], {"iptables": "no"}, "iptables") is True  # not a bool: dockerd would refuse it


def _firewall_body(argv: list[str], config: str, rules: str, forward: str = "1") -> str:
    return (
        "\n@@PROV@@ firewall\n@@PART@@ argv\n" + "".join(f"{a}\n" for a in argv)
        + f"@@PART@@ config_file\n/etc/docker/daemon.json\n@@PART@@ config\n{config}\n"
        + f"@@PART@@ ip_forward\n{forward}\n@@PART@@ rules\n{rules}\n"
    )  # fmt: skip


def test_firewall_with_settings_off_and_no_iptables_tool() -> None:
    out = _firewall_body(["/usr/sbin/dockerd", "--iptables=false"], '{"userland-proxy": false}', "", forward="0")
    fw = parse_facts("h", out, sections=[FIREWALL]).docker.firewall
    assert (fw.iptables, fw.ip_forward, fw.userland_proxy, fw.kernel_ip_forward) == (False, True, False, False)
    assert not fw.rules_read and fw.filter_chains == [] and fw.masquerade == [] and not fw.isolation_chains


def test_firewall_without_dockerd_still_reads_the_tables() -> None:
    rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:DOCKER-USER - [0:0]\nCOMMIT\n"
    fw = parse_facts("h", _firewall_body([], "not json {", rules), sections=[FIREWALL]).docker.firewall
    assert not fw.dockerd_running and fw.iptables is None and fw.userland_proxy is None
    assert fw.rules_read and fw.forward_policy == "ACCEPT" and fw.filter_chains == ["DOCKER-USER"]


def test_firewall_rules_with_comments_and_odd_quoting() -> None:
    fw = DockerFirewall()
    parse_rules(
        '*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 198.18.64.0/24 ! -o br-x -m comment --comment "a \'b" '
        '-j MASQUERADE\n-A POSTROUTING -s 198.18.65.0/24 -m comment --comment "unclosed -j MASQUERADE\nCOMMIT\n',
        fw,
    )
    assert [(m.source, m.not_out) for m in fw.masquerade] == [("198.18.64.0/24", "br-x"), ("198.18.65.0/24", "")]
    assert not fw.rules_read  # no filter table printed


# ---- modules ask for sections; the fake serves them from the script's header ------------------------


class _Args(ModuleArgs):
    sections: list[str] = []


class _Reader(Module[_Args]):
    """Records the facts its plan saw; asks for the sections in its arguments."""

    name = "test_facts_reader"
    Args = _Args
    seen: ClassVar[dict[str, HostFacts]] = {}

    def fact_sections(self, args: _Args, inventory: Inventory) -> Iterable[str]:
        return args.sections

    def plan(self, ctx: PlanContext, args: _Args) -> Plan:
        self.seen[ctx.host] = ctx.facts
        return NoOp("read")


@pytest.fixture()
def reader() -> Iterator[type[_Reader]]:
    modules_base.register(_Reader)
    _Reader.seen.clear()
    try:
        yield _Reader
    finally:
        modules_base._REGISTRY.pop(_Reader.name, None)


FIXTURES = {
    "info": json.dumps({"ServerVersion": "28.5.2", "Driver": "overlay2", "CgroupVersion": "2"}),
    FIREWALL: "@@PART@@ argv\n/usr/sbin/dockerd\n--userland-proxy=false\n@@PART@@ rules\n*filter\n"
    ":FORWARD DROP [0:0]\n:DOCKER-FORWARD - [0:0]\nCOMMIT\n",
}


def test_executor_gathers_the_sections_each_hosts_tasks_ask_for(tmp_path: Path, reader: type[_Reader]) -> None:
    key = tmp_path / "key"
    key.write_text("dummy\n")
    inv_path = tmp_path / "inventory.yml"
    inv_path.write_text(
        f"connection:\n  private_key: {key}\n  known_hosts: {tmp_path / 'kh'}\n  host_key_policy: accept-new\n"
        "hosts:\n  h1: {address: 198.18.0.10, groups: [web]}\n  h2: {address: 198.18.0.11, groups: [web]}\n"
        "kv_store:\n  hosts: [h1]\n"
    )
    inv = load_inventory(inv_path)
    pb = tmp_path / "play.yml"
    pb.write_text(
        "- name: one\n  hosts: h1\n  tasks:\n    - test_facts_reader: {sections: [firewall, engine]}\n"
        "- name: all\n  hosts: web\n  tasks:\n    - test_facts_reader: {}\n"
    )
    conns: dict[str, FakeConnection] = {}

    def connect(host: str) -> ShellConnection:
        conns[host] = serve_facts(FakeConnection(host), FIXTURES)  # the same fixtures for both hosts
        return conns[host]

    report = Executor(inv, connect, check=True).run(load_playbook(pb, inv))
    assert report.ok
    h1, h2 = reader.seen["h1"].docker, reader.seen["h2"].docker
    # h1's task asked: the firewall section ran there, and engine read the info already fetched
    assert h1.firewall.userland_proxy is False and h1.firewall.iptables is True
    assert h1.firewall.filter_chains == ["DOCKER-FORWARD"] and h1.driver == "overlay2" and h1.cgroup_version == "2"
    # h2's did not: the fake had a firewall fixture for it too, but its script never asked
    assert h2.firewall == DockerFirewall() and h2.driver == "" and h2.server_version == "28.5.2"
    assert reader.seen["h2"].sections == default_sections()
    assert set(reader.seen["h1"].sections) == {*default_sections(), FIREWALL, ENGINE}
    for conn in conns.values():
        assert conn.calls.count("sh -s") == 1  # still one round trip for the facts


def test_fake_answers_files_and_probes_from_the_header() -> None:
    conn = FakeConnection("h", files={"/etc/a b": b"x"}).on(r"^test -e ", rc=1)
    serve_facts(conn)
    f = gather(conn, files=["/etc/a b", "/nope"], probes={"guard": "test -e '/x'"}, sections="all")
    assert f.file("/etc/a b").content == "x" and not f.file("/nope").exists
    assert f.probes == {"guard": 1} and "test -e '/x'" in conn.calls
    assert f.sections == all_sections() and f.os.id == "debian"
