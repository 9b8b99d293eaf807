"""``docker_network``: the inventory's networks, each created where it belongs.

Overlay networks are global scope (shared through the cluster store, or the swarm), so the first docker
host creates them; the other hosts only check that they see them (kv mode). Local-scope networks
(bridge, macvlan) are created on every host of their ``hosts`` (default: docker.group), and drift is
judged per host. An existing network with other settings is drift: the plan names the differences and the
containers recreating it would disconnect. ``plan`` shows the recreation (exit 3: drift) and says that
apply carries it out only with ``--recreate-networks``; ``apply`` without the flag refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping

from provisioner.connection.base import q
from provisioner.errors import TaskError
from provisioner.facts import HostFacts, NetworkFact
from provisioner.inventory import Inventory, Network
from provisioner.modules.base import Change, Module, ModuleArgs, NoOp, Plan, PlanContext, register
from provisioner.modules.capabilities import overlay_mode
from provisioner.steps import Run, Step


class DockerNetworkArgs(ModuleArgs):
    # one network of the inventory; default: every network in the inventory
    name: str | None = None


def create_command(name: str, net: Network, swarm: bool = False) -> str:
    """``swarm``: a swarm-scope overlay, always attachable so plain containers (and probes) can join."""
    parts = ["docker network create", f"--driver {q(net.driver)}", f"--subnet {q(str(net.subnet))}"]
    if net.gateway is not None:
        parts.append(f"--gateway {q(str(net.gateway))}")
    if net.ip_range is not None:
        parts.append(f"--ip-range {q(str(net.ip_range))}")
    if net.attachable or (swarm and net.driver == "overlay"):
        parts.append("--attachable")
    if swarm and net.driver == "overlay":
        parts.append("--scope swarm")
    options = dict(net.options)
    if net.parent is not None:
        options["parent"] = net.parent
    parts.extend(f"--opt {q(f'{k}={v}')}" for k, v in sorted(options.items()))
    parts.append(q(name))
    return " ".join(parts)


def drift(net: Network, have: NetworkFact, swarm: bool = False) -> list[str]:
    """What differs between the inventory's network and the existing one (empty: the same)."""
    out: list[str] = []

    def differs(what: str, have_v: object, want_v: object) -> None:
        if have_v != want_v:
            out.append(f"{what}: {_shown(have_v)} on the host, {_shown(want_v)} in the inventory")

    differs("driver", have.driver, net.driver)
    if net.driver == "overlay" and have.scope:
        differs("scope", have.scope, "swarm" if swarm else "global")
    differs("subnet", ", ".join(have.subnets), str(net.subnet))
    if net.gateway is not None:
        differs("gateway", ", ".join(have.gateways), str(net.gateway))
    differs("ip_range", ", ".join(have.ip_ranges), str(net.ip_range) if net.ip_range is not None else "")
    differs("attachable", have.attachable, net.attachable)
    want_opts = dict(net.options)
    if net.parent is not None:
        want_opts["parent"] = net.parent
    for k, v in sorted(want_opts.items()):
        differs(f"option {k}", have.options.get(k, ""), v)
    return out


def _shown(v: object) -> str:
    return "(none)" if v in ("", None) else str(v)


def attached(all_facts: Mapping[str, HostFacts], name: str) -> dict[str, list[str]]:
    """host -> containers on that host attached to network ``name``."""
    out: dict[str, list[str]] = {}
    for host, f in all_facts.items():
        names = sorted(c.name for c in f.docker.containers if name in c.networks)
        if names:
            out[host] = names
    return out


def placed_on(inventory: Inventory, net: Network) -> list[str]:
    """Where a network is created: a global-scope overlay once, on the first docker host (the swarm's
    manager in swarm mode); a local-scope network (bridge, macvlan) on each host of its ``hosts``."""
    docker = inventory.docker_hosts()
    if net.driver == "overlay":
        return docker[:1]
    if net.hosts is None:
        return docker
    return inventory.resolve_pattern(net.hosts)


