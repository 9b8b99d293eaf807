"""docker_network, data-driven: where each network is created, create commands, drift per host, recreate."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from provisioner.connection.fake import FakeConnection
from provisioner.engine.executor import apply_change
from provisioner.errors import RemoteError, TaskError
from provisioner.facts import (
    LINK_KINDS,
    MACVLAN_LINKS,
    MARK,
    ContainerFact,
    HostFacts,
    LinkKind,
    MacvlanLink,
    NetworkFact,
    Route,
    parse_facts,
)
from provisioner.modules import docker_network
from provisioner.modules.base import NoOp, PlanContext
from provisioner.modules.docker_network import DockerNetworkModule, placed_on
from tests.builders import (
    STORE,
    changes,
    ctx_for,
    facts,
    inventory,
    plan,
)

BRIDGE = {"driver": "bridge", "subnet": "198.19.2.0/24"}


@pytest.mark.parametrize(
    ("networks", "over", "host", "expect"),
    [
        # a global-scope overlay: created once, by the first docker host
        ({}, {}, "lab2", "create network ov_net1 (overlay"),
        ({}, {}, "lab3", "noop:no network of the inventory is placed on lab3 (ov_net1: lab2)"),
        # a local-scope bridge: on every docker host, each judged on its own
        ({"net1": BRIDGE}, {}, "lab3", "create network net1 (bridge"),
        ({"net1": {**BRIDGE, "hosts": "lab2"}}, {}, "lab3", "noop:no network of the inventory is placed on lab3"),
        ({"net1": {**BRIDGE, "hosts": ["lab1", "lab3"]}}, {}, "lab3", "create network net1 (bridge"),
        # docker.group moves the default placement
        ({"net1": BRIDGE}, {"docker": {"group": "kv"}}, "lab1", "create network net1 (bridge"),
    ],
)
def test_where_each_network_is_created(networks: dict[str, Any], over: dict[str, Any], host: str, expect: str) -> None:
    # bridges only: no overlay, so no store is needed either
    inv = inventory(networks=networks, kv_store=None, **over) if networks else inventory(**over)
    p = plan(DockerNetworkModule(), facts(host, cluster_store=STORE), inv)
    if expect.startswith("noop:"):
        assert isinstance(p, NoOp) and expect[5:] in p.reason, p
        return
    assert changes(p)[0].description.startswith(expect)


def test_placement_follows_the_inventory_order() -> None:
    inv = inventory(networks={"ov_net1": {"subnet": "198.19.1.0/24"}, "net1": BRIDGE})
    assert placed_on(inv, inv.networks["ov_net1"]) == ["lab2"]
    assert placed_on(inv, inv.networks["net1"]) == ["lab2", "lab3"]


def test_a_bridge_drifted_on_one_host_is_that_hosts_change_only() -> None:
    inv = inventory(networks={"net1": BRIDGE}, kv_store=None)
    good = NetworkFact(name="net1", driver="bridge", scope="local", subnets=["198.19.2.0/24"], attachable=True)
    bad = good.model_copy(update={"subnets": ["198.19.9.0/24"]})
    assert isinstance(plan(DockerNetworkModule(), facts("lab2", networks=[good]), inv), NoOp)
    (c,) = changes(plan(DockerNetworkModule(), facts("lab3", networks=[bad]), inv))
    assert c.description.startswith("recreate network net1: subnet") and c.requires == "recreate_networks"


def test_an_overlay_other_hosts_see_and_this_one_does_not_means_a_lost_store() -> None:
    ov = NetworkFact(name="ov_net1", driver="overlay", scope="global", subnets=["198.19.1.0/24"], attachable=True)
    lab2 = facts("lab2", networks=[ov], cluster_store=STORE)
    lab3 = facts("lab3", cluster_store=STORE)
    with pytest.raises(Exception, match="exists on lab2 but lab3 does not see it"):
        plan(DockerNetworkModule(), lab3, all_facts={"lab2": lab2, "lab3": lab3})


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
    # plan shows the create behind a check of what it needs (set up by the daemon task earlier in the
    # run); applied on a Docker still without a store, that check stops it with the reason
    (c,) = changes(plan(docker_network.DockerNetworkModule(), facts("lab2")))
    assert c.commands[0] == docker_network.CLUSTER_STORE_CHECK
    assert c.notes == ["needs the cluster store in Docker first (the docker_daemon task sets it)"]
    conn = FakeConnection("lab2").on("ClusterStore", rc=1)
    with pytest.raises(RemoteError, match="cannot create overlay network ov_net1: this Docker has no cluster store"):
        apply_change(ctx_for(conn, facts("lab2")), c)
    assert len(conn.calls) == 1  # nothing was created


# ---- every local kind: create commands, slices, drift per key, shims, preflight ----------------------

MAC = {"driver": "macvlan", "subnet": "198.18.86.0/24", "parent": "eth0"}
LOCAL = "local:"  # cases whose inventory has no store and no overlay


def local_inv(**nets: dict[str, Any]) -> Any:
    return inventory(networks=nets, kv_store=None)


def macnet(**over: Any) -> NetworkFact:
    """lab2's live macvlan network as Docker reports it (the mode only when it was given)."""
    base: dict[str, Any] = {"name": "macnet", "driver": "macvlan", "scope": "local", "subnets": ["198.18.86.0/24"],
                            "gateways": ["198.18.86.1"], "ip_ranges": ["198.18.86.32/27"], "attachable": True,
                            "options": {"parent": "eth0"}}  # fmt: skip
    base.update(over)
    return NetworkFact(**base)


