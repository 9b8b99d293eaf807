"""``docker_network``: the inventory's networks, each created where it belongs.

Overlay networks are global scope (shared through the cluster store, or the swarm), so the first docker
host creates them; the other hosts only check that they see them (kv mode). Local-scope networks
(bridge, macvlan, ipvlan) are created on every host of their ``hosts`` (default: docker.group), and drift
is judged per host, on every key (driver, subnet, gateway, ip_range, internal, attachable, options,
parent, mode). An existing network with other settings is drift: the plan names the differences and the
containers recreating it would disconnect. ``plan`` shows the recreation (exit 3: drift) and says that
apply carries it out only with ``--recreate-networks``; ``apply`` without the flag refuses it. Docker's
own ``bridge``, ``host`` and ``none`` are never created or removed (the inventory cannot declare them).

macvlan/ipvlan across hosts: each host's Docker hands out addresses on its own, so each host gets its own
``--ip-range`` slice of the subnet (``slices()``). A slice, once made, never moves: a host whose network
exists keeps the slice its network has (its IPAM IPRange), whatever the inventory's order says now; a
host without one takes its computed slice (``Inventory.slices``) unless a live slice of another host,
a shim, the gateway or a static address is in it, then the first free one. ``ip_ranges`` given in the
inventory are the user's word: a live slice that differs from them is drift.

``shim: true`` (macvlan): a host cannot reach its own macvlan containers through the parent (the kernel
passes nothing between a parent and its macvlan children), so each host gets a macvlan interface of its
own on the parent, ``shim-<network>``, with one address of the reserved slice 0 (the top of it, going
down, one per host, read back from the live interface once made) and a route to the host's own slice
through it. A systemd unit makes it, enabled, so it comes back at boot without an apply.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from provisioner.connection.base import q
from provisioner.errors import TaskError
from provisioner.facts import LINK_KINDS, MACVLAN_LINKS, HostFacts, NetworkFact
from provisioner.inventory import Inventory, Network
from provisioner.modules.base import Change, Module, ModuleArgs, NoOp, Plan, PlanContext, register
from provisioner.modules.capabilities import overlay_mode
from provisioner.steps import Put, Run, Step

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
UNIT_DIR = "/etc/systemd/system"
# the default mode Docker uses when none is given, per driver (the option it records when given)
MODE_OPTION = {"macvlan": ("macvlan_mode", "bridge"), "ipvlan": ("ipvlan_mode", "l2")}


class DockerNetworkArgs(ModuleArgs):
    # one network of the inventory; default: every network in the inventory
    name: str | None = None


def create_command(name: str, net: Network, swarm: bool = False, ip_range: IPNet | None = None) -> str:
    """``swarm``: a swarm-scope overlay, always attachable so plain containers (and probes) can join.
    ``ip_range``: this host's slice of a macvlan/ipvlan network (default: the network's ``ip_range``)."""
    parts = ["docker network create", f"--driver {q(net.driver)}", f"--subnet {q(str(net.subnet))}"]
    if net.gateway is not None:
        parts.append(f"--gateway {q(str(net.gateway))}")
    rng = ip_range if ip_range is not None else net.ip_range
    if rng is not None:
        parts.append(f"--ip-range {q(str(rng))}")
    if net.internal:
        parts.append("--internal")
    if net.attachable or (swarm and net.driver == "overlay"):
        parts.append("--attachable")
    if swarm and net.driver == "overlay":
        parts.append("--scope swarm")
    parts.extend(f"--opt {q(f'{k}={v}')}" for k, v in sorted(wanted_options(net).items()))
    parts.append(q(name))
    return " ".join(parts)


def wanted_options(net: Network) -> dict[str, str]:
    """The driver options the inventory asks for: its ``options``, ``parent`` and ``mode`` (as Docker's
    ``macvlan_mode``/``ipvlan_mode``, given only when the inventory names one)."""
    options = dict(net.options)
    if net.parent is not None:
        options["parent"] = net.parent
    if net.mode is not None and net.driver in MODE_OPTION:
        options[MODE_OPTION[net.driver][0]] = net.mode
    return options


def drift(net: Network, have: NetworkFact, swarm: bool = False, ip_range: IPNet | None = None) -> list[str]:
    """What differs between the inventory's network and the existing one (empty: the same).
    ``ip_range``: the range this host's network should have (its slice), default the network's."""
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
    rng = ip_range if ip_range is not None else net.ip_range
    differs("ip_range", ", ".join(have.ip_ranges), str(rng) if rng is not None else "")
    differs("internal", have.internal, net.internal)
    differs("attachable", have.attachable, net.attachable)
    want_opts = wanted_options(net)
    if net.driver in MODE_OPTION:
        key, default = MODE_OPTION[net.driver]
        want_opts[key] = net.mode or default
        # Docker records the mode only when it was given: none on the host is Docker's default
        have_opts = {**have.options, key: have.options.get(key) or default}
    else:
        have_opts = dict(have.options)
    for k, v in sorted(want_opts.items()):
        differs(f"option {k}", have_opts.get(k, ""), v)
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
    manager in swarm mode); a local-scope network (bridge, macvlan, ipvlan) on each host of its ``hosts``."""
    docker = inventory.docker_hosts()
    if net.driver == "overlay":
        return docker[:1]
    if net.hosts is None:
        return docker
    return inventory.resolve_pattern(net.hosts)


