"""container_verify: the declared containers checked both ways, the second user of the check engine.

Expectations are data: an inventory, what runs (``LiveHost`` per host) and each host's rule set go in,
the expected matrix ((source, destination, network or port) -> reach / isolated / unknown) comes out,
one case per rule. The check itself runs against scripted FakeConnections (discovery, probe start, the
tests, cleanup); the shell bodies of the byte exchange, the NAT listener reply and the namespace test
run in a real ``sh`` against real TCP servers on loopback, with an ``nc`` stand-in that speaks TCP
(this machine has no nc): so a port whose connection is accepted and closed without a byte fails.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.checks import Net, Port, Probe, start_script
from provisioner.connection.base import RunResult, ShellConnection
from provisioner.connection.fake import FakeConnection
from provisioner.errors import ConnectError, TaskError
from provisioner.facts import DockerFirewall, HostFacts
from provisioner.inventory import Inventory, VerifySettings
from provisioner.modules import container_verify as cv
from provisioner.modules.base import ApplyContext, Check, CheckFailed, CheckOutcome, NoOp, PlanContext
from provisioner.modules.container_verify import LiveContainer, LiveHost, build, rule_set
from tests.builders import ADDR, facts, inventory, make_archive

MOD = cv.ContainerVerifyModule()
V20 = facts("lab2", server_version="20.10.5")


def inv_with(containers: dict[str, Any], networks: dict[str, Any] | None = None, **over: Any) -> Inventory:
    nets = {"ov_net1": {"driver": "overlay", "subnet": "198.19.1.0/24"}, **(networks or {})}
    return inventory(kv_store=None, docker={"overlay_mode": "swarm"}, networks=nets, containers=containers, **over)


def c(host: str, *networks: str, **kw: Any) -> dict[str, Any]:
    return {"host": host, "image": "app:1", **({"networks": list(networks)} if networks else {}), **kw}


def running(name: str, **addresses: str) -> LiveContainer:
    return LiveContainer(name, "running", "", dict(addresses))


def live_of(
    inv: Inventory, addresses: dict[str, dict[str, str]], subnets: dict[str, dict[str, list[str]]] | None = None
) -> dict[str, LiveHost]:
    """Every declared container running, with the given addresses (container -> network -> ip)."""
    out: dict[str, LiveHost] = {}
    for name, spec in inv.containers.items():
        h = out.setdefault(spec.host, LiveHost(interfaces=["docker0", "eth0", "lo", "vethabc"]))
        h.containers[name] = running(name, **addresses.get(name, {}))
        for p in spec.ports:
            if p.host_port is not None:
                h.containers[name].ports[(p.container_port, p.proto)] = [(p.address or "0.0.0.0", p.host_port)]
    for host, nets in (subnets or {}).items():
        out.setdefault(host, LiveHost()).subnets.update(nets)
    return out


def rules(version: str = "20.10.5", **fw: Any) -> dict[str, cv.RuleSet]:
    out = {}
    for h in ("lab1", "lab2", "lab3"):
        f = facts(h, server_version=version)
        if fw:
            f.docker.firewall = DockerFirewall(dockerd_running=True, **fw)
        out[h] = rule_set(h, f)
    return out


def table(b: cv.Built, kind: str | None = None) -> dict[tuple[str, str, str], str]:
    return {(e.source, e.destination, str(e.via)): e.expected for e in b.expectations if kind in (None, e.kind)}


# ---- expectations as data ----------------------------------------------------------------------------------


def test_the_tutorial_on_one_host_box_cannot_ping_httpd_until_they_share_a_network() -> None:
    inv = inv_with(
        {"httpd": c("lab2", "bridge", ports=["32773:80"]), "box": c("lab2", "net1")},
        {"net1": {"driver": "bridge", "subnet": "198.19.2.0/24"}},
    )
    addrs = {"httpd": {"bridge": "172.17.0.2"}, "box": {"net1": "198.19.2.2"}}
    b = build(inv, live_of(inv, addrs), rules())
    assert table(b, "cping") == {
        ("box", "httpd", "bridge@lab2"): "isolated",
        ("httpd", "box", "net1@lab2"): "isolated",
    }
    assert b.addresses[("httpd", Net("bridge", "lab2"))] == "172.17.0.2"
    assert "DOCKER-ISOLATION-STAGE-1/2" in b.expectations[0].why
    # the inventory connects box to bridge too: now they reach each other there, and nothing is isolated
    inv2 = inv_with(
        {"httpd": c("lab2", "bridge", ports=["32773:80"]), "box": c("lab2", "net1", "bridge")},
        {"net1": {"driver": "bridge", "subnet": "198.19.2.0/24"}},
    )
    addrs["box"]["bridge"] = "172.17.0.3"
    assert table(build(inv2, live_of(inv2, addrs), rules()), "cping") == {
        ("box", "httpd", "bridge@lab2"): "reach",
        ("httpd", "box", "bridge@lab2"): "reach",
    }


def test_same_named_bridges_on_two_hosts_are_two_networks_keyed_by_host() -> None:
    inv = inv_with(
        {"a2": c("lab2", "net1"), "b2": c("lab2", "net1"), "a3": c("lab3", "net1"), "b3": c("lab3", "net1")},
        {"net1": {"driver": "bridge", "subnet": "198.19.2.0/24"}},
    )
    # both hosts' Docker hand out the same addresses on their own net1
    addrs = {
        "a2": {"net1": "198.19.2.2"},
        "b2": {"net1": "198.19.2.3"},
        "a3": {"net1": "198.19.2.2"},
        "b3": {"net1": "198.19.2.3"},
    }
    b = build(inv, live_of(inv, addrs), rules())
    assert table(b) == {
        ("b2", "a2", "net1@lab2"): "reach",
        ("a2", "b2", "net1@lab2"): "reach",
        ("b3", "a3", "net1@lab3"): "reach",
        ("a3", "b3", "net1@lab3"): "reach",
    }
    assert b.addresses[("a2", Net("net1", "lab2"))] == b.addresses[("a3", Net("net1", "lab3"))] == "198.19.2.2"
    # no probe aims across hosts: net1@lab3's 198.19.2.2 also exists on lab2, and the other way round
    assert any("8 pairs on different hosts that share no network" in n for n in b.notes)


def test_an_address_that_also_lies_in_another_network_of_the_host_is_not_aimed_at() -> None:
    inv = inv_with(
        {"aa": c("lab2", "net1"), "bb": c("lab2", "net2")},
        {
            "net1": {"driver": "bridge", "subnet": "198.19.2.0/24"},
            "net2": {"driver": "bridge", "subnet": "198.19.3.0/24"},
        },
    )
    addrs = {"aa": {"net1": "198.19.2.2"}, "bb": {"net2": "198.19.3.2"}}
    # lab2 also has a network of its own (not the inventory's) whose subnet holds b's address
    live = live_of(
        inv, addrs, {"lab2": {"net1": ["198.19.2.0/24"], "net2": ["198.19.3.0/24"], "xx": ["198.19.3.0/25"]}}
    )
    b = build(inv, live, rules())
    assert table(b) == {("bb", "aa", "net1@lab2"): "isolated"}
    assert any(
        "aa -> bb on net2@lab2: not tested, 198.19.3.2 also lies in another network of lab2" in n for n in b.notes
    )


def test_overlay_pairs_reach_across_hosts() -> None:
    inv = inv_with({"box1": c("lab2", "ov_net1"), "box2": c("lab3", "ov_net1")})
    b = build(inv, live_of(inv, {"box1": {"ov_net1": "198.19.1.2"}, "box2": {"ov_net1": "198.19.1.3"}}), rules())
    assert table(b) == {("box2", "box1", "ov_net1"): "reach", ("box1", "box2", "ov_net1"): "reach"}


MACVLAN = {"driver": "macvlan", "subnet": "198.19.8.0/24", "parent": "eth0"}


@pytest.mark.parametrize(
    ("mode", "same_host", "cross_host"),
    [
        (None, "reach", "reach"),
        ("bridge", "reach", "reach"),
        ("private", "isolated", "reach"),
        ("vepa", "unknown", "reach"),  # the switch decides (hairpin): said so, not guessed
        ("passthru", "unknown", "reach"),
    ],
)
def test_macvlan_modes(mode: str | None, same_host: str, cross_host: str) -> None:
    inv = inv_with(
        {"m2a": c("lab2", "mv"), "m2b": c("lab2", "mv"), "m3": c("lab3", "mv")},
        {"mv": {**MACVLAN, **({"mode": mode} if mode else {})}},
    )
    addrs = {"m2a": {"mv": "198.19.8.34"}, "m2b": {"mv": "198.19.8.35"}, "m3": {"mv": "198.19.8.66"}}
    t = table(build(inv, live_of(inv, addrs), rules()), "cping")
    assert t[("m2a", "m2b", "mv")] == t[("m2b", "m2a", "mv")] == same_host
    assert t[("m2a", "m3", "mv")] == t[("m3", "m2a", "mv")] == cross_host


def test_macvlan_hosts_whose_parents_share_no_subnet_may_not_be_one_segment() -> None:
    inv = inv_with({"m2": c("lab2", "mv"), "m3": c("lab3", "mv")}, {"mv": {**MACVLAN, "parent": "eth0.50"}})
    addrs = {"m2": {"mv": "198.19.8.34"}, "m3": {"mv": "198.19.8.66"}}
    live = live_of(inv, addrs)
    live["lab2"].cidrs = {"eth0": ["10.0.1.0/24"]}
    live["lab3"].cidrs = {"eth0": ["10.0.2.0/24"]}
    b = build(inv, live, rules())
    assert table(b) == {("m3", "m2", "mv"): "unknown", ("m2", "m3", "mv"): "unknown"}
    assert "lab2's eth0 is on 10.0.1.0/24 and lab3's on 10.0.2.0/24: perhaps not one segment" in " ".join(
        e.why for e in b.expectations
    )
    live["lab3"].cidrs = {"eth0": ["10.0.1.0/24"]}  # one subnet: one segment, as the inventory says
    assert set(table(build(inv, live, rules())).values()) == {"reach"}


@pytest.mark.parametrize(("mode", "cross_host"), [("l2", "reach"), ("l3", "unknown")])
def test_ipvlan_modes(mode: str, cross_host: str) -> None:
    ipvlan = {"driver": "ipvlan", "subnet": "198.19.8.0/24", "parent": "eth0", "mode": mode}
    inv = inv_with({"i2a": c("lab2", "iv"), "i2b": c("lab2", "iv"), "i3": c("lab3", "iv")}, {"iv": ipvlan})
    addrs = {"i2a": {"iv": "198.19.8.34"}, "i2b": {"iv": "198.19.8.35"}, "i3": {"iv": "198.19.8.66"}}
    t = table(build(inv, live_of(inv, addrs), rules()), "cping")
    assert t[("i2a", "i2b", "iv")] == "reach"
    assert t[("i2a", "i3", "iv")] == t[("i3", "i2a", "iv")] == cross_host


def test_a_host_reaches_its_own_macvlan_containers_only_with_a_shim() -> None:
    # the macvlan subnet is the hosts' own segment (198.18.0.0/24): a host tries its own container on-link
    seg = {**MACVLAN, "subnet": "198.18.0.0/24", "ip_ranges": {"lab2": "198.18.0.64/27", "lab3": "198.18.0.96/27"}}
    containers = {"m2": c("lab2", "mv"), "m3": c("lab3", "mv")}
    addrs = {"m2": {"mv": "198.18.0.66"}, "m3": {"mv": "198.18.0.98"}}
    inv = inv_with(containers, {"mv": seg})
    t = table(build(inv, live_of(inv, addrs), rules()), "cping")
    assert t[("lab2", "m2", "mv")] == t[("lab3", "m3", "mv")] == "isolated"  # kernel design
    assert ("lab2", "m3", "mv") not in t
    inv = inv_with(containers, {"mv": {**seg, "shim": True}})
    t = table(build(inv, live_of(inv, addrs), rules()), "cping")
    for host in ("lab2", "lab3"):
        assert t[(host, "m2", "mv")] == t[(host, "m3", "mv")] == "reach"
    # a subnet off the hosts' segment and no shim: the host's only path is its default route, not tested
    inv = inv_with(containers, {"mv": MACVLAN})
    assert not any(k[0].startswith("lab") for k in table(build(inv, live_of(inv, addrs), rules())))


def test_nat_out_internal_networks_and_macvlan() -> None:
    inv = inv_with(
        {
            "web": c("lab2", "net1"),
            "db": c("lab2", "back"),
            "both": c("lab2", "back", "net1"),
            "mv_only": c("lab3", "mv"),
            "mixed": c("lab3", "mv", "ov_net1"),
        },
        {
            "net1": {"driver": "bridge", "subnet": "198.19.2.0/24"},
            "back": {"driver": "bridge", "subnet": "198.19.3.0/24", "internal": True},
            "mv": MACVLAN,
        },
        verify={"outside": ADDR["lab1"]},
    )
    b = build(inv, live_of(inv, {}), rules(), listener=("lab1", 47991))
    nat = {k: v for k, v in table(b).items() if k[2].startswith("verify.outside")}
    assert nat == {
        ("web", "lab1", "verify.outside@lab2"): "reach",
        ("db", ADDR["lab1"], "verify.outside@lab2"): "isolated",  # only internal: no way out
        ("both", "lab1", "verify.outside@lab2"): "reach",
        ("mixed", "lab1", "verify.outside@lab3"): "unknown",  # the default route may be the macvlan one
    }
    kinds = {e.source: e.kind for e in b.expectations if str(e.via).startswith("verify.outside")}
    assert kinds == {"web": "cnat", "db": "cout", "both": "cnat", "mixed": "cnat"}
    # the listener on lab1 must see the packets arrive from the container's docker host
    assert b.addresses[("lab1", Net("verify.outside", "lab2"))] == f"{ADDR['lab1']}:47991 from {ADDR['lab2']}"
    # db's ping is aimed at the address itself, not at the listener's target of the same docker host
    (db,) = [e for e in b.expectations if e.source == "db" and e.kind == "cout"]
    assert b.addresses[(db.destination, db.via)] == ADDR["lab1"]
    assert any(n.startswith("mv_only: not in the NAT check") for n in b.notes)
    # without a listener (or an outside address that is no host of the inventory) it is a ping
    b = build(inv, live_of(inv, {}), rules())
    assert {e.kind for e in b.expectations if str(e.via).startswith("verify.outside")} == {"cout"}
    assert b.addresses[(ADDR["lab1"], Net("verify.outside", "lab2"))] == ADDR["lab1"]


def test_none_has_only_lo_and_host_sees_the_hosts_interfaces() -> None:
    inv = inv_with({"nothing": c("lab2", network_mode="none"), "hostnet": c("lab3", network_mode="host")})
    b = build(inv, live_of(inv, {}), rules())
    assert table(b) == {("nothing", "nothing", "none@lab2"): "reach", ("hostnet", "hostnet", "host@lab3"): "reach"}
    assert b.addresses[("nothing", Net("none", "lab2"))] == "only:lo"
    assert b.addresses[("hostnet", Net("host", "lab3"))] == "has:docker0 eth0 lo"  # veths come and go


def test_published_ports_from_every_other_docker_host() -> None:
    docker3 = {
        "hosts": {
            "lab1": {"address": ADDR["lab1"], "groups": ["docker"]},
            "lab2": {"address": ADDR["lab2"], "groups": ["docker"]},
            "lab3": {"address": ADDR["lab3"], "groups": ["docker"]},
        }
    }
    inv = inv_with({"httpd": c("lab2", ports=["32773:80", "127.0.0.1:8080:80", "5353:53/udp", "9000"])}, **docker3)
    live = live_of(inv, {"httpd": {"bridge": "172.17.0.2"}})
    live["lab2"].containers["httpd"].ports[(9000, "tcp")] = [("0.0.0.0", 49153)]  # picked by Docker
    b = build(inv, live, rules())
    assert table(b, "cbytes") == {
        ("lab1", "httpd", "32773/tcp"): "reach",
        ("lab3", "httpd", "32773/tcp"): "reach",
        ("lab1", "httpd", "8080/tcp"): "isolated",  # bound to 127.0.0.1: only lab2 itself
        ("lab3", "httpd", "8080/tcp"): "isolated",
        ("lab1", "httpd", "5353/udp"): "unknown",
        ("lab3", "httpd", "5353/udp"): "unknown",
        ("lab1", "httpd", "49153/tcp"): "reach",
        ("lab3", "httpd", "49153/tcp"): "reach",
    }
    # through the docker host's address, whatever the port is bound to
    assert b.addresses[("httpd", Port(8080))] == f"{ADDR['lab2']}:8080"
    assert {p.endpoint: p.mode for p in b.probes if p.mode == "host"} == {"lab1": "host", "lab3": "host"}


def test_verify_expect_overrides_a_pair_and_adds_one_not_tested() -> None:
    inv = inv_with(
        {"aa": c("lab2", "net1"), "bb": c("lab2", "net1"), "xx": c("lab3", "net1")},
        {"net1": {"driver": "bridge", "subnet": "198.19.2.0/24", "hosts": "docker"}},
        verify={
            "expect": [
                {"from": "aa", "to": "bb", "reach": False, "why": "b firewalls a"},
                {"from": "xx", "to": "aa", "reach": False},
            ]
        },
    )
    addrs = {"aa": {"net1": "198.19.2.2"}, "bb": {"net1": "198.19.2.3"}, "xx": {"net1": "198.19.2.9"}}
    b = build(inv, live_of(inv, addrs), rules())
    t = table(b)
    assert t[("aa", "bb", "net1@lab2")] == "isolated" and t[("bb", "aa", "net1@lab2")] == "reach"
    assert t[("xx", "aa", "net1@lab2")] == "isolated"  # across hosts: tested because the inventory says so
    (why,) = [e.why for e in b.expectations if (e.source, e.destination) == ("aa", "bb")]
    assert why == "verify.expect: b firewalls a"


def test_verify_expect_naming_an_unknown_container_is_refused_at_plan() -> None:
    inv = inv_with({"aa": c("lab2")}, verify={"expect": [{"from": "aa", "to": "nope", "reach": True}]})
    with pytest.raises(TaskError, match=r"verify.expect\[0\].to: 'nope' is not a container"):
        MOD.plan(PlanContext("lab2", V20, inv, options={"verify": True}), MOD.Args())


def test_a_container_that_does_not_run_is_a_problem_and_its_pairs_are_not_built() -> None:
    inv = inv_with({"aa": c("lab2", "bridge"), "bb": c("lab2", "bridge")})
    live = live_of(inv, {"aa": {"bridge": "172.17.0.2"}})
    live["lab2"].containers["bb"].status = "exited"
    b = build(inv, live, rules())
    assert b.expectations == [] and [p.endpoint for p in b.probes] == ["aa"]
    assert b.problems == [
        "bb: not running on lab2 (exited); its pairs cannot be tested (apply the containers task, "
        "or `docker start` it there)"
    ]


def test_enable_icc_false_isolates_a_bridge_s_own_containers() -> None:
    inv = inv_with(
        {"aa": c("lab2", "net1"), "bb": c("lab2", "net1")},
        {
            "net1": {
                "driver": "bridge",
                "subnet": "198.19.2.0/24",
                "options": {"com.docker.network.bridge.enable_icc": "false"},
            }
        },
    )
    assert set(table(build(inv, live_of(inv, {}), rules())).values()) == {"isolated"}


# ---- what each engine makes of it ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "fw", "isolation", "nat", "publish", "named"),
    [
        ("20.10.5", {}, "isolated", "reach", "reach", "DOCKER-ISOLATION-STAGE-1/2"),
        ("26.1.5", {"iptables": True, "userland_proxy": False}, "isolated", "reach", "reach", "DNAT only"),
        (
            "28.5.2",
            {"iptables": True, "rules_read": True, "filter_chains": ["DOCKER-FORWARD", "DOCKER-USER"]},
            "isolated",
            "reach",
            "reach",
            "DOCKER-FORWARD",
        ),
        ("29.0.1", {}, "unknown", "reach", "reach", "no isolation chains"),
        ("20.10.5", {"iptables": False, "userland_proxy": True}, "unknown", "unknown", "reach", "iptables: false"),
        ("20.10.5", {"iptables": False, "userland_proxy": False}, "unknown", "unknown", "unknown", "userland-proxy"),
        (
            "20.10.5",
            {"iptables": True, "rules_read": True, "filter_chains": ["DOCKER", "DOCKER-USER"]},
            "unknown",
            "reach",
            "reach",
            "isolation chains missing",
        ),
    ],
)
def test_rule_set_per_engine(
    version: str, fw: dict[str, Any], isolation: str, nat: str, publish: str, named: str
) -> None:
    f = facts("lab2", server_version=version)
    if fw:
        f.docker.firewall = DockerFirewall(dockerd_running=True, **fw)
    r = rule_set("lab2", f)
    assert (r.isolation, r.nat, r.publish) == (isolation, nat, publish)
    assert named in r.name and version in r.name
    if "unknown" in (r.isolation, r.nat, r.publish):
        assert "lab2" in r.isolation_why + r.nat_why + r.publish_why  # says why, naming the host


def test_live_chains_win_over_the_facts() -> None:
    f = facts("lab2", server_version="20.10.5")
    f.docker.firewall = DockerFirewall(dockerd_running=True, iptables=True, rules_read=True, filter_chains=[])
    assert rule_set("lab2", f).isolation == "unknown"
    assert rule_set("lab2", f, chains=["DOCKER-ISOLATION-STAGE-1"]).isolation == "isolated"


def test_an_unknown_engine_makes_every_expectation_unknown_and_says_so() -> None:
    inv = inv_with(
        {"aa": c("lab2", "net1"), "bb": c("lab2", "bridge")}, {"net1": {"driver": "bridge", "subnet": "198.19.2.0/24"}}
    )
    f = facts("lab2")
    f.docker.server_version = None
    b = build(inv, live_of(inv, {}), {"lab2": rule_set("lab2", f)})
    assert set(table(b).values()) == {"unknown"}
    assert all("engine version is not known" in e.why for e in b.expectations)


# ---- the check on scripted hosts -----------------------------------------------------------------------------


class Host:
    """A docker host answering discovery, probe start, tests and cleanup. ``reach`` decides a test:
    (probe, target) -> the line after the tag ("ok", "FAIL ...")."""

    def __init__(
        self,
        name: str,
        inspect: list[dict[str, Any]],
        networks: list[dict[str, Any]],
        reach: Callable[[str, str], str],
        docker_user: str = "",
        masquerade: str = "",
        listener: str = "",
    ) -> None:
        self.name = name
        self.inspect, self.networks, self.reach = inspect, networks, reach
        self.docker_user, self.masquerade, self.listener = docker_user, masquerade, listener
        self.conn = FakeConnection(name).on(r"^sh -s$", respond=self.script).on(r"^docker rm -f", rc=0)
        self.scripts: list[str] = []
        self.after_load = ""  # what the listener script alone answers

    def script(self, _cmd: str, stdin: bytes | None) -> RunResult:
        text = (stdin or b"").decode()
        self.scripts.append(text)
        if "@@CV@@ containers" in text:
            out = [
                "@@CV@@ containers",
                json.dumps(self.inspect),
                "@@CV@@ networks",
                json.dumps(self.networks),
                "@@CV@@ interfaces",
                "lo",
                "eth0",
                "docker0",
                "@@CV@@ chains",
                "DOCKER",
                "DOCKER-ISOLATION-STAGE-1",
                "DOCKER-ISOLATION-STAGE-2",
                "DOCKER-USER",
                "end",
                "@@CV@@ masquerade",
                self.masquerade,
                "@@CV@@ docker_user",
                self.docker_user,
            ]
            if "@@CV@@ listener" in text:
                out += ["@@CV@@ listener", self.listener]
            return RunResult(0, "\n".join(out) + "\n", "")
        if "docker image inspect" in text:
            return RunResult(0, self.after_load + "\n", "")
        if "docker run -d" in text:
            lines = [line.removeprefix("( ") for line in text.splitlines()]
            tags = [line.split("; ", 1)[0].removeprefix("n=") for line in lines if line.startswith("n=")]
            return RunResult(0, "".join(f"@@V@@ p{i} ok - {n}\n" for i, n in enumerate(tags)), "")
        out = []
        for line in text.splitlines():
            if line.startswith("x_"):
                words = shlex.split(line.rstrip("&"))
                out.append(f"@@V@@ {words[3]} {self.reach(words[1], words[2])}")
        return RunResult(0, "\n".join(out) + "\n", "")


def inspected(
    name: str,
    status: str = "running",
    ports: dict[str, Any] | None = None,
    **addresses: str,
) -> dict[str, Any]:
    return {
        "Name": f"/{name}",
        "State": {"Status": status},
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"Networks": {n: {"IPAddress": a} for n, a in addresses.items()}, "Ports": ports or {}},
    }


def network(name: str, subnet: str) -> dict[str, Any]:
    return {"Name": name, "IPAM": {"Config": [{"Subnet": subnet}]}}


TUTORIAL = {
    "httpd": c("lab2", "bridge", ports=["32773:80"]),
    "box": c("lab2", "net1"),
    "box2": c("lab3", "net1"),
}


def run_check(
    hosts: dict[str, Host],
    inv: Inventory,
    all_facts: dict[str, HostFacts] | None = None,
) -> tuple[str, dict[str, Any] | None]:
    first = next(iter(hosts))
    f = facts(first, server_version="20.10.5")
    fs = all_facts or {h: facts(h, server_version="20.10.5") for h in ("lab1", "lab2", "lab3")}
    p = MOD.plan(PlanContext(first, f, inv, all_facts=fs, options={"verify": True}), MOD.Args())
    assert isinstance(p, Check)

    def connection_to(h: str) -> ShellConnection:
        return hosts[h].conn

    try:
        out = p.run(ApplyContext(first, hosts[first].conn, f, inv, connection_to=connection_to, all_facts=fs))
    except CheckFailed as e:
        return "ERROR " + str(e), e.data
    assert isinstance(out, CheckOutcome)
    return out.text, out.data


def tutorial_hosts(reach: Callable[[str, str], str], **lab2: str) -> dict[str, Host]:
    ports = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32773"}]}
    return {
        "lab2": Host(
            "lab2",
            [inspected("httpd", ports=ports, bridge="172.17.0.2"), inspected("box", net1="198.19.2.2")],
            [network("bridge", "172.17.0.0/16"), network("net1", "198.19.2.0/24")],
            reach,
            **lab2,
        ),
        "lab3": Host(
            "lab3",
            [inspected("box2", net1="198.19.2.2")],
            [network("bridge", "172.17.0.0/16"), network("net1", "198.19.2.0/24")],
            reach,
        ),
        "lab1": Host("lab1", [], [], reach, listener="ok 47991"),
    }


def tutorial_inv() -> Inventory:
    return inv_with(
        TUTORIAL,
        {"net1": {"driver": "bridge", "subnet": "198.19.2.0/24"}},
        verify={"outside": ADDR["lab1"], "image": "provisioner-lab/probe:latest"},
    )


def healthy(probe: str, target: str) -> str:
    if target.startswith("198.18.0.11:47991 from "):
        return "ok arrived from " + target.rsplit(" ", 1)[1]
    if target in ("172.17.0.2", "198.19.2.2") and probe in ("prov-cv-box", "prov-cv-httpd"):
        return "FAIL"  # bridge and net1 of lab2 are kept apart
    return "ok"


def test_a_healthy_tutorial_passes_with_its_matrices_and_every_pair_in_the_report() -> None:
    hosts = tutorial_hosts(healthy)
    out, data = run_check(hosts, tutorial_inv())
    assert out.startswith("all 6 expectations of 3 containers hold"), out
    assert "bridge@lab2: ping from (row) to (column)" in out and "32773/tcp: bytes through the published port" in out
    assert max(len(line) for line in out.splitlines()) <= 72  # the terminal indents it by 6
    assert "box -> 198.18.0.11:47991 (NAT out as 198.18.0.12): ok" in out
    assert data is not None and data["ok"] is True
    pair = next(p for p in data["pairs"] if (p["source"], p["destination"]) == ("box", "httpd"))
    assert (pair["expected"], pair["observed"], pair["verdict"], pair["network"], pair["network_host"]) == (
        "isolated",
        "no reply",
        "ok",
        "bridge",
        "lab2",
    )
    assert "lab2" in data["rule_sets"] and "DOCKER-ISOLATION" in data["rule_sets"]["lab2"]
    for h in hosts.values():  # discovery, start, test, cleanup: at most four round trips a host
        assert h.conn.stats.round_trips <= 4
    assert cv.REMOVE_LISTENER in hosts["lab1"].conn.calls


def test_isolation_broken_fails_and_names_the_pair_and_the_docker_user_rule() -> None:
    rule = "-A DOCKER-USER -i br-1234 -o docker0 -j ACCEPT"
    hosts = tutorial_hosts(
        lambda p, t: "ok" if "47991" not in t else "ok arrived from " + t.rsplit(" ", 1)[1], docker_user=rule
    )
    out, data = run_check(hosts, tutorial_inv())
    assert out.startswith("ERROR container check failed")
    flat = " ".join(out.split())
    assert "box -> httpd (172.17.0.2) over bridge@lab2: isolation broken: it reached, but must not" in flat
    assert f"likely: DOCKER-USER on lab2 accepts traffic before Docker's isolation: {rule}" in flat
    assert "BROKEN" in out
    assert data is not None and data["ok"] is False
    broken = [(p["source"], p["destination"]) for p in data["pairs"] if p["verdict"] == "isolation broken"]
    assert broken == [("box", "httpd"), ("httpd", "box")]


def test_a_published_port_with_nothing_behind_it_fails_as_such() -> None:
    def reach(probe: str, target: str) -> str:
        if target.endswith(":32773"):
            return "FAIL connected, but not one byte came back"
        return healthy(probe, target)

    out, data = run_check(tutorial_hosts(reach), tutorial_inv())
    flat = " ".join(out.split())
    assert "lab3 -> httpd (198.18.0.12:32773) over 32773/tcp: no reply (connected, but not one byte came back)" in flat
    assert "nothing listens behind 32773/tcp in httpd: docker-proxy on lab2 accepted the connection" in flat
    assert data is not None
    (p,) = [p for p in data["pairs"] if p["verdict"] != "ok"]
    assert p["port"] == "32773/tcp" and p["likely_cause"].startswith("nothing listens behind")


def test_nat_from_the_wrong_source_names_the_missing_masquerade() -> None:
    def reach(probe: str, target: str) -> str:
        if "47991" in target:
            return (
                "FAIL arrived from 172.17.0.2, not from 198.18.0.12"
                if probe == "prov-cv-httpd"
                else healthy(probe, target)
            )
        return healthy(probe, target)

    hosts = tutorial_hosts(reach, masquerade="-A POSTROUTING -s 198.19.2.0/24 ! -o br-1 -j MASQUERADE")
    out, data = run_check(hosts, tutorial_inv())
    flat = " ".join(out.split())
    assert "httpd -> 198.18.0.11:47991 (NAT out as 198.18.0.12): FAIL (arrived from 172.17.0.2" in flat
    assert "missing MASQUERADE on lab2 for 172.17.0.0/16" in flat
    assert data is not None and data["ok"] is False


def test_a_declared_container_that_does_not_run_fails_the_check() -> None:
    hosts = tutorial_hosts(healthy)
    hosts["lab3"].inspect = []
    out, _ = run_check(hosts, tutorial_inv())
    assert "box2: not running on lab3 (missing)" in out
    assert out.startswith("ERROR container check failed")


def test_apply_runs_it_under_the_verify_on_apply_policy() -> None:
    inv = tutorial_inv()
    args = MOD.Args()
    assert isinstance(MOD.plan(PlanContext("lab2", V20, inv, run_changed=0), args), NoOp)
    assert isinstance(MOD.plan(PlanContext("lab2", V20, inv, run_changed=1), args), Check)
    never = inv_with(TUTORIAL, {"net1": {"driver": "bridge", "subnet": "198.19.2.0/24"}}, verify={"on_apply": "never"})
    assert isinstance(MOD.plan(PlanContext("lab2", V20, never, run_changed=3), args), NoOp)
    assert isinstance(MOD.plan(PlanContext("lab2", V20, never, options={"verify": True}), args), Check)
    assert isinstance(MOD.plan(PlanContext("lab2", V20, inv_with({}), options={"verify": True}), args), NoOp)
    assert set(MOD.fact_sections(args, inv)) == {"engine", "firewall"}


def test_discovery_is_parsed_from_docker_inspect() -> None:
    text = "\n".join(
        [
            "@@CV@@ containers",
            json.dumps(
                [
                    inspected(
                        "web",
                        ports={"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "81/tcp": None},
                        net1="198.19.2.2",
                    )
                ]
            ),
            "@@CV@@ networks",
            json.dumps([network("net1", "198.19.2.0/24")]),
            "@@CV@@ interfaces",
            "lo",
            "eth0",
            "@@CV@@ addresses",
            "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever",
            "2: eth0@if7    inet 198.18.0.12/24 brd 198.18.0.255 scope global eth0",
            "@@CV@@ chains",
            "end",
            "@@CV@@ masquerade",
            "@@CV@@ docker_user",
            "@@CV@@ raw_accepts",
            "-A PREROUTING -i br-1234 -j ACCEPT",
            "@@CV@@ listener",
            "err Unable to find image 'probe' locally",
        ]
    )
    live = cv.parse_discovery(text)
    assert live.containers["web"].addresses == {"net1": "198.19.2.2"}
    assert live.containers["web"].ports == {(80, "tcp"): [("127.0.0.1", 8080)]}
    assert live.subnets == {"net1": ["198.19.2.0/24"]} and live.interfaces == ["eth0", "lo"]
    assert live.cidrs == {"lo": ["127.0.0.0/8"], "eth0": ["198.18.0.0/24"]}
    assert live.raw_accepts == ["-A PREROUTING -i br-1234 -j ACCEPT"]
    assert live.chains is None  # iptables printed nothing: not read
    assert live.listener is None and live.listener_error == "Unable to find image 'probe' locally"


# ---- the shell bodies, for real ---------------------------------------------------------------------------------

NC = f"""#!{sys.executable}
# nc -w SEC HOST PORT, as busybox's: stdin to the socket, the socket to stdout, until the peer closes
import os, socket, sys, threading
host, port = sys.argv[-2], int(sys.argv[-1])
try:
    s = socket.create_connection((host, port), timeout=3)
