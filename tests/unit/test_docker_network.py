"""docker_network placement: where each network is created, as data: (network, host) -> plan."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.facts import NetworkFact
from provisioner.modules.base import NoOp
from provisioner.modules.docker_network import DockerNetworkModule, placed_on
from tests.builders import STORE, changes, facts, inventory, plan

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