# ---- slices and shims -------------------------------------------------------------------------------


def shim_interface(name: str) -> str:
    """The shim's interface name (Linux allows 15 characters): shim-NAME, or shim- and a hash of NAME."""
    if len(name) <= 10:
        return f"shim-{name}"
    return "shim-" + hashlib.sha256(name.encode()).hexdigest()[:10]


def shim_unit(name: str) -> str:
    return f"provisioner-shim-{name}.service"


def shim_unit_path(name: str) -> str:
    return f"{UNIT_DIR}/{shim_unit(name)}"


def shim_probe(name: str) -> str:
    """The probe whose exit code says whether the shim's unit is enabled."""
    return f"shim-enabled-{name}"


@dataclass(frozen=True)
class Slice:
    range: IPNet
    how: str  # "live" (read back from the host's network), "ip_ranges", "computed", "first free (...)"


def _live_range(f: HostFacts | None, name: str, net: Network) -> IPNet | None:
    have = f.docker.network(name) if f is not None else None
    if have is None or have.driver != net.driver or not have.ip_ranges:
        return None
    try:
        rng = ipaddress.ip_network(have.ip_ranges[0], strict=False)
    except ValueError:
        return None
    if rng.version != net.subnet.version or not rng.subnet_of(net.subnet):  # type: ignore[arg-type]
        return None
    return rng


def _static_addresses(inv: Inventory, name: str) -> list[IPAddr]:
    return [
        a.ipv4_address
        for c in inv.containers.values()
        for n, a in c.networks.items()
        if n == name and a.ipv4_address is not None
    ]


def _cuts(subnet: IPNet, prefixlen: int) -> list[IPNet]:
    return [ipaddress.ip_network(str(c)) for c in subnet.subnets(new_prefix=prefixlen)]


def _gateway(net: Network) -> IPAddr:
    """The network's gateway: the inventory's, else the first address of the subnet (Docker's choice)."""
    return net.gateway if net.gateway is not None else next(net.subnet.hosts(), net.subnet.network_address)


