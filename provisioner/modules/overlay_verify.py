"""``overlay_verify``: prove cross-host reachability over the overlay networks (a read-only check).

Run once; it works on every docker host over the run's connections: checks the key-value store first,
then hands the check engine (``provisioner.checks``) one expectation per host pair and overlay network
(every docker host must reach every other) and one probe container per host and network; the engine
pings every other probe from each (N x N, with bounded retries; one round trip per host, on the run's
worker pool), renders the host x host matrix and removes the probes whatever happened.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from provisioner.errors import TaskError
from provisioner.inventory import Inventory
from provisioner.modules.base import (
    ApplyContext,
    Check,
    CheckFailed,
    CheckOutcome,
    Module,
    ModuleArgs,
    NoOp,
    Plan,
    PlanContext,
    register,
)
from provisioner.modules.capabilities import overlay_mode
from provisioner.modules.kv_store import backend_of, cluster_store_url, quorum_down

if TYPE_CHECKING:
    # the check engine is loaded when a check runs, not by a run that only plans this task
    from provisioner.checks import Expectation, Probe

PROBE_PREFIX = "prov-probe-"


class OverlayVerifyArgs(ModuleArgs):
    # one network of the inventory; default: every overlay network in the inventory
    network: str | None = None
    # which hosts take part (host pattern); default: the docker hosts (docker.group)
    hosts: str | None = None


def probe_name(network: str, host: str) -> str:
    # endpoint names on a global-scope network are cluster-wide: one name per host
    return f"{PROBE_PREFIX}{network}-{host}"


def probe_ips(inventory: Inventory, networks: list[str], hosts: list[str]) -> dict[str, dict[str, str]]:
    """A fixed address per host and network for its probe, from the top of the network's subnet.

    With addresses handed out afresh on every run, an address reused on another host meets the old
    host's entry still in the other hosts' overlay peer tables (their delete and add events race), and
    that pair gets no reply. The same address on the same host every time makes the old entry right.
    """
    out: dict[str, dict[str, str]] = {h: {} for h in hosts}
    for net in networks:
        spec = inventory.networks.get(net)
        if spec is None:
            continue
        subnet = ipaddress.ip_network(str(spec.subnet))
        if subnet.version != 4 or subnet.num_addresses < len(hosts) + 4:
            continue
        taken = {str(spec.gateway)} if spec.gateway is not None else set()
        candidates = (str(subnet.broadcast_address - 1 - i) for i in range(subnet.num_addresses - 2))
        free = (ip for ip in candidates if ip not in taken)
        for host in hosts:
            out[host][net] = next(free)
    return out


def probes(inventory: Inventory, networks: list[str], hosts: list[str]) -> list[Probe]:
    from provisioner.checks import Net, Probe

    """One probe per host and network (network by network, so each host starts its probes in that order)."""
    ips = probe_ips(inventory, networks, hosts)
    return [Probe(h, h, probe_name(n, h), net=Net(n), ip=ips[h].get(n)) for n in networks for h in hosts]


def expectations(networks: list[str], hosts: list[str]) -> list[Expectation]:
    from provisioner.checks import Expectation, Net

    """Every docker host reaches every other over each overlay network (a global-scope network)."""
    return [
        Expectation(src, dst, Net(n), "ping", "reach", f"{src} and {dst} are docker hosts on overlay network {n}")
        for n in networks
        for src in hosts
        for dst in hosts
        if src != dst
    ]


@register
class OverlayVerifyModule(Module[OverlayVerifyArgs]):
    name = "overlay_verify"
    Args = OverlayVerifyArgs
    summary = "ping matrix between probe containers on every docker host over the overlay networks (read-only)"

    def describe(self, args: OverlayVerifyArgs) -> str:
        return f"overlay_verify {args.network or 'overlay networks'}"

    def plan(self, ctx: PlanContext, args: OverlayVerifyArgs) -> Plan:
        networks = networks_to_verify(ctx.inventory, args.network)
        if not networks:
            return NoOp("the inventory defines no overlay networks")
        hosts = _hosts(ctx.inventory, args.hosts or ctx.inventory.docker.group)
        policy = ctx.inventory.verify.on_apply
        if not ctx.options.get("verify"):
            if policy == "never":
                return NoOp("verify.on_apply is never; `provisioner verify` runs the ping matrix")
            if policy == "on-change" and ctx.run_changed == 0:
                return NoOp(
                    "nothing changed in this run, so the ping matrix was skipped (verify.on_apply: on-change); "
                    "`provisioner verify` runs it"
                )
        return Check(
            f"ping matrix over {', '.join(networks)} between {', '.join(hosts)}",
            lambda actx: run_verify(actx, networks, hosts),
        )


def networks_to_verify(inventory: Inventory, network: str | None) -> list[str]:
    if network is not None:
        if network not in inventory.networks:
            raise TaskError(
                f"network {network!r} is not in the inventory (networks: {', '.join(inventory.networks) or 'none'})",
                fix="give one of the inventory's networks",
            )
        return [network]
    return [n for n, net in inventory.networks.items() if net.driver == "overlay"]


def _hosts(inventory: Inventory, pattern: str) -> list[str]:
    try:
        return inventory.resolve_pattern(pattern)
    except ValueError as e:
        raise TaskError(f"overlay_verify hosts: {e}", fix="name the docker hosts' group, e.g. hosts: docker") from e


def _store_problem(ctx: ApplyContext) -> str | None:
    down = quorum_down(ctx)
    if down is None:
        return None
    inv = ctx.inventory
    return (
        f"the {backend_of(inv).name} store ({cluster_store_url(inv)}) is not healthy, and overlay networking "
        "depends on it:\n" + "\n".join(f"    {d}" for d in down)
    )


def run_verify(ctx: ApplyContext, networks: list[str], hosts: list[str]) -> CheckOutcome:
    from provisioner.checks import run_checks

    inv = ctx.inventory
    swarm = overlay_mode(inv, ctx.all_facts).mode == "swarm"
    store = None if swarm else _store_problem(ctx)
    if store is not None:
        raise TaskError(
            store,
            fix=f"start the store container ({backend_of(inv).container}) on "
            f"{', '.join(inv.store().hosts)} (`docker start {backend_of(inv).container}` there, or apply "
            "playbooks/overlay.yml), then restart Docker on the docker hosts if it started while the store was down",
        )
    v = inv.verify
    res = run_checks(
        ctx,
        probes(inv, networks, hosts),
        expectations(networks, hosts),
        settings=v,
        progress="pinging every probe from every other host",
    )
    rendered = res.render()
    if res.ok:
        return CheckOutcome(
            f"all {len(hosts)} hosts reach each other over {', '.join(networks)}\n{rendered}", res.data()
        )
    hints = res.hints("swarm" if swarm else "overlay")
    for h in hosts:
        f = ctx.all_facts.get(h)
        if f is None or not f.docker.active:
            continue
        if swarm and f.docker.swarm_state != "active":
            hints.insert(0, f"{h}'s Docker is not in the swarm (state {f.docker.swarm_state})")
        elif not swarm and f.docker.cluster_store != cluster_store_url(inv):
            hints.insert(
                0, f"{h}'s Docker uses cluster store {f.docker.cluster_store or '(none)'}, not {cluster_store_url(inv)}"
            )
    if any("No such image" in e or "Unable to find image" in e for e in res.start_errors.values()):
        hints.insert(0, f"the probe image {v.image} is missing: apply playbooks/overlay.yml (it loads it)")
    raise CheckFailed(
        "overlay check failed:\n"
        + "\n".join(f"    {f}" for f in res.failures())
        + "\n"
        + rendered
        + "\n  usual causes:\n"
        + "\n".join(f"    - {h}" for h in hints),
        fix="fix the first cause that applies, then run `provisioner verify -i INVENTORY` again",
        data=res.data(),
    )
