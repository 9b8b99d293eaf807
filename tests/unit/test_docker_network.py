"""docker_network, data-driven: where each network is created, create commands, drift per host, recreate."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.connection.fake import FakeConnection
from provisioner.engine.executor import apply_change
from provisioner.errors import TaskError
from provisioner.facts import ContainerFact, NetworkFact
from provisioner.modules import docker_network
from provisioner.modules.base import NoOp
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
    with pytest.raises(TaskError, match="no cluster store"):
        plan(docker_network.DockerNetworkModule(), facts("lab2"))