def host_slices(inv: Inventory, name: str, all_facts: Mapping[str, HostFacts]) -> dict[str, Slice]:
    """Each host's --ip-range slice of macvlan/ipvlan network ``name`` (empty: too small to split, or
    not such a network). Pure and the same for every host of a run, since it reads every host's facts;
    a host whose facts are missing is left out, and while one is, no new slice is chosen (TaskError)."""
    net = inv.networks[name]
    if net.driver not in MODE_OPTION:
        return {}
    computed = inv.slices(name)
    if net.ip_ranges is not None:
        return {h: Slice(r, "ip_ranges") for h, r in computed.items()}
    if not computed:
        return {}
    hosts = inv.network_hosts(name)
    out: dict[str, Slice] = {}
    # a host no longer among the network's hosts keeps its network (the tool removes none): its slice
    # stays taken while it is there
    for h in [*hosts, *(h for h in all_facts if h not in hosts)]:
        live = _live_range(all_facts.get(h), name, net)
        if live is not None:
            out[h] = Slice(live, "live")
    # not gathered in this run (--limit, unreachable): their slices are unknown, so no new one is chosen
    unseen = [h for h in hosts if h not in all_facts]
    reserved = [_gateway(net), *_static_addresses(inv, name), *live_shim_addresses(inv, name, all_facts).values()]
    size = next(iter(computed.values())).prefixlen
    cuts = _cuts(net.subnet, size)
    for h in hosts:
        if h in out or h in unseen:
            continue
        if unseen:
            raise TaskError(
                f"network {name}: cannot choose {h}'s --ip-range slice without seeing {', '.join(unseen)} "
                "(not gathered in this run: --limit, or unreachable); their live slices decide which are free",
                fix=f"run without --limit, or with {', '.join(unseen)} in it and reachable",
            )
        want = computed[h]

        def free(c: IPNet) -> bool:
            return not any(c.overlaps(s.range) for s in out.values()) and not any(a in c for a in reserved)

        pick = next((c for c in [want, *cuts[1:]] if free(c)), None)
        if pick is None:
            taken = ", ".join(f"{o}: {s.range}" for o, s in out.items())
            raise TaskError(
                f"network {name}: no free --ip-range slice of {net.subnet} is left for {h} (taken: {taken})",
                fix=f"give networks.{name}.ip_ranges explicitly, or a larger subnet",
            )
        out[h] = Slice(pick, "computed" if pick == want else f"first free: {want} is taken")
    return {h: out[h] for h in hosts if h in out}


def _shim_address_of(f: HostFacts | None, name: str, net: Network) -> IPAddr | None:
    """The shim address a host has: its live shim interface's, else the one its unit file brings up."""
    if f is None:
        return None
    found: list[str] = []
    link = f.macvlan_links.get(shim_interface(name))
    if link is not None:
        found += [c.split("/")[0] for c in link.cidrs]
    unit = f.file(shim_unit_path(name))
    if unit.content:
        found += re.findall(r"ip addr add ([0-9a-fA-F.:]+)/", unit.content)
    for a in found:
        try:
            addr = ipaddress.ip_address(a)
        except ValueError:
            continue
        if addr in net.subnet:
            return addr
    return None


def live_shim_addresses(inv: Inventory, name: str, all_facts: Mapping[str, HostFacts]) -> dict[str, IPAddr]:
    """The shim addresses hosts have, on every gathered host (one that left the network keeps its shim)."""
    net = inv.networks[name]
    out: dict[str, IPAddr] = {}
    hosts = inv.network_hosts(name)
    for h in [*hosts, *(h for h in all_facts if h not in hosts)]:
        a = _shim_address_of(all_facts.get(h), name, net)
        if a is not None:
            out[h] = a
    return out