except OSError as e:
    print(f"nc: can't connect to remote host ({{host}}): {{e.strerror}}", file=sys.stderr)
    sys.exit(1)
def pump():
    for chunk in iter(lambda: sys.stdin.buffer.read1(4096), b""):
        try:
            s.sendall(chunk)
        except OSError:
            return
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=pump, daemon=True).start()
s.settimeout(5)
try:
    for chunk in iter(lambda: s.recv(4096), b""):
        sys.stdout.buffer.write(chunk)
except OSError:
    pass
sys.stdout.flush()
os._exit(0)  # the stdin reader may still be blocked: leave without waiting for it
"""


@pytest.fixture
def server() -> Iterator[Callable[[bytes | None], int]]:
    """A TCP server on loopback: answers each connection with ``reply`` (None: accept, read, close
    without a byte, as docker-proxy does when nothing listens behind the port)."""
    socks: list[socket.socket] = []

    def start(reply: bytes | None) -> int:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        socks.append(srv)

        def serve() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(1024)
                    if reply is not None:
                        conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        return int(srv.getsockname()[1])

    yield start
    for s in socks:
        s.close()


def run_body(tmp_path: Path, body: str, target: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "nc").write_text(NC)
    (bin_dir / "nc").chmod(0o755)
    script = f"f() {{ {body}; }}\nf - {shlex.quote(target)} t0\n"
    res = subprocess.run(
        ["sh", "-s"], input=script, capture_output=True, text=True, timeout=30, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}
    )
    return res.stdout.strip()


S = VerifySettings()


def test_bytes_through_a_port_pass_only_when_something_answers(tmp_path: Path, server: Any) -> None:
    answers = server(b"HTTP/1.0 200 OK\r\n\r\n")
    accepts_only = server(None)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    body = cv.BYTES.body(S, "")
    assert run_body(tmp_path, body, f"127.0.0.1:{answers}") == "@@V@@ t0 ok"
    assert (
        run_body(tmp_path, body, f"127.0.0.1:{accepts_only}") == "@@V@@ t0 FAIL connected, but not one byte came back"
    )
    assert run_body(tmp_path, body, f"127.0.0.1:{closed}").startswith(
        "@@V@@ t0 FAIL no connection: nc: can't connect to remote host (127.0.0.1)"
    )


def test_the_nat_test_compares_the_source_the_listener_saw(tmp_path: Path, server: Any) -> None:
    port = server(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsrc 198.18.0.12\n")
    body = cv.NAT.body(S, "")
    assert run_body(tmp_path, body, f"127.0.0.1:{port} from 198.18.0.12") == "@@V@@ t0 ok arrived from 198.18.0.12"
    assert run_body(tmp_path, body, f"127.0.0.1:{port} from 198.18.0.13") == (
        "@@V@@ t0 FAIL arrived from 198.18.0.12, not from 198.18.0.13"
    )
    silent = server(None)
    assert run_body(tmp_path, body, f"127.0.0.1:{silent} from 198.18.0.12") == (
        f"@@V@@ t0 FAIL no answer from the listener on 127.0.0.1:{silent}"
    )


def test_the_namespace_test_reads_proc_net_dev(tmp_path: Path) -> None:
    body = cv.NETNS.body(S, "")
    names = sorted(line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:])
    assert run_body(tmp_path, body, "has:lo") == "@@V@@ t0 ok"
    assert run_body(tmp_path, body, "only:" + " ".join(names)) == "@@V@@ t0 ok"
    assert run_body(tmp_path, body, "has:lo nosuch0").startswith("@@V@@ t0 FAIL missing nosuch0 (sees ")
    if names != ["lo"]:
        assert run_body(tmp_path, body, "only:lo").startswith("@@V@@ t0 FAIL sees ")


STUB_DOCKER = """#!/bin/sh
echo "$(date +%s.%N) docker $*" >>"$LOG"
case "$1" in
run) sleep 0.5; echo 0123abcd ;;
esac
exit 0
"""


def test_probes_sharing_namespaces_start_side_by_side(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(STUB_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    probes = [Probe(n, "lab2", f"prov-cv-{n}", mode=f"container:{n}") for n in ("aa", "bb", "cc", "dd")]
    script = start_script("lab2", probes, "probe:1", 60, parallel=True)
    t0 = time.monotonic()
    res = subprocess.run(
        ["sh", "-s"],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(tmp_path / "log")},
    )
    took = time.monotonic() - t0
    assert sorted(res.stdout.splitlines()) == [
        f"@@V@@ p{i} ok - prov-cv-{n}" for i, n in enumerate(("aa", "bb", "cc", "dd"))
    ]
    assert took < 1.5, f"four 0.5 s starts took {took:.1f}s: not side by side"
    assert "--network container:aa" in (tmp_path / "log").read_text()


def test_the_outside_host_gets_the_probe_image_from_its_archive_for_the_listener(tmp_path: Path) -> None:
    archive = tmp_path / "probe.tar"
    make_archive(archive)
    inv = inv_with(
        TUTORIAL,
        {"net1": {"driver": "bridge", "subnet": "198.19.2.0/24"}},
        verify={"outside": ADDR["lab1"], "image": "provisioner-lab/probe:latest", "image_archive": str(archive)},
    )
    hosts = tutorial_hosts(healthy)
    lab1 = hosts["lab1"]
    lab1.listener = cv.NO_IMAGE  # discovery: the image is not there
    lab1.after_load = "ok 47993"  # the listener, once the image is loaded
    lab1.conn.on(r"docker load", rc=0)
    out, _ = run_check(hosts, inv)
    assert out.startswith("all 6 expectations"), out
    assert "box -> 198.18.0.11:47993 (NAT out as 198.18.0.12): ok" in out
    assert "loaded provisioner-lab/probe:latest on lab1 (verify.image_archive) for the NAT listener" in " ".join(
        out.split()
    )
    assert any("docker load" in c for c in lab1.conn.calls)


def test_isolation_broken_by_an_undeclared_connection_names_it() -> None:
    def reach(probe: str, target: str) -> str:
        return "ok" if target == "172.17.0.2" and probe == "prov-cv-box" else healthy(probe, target)

    hosts = tutorial_hosts(reach)
    # box is on bridge too, by hand: the inventory says net1 only
    hosts["lab2"].inspect[1] = inspected("box", net1="198.19.2.2", bridge="172.17.0.3")
    _, data = run_check(hosts, tutorial_inv())
    assert data is not None
    (p,) = [p for p in data["pairs"] if p["verdict"] == "isolation broken"]
    assert (p["source"], p["destination"]) == ("box", "httpd")
    assert p["likely_cause"].startswith("box is connected to bridge on lab2, which the inventory does not declare")


STUB_PING = """#!/bin/sh
# ping -c 1 -w D -W 1 TARGET: replies when TARGET is listed in $REACH; records the deadline it was given
for a; do :; done
prev=; for a; do [ "$prev" = -w ] && echo "$a" >>"$LOG"; prev=$a; done
grep -qx "$a" "$REACH"
"""


@pytest.mark.parametrize(("brief", "deadline"), [("", "20"), ("brief", "2")])
def test_a_pair_is_pinged_until_its_first_reply_for_its_deadline(tmp_path: Path, brief: str, deadline: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ping").write_text(STUB_PING)
    (bin_dir / "ping").chmod(0o755)
    (tmp_path / "reach").write_text("198.19.2.3\n")
    body = cv.REACH.body(VerifySettings(), "")  # retries 3, timeout 10: a reach waits up to 20 s
    script = f"f() {{ {body}; }}\nf - 198.19.2.3 t0 {brief}\nf - 198.19.2.4 t1 {brief}\n"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(tmp_path / "log"), "REACH": str(tmp_path / "reach")}
    res = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=30, env=env)
    assert res.stdout.splitlines() == ["@@V@@ t0 ok", "@@V@@ t1 FAIL"]
    assert (tmp_path / "log").read_text().split() == [deadline, deadline]


def test_an_unreachable_outside_host_leaves_nat_out_to_a_ping() -> None:
    hosts = tutorial_hosts(healthy)

    def unreachable(_cmd: str, _stdin: bytes | None) -> RunResult:
        raise ConnectError("lab1", "cannot connect to 198.18.0.11:22: No route to host")

    hosts["lab1"].conn = FakeConnection("lab1").on(r"^sh -s$", respond=unreachable)
    out, data = run_check(hosts, tutorial_inv())
    assert data is not None
    assert {p["kind"] for p in data["pairs"] if p["network"] == "verify.outside"} == {"cout"}
    assert "lab1 (verify.outside) could not be read" in " ".join(out.split())


def test_docker_28_names_its_per_container_drop_in_raw_prerouting() -> None:
    r = rule_set("lab2", facts("lab2", server_version="28.5.2"))
    assert r.isolation == "isolated"
    assert "raw PREROUTING" in r.name and "DOCKER-USER alone cannot open it" in r.name
    assert "per container in raw PREROUTING" in r.isolation_why
    assert "raw" not in rule_set("lab2", facts("lab2", server_version="26.1.5")).name