@pytest.mark.parametrize(
    ("net", "host", "command"),
    [
        ({"driver": "bridge", "subnet": "198.19.2.0/24", "gateway": "198.19.2.254", "ip_range": "198.19.2.128/25",
          "internal": True, "options": {"com.docker.network.driver.mtu": 1400}}, "lab2",
         "docker network create --driver bridge --subnet 198.19.2.0/24 --gateway 198.19.2.254 --ip-range "
         "198.19.2.128/25 --internal --attachable --opt com.docker.network.driver.mtu=1400 n1"),
        # macvlan: each host its own slice (slice 0 kept for the gateway, static addresses and shims)
        ({**MAC, "mode": "private"}, "lab2",
         "docker network create --driver macvlan --subnet 198.18.86.0/24 --ip-range 198.18.86.32/27 --attachable "
         "--opt macvlan_mode=private --opt parent=eth0 n1"),
        (MAC, "lab3", "docker network create --driver macvlan --subnet 198.18.86.0/24 --ip-range 198.18.86.64/27 "
         "--attachable --opt parent=eth0 n1"),
        ({**MAC, "ip_ranges": {"lab2": "198.18.86.128/26", "lab3": "198.18.86.192/26"}}, "lab3",
         "docker network create --driver macvlan --subnet 198.18.86.0/24 --ip-range 198.18.86.192/26 --attachable "
         "--opt parent=eth0 n1"),
        ({**MAC, "driver": "ipvlan", "mode": "l3", "parent": "eth0.50", "attachable": False}, "lab2",
         "docker network create --driver ipvlan --subnet 198.18.86.0/24 --ip-range 198.18.86.32/27 "
         "--opt ipvlan_mode=l3 --opt parent=eth0.50 n1"),
    ],
)  # fmt: skip
def test_create_command_per_kind(net: dict[str, Any], host: str, command: str) -> None:
    both = {h: facts(h) for h in ("lab2", "lab3")}
    (c,) = changes(plan(DockerNetworkModule(), both[host], local_inv(n1=net), all_facts=both))
    assert c.commands == [command]