def shim_addresses(inv: Inventory, name: str, all_facts: Mapping[str, HostFacts]) -> dict[str, IPAddr]:
    """Each host's shim address: the one it has (never moved), else from the top of slice 0 (or, with
    ``ip_ranges``, of the addresses outside every slice) downwards, host i of the network taking the
    i-th, or the first free one when that is taken."""
    net = inv.networks[name]
    hosts = inv.network_hosts(name)
    out = live_shim_addresses(inv, name, all_facts)
    slices = [s.range for s in host_slices(inv, name, all_facts).values()]
    reserved = {_gateway(net), *_static_addresses(inv, name), *out.values()}
    computed = inv.slices(name)
    if net.ip_ranges is None and computed:
        size = next(iter(computed.values())).prefixlen
        pool_net = _cuts(net.subnet, size)[0]
    else:
        pool_net = net.subnet
    # from the top down, without the subnet's own network and broadcast addresses and the hosts' slices;
    # enough of them for every host even when the reserved ones are among them
    pool: list[IPAddr] = []
    need = len(hosts) + len(reserved) + 1
    for k in range(1, min(pool_net.num_addresses, 1 << 16) + 1):
        a = ipaddress.ip_address(int(pool_net.broadcast_address) + 1 - k)
        if a in (net.subnet.network_address, net.subnet.broadcast_address) or any(a in s for s in slices):
            continue
        pool.append(a)
        if len(pool) >= need:
            break
    unseen = [h for h in hosts if h not in all_facts]
    for i, h in enumerate(hosts):
        if h in out or h in unseen:
            continue
        if unseen:
            raise TaskError(
                f"network {name}: cannot choose {h}'s shim address without seeing {', '.join(unseen)} "
                "(not gathered in this run: --limit, or unreachable); their shims decide which are free",
                fix=f"run without --limit, or with {', '.join(unseen)} in it and reachable",
            )
        candidates = [pool[i]] if i < len(pool) else []
        pick = next((a for a in [*candidates, *pool] if a not in reserved and a not in out.values()), None)
        if pick is None:
            raise TaskError(
                f"network {name}: no address left outside the hosts' slices for {h}'s shim",
                fix=f"leave room in {net.subnet} outside ip_ranges, or remove shim",
            )
        out[h] = pick
    return {h: out[h] for h in hosts if h in out}


