"""``swarm``: the docker hosts as one swarm, for swarm-mode overlays (``docker.overlay_mode: swarm|auto``).

The first docker host (inventory order) is the manager: ``docker swarm init --advertise-addr`` with its
advertise interface's address. The others join as workers with the worker token, which is read from the
manager over the run's one connection to it when the join is applied (after the init, in the same run).
Changes are applied one host at a time in inventory order, so the init happens before any join.

Nodes already in the manager's swarm are left alone. A node in another swarm is drift: that host fails
with the reason (it is never moved silently). In kv mode the task does nothing.
"""

from __future__ import annotations

from provisioner.connection.base import q
from provisioner.errors import TaskError
from provisioner.facts import HostFacts
from provisioner.inventory import Inventory
from provisioner.modules.base import Change, Module, ModuleArgs, NoOp, Plan, PlanContext, register
from provisioner.modules.capabilities import docker_hosts, overlay_mode
from provisioner.steps import Run, Step

SWARM_PORT = 2377
EXCLUSIVE_GROUP = "swarm-membership"


class SwarmArgs(ModuleArgs):
    """No arguments: the manager is the first docker host, addresses come from advertise_interface."""


def manager_of(inventory: Inventory) -> str:
    return docker_hosts(inventory)[0]


def advertise_addr(inventory: Inventory, facts: HostFacts) -> str:
    iface = inventory.advertise_interface(facts.host)
    addr = facts.address_of(iface)
    if addr is None or ":" in addr:
        raise TaskError(
            f"{facts.host}: advertise interface {iface} has no IPv4 address for the swarm",
            fix=f"set advertise_interface for {facts.host} to an interface with an address the other hosts reach",
        )
    return addr


def plan_swarm(inventory: Inventory, host: str, facts: HostFacts, manager: HostFacts | None) -> Plan:
    """What this host needs to be in the cluster's swarm. ``manager`` is the manager's facts (None:
    not gathered, e.g. excluded by --limit)."""
    d = facts.docker
    name = manager_of(inventory)
    addr = advertise_addr(inventory, facts)
    if host == name:
        if d.swarm_state == "active":
            if not d.swarm_manager:
                raise TaskError(
                    f"{host} is a worker in swarm {d.swarm_cluster_id or '?'}, but provisioner manages the swarm "
                    f"through the first docker host ({host}), which must be a manager",
                    fix=f"promote {host} (`docker node promote {d.swarm_node_id or host}` on a manager) or make "
                    "a manager the first host of the docker group",
                )
            return NoOp(f"manager of swarm {d.swarm_cluster_id} (node {d.swarm_node_id}, {d.swarm_node_addr})")
        _not_stuck(host, facts)
        cmd = f"docker swarm init --advertise-addr {q(addr)} --listen-addr {q(f'{addr}:{SWARM_PORT}')}"
        return [
            Change(
                f"initialise the swarm on {host} (manager, advertise {addr})",
                steps=[
                    Run(
                        cmd,
                        timeout=120,
                        what=f"could not initialise the swarm on {host}",
                        fix="read the error above; `docker info` shows the swarm state",
                    )
                ],
                exclusive=EXCLUSIVE_GROUP,
            )
        ]
    if manager is None:
        raise TaskError(
            f"{host}: cannot plan the swarm without the manager {name} (not in this run)",
            fix=f"include {name} in the run (--limit)",
        )
    m = manager.docker
    want = m.swarm_cluster_id if m.swarm_state == "active" else None
    if d.swarm_state == "active":
        # a manager reports the cluster id; a worker only the managers it talks to
        same = want is not None and (
            d.swarm_cluster_id == want
            if d.swarm_cluster_id
            else m.swarm_node_id is not None and m.swarm_node_id in d.swarm_remote_managers
        )
        if same:
            role = "manager" if d.swarm_manager else "worker"
            return NoOp(f"already in this swarm ({want}) as {role} (node {d.swarm_node_id})")
        theirs = d.swarm_cluster_id or f"managed by {', '.join(d.swarm_remote_managers) or '?'}"
        raise TaskError(
            f"{host} is in another swarm ({theirs}) than {name}'s "
            f"({want or 'none yet: ' + name + ' is not in a swarm'}); provisioner does not move nodes between swarms",
            fix=f"if {host} should leave its swarm, run `docker swarm leave --force` on {host} and apply again",
        )
    _not_stuck(host, facts)
    mgr_addr = advertise_addr(inventory, manager)
    target = f"{mgr_addr}:{SWARM_PORT}"
    return [
        Change(
            f"join {host} to the swarm of {name} as a worker (manager {target}, advertise {addr})",
            steps=join_steps(host, name, addr, target),
            exclusive=EXCLUSIVE_GROUP,
        )
    ]


def _not_stuck(host: str, facts: HostFacts) -> None:
    state = facts.docker.swarm_state
    if state not in ("inactive", "active", ""):
        raise TaskError(
            f"{host}: swarm state is {state} (a join or leave did not finish)",
            fix=f"look at `docker info` on {host}; `docker swarm leave --force` resets it, then apply again",
        )


def join_steps(host: str, manager: str, addr: str, target: str) -> list[Step]:
    """Read the worker token on the manager (kept as a secret: printed and traced as ***), then join."""
    return [
        Run(
            "docker swarm join-token -q worker",
            host=manager,
            capture="token",
            what=f"could not read the worker join token from {manager}",
            fix=f"check that {manager} is a swarm manager (`docker node ls` there)",
        ),
        Run(
            f"docker swarm join --token @@token@@ --advertise-addr {q(addr)} {q(target)}",
            timeout=120,
            what=f"could not join {host} to the swarm at {target}",
            fix=f"TCP {SWARM_PORT} and 7946, UDP 7946 and 4789 must be open between {host} and {manager}",
        ),
    ]


@register
class SwarmModule(Module[SwarmArgs]):
    name = "swarm"
    Args = SwarmArgs
    summary = "the docker hosts as one swarm (overlay_mode swarm/auto): init on the first, join the others"

    def describe(self, args: SwarmArgs) -> str:
        return "swarm membership"

    def plan(self, ctx: PlanContext, args: SwarmArgs) -> Plan:
        choice = overlay_mode(ctx.inventory, {**ctx.all_facts, ctx.host: ctx.facts})
        if choice.mode != "swarm":
            return NoOp(f"{choice.label()}: no swarm needed")
        if ctx.host not in docker_hosts(ctx.inventory):
            return NoOp(f"{ctx.host} is not a docker host; it stays out of the swarm")
        d = ctx.facts.docker
        if not d.active:
            raise TaskError(f"{ctx.host}: Docker is not running ({d.state})", fix="systemctl start docker")
        manager = manager_of(ctx.inventory)
        mfacts = ctx.facts if ctx.host == manager else ctx.all_facts.get(manager)
        result = plan_swarm(ctx.inventory, ctx.host, ctx.facts, mfacts)
        if isinstance(result, NoOp):
            return NoOp(f"{result.reason} ({choice.label()})")
        if isinstance(result, list):
            for c in result:
                c.notes.insert(0, choice.label())
        return result