def test_plan_shows_each_hosts_slice() -> None:
    inv = local_inv(macnet=MAC)
    two = {h: facts(h) for h in ("lab2", "lab3")}
    shown = {h: changes(plan(DockerNetworkModule(), f, inv, all_facts=two))[0].description for h, f in two.items()}
    assert shown == {
        "lab2": "create network macnet (macvlan, 198.18.86.0/24, slice 198.18.86.32/27 (computed))",
        "lab3": "create network macnet (macvlan, 198.18.86.0/24, slice 198.18.86.64/27 (computed))",
    }
    # an existing network: the no-op names the slice it keeps
    p = plan(DockerNetworkModule(), facts("lab2", networks=[macnet()]), inv)
    assert isinstance(p, NoOp) and p.reason == "macnet (slice 198.18.86.32/27) exist with the inventory's settings"


@pytest.mark.parametrize(
    ("hosts", "live", "expect"),
    [
        # a slice once made never moves: lab2's live slice wins over the computed one (no drift, no recreate)
        (["lab2", "lab3"], {"lab2": "198.18.86.160/27"}, {"lab2": "198.18.86.160/27 live",
                                                          "lab3": "198.18.86.64/27 computed"}),
        # lab2 removed from the middle: lab3 would now compute slice 1, but keeps its own
        (["lab3"], {"lab3": "198.18.86.64/27"}, {"lab3": "198.18.86.64/27 live"}),
        # a host added in front of the others (lab1 comes first in the inventory): its computed slice is
        # lab2's live one, so it takes the first free one and nobody else moves
        (["lab1", "lab2", "lab3"], {"lab2": "198.18.86.32/27", "lab3": "198.18.86.64/27"},
         {"lab1": "198.18.86.96/27 first free: 198.18.86.32/27 is taken", "lab2": "198.18.86.32/27 live",
          "lab3": "198.18.86.64/27 live"}),
        # then lab2 removed too: lab3 and lab1 keep theirs; a new lab2 would not land on lab3's
        (["lab1", "lab3"], {"lab1": "198.18.86.96/27", "lab3": "198.18.86.64/27"},
         {"lab1": "198.18.86.96/27 live", "lab3": "198.18.86.64/27 live"}),
        # lab2 left the network's hosts but still has the network: its slice stays taken, lab1 does not get it
        (["lab1", "lab3"], {"lab2": "198.18.86.32/27", "lab3": "198.18.86.64/27"},
         {"lab1": "198.18.86.96/27 first free: 198.18.86.32/27 is taken", "lab3": "198.18.86.64/27 live"}),
        # a live range outside the subnet (a network made by hand) is not a slice: computed, and drift
        (["lab2"], {"lab2": "10.9.0.0/24"}, {"lab2": "198.18.86.32/27 computed"}),
    ],
)  # fmt: skip
def test_slices_are_read_back_from_live_networks(
    hosts: list[str], live: dict[str, str], expect: dict[str, str]
) -> None:
    inv = local_inv(macnet={**MAC, "hosts": hosts})
    all_facts = {h: facts(h, networks=[macnet(ip_ranges=[live[h]])] if h in live else []) for h in {*hosts, *live}}
    got = docker_network.host_slices(inv, "macnet", all_facts)
    assert {h: f"{s.range} {s.how}" for h, s in got.items()} == expect


def test_no_new_slice_while_a_host_of_the_network_is_not_seen() -> None:
    # lab2 and lab3 exist on .32 and .64; lab1 joins, in a run that does not see lab2 (--limit, unreachable):
    # lab2's slice is unknown, so lab1's is not chosen (it could land on lab2's)
    inv = local_inv(macnet={**MAC, "hosts": ["lab1", "lab2", "lab3"]})
    seen = {"lab1": facts("lab1"), "lab3": facts("lab3", networks=[macnet(ip_ranges=["198.18.86.64/27"])])}
    with pytest.raises(TaskError, match=r"cannot choose lab1's --ip-range slice without seeing lab2 \(not gathered"):
        docker_network.host_slices(inv, "macnet", seen)
    # a host whose network exists keeps its slice meanwhile
    assert isinstance(plan(DockerNetworkModule(), seen["lab3"], inv, all_facts={"lab3": seen["lab3"]}), NoOp)


