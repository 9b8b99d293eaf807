"""Swarm planning (init / join / left alone / another swarm), the join over the manager's connection,
swarm-scope networks, and the store container specs (etcd; zookeeper refused)."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.connection.base import ShellConnection
from provisioner.connection.fake import FakeConnection
from provisioner.engine.executor import apply_change
from provisioner.errors import TaskError
from provisioner.facts import HostFacts, NetworkFact
from provisioner.inventory import Inventory
from provisioner.modules import docker_network, kv_store, swarm
from provisioner.modules.base import ApplyContext, Change, NoOp, Plan, PlanContext
from tests import builders
from tests.builders import ADDR

TOKEN = "SWMTKN-1-secretsecret"


def inventory(mode: str = "swarm", **kv: Any) -> Inventory:
    return builders.inventory(docker={"overlay_mode": mode}, kv_store={"hosts": ["lab1"], **kv})


def host(name: str, **docker: Any) -> HostFacts:
    return builders.facts(name, **docker)


MANAGER = {"swarm_state": "active", "swarm_manager": True, "swarm_cluster_id": "c1", "swarm_node_id": "m1"}


def plan(name: str, facts: dict[str, HostFacts], inv: Inventory | None = None) -> Plan:
    ctx = PlanContext(host=name, facts=facts[name], inventory=inv or inventory(), all_facts=facts)
    return swarm.SwarmModule().plan(ctx, swarm.SwarmArgs())


def reason(p: Plan) -> str:
    assert isinstance(p, NoOp), p
    return p.reason


def change(p: Plan) -> Change:
    assert isinstance(p, list) and len(p) == 1, p
    return p[0]


def test_fresh_cluster_inits_on_the_first_docker_host_and_joins_the_other() -> None:
    facts = {"lab2": host("lab2"), "lab3": host("lab3")}
    init = change(plan("lab2", facts))
    assert init.commands == ["docker swarm init --advertise-addr 198.18.0.12 --listen-addr 198.18.0.12:2377"]
    join = change(plan("lab3", facts))
    assert join.description.startswith("join lab3 to the swarm of lab2 as a worker (manager 198.18.0.12:2377")
    assert "docker swarm join --token *** --advertise-addr 198.18.0.13 198.18.0.12:2377" in join.commands
    # one host at a time, in inventory order: the init is applied before the join
    assert init.exclusive == join.exclusive == swarm.EXCLUSIVE_GROUP
    assert init.notes[0] == "overlay mode swarm (set in docker.overlay_mode)"


def test_members_of_this_swarm_are_left_alone() -> None:
    facts = {
        "lab2": host("lab2", **MANAGER),
        # workers report no cluster id, only their managers
        "lab3": host("lab3", swarm_state="active", swarm_node_id="w1", swarm_remote_managers=["m1"]),
    }
    assert reason(plan("lab2", facts)).startswith("manager of swarm c1 (node m1")
    assert reason(plan("lab3", facts)).startswith("already in this swarm (c1) as worker (node w1)")
    facts["lab3"] = host("lab3", swarm_state="active", swarm_manager=True, swarm_cluster_id="c1", swarm_node_id="m2")
    assert reason(plan("lab3", facts)).startswith("already in this swarm (c1) as manager")


@pytest.mark.parametrize(
    ("lab3", "message"),
    [
        ({"swarm_state": "active", "swarm_manager": True, "swarm_cluster_id": "c9"},
         r"another swarm \(c9\) than lab2's \(c1\)"),
        ({"swarm_state": "active", "swarm_remote_managers": ["m9"]}, r"another swarm \(managed by m9\)"),
        ({"swarm_state": "pending"}, r"swarm state is pending"),
    ],
)  # fmt: skip
def test_a_node_in_another_swarm_is_drift(lab3: dict[str, Any], message: str) -> None:
    facts = {"lab2": host("lab2", **MANAGER), "lab3": host("lab3", **lab3)}
    with pytest.raises(TaskError, match=message):
        plan("lab3", facts)


def test_a_node_in_a_swarm_while_the_manager_is_not_is_drift_too() -> None:
    facts = {"lab2": host("lab2"), "lab3": host("lab3", swarm_state="active", swarm_cluster_id="c9")}
    with pytest.raises(TaskError, match=r"another swarm \(c9\) than lab2's \(none yet"):
        plan("lab3", facts)


def test_the_first_docker_host_must_be_a_manager() -> None:
    facts = {"lab2": host("lab2", swarm_state="active", swarm_node_id="w1"), "lab3": host("lab3")}
    with pytest.raises(TaskError, match="lab2 is a worker in swarm") as e:
        plan("lab2", facts)
    assert "docker node promote w1" in str(e.value)


def test_kv_mode_needs_no_swarm() -> None:
    facts = {"lab2": host("lab2"), "lab3": host("lab3")}
    assert (
        reason(plan("lab2", facts, inventory("kv"))) == "overlay mode kv (set in docker.overlay_mode): no swarm needed"
    )


def test_join_reads_the_token_over_the_managers_connection_and_hides_it() -> None:
    facts = {"lab2": host("lab2"), "lab3": host("lab3")}
    join = change(plan("lab3", facts))
    manager = FakeConnection("lab2").on(r"^docker swarm join-token -q worker$", stdout=TOKEN + "\n")
    worker = FakeConnection("lab3").on(r"^docker swarm join ", rc=1, stderr=f"bad token {TOKEN}")
    conns: dict[str, ShellConnection] = {"lab2": manager}
    ctx = ApplyContext(host="lab3", conn=worker, facts=facts["lab3"], inventory=inventory(),
                       connection_to=conns.__getitem__, all_facts=facts)  # fmt: skip
    with pytest.raises(TaskError) as e:
        apply_change(ctx, join)
    assert TOKEN not in str(e.value) and "could not join lab3 to the swarm at 198.18.0.12:2377" in str(e.value)
    assert any(TOKEN in c and "--advertise-addr 198.18.0.13 198.18.0.12:2377" in c for c in worker.calls)


# ---- networks in swarm mode ----------------------------------------------------------------------


def test_swarm_networks_are_attachable_with_swarm_scope_and_made_on_the_manager() -> None:
    inv = inventory()
    net = inv.networks["ov_net1"]
    assert docker_network.create_command("ov_net1", net, swarm=True).endswith("--attachable --scope swarm ov_net1")
    mod = docker_network.DockerNetworkModule()
    worker = host("lab2", swarm_state="active")
    on_worker = change(mod.plan(PlanContext("lab2", worker, inv, {"lab2": worker}), docker_network.DockerNetworkArgs()))
    assert on_worker.commands[0] == docker_network.SWARM_MANAGER_CHECK  # apply stops there on a worker
    manager = host("lab2", **MANAGER)
    p = mod.plan(PlanContext("lab2", manager, inv, {"lab2": manager}), docker_network.DockerNetworkArgs())
    assert change(p).commands[0].endswith("--scope swarm ov_net1")
    # a global-scope ov_net1 left from kv mode is drift in swarm mode
    old = NetworkFact(name="ov_net1", driver="overlay", scope="global", subnets=["198.19.1.0/24"], attachable=True)
    assert docker_network.drift(net, old, swarm=True) == ["scope: global on the host, swarm in the inventory"]
    assert docker_network.drift(net, old, swarm=False) == []


def test_swarm_refuses_non_attachable_overlays_at_validate() -> None:
    with pytest.raises(ValueError, match="invalid_many"):
        Inventory.model_validate(
            {
                "hosts": {"lab1": {"address": ADDR["lab1"]}},
                "kv_store": {"hosts": ["lab1"]},
                "docker": {"overlay_mode": "swarm"},
                "networks": {"ov_net1": {"subnet": "198.19.1.0/24", "attachable": False}},
            }
        )


# ---- store container specs -----------------------------------------------------------------------


def test_etcd_single_node_spec_works_with_any_image_entrypoint() -> None:
    node = kv_store.StoreNode("lab1", ADDR["lab1"], 2379, (), 1)
    opts, cmd = kv_store.BACKENDS["etcd"].run_args(node)
    assert opts[:2] == ["--entrypoint", "etcd"] and "198.18.0.11:2379:2379" in opts
    assert "--enable-v2=true" in cmd and "etcd" not in cmd
    assert "--advertise-client-urls=http://198.18.0.11:2379" in cmd


def test_etcd_quorum_spec_names_every_member() -> None:
    node = kv_store.StoreNode("kv2", "198.18.0.22", 2379, ("198.18.0.21", "198.18.0.23"), 3)
    opts, cmd = kv_store.BACKENDS["etcd"].run_args(node)
    assert opts == ["--entrypoint", "etcd", "--network", "host"]
    cluster = next(a for a in cmd if a.startswith("--initial-cluster="))
    assert cluster == (
        "--initial-cluster=198.18.0.21=http://198.18.0.21:2380,kv2=http://198.18.0.22:2380,"
        "198.18.0.23=http://198.18.0.23:2380"
    )
    assert "--listen-peer-urls=http://198.18.0.22:2380" in cmd and "--initial-cluster-state=new" in cmd
    inv = inventory("kv", backend="etcd")
    assert kv_store.cluster_store_url(inv) == "etcd://198.18.0.11:2379"


def test_zookeeper_store_is_refused_with_the_reason_and_the_alternatives() -> None:
    inv = inventory("swarm", backend="zookeeper")  # the only mode where such an inventory loads
    with pytest.raises(TaskError, match="libnetwork panics") as e:
        kv_store.backend_of(inv)
    assert "set kv_store.backend: etcd, or docker.overlay_mode: swarm" in str(e.value)