def _lost_store_check(host: str, name: str, all_facts: Mapping[str, HostFacts]) -> None:
    """A global-scope network that other hosts see and this one does not: this Docker lost the store."""
    elsewhere = [h for h, f in all_facts.items() if h != host and f.docker.network(name)]
    if elsewhere:
        raise TaskError(
            f"overlay network {name} exists on {', '.join(elsewhere)} but {host} does not see it: "
            f"{host}'s Docker does not share their cluster store",
            fix=f"restart Docker on {host} (systemctl restart docker) once the store is up; "
            "a dockerd that started while the store was down never finds it",
        )


@register
class DockerNetworkModule(Module[DockerNetworkArgs]):
    name = "docker_network"
    Args = DockerNetworkArgs
    summary = "the inventory's Docker networks (overlay: global scope); drift reported, recreated on request"

    def describe(self, args: DockerNetworkArgs) -> str:
        return f"docker_network {args.name or 'inventory networks'}"

    def plan(self, ctx: PlanContext, args: DockerNetworkArgs) -> Plan:
        inv = ctx.inventory
        if args.name is not None and args.name not in inv.networks:
            raise TaskError(
                f"network {args.name!r} is not in the inventory (networks: {', '.join(inv.networks) or 'none'})",
                fix="add it under 'networks:' in the inventory or fix the name",
            )
        wanted = {args.name: inv.networks[args.name]} if args.name else dict(inv.networks)
        if not wanted:
            return NoOp("the inventory defines no networks")
        d = ctx.facts.docker
        if not d.active:
            raise TaskError(f"{ctx.host}: Docker is not running ({d.state})", fix="run the docker_daemon task first")
        all_facts = {**ctx.all_facts, ctx.host: ctx.facts}
        swarm = overlay_mode(inv, all_facts).mode == "swarm"
        changes: list[Change] = []
        same: list[str] = []
        elsewhere_only: list[str] = []
        for name, net in wanted.items():
            have = d.network(name)
            if ctx.host not in placed_on(inv, net):
                if net.driver == "overlay" and have is None and not swarm:
                    _lost_store_check(ctx.host, name, all_facts)
                elsewhere_only.append(name)
                continue
            if have is None:
                if net.driver == "overlay" and swarm and not d.swarm_manager:
                    raise TaskError(
                        f"{ctx.host}: cannot create swarm overlay network {name}: this Docker is not a swarm manager",
                        fix="run the swarm task first (the first docker host is the swarm's manager)",
                    )
                if net.driver == "overlay" and not d.cluster_store and d.swarm_state != "active":
                    raise TaskError(
                        f"{ctx.host}: cannot create overlay network {name}: this Docker has no cluster store "
                        "and is not in a swarm",
                        fix="run the docker_daemon task first (playbooks/overlay.yml does)",
                    )
                # swarm networks show on workers only once a container there uses them
                if net.driver == "overlay" and not swarm:
                    _lost_store_check(ctx.host, name, all_facts)
                cmd = create_command(name, net, swarm)
                create = Run(cmd, what=f"could not create network {name}")
                changes.append(Change(f"create network {name} ({net.driver}, {net.subnet})", steps=[create]))
                continue
            diffs = drift(net, have, swarm)
            if not diffs:
                same.append(name)
                continue
            users = attached(all_facts, name)
            who = "; ".join(f"{h}: {', '.join(cs)}" for h, cs in users.items()) or "none"
            steps: list[Step] = [
                Run(
                    "; ".join(f"docker network disconnect -f {q(name)} {q(c)}" for c in cs),
                    host=None if h == ctx.host else h,
                    what=f"could not disconnect containers from {name}",
                )
                for h, cs in users.items()
            ]
            steps.append(
                Run(
                    f"docker network rm {q(name)} && {create_command(name, net, swarm)}",
                    what=f"could not recreate network {name}",
                )
            )
            changes.append(
                Change(
                    f"recreate network {name}: {'; '.join(diffs)}",
                    steps=steps,
                    notes=[f"disconnects: {who}"] if users else [],
                    # destructive: apply does it only when asked; plan shows it either way (exit 3)
                    requires="recreate_networks",
                )
            )
        if not changes and not same:
            where = "; ".join(f"{n}: {', '.join(placed_on(inv, inv.networks[n]))}" for n in elsewhere_only)
            return NoOp(f"no network of the inventory is placed on {ctx.host} ({where})")
        if not changes:
            return NoOp(f"{', '.join(same)} exist with the inventory's settings")
        return changes