def test_adding_a_host_changes_nothing_on_the_others() -> None:
    inv = local_inv(macnet={**MAC, "hosts": ["lab1", "lab2", "lab3"]})
    all_facts = {"lab1": facts("lab1"), "lab2": facts("lab2", networks=[macnet()]),
                 "lab3": facts("lab3", networks=[macnet(ip_ranges=["198.18.86.64/27"])])}  # fmt: skip
    for h in ("lab2", "lab3"):
        assert isinstance(plan(DockerNetworkModule(), all_facts[h], inv, all_facts=all_facts), NoOp)
    (c,) = changes(plan(DockerNetworkModule(), all_facts["lab1"], inv, all_facts=all_facts))
    assert "--ip-range 198.18.86.96/27" in c.commands[0]


def test_a_live_slice_that_differs_from_ip_ranges_is_drift() -> None:
    inv = local_inv(macnet={**MAC, "ip_ranges": {"lab2": "198.18.86.128/26", "lab3": "198.18.86.192/26"}})
    (c,) = changes(plan(DockerNetworkModule(), facts("lab2", networks=[macnet()]), inv))
    assert c.description == (
        "recreate network macnet: ip_range: 198.18.86.32/27 on the host, 198.18.86.128/26 in the inventory"
    )
    assert c.requires == "recreate_networks"


BR = {"driver": "bridge", "subnet": "198.19.2.0/24", "gateway": "198.19.2.1", "ip_range": "198.19.2.0/25",
      "internal": True, "options": {"com.docker.network.driver.mtu": "1400"}}  # fmt: skip
BR_LIVE = NetworkFact(name="n1", driver="bridge", scope="local", subnets=["198.19.2.0/24"], gateways=["198.19.2.1"],
                      ip_ranges=["198.19.2.0/25"], internal=True, attachable=True,
                      options={"com.docker.network.driver.mtu": "1400"})  # fmt: skip


@pytest.mark.parametrize(
    ("net", "have", "expect"),
    [
        (BR, {}, []),
        (BR, {"driver": "macvlan"}, ["driver: macvlan on the host, bridge in the inventory"]),
        (BR, {"subnets": ["198.19.3.0/24"]}, ["subnet: 198.19.3.0/24 on the host, 198.19.2.0/24 in the inventory"]),
        (BR, {"gateways": ["198.19.2.254"]}, ["gateway: 198.19.2.254 on the host, 198.19.2.1 in the inventory"]),
        (BR, {"ip_ranges": []}, ["ip_range: (none) on the host, 198.19.2.0/25 in the inventory"]),
        (BR, {"internal": False}, ["internal: False on the host, True in the inventory"]),
        (BR, {"attachable": False}, ["attachable: False on the host, True in the inventory"]),
        (BR, {"options": {}}, ["option com.docker.network.driver.mtu: (none) on the host, 1400 in the inventory"]),
        ({**BR, "internal": False}, {}, ["internal: True on the host, False in the inventory"]),
    ],
)  # fmt: skip
def test_bridge_drift_on_every_key(net: dict[str, Any], have: dict[str, Any], expect: list[str]) -> None:
    inv = local_inv(n1=net)
    assert docker_network.drift(inv.networks["n1"], BR_LIVE.model_copy(update=have)) == expect


@pytest.mark.parametrize(
    ("net", "options", "expect"),
    [
        (MAC, {"parent": "eth0"}, []),
        # no mode on either side is Docker's default, bridge; naming it changes nothing
        ({**MAC, "mode": "bridge"}, {"parent": "eth0"}, []),
        ({**MAC, "mode": "bridge"}, {"parent": "eth0", "macvlan_mode": "bridge"}, []),
        (MAC, {"parent": "eth0", "macvlan_mode": "private"},
         ["option macvlan_mode: private on the host, bridge in the inventory"]),
        ({**MAC, "mode": "vepa"}, {"parent": "eth0"},
         ["option macvlan_mode: bridge on the host, vepa in the inventory"]),
        ({**MAC, "parent": "eth0.50"}, {"parent": "eth0"},
         ["option parent: eth0 on the host, eth0.50 in the inventory"]),
    ],
)  # fmt: skip
def test_macvlan_drift_on_parent_and_mode(net: dict[str, Any], options: dict[str, str], expect: list[str]) -> None:
    inv = local_inv(macnet=net)
    ip_range = docker_network.host_slices(inv, "macnet", {h: facts(h) for h in ("lab2", "lab3")}).get("lab2")
    assert ip_range is not None
    assert docker_network.drift(inv.networks["macnet"], macnet(options=options), ip_range=ip_range.range) == expect