def shim_unit_text(name: str, net: Network, address: IPAddr, route: IPNet | None) -> str:
    assert net.parent is not None
    ifname, parent = shim_interface(name), net.parent
    prefix = 32 if address.version == 4 else 128
    lines = [
        f"# written by provisioner (docker_network): the shim of Docker network {name} on this host.",
        "# The kernel passes nothing between a parent interface and its macvlan children, so the host reaches",
        f"# its own containers on {name} through this macvlan interface of its own.",
        "[Unit]",
        f"Description=macvlan shim {ifname} for Docker network {name} (provisioner)",
        "Wants=network-online.target",
        "After=network-online.target docker.service",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        # a VLAN sub-interface parent appears only once Docker has made it
        f"ExecStartPre=/bin/sh -c 'for t in $$(seq 60); do ip link show {parent} >/dev/null 2>&1 && exit 0; "
        f'sleep 1; done; echo "{parent} does not exist" >&2; exit 1\'',
        f"ExecStartPre=-ip link del {ifname}",
        f"ExecStart=ip link add {ifname} link {parent} type macvlan mode bridge",
        f"ExecStart=ip addr add {address}/{prefix} dev {ifname}",
        f"ExecStart=ip link set {ifname} up",
    ]
    if route is not None:
        lines.append(f"ExecStart=ip route replace {route} dev {ifname}")
    lines += [f"ExecStop=ip link del {ifname}", "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def shim_problems(f: HostFacts, name: str, net: Network, address: IPAddr, route: IPNet | None) -> list[str]:
    """What is missing or wrong with the host's shim (empty: it is as it should be)."""
    ifname, unit = shim_interface(name), shim_unit(name)
    out: list[str] = []
    fact = f.file(shim_unit_path(name))
    if not fact.exists:
        out.append(f"no unit {unit}")
    elif fact.content != shim_unit_text(name, net, address, route):
        out.append(f"unit {unit} differs")
    if f.probes.get(shim_probe(name), 0) != 0:
        out.append(f"{unit} is not enabled (it would not come back at boot)")
    link = f.macvlan_links.get(ifname)
    if link is None:
        out.append(f"no interface {ifname}")
        return out
    if link.parent != net.parent or link.mode != "bridge":
        out.append(
            f"{ifname} is a macvlan on {link.parent or '?'} mode {link.mode or '?'}, not on {net.parent} mode bridge"
        )
    if not link.up:
        out.append(f"{ifname} is down")
    if not any(c.split("/")[0] == str(address) for c in link.cidrs):
        out.append(f"{ifname} has {', '.join(link.cidrs) or 'no address'}, not {address}")
    if route is not None and not any(r.dst == str(route) and r.dev == ifname for r in f.routes):
        out.append(f"no route to {route} through {ifname}")
    return out


def _vlan_base(parent: str) -> str | None:
    """``eth0`` for a VLAN sub-interface ``eth0.50`` (Docker creates it), else None."""
    base, dot, tag = parent.rpartition(".")
    return base if dot and base and tag.isdigit() else None


# ---- the module ---------------------------------------------------------------------------------------


SWARM_MANAGER_CHECK = "docker info --format '{{.Swarm.ControlAvailable}}' | grep -qx true"
CLUSTER_STORE_CHECK = "docker info --format '{{.ClusterStore}}' | grep -q ."


def _needs(check: str, host: str, name: str, missing: str, fix: str) -> Run:
    """A first step that stops the create, with the reason, when what it needs is still missing."""
    return Run(check, what=f"{host}: cannot create overlay network {name}: {missing}", fix=fix)


def store_not_running(inventory: Inventory, all_facts: Mapping[str, HostFacts]) -> str:
    """Which store containers the facts show stopped ('' when none is known to be down)."""
    if inventory.kv_store is None:
        return ""
    container = inventory.kv_store.backend
    down = []
    for host in inventory.kv_store.hosts:
        f = all_facts.get(host)
        c = f.docker.container(container) if f is not None else None
        if c is not None and not c.running:
            down.append(f"{container} on {host} is {c.status or 'stopped'}")
    return ", ".join(down)


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


def _wanted(inv: Inventory, args: DockerNetworkArgs) -> dict[str, Network]:
    if args.name is not None and args.name not in inv.networks:
        raise TaskError(
            f"network {args.name!r} is not in the inventory (networks: {', '.join(inv.networks) or 'none'})",
            fix="add it under 'networks:' in the inventory or fix the name",
        )
    return {args.name: inv.networks[args.name]} if args.name else dict(inv.networks)


def _shim_changes(ctx: PlanContext, name: str, net: Network, rng: IPNet | None) -> list[Change]:
    f, all_facts = ctx.facts, {**ctx.all_facts, ctx.host: ctx.facts}
    unit, path, ifname = shim_unit(name), shim_unit_path(name), shim_interface(name)
    if not net.shim:
        if not f.file(path).exists:
            return []
        remove = Run(
            f"systemctl disable --now {unit}; rm -f {q(path)} && systemctl daemon-reload",
            what=f"could not remove the shim of {name}",
        )
        return [Change(f"remove shim {ifname} of {name} (shim is off in the inventory)", steps=[remove])]
    address = shim_addresses(ctx.inventory, name, all_facts)[ctx.host]
    problems = shim_problems(f, name, net, address, rng)
    if not problems:
        return []
    text = shim_unit_text(name, net, address, rng)
    steps: list[Step] = []
    fact = f.file(path)
    if fact.content != text:
        steps.append(Put(path, text.encode()))
    steps.append(
        Run(
            f"systemctl daemon-reload && systemctl enable {unit} && systemctl restart {unit}",
            what=f"could not start the shim of {name}",
            fix=f"look at `journalctl -u {unit}` on {ctx.host}",
        )
    )
    where = f", route {rng}" if rng is not None else ""
    return [
        Change(
            f"shim {ifname} for {name}: {address} on {net.parent}{where} ({'; '.join(problems)})",
            steps=steps,
            path=path if fact.content != text else None,
            before=fact.content or "" if fact.content != text else None,
            after=text if fact.content != text else None,
        )
    ]


@register
class DockerNetworkModule(Module[DockerNetworkArgs]):
    name = "docker_network"
    Args = DockerNetworkArgs
    summary = (
        "the inventory's Docker networks: overlay (global scope), bridge/macvlan/ipvlan per host with per-host "
        "slices and shims; drift reported, recreated on request"
    )
    cluster_view = True  # a global network shows here once the store runs or another host made it

    def describe(self, args: DockerNetworkArgs) -> str:
        return f"docker_network {args.name or 'inventory networks'}"

    def fact_sections(self, args: DockerNetworkArgs, inventory: Inventory) -> Iterable[str]:
        nets = _wanted(inventory, args).values()
        out: list[str] = []
        if any(n.driver in MODE_OPTION for n in nets):
            out.append(LINK_KINDS)
        if any(n.driver == "macvlan" for n in nets):
            out.append(MACVLAN_LINKS)
        return out

    def watch(self, args: DockerNetworkArgs, inventory: Inventory) -> list[str]:
        # every macvlan network's shim unit: read back its address, and seen when shim is turned off
        return [shim_unit_path(n) for n, net in _wanted(inventory, args).items() if net.driver == "macvlan"]

    def inventory_probes(self, args: DockerNetworkArgs, inventory: Inventory) -> dict[str, str]:
        return {
            shim_probe(n): f"systemctl is-enabled -q {shim_unit(n)}"
            for n, net in _wanted(inventory, args).items()
            if net.driver == "macvlan" and net.shim
        }

    def preflight(self, ctx: PlanContext, args: DockerNetworkArgs) -> list[str]:
        """Before anything is created anywhere: the kernel can make the driver's links, the parent exists,
        the shim can work, and no slice holds an address something else has."""
        inv, f = ctx.inventory, ctx.facts
        all_facts = {**ctx.all_facts, ctx.host: f}
        out: list[str] = []
        for name, net in _wanted(inv, args).items():
            if net.driver not in MODE_OPTION or ctx.host not in placed_on(inv, net):
                continue
            kind = f.link_kinds.get(net.driver)
            if kind is not None and kind.supported is False:
                alt = (
                    "use driver: macvlan on the same parent (mode bridge), or an overlay network"
                    if net.driver == "ipvlan"
                    else "use an overlay network, or a host whose kernel has macvlan"
                )
                out.append(
                    f"network {name} ({net.driver}): the kernel of {ctx.host} ({f.os.kernel or 'unknown'}) has no "
                    f"{net.driver} (`ip link add ... type {net.driver}` says: {kind.error}); Docker would create the "
                    f"network and then fail every container on it ('operation not supported'); {alt}"
                )
            assert net.parent is not None  # the inventory requires it for macvlan/ipvlan
            if f.interfaces and net.parent not in f.interfaces:
                base = _vlan_base(net.parent)
                if base is None or base not in f.interfaces:
                    have = ", ".join(sorted(f.interfaces))
                    out.append(
                        f"network {name}: parent interface {net.parent} does not exist on {ctx.host} "
                        f"(its interfaces: {have}); set parent to one of them (a VLAN sub-interface IFACE.N is "
                        "fine when IFACE exists: Docker creates it)"
                    )
            if net.shim and (net.mode or "bridge") != "bridge":
                out.append(
                    f"network {name}: shim needs macvlan mode bridge (in mode {net.mode} the host's shim cannot "
                    "talk to the containers on the same parent); set mode: bridge or remove shim"
                )
            try:
                slices = host_slices(inv, name, all_facts)
            except TaskError as e:
                out.append(str(e).replace("\n    fix: ", "; fix: "))
                continue
            mine = slices.get(ctx.host)
            if mine is None:
                continue
            for other, s in slices.items():
                if other != ctx.host and s.range.overlaps(mine.range):
                    out.append(
                        f"network {name}: {ctx.host}'s slice {mine.range} ({mine.how}) overlaps {other}'s "
                        f"{s.range} ({s.how}): both hosts' Docker would hand out the same addresses; recreate one "
                        "of the networks (apply --recreate-networks after fixing ip_ranges)"
                    )
            for h, hf in all_facts.items():
                for iface in hf.interfaces.values():
                    for a in iface.addresses:
                        try:
                            addr = ipaddress.ip_address(a)
                        except ValueError:
                            continue
                        if addr in mine.range and not iface.name.startswith("shim-"):
                            out.append(
                                f"network {name}: {a} ({h}'s {iface.name}) lies in {ctx.host}'s slice {mine.range}: "
                                f"{ctx.host}'s Docker would hand it to a container; use a subnet the hosts are not "
                                "on, or ip_ranges that leave the hosts' addresses out"
                            )
            for cname, c in inv.containers.items():
                att = c.networks.get(name)
                static = att.ipv4_address if att is not None else None
                if static is not None and c.host != ctx.host and static in mine.range:
                    out.append(
                        f"network {name}: container {cname} (on {c.host}) has static address {static}, "
                        f"inside {ctx.host}'s slice {mine.range} ({mine.how}); use an address of slice 0 or of "
                        f"{c.host}'s own slice"
                    )
        return out

    def plan(self, ctx: PlanContext, args: DockerNetworkArgs) -> Plan:
        inv = ctx.inventory
        wanted = _wanted(inv, args)
        if not wanted:
            return NoOp("the inventory defines no networks")
        d = ctx.facts.docker
        if not d.active:
            raise TaskError(f"{ctx.host}: Docker is not running ({d.state})", fix="run the docker_daemon task first")
        all_facts = {**ctx.all_facts, ctx.host: ctx.facts}
        swarm = overlay_mode(inv, all_facts).mode == "swarm"
        changes: list[Change] = []
        same: list[str] = []
        unknown: list[str] = []  # global networks Docker cannot list while its store is down
        elsewhere_only: list[str] = []
        for name, net in wanted.items():
            have = d.network(name)
            if ctx.host not in placed_on(inv, net):
                if net.driver == "overlay" and have is None and not swarm:
                    _lost_store_check(ctx.host, name, all_facts)
                elsewhere_only.append(name)
                continue
            mine = host_slices(inv, name, all_facts).get(ctx.host)
            rng = mine.range if mine is not None else None
            shown = f", slice {mine.range} ({mine.how})" if mine is not None else ""
            shim = _shim_changes(ctx, name, net, rng)
            if have is None:
                # an overlay needs what an earlier task of the same run sets up (the swarm, the cluster
                # store): plan shows the create with the check it starts with; apply, which looks again
                # after those tasks, only keeps the check if they did not happen
                before: list[Step] = []
                notes: list[str] = []
                if net.driver == "overlay" and swarm and not d.swarm_manager:
                    before.append(
                        _needs(
                            SWARM_MANAGER_CHECK,
                            ctx.host,
                            name,
                            "this Docker is not a swarm manager",
                            "run the swarm task first (the first docker host is the swarm's manager)",
                        )
                    )
                    notes.append("needs this Docker to be the swarm's manager first (the swarm task makes it)")
                elif net.driver == "overlay" and not swarm and not d.cluster_store:
                    before.append(
                        _needs(
                            CLUSTER_STORE_CHECK,
                            ctx.host,
                            name,
                            "this Docker has no cluster store",
                            "run the docker_daemon task first (playbooks/overlay.yml does)",
                        )
                    )
                    notes.append("needs the cluster store in Docker first (the docker_daemon task sets it)")
                # swarm networks show on workers only once a container there uses them
                if net.driver == "overlay" and not swarm:
                    down = store_not_running(inv, all_facts)
                    if down:
                        # Docker lists no global network while its store is down: whether this one exists
                        # (and how) is unknown until the store runs; apply looks again once it does
                        unknown.append(
                            f"{name} cannot be seen while the store is down ({down}); apply checks it "
                            "once the store runs"
                        )
                        continue
                    _lost_store_check(ctx.host, name, all_facts)
                cmd = create_command(name, net, swarm, rng)
                create = Run(cmd, what=f"could not create network {name}")
                changes.append(
                    Change(
                        f"create network {name} ({net.driver}, {net.subnet}{shown})",
                        steps=[*before, create],
                        notes=notes,
                    )
                )
                changes.extend(shim)
                continue
            diffs = drift(net, have, swarm, rng)
            if not diffs:
                same.append(f"{name} (slice {mine.range})" if mine is not None else name)
                changes.extend(shim)
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
                    f"docker network rm {q(name)} && {create_command(name, net, swarm, rng)}",
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
            changes.extend(shim)
        if not changes and not same and unknown:
            return NoOp("; ".join(unknown))
        if not changes and not same:
            where = "; ".join(f"{n}: {', '.join(placed_on(inv, inv.networks[n]))}" for n in elsewhere_only)
            return NoOp(f"no network of the inventory is placed on {ctx.host} ({where})")
        if not changes:
            return NoOp("; ".join([f"{', '.join(same)} exist with the inventory's settings", *unknown]))
        return changes