# the shim of lab2 on macnet: 198.18.86.31 (top of slice 0), route to its slice 198.18.86.32/27
SHIM_ON = {**MAC, "shim": True}
UNIT = "/etc/systemd/system/provisioner-shim-macnet.service"


def shim_host(
    unit: bool = True, enabled: bool = True, link: dict[str, Any] | None = None, route: bool = True
) -> HostFacts:
    inv = local_inv(macnet=SHIM_ON)
    text = docker_network.shim_unit_text(
        "macnet", inv.networks["macnet"], ipaddress.ip_address("198.18.86.31"), ipaddress.ip_network("198.18.86.32/27")
    )
    f = facts("lab2", networks=[macnet()], files={UNIT: text} if unit else {},
              probes={"shim-enabled-macnet": 0 if enabled else 1})  # fmt: skip
    f.sections += [LINK_KINDS, MACVLAN_LINKS]
    base = {"name": "shim-macnet", "parent": "eth0", "mode": "bridge", "up": True, "cidrs": ["198.18.86.31/32"]}
    if link is not None:
        f.macvlan_links["shim-macnet"] = MacvlanLink(**{**base, **link})
    if route:
        f.routes.append(Route(dst="198.18.86.32/27", dev="shim-macnet"))
    return f


@pytest.mark.parametrize(
    ("host", "expect", "steps"),
    [
        (shim_host(link={}), "noop", 0),
        (shim_host(unit=False, enabled=False, link=None, route=False),
         "shim shim-macnet for macnet: 198.18.86.31 on eth0, route 198.18.86.32/27 (no unit "
         "provisioner-shim-macnet.service; provisioner-shim-macnet.service is not enabled (it would not come back "
         "at boot); no interface shim-macnet)", 2),
        # what a reboot without the unit enabled would leave: interface gone, unit there
        (shim_host(enabled=False, link=None, route=False), "(provisioner-shim-macnet.service is not enabled", 1),
        (shim_host(link={"up": False}), "(shim-macnet is down)", 1),
        (shim_host(link={}, route=False), "(no route to 198.18.86.32/27 through shim-macnet)", 1),
        (shim_host(link={"mode": "private"}), "(shim-macnet is a macvlan on eth0 mode private, not on eth0 mode "
                                              "bridge)", 1),
    ],
)  # fmt: skip
def test_shim_changes(host: HostFacts, expect: str, steps: int) -> None:
    p = plan(DockerNetworkModule(), host, local_inv(macnet=SHIM_ON), all_facts={"lab2": host, "lab3": facts("lab3")})
    if expect == "noop":
        assert isinstance(p, NoOp), p
        return
    (c,) = changes(p)
    assert expect in c.description
    assert len(c.steps) == steps
    assert c.commands[-1] == (
        "systemctl daemon-reload && systemctl enable provisioner-shim-macnet.service && "
        "systemctl restart provisioner-shim-macnet.service"
    )
    assert c.requires is None  # a missing shim is drift that plain apply fixes


def test_shim_off_removes_the_unit() -> None:
    lab2 = shim_host(link={})
    both = {"lab2": lab2, "lab3": facts("lab3")}
    (c,) = changes(plan(DockerNetworkModule(), lab2, local_inv(macnet=MAC), all_facts=both))
    assert c.description == "remove shim shim-macnet of macnet (shim is off in the inventory)"
    assert c.commands == [
        "systemctl disable --now provisioner-shim-macnet.service; "
        "rm -f /etc/systemd/system/provisioner-shim-macnet.service && systemctl daemon-reload"
    ]


def test_shim_addresses_never_move_and_new_hosts_take_a_free_one() -> None:
    inv = local_inv(macnet={**SHIM_ON, "hosts": ["lab1", "lab2", "lab3"]})
    lab2 = shim_host(link={"cidrs": ["198.18.86.31/32"]})
    lab3 = facts("lab3")
    lab3.sections.append(MACVLAN_LINKS)
    lab3.macvlan_links["shim-macnet"] = MacvlanLink(name="shim-macnet", parent="eth0", mode="bridge", up=True,
                                                    cidrs=["198.18.86.29/32"])  # fmt: skip
    got = docker_network.shim_addresses(inv, "macnet", {"lab1": facts("lab1"), "lab2": lab2, "lab3": lab3})
    # lab1 would take the top address (it comes first), but lab2 has it: the first free one is .30
    assert {h: str(a) for h, a in got.items()} == {
        "lab1": "198.18.86.30",
        "lab2": "198.18.86.31",
        "lab3": "198.18.86.29",
    }


def test_a_shim_of_a_host_that_left_the_network_stays_taken() -> None:
    inv = local_inv(macnet={**SHIM_ON, "hosts": ["lab1", "lab3"]})
    lab2 = shim_host(link={"cidrs": ["198.18.86.31/32"]})  # lab2 left macnet's hosts, its shim is still up
    got = docker_network.shim_addresses(inv, "macnet", {"lab1": facts("lab1"), "lab2": lab2, "lab3": facts("lab3")})
    assert {h: str(a) for h, a in got.items()} == {"lab1": "198.18.86.30", "lab3": "198.18.86.29"}
    # lab1's network exists (its slice is known), lab3 is not seen: its shim could hold any free address
    lab1 = facts("lab1", networks=[macnet(ip_ranges=["198.18.86.96/27"])])
    with pytest.raises(TaskError, match="cannot choose lab1's shim address without seeing lab3"):
        docker_network.shim_addresses(inv, "macnet", {"lab1": lab1, "lab2": lab2})


def with_kernel(f: HostFacts, **kinds: bool | None) -> HostFacts:
    for k, ok in kinds.items():
        f.link_kinds[k] = LinkKind(supported=ok, error="" if ok else "Error: Unknown device type.")
    return f


@pytest.mark.parametrize(
    ("net", "host", "expect"),
    [
        ({**MAC, "driver": "ipvlan", "mode": "l2"}, with_kernel(facts("lab2"), ipvlan=False),
         "network n1 (ipvlan): the kernel of lab2 (unknown) has no ipvlan (`ip link add ... type ipvlan` says: "
         "Error: Unknown device type.); Docker would create the network and then fail every container on it"),
        # could not tell (no unshare, no root): no refusal on a guess
        ({**MAC, "driver": "ipvlan"}, with_kernel(facts("lab2"), ipvlan=None), ""),
        (MAC, with_kernel(facts("lab2"), macvlan=True, ipvlan=False), ""),
        ({**MAC, "parent": "eth9"}, facts("lab2"), "network n1: parent interface eth9 does not exist on lab2 "
                                                   "(its interfaces: eth0)"),
        # a VLAN sub-interface Docker creates: fine when its interface exists
        ({**MAC, "parent": "eth0.50"}, facts("lab2"), ""),
        ({**MAC, "parent": "eth9.50"}, facts("lab2"), "network n1: parent interface eth9.50 does not"),
        ({**MAC, "shim": True, "mode": "private"}, facts("lab2"), "network n1: shim needs macvlan mode bridge"),
        # the host's own address inside a host's slice: Docker would hand it to a container
        (MAC, facts("lab2", ip="198.18.86.40"), "network n1: 198.18.86.40 (lab2's eth0) lies in lab2's slice "
                                                "198.18.86.32/27"),
        # on the hosts' own segment, the hosts' addresses in slice 0: fine
        ({**MAC, "subnet": "198.18.0.0/24"}, facts("lab2"), ""),
        # a network not placed on this host is not this host's business
        ({**MAC, "driver": "ipvlan", "hosts": "lab3"}, with_kernel(facts("lab2"), ipvlan=False), ""),
    ],
)  # fmt: skip
def test_preflight(net: dict[str, Any], host: HostFacts, expect: str) -> None:
    inv = local_inv(n1=net)
    mod = DockerNetworkModule()
    everyone = {"lab3": facts("lab3"), host.host: host}
    reasons = mod.preflight(PlanContext(host.host, host, inv, everyone), mod.Args.model_validate({}))
    if not expect:
        assert reasons == []
        return
    assert len(reasons) == 1 and reasons[0].startswith(expect), reasons


def test_preflight_refuses_overlapping_live_slices() -> None:
    inv = local_inv(macnet=MAC)
    lab2, lab3 = facts("lab2", networks=[macnet()]), facts("lab3", networks=[macnet()])  # both on .32/27
    mod = DockerNetworkModule()
    (reason,) = mod.preflight(PlanContext("lab2", lab2, inv, {"lab2": lab2, "lab3": lab3}), mod.Args())
    assert reason.startswith("network macnet: lab2's slice 198.18.86.32/27 (live) overlaps lab3's 198.18.86.32/27")


def test_the_sections_a_macvlan_network_needs() -> None:
    inv = local_inv(macnet=SHIM_ON, n1=BR)
    mod = DockerNetworkModule()
    args = mod.Args()
    assert list(mod.fact_sections(args, inv)) == [LINK_KINDS, MACVLAN_LINKS]
    assert mod.watch(args, inv) == [UNIT]
    assert mod.inventory_probes(args, inv) == {
        "shim-enabled-macnet": "systemctl is-enabled -q provisioner-shim-macnet.service"
    }
    assert list(mod.fact_sections(args, local_inv(n1=BR))) == []


def test_docker_own_networks_are_never_touched() -> None:
    builtin = [NetworkFact(name=n, driver=d, scope="local") for n, d in (("bridge", "bridge"), ("host", "host"),
                                                                          ("none", "null"))]  # fmt: skip
    (c,) = changes(plan(DockerNetworkModule(), facts("lab2", networks=builtin), local_inv(n1=BR)))
    assert c.commands == [docker_network.create_command("n1", local_inv(n1=BR).networks["n1"])]


@pytest.mark.parametrize(
    ("output", "kinds"),
    [
        ("macvlan 0 \nipvlan 2 Error: Unknown device type. ", {"macvlan": True, "ipvlan": False}),
        ("macvlan 0 \nipvlan 1 unshare: unshare failed: Operation not permitted", {"macvlan": True, "ipvlan": None}),
        ("", {}),
    ],
)
def test_link_kinds_section(output: str, kinds: dict[str, bool | None]) -> None:
    f = parse_facts("lab2", f"{MARK} {LINK_KINDS}\n{output}\n", sections=[LINK_KINDS])
    assert {k: v.supported for k, v in f.link_kinds.items()} == kinds


def test_macvlan_links_section() -> None:
    links = ('[{"ifname":"shim-macnet","link":"eth0","flags":["BROADCAST","UP","LOWER_UP"],'
             '"linkinfo":{"info_kind":"macvlan","info_data":{"mode":"bridge"}},'
             '"addr_info":[{"family":"inet","local":"198.18.86.31","prefixlen":32}]}]')  # fmt: skip
    routes = '[{"dst":"default","gateway":"198.18.85.1","dev":"eth0"},{"dst":"198.18.86.32/27","dev":"shim-macnet"}]'
    body = f"{MARK} {MACVLAN_LINKS}\n@@PART@@ links\n{links}\n\n@@PART@@ routes\n{routes}\n"
    f = parse_facts("lab2", body, sections=[MACVLAN_LINKS])
    assert f.macvlan_links["shim-macnet"] == MacvlanLink(
        name="shim-macnet", parent="eth0", mode="bridge", up=True, cidrs=["198.18.86.31/32"]
    )
    assert f.routes[1] == Route(dst="198.18.86.32/27", dev="shim-macnet")
