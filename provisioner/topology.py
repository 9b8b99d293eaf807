"""The cluster as a graph: hosts, the store, networks, containers and the way out.

``build(inventory)`` describes what the inventory wants (no host contacted); ``build(inventory, live)``
describes what the gathered facts say and marks drift against the inventory: an element the inventory
wants but the host lacks is ``missing``, one the host has and the inventory does not is ``extra``, one
with other settings is ``different``; a host whose facts could not be gathered is ``unreachable`` and
everything on it ``unknown``. The model is plain data; :mod:`provisioner.graph` renders it.

Everything is produced in a fixed order (inventory order, then names sorted), so the same input gives
the same drawing, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from provisioner.errors import TaskError
from provisioner.facts import ContainerFact, HostFacts, NetworkFact
from provisioner.inventory import Inventory, Network

Mark = Literal["", "missing", "extra", "different", "unreachable", "unknown"]
NodeKind = Literal["dockerd", "store", "interface", "network", "builtin", "container", "underlay"]
EdgeKind = Literal["store", "swarm", "vxlan", "nat", "parent", "attach", "uplink", "publish"]
Check = Literal["", "reached", "isolated", "broken"]  # what the last check found over an edge

# Docker's own networks: never drift; "bridge" (docker0) and "docker_gwbridge" are the way out
BUILTIN_NETWORKS = ("bridge", "docker_gwbridge", "host", "none", "ingress")
_NOT_DRAWN_DRIVERS = ("null", "host")
PROBE_LABEL = "provisioner.probe"  # the ping matrix's probe containers (overlay_verify) are not drawn


@dataclass(frozen=True)
class Node:
    id: str
    kind: NodeKind
    lines: tuple[str, ...]
    mark: Mark = ""


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: EdgeKind
    label: str = ""
    mark: Mark = ""
    # what the edge joins, for colouring it by checks: a network and an endpoint on it (a host for
    # VXLAN, a container for an attachment) on ``host``
    network: str = ""
    endpoint: str = ""
    host: str = ""
    check: Check = ""


@dataclass
class HostBox:
    name: str
    id: str
    lines: tuple[str, ...]
    mark: Mark = ""
    nodes: list[Node] = field(default_factory=list)


@dataclass
class Topology:
    title: str
    hosts: list[HostBox] = field(default_factory=list)
    shared: list[Node] = field(default_factory=list)  # overlay networks, the underlay
    edges: list[Edge] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # drift and unreachable hosts, one line each
    live: bool = False

    @property
    def unreachable(self) -> list[str]:
        return [h.name for h in self.hosts if h.mark == "unreachable"]

    def node_ids(self) -> set[str]:
        return {n.id for n in self.shared} | {n.id for h in self.hosts for n in h.nodes}


@dataclass(frozen=True)
class WantedContainer:
    """A container the inventory's ``containers:`` section asks for."""

    name: str
    host: str
    image: str
    networks: tuple[str, ...]
    addresses: tuple[tuple[str, str], ...] = ()  # (network, fixed IPv4 address)
    ports: tuple[str, ...] = ()  # "-p" labels: "-p *:8080 -> 80/tcp"
    network_mode: str = ""  # "host" or "none"


def _publish_label(address: str | None, host_port: int | None, container_port: int, proto: str) -> str:
    outside = f"{address if address not in (None, '', '0.0.0.0', '::') else '*'}:{host_port or '?'}"
    return f"-p {outside} -> {container_port}/{proto}"


def wanted_containers(inventory: Inventory) -> list[WantedContainer]:
    out = []
    for name, c in inventory.containers.items():
        if c.state != "present":
            continue
        out.append(
            WantedContainer(
                name,
                c.host,
                c.image,
                tuple(c.networks),
                tuple((n, str(a.ipv4_address)) for n, a in c.networks.items() if a.ipv4_address is not None),
                tuple(_publish_label(p.address, p.host_port, p.container_port, p.proto) for p in c.ports),
                c.network_mode or "",
            )
        )
    return out


def _enc(name: str) -> str:
    """A name as a DOT/Mermaid identifier: letters and digits stay, anything else becomes ``_xx`` (hex),
    so ``__`` never occurs inside and ``kind__host__name`` ids cannot collide."""
    return re.sub(r"[^A-Za-z0-9]", lambda m: "".join(f"_{b:02x}" for b in m.group().encode()), name)


def node_id(kind: str, host: str, name: str = "") -> str:
    return "__".join(p for p in (kind, _enc(host), _enc(name)) if p)


def _store_hosts(inv: Inventory) -> list[str]:
    return list(inv.kv_store.hosts) if inv.kv_store is not None else []


def _store_url(inv: Inventory) -> str | None:
    from provisioner.modules.kv_store import cluster_store_url

    try:
        return cluster_store_url(inv)
    except TaskError:  # e.g. zookeeper: only valid in swarm mode, where no store URL is used
        return None


def _store_container(inv: Inventory) -> str:
    from provisioner.modules.kv_store import BACKENDS

    backend = inv.kv_store.backend if inv.kv_store is not None else ""
    b = BACKENDS.get(backend)
    return b.container if b is not None else backend


def _store_targets(inv: Inventory) -> list[str]:
    """The store hosts dockerd's --cluster-store names (consul: only the first; etcd: every one)."""
    from provisioner.modules.kv_store import BACKENDS

    hosts = _store_hosts(inv)
    b = BACKENDS.get(inv.kv_store.backend) if inv.kv_store is not None else None
    return hosts if b is not None and b.all_endpoints else hosts[:1]


def _net_lines(name: str, driver: str, subnet: str, gateway: str, ip_range: str, parent: str) -> list[str]:
    lines = [name, f"{driver} {subnet}".strip()]
    if gateway:
        lines.append(f"gateway {gateway}")
    if ip_range:
        lines.append(f"range {ip_range}")
    if parent:
        lines.append(f"parent {parent}")
    return lines


def _wanted_lines(name: str, net: Network, host_range: str = "") -> list[str]:
    """``host_range``: this host's own slice of a macvlan/ipvlan subnet (its --ip-range)."""
    lines = _net_lines(
        name,
        net.driver,
        str(net.subnet),
        str(net.gateway) if net.gateway is not None else "",
        host_range or (str(net.ip_range) if net.ip_range is not None else ""),
        net.parent or "",
    )
    if net.mode:
        lines.append(f"mode {net.mode}")
    if net.shim:
        lines.append("shim: the host reaches its containers")
    if net.internal:
        lines.append("internal: no way out")
    return lines


def _host_range(inv: Inventory, name: str, host: str) -> str:
    """This host's slice of a macvlan/ipvlan network ('' when the inventory does not split it)."""
    if inv.networks[name].driver not in ("macvlan", "ipvlan"):
        return ""
    got = inv.slices(name).get(host)
    return str(got) if got is not None else ""


def _fact_lines(n: NetworkFact) -> list[str]:
    return _net_lines(
        n.name,
        n.driver,
        ", ".join(n.subnets),
        ", ".join(n.gateways),
        ", ".join(n.ip_ranges),
        n.options.get("parent", ""),
    )


def _mark_lines(lines: list[str], mark: Mark, why: str = "") -> tuple[str, ...]:
    if mark in ("missing", "extra", "different"):
        lines = [*lines, f"{mark.upper()}{': ' + why if why else ''}"]
    return tuple(lines)


class _Builder:
    def __init__(self, inv: Inventory, live: Mapping[str, HostFacts | str] | None) -> None:
        from provisioner.modules.capabilities import overlay_mode

        self.inv = inv
        self.live = live
        self.facts: dict[str, HostFacts] = {h: f for h, f in (live or {}).items() if isinstance(f, HostFacts)}
        self.docker_hosts = inv.docker_hosts()
        self.store_hosts = _store_hosts(inv)
        # drawing the inventory, `auto` is decided as it would be before any facts are known
        self.mode = overlay_mode(inv, self.facts).mode
        self.mode_label = f"{self.mode} (auto)" if inv.docker.overlay_mode == "auto" else self.mode
        src = inv.source.name if inv.source is not None else "inventory"
        what = "live: what the hosts' facts say, drift marked" if live is not None else "wanted: the inventory"
        self.topo = Topology(title=f"{src}: {what}; overlay mode {self.mode_label}", live=live is not None)
        self.manager = self._manager()

    def _manager(self) -> str | None:
        if self.mode != "swarm" or not self.docker_hosts:
            return None
        for h in self.docker_hosts:
            f = self.facts.get(h)
            if f is not None and f.docker.swarm_manager:
                return h
        return self.docker_hosts[0]

    def find(self, host: str, what: str, mark: Mark) -> None:
        if mark in ("missing", "extra", "different"):
            self.topo.findings.append(f"{host}: {what}")

    def host_state(self, host: str) -> tuple[HostFacts | None, bool]:
        """(facts, unreachable) for a host; both falsy when drawing the inventory."""
        if self.live is None:
            return None, False
        got = self.live.get(host)
        return (got, False) if isinstance(got, HostFacts) else (None, True)

    # --- the whole picture -----------------------------------------------------------------------

    def build(self) -> Topology:
        inv = self.inv
        underlay = Node("underlay", "underlay", ("hosts' network (underlay)", "SSH, store, VXLAN udp/4789, NAT out"))
        self.topo.shared.append(underlay)
        overlays = {n: net for n, net in inv.networks.items() if net.driver == "overlay"}
        for name, net in overlays.items():
            self.topo.shared.append(self._overlay_node(name, net))
        if self.live is not None:
            self._extra_overlays(overlays)
        for host in inv.hosts:
            self._host(host)
        return self.topo

    def _overlay_node(self, name: str, net: Network) -> Node:
        from provisioner.modules.docker_network import drift

        scope = "swarm scope, attachable" if self.mode == "swarm" else "global scope (shared via the store)"
        lines = [*_wanted_lines(name, net), scope]
        mark: Mark = ""
        why = ""
        if self.live is not None:
            seen = [(h, f.docker.network(name)) for h, f in self.facts.items() if h in self.docker_hosts]
            have = [(h, n) for h, n in seen if n is not None]
            if not have and seen:
                mark, why = "missing", "on no host"
            elif have:
                # judged where it is authoritative: the swarm manager, else the first host that has it
                h, n = next(((h, n) for h, n in have if h == self.manager), have[0])
                diffs = drift(net, n, self.mode == "swarm")
                if diffs:
                    mark, why = "different", f"{h}: {diffs[0]}"
        self.find("cluster", f"overlay network {name} {mark}{': ' + why if why else ''}", mark)
        return Node(node_id("net", "", name), "network", _mark_lines(lines, mark, why), mark)

    def _extra_overlays(self, overlays: Mapping[str, Network]) -> None:
        extra: dict[str, NetworkFact] = {}
        for f in self.facts.values():
            for n in f.docker.networks:
                if n.driver == "overlay" and n.name not in overlays and n.name not in BUILTIN_NETWORKS:
                    extra.setdefault(n.name, n)
        for name in sorted(extra):
            self.find("cluster", f"overlay network {name} extra: not in the inventory", "extra")
            lines = _mark_lines(_fact_lines(extra[name]), "extra", "not in the inventory")
            self.topo.shared.append(Node(node_id("net", "", name), "network", lines, "extra"))

    # --- one host --------------------------------------------------------------------------------

    def _host(self, host: str) -> None:
        inv = self.inv
        h = inv.hosts[host]
        facts, unreachable = self.host_state(host)
        groups = [*h.groups, *(["kv_store"] if host in self.store_hosts else [])]
        lines = [f"{host}  {h.address}", f"groups: {', '.join(groups) or '-'}"]
        if facts is not None:
            from provisioner.modules.capabilities import engine_of

            d = facts.docker
            engine = engine_of(facts).label if d.installed or d.server_version else "no Docker"
            lines.append(f"{facts.os.pretty_name or facts.os.id or 'unknown OS'}; {engine} ({d.state})")
        box = HostBox(host, node_id("host", host), tuple(lines))
        if unreachable:
            reason = str(self.live.get(host, "") if self.live is not None else "").splitlines()
            box.mark = "unreachable"
            box.lines = (*box.lines, f"UNREACHABLE: {reason[0] if reason else 'no facts'}"[:100])
            self.topo.findings.append(f"{host}: unreachable ({reason[0] if reason else 'no facts'})")
        self.topo.hosts.append(box)
        dead: Mark = "unknown" if unreachable else ""

        iface = inv.advertise_interface(host)
        if_id = self._interface(box, host, iface, facts, dead, default_addr=h.address)
        self.topo.edges.append(Edge(if_id, "underlay", "uplink", "", dead))

        if host in self.store_hosts:
            self._store(box, host, facts, dead)
        docker = host in self.docker_hosts
        if docker:
            self._dockerd(box, host, facts, dead)
        local: dict[str, str] = {}  # network name -> node id on this host
        for name, net in inv.networks.items():
            if net.driver == "overlay":
                if docker:
                    self._overlay_link(host, name, if_id, facts, dead)
                local[name] = node_id("net", "", name)
            elif host in self._placed_on(name, net):
                local[name] = self._local_network(box, host, name, net, if_id, facts, dead)
        if facts is not None:
            self._live_only_networks(box, host, if_id, facts, local)
        elif any(w.host == host and "bridge" in w.networks for w in wanted_containers(inv)):
            # Docker's default bridge, drawn where the inventory puts a container on it
            nid = node_id("net", host, "bridge")
            box.nodes.append(Node(nid, "builtin", ("docker0 (default bridge)",), dead))
            self._way_out(box, host, nid, "bridge", None, if_id, None, dead)
            local["bridge"] = nid
        self._containers(box, host, if_id, facts, local, dead)

    def _placed_on(self, name: str, net: Network) -> list[str]:
        """The hosts that get a local-scope network (``networks.<name>.hosts``, default docker.group)."""
        from provisioner.modules.docker_network import placed_on

        try:
            return placed_on(self.inv, net)
        except ValueError:  # refused at validate; drawn on the docker hosts meanwhile
            return self.docker_hosts

    def _interface(
        self, box: HostBox, host: str, iface: str, facts: HostFacts | None, dead: Mark, default_addr: str
    ) -> str:
        nid = node_id("if", host, iface)
        if any(n.id == nid for n in box.nodes):
            return nid
        mark: Mark = dead
        addr = default_addr if iface == self.inv.advertise_interface(host) else ""
        if facts is not None:
            seen = facts.interfaces.get(iface)
            if seen is None:
                mark = "missing"
                self.find(host, f"interface {iface} missing", mark)
            else:
                addr = ", ".join(seen.cidrs) or addr
        box.nodes.append(Node(nid, "interface", _mark_lines([iface, addr] if addr else [iface], mark), mark))
        return nid

    def _store(self, box: HostBox, host: str, facts: HostFacts | None, dead: Mark) -> None:
        inv = self.inv
        kv = inv.store()
        endpoint = next(f"{a}:{p}" for n, a, p in inv.kv_endpoints() if n == host)
        container = _store_container(inv)
        lines = [f"{kv.backend} store", f"container {container}", endpoint]
        mark: Mark = dead
        if self.mode == "swarm":
            lines = [f"{kv.backend} store", "not used in swarm mode"]
        elif facts is not None:
            c = facts.docker.container(container)
            if c is None:
                mark = "missing"
                lines.append("MISSING: no container")
            elif not c.running:
                mark = "different"
                lines.append(f"DIFFERENT: {c.status or 'not running'}")
            self.find(host, f"store container {container} {mark}", mark)
        box.nodes.append(Node(node_id("store", host), "store", tuple(lines), mark))

    def _dockerd(self, box: HostBox, host: str, facts: HostFacts | None, dead: Mark) -> None:
        inv = self.inv
        nid = node_id("dockerd", host)
        lines = ["dockerd"]
        mark: Mark = dead
        edge_mark: Mark = dead
        label = ""
        if facts is not None:
            d = facts.docker
            lines.append(f"Docker {d.server_version or '?'}")
        if self.mode == "swarm":
            role = "manager" if host == self.manager else "worker"
            lines.append(f"swarm {role}")
            if facts is not None and facts.docker.swarm_state != "active":
                mark = "missing"
                lines.append(f"MISSING: swarm state {facts.docker.swarm_state}")
                self.find(host, f"not in the swarm (state {facts.docker.swarm_state})", mark)
            if role == "worker" and self.manager is not None:
                self.topo.edges.append(Edge(nid, node_id("dockerd", self.manager), "swarm", "swarm tcp/2377", mark))
        elif self.store_hosts:
            url = _store_url(inv)
            lines.append(f"--cluster-store {url or '?'}")
            label = ""  # the dockerd box says --cluster-store; a label here collides with VXLAN
            if facts is not None:
                have = facts.docker.cluster_store
                if not have:
                    edge_mark = "missing"
                    lines.append("MISSING: no cluster store")
                elif url is not None and have != url:
                    edge_mark = "different"
                    lines.append(f"DIFFERENT: runs with {have}")
                self.find(
                    host, f"dockerd cluster store {edge_mark} (runs with {have or 'none'}, wants {url})", edge_mark
                )
                mark = edge_mark
            lines.append(f"--cluster-advertise {inv.advertise_interface(host)}:{inv.docker.advertise_port}")
            for target in _store_targets(inv):
                self.topo.edges.append(Edge(nid, node_id("store", target), "store", label, edge_mark))
        box.nodes.append(Node(nid, "dockerd", tuple(lines), mark))

    def _overlay_link(self, host: str, name: str, if_id: str, facts: HostFacts | None, dead: Mark) -> None:
        mark: Mark = dead
        label = "VXLAN"
        if facts is not None and facts.docker.network(name) is None:
            if self.mode == "swarm" and host != self.manager:
                mark, label = "unknown", "VXLAN (a swarm worker shows it once a container uses it)"
            else:
                mark, label = "missing", "VXLAN: MISSING here"
                self.find(host, f"overlay network {name} missing (this Docker does not see it)", mark)
        self.topo.edges.append(Edge(node_id("net", "", name), if_id, "vxlan", label, mark, name, host, host))

    def _local_network(
        self, box: HostBox, host: str, name: str, net: Network, if_id: str, facts: HostFacts | None, dead: Mark
    ) -> str:
        from provisioner.modules.docker_network import drift

        nid = node_id("net", host, name)
        mark: Mark = dead
        why = ""
        host_range = _host_range(self.inv, name, host)
        if facts is not None:
            have = facts.docker.network(name)
            if have is None:
                mark = "missing"
            else:
                diffs = drift(net, have)
                if host_range and have.ip_ranges and (net.ip_ranges is None or have.ip_ranges == [host_range]):
                    # a slice once made stays (docker_network keeps it); given ip_ranges are the user's word
                    host_range = have.ip_ranges[0]
                    diffs = [d for d in diffs if not d.startswith("ip_range:")]
                if diffs:
                    mark, why = "different", diffs[0]
            self.find(host, f"{net.driver} network {name} {mark}{': ' + why if why else ''}", mark)
        box.nodes.append(Node(nid, "network", _mark_lines(_wanted_lines(name, net, host_range), mark, why), mark))
        masq = net.options.get("com.docker.network.bridge.enable_ip_masquerade", "true") != "false"
        if net.internal:
            return nid  # no way out, by design
        self._way_out(box, host, nid, net.driver, net.parent, if_id, facts, dead, masq, [str(net.subnet)])
        return nid

    def _way_out(
        self,
        box: HostBox,
        host: str,
        nid: str,
        driver: str,
        parent: str | None,
        if_id: str,
        facts: HostFacts | None,
        dead: Mark,
        nat: bool = True,
        subnets: list[str] | None = None,
    ) -> None:
        if driver in ("macvlan", "ipvlan"):
            pid = if_id
            if parent and node_id("if", host, parent) != if_id:
                known = any(n.id == node_id("if", host, parent) for n in box.nodes)
                pid = self._interface(box, host, parent, facts, dead, default_addr="")
                if not known:
                    self.topo.edges.append(Edge(pid, "underlay", "uplink", "", dead))
            self.topo.edges.append(Edge(nid, pid, "parent", f"{driver} on parent (no NAT)", dead))
        elif driver == "bridge":
            label, mark = ("NAT out (MASQUERADE)", dead) if nat else ("no NAT (masquerade off)", dead)
            fw = facts.docker.firewall if facts is not None and facts.gathered("firewall") else None
            # what the kernel's nat table says (when it was read), not what Docker's option promises
            if nat and fw is not None and fw.rules_read and not any(m.source in (subnets or []) for m in fw.masquerade):
                label, mark = "no MASQUERADE rule: no way out", "missing"
                name = next((n.lines[0] for n in box.nodes if n.id == nid), nid)
                self.find(host, f"NAT for {name} ({', '.join(subnets or [])}) missing in the nat table", mark)
            self.topo.edges.append(Edge(nid, if_id, "nat", label, mark))

    def _live_only_networks(self, box: HostBox, host: str, if_id: str, facts: HostFacts, local: dict[str, str]) -> None:
        for n in sorted(facts.docker.networks, key=lambda n: n.name):
            if n.name in local or n.driver in _NOT_DRAWN_DRIVERS or n.name in ("host", "none", "ingress"):
                continue
            if n.driver == "overlay":
                local[n.name] = node_id("net", "", n.name)
                if n.name not in self.inv.networks and n.name not in BUILTIN_NETWORKS:
                    self.topo.edges.append(Edge(local[n.name], if_id, "vxlan", "VXLAN", "extra"))
                continue
            builtin = n.name in BUILTIN_NETWORKS
            mark: Mark = "" if builtin else "extra"
            lines = _fact_lines(n)
            if n.name == "bridge":
                lines[0] = "docker0 (default bridge)"
            self.find(host, f"{n.driver} network {n.name} extra: not in the inventory", mark)
            nid = node_id("net", host, n.name)
            kind: NodeKind = "builtin" if builtin else "network"
            box.nodes.append(Node(nid, kind, _mark_lines(lines, mark, "not in the inventory"), mark))
            nat = n.options.get("com.docker.network.bridge.enable_ip_masquerade", "true") != "false"
            self._way_out(box, host, nid, n.driver, n.options.get("parent"), if_id, facts, "", nat, n.subnets)
            local[n.name] = nid

    def _containers(
        self, box: HostBox, host: str, if_id: str, facts: HostFacts | None, local: dict[str, str], dead: Mark
    ) -> None:
        """Live containers (facts) against the inventory's; without facts, the inventory's as wanted."""
        store = _store_container(self.inv) if host in self.store_hosts and self.mode != "swarm" else None
        wanted = {w.name: w for w in wanted_containers(self.inv) if w.host == host}
        containers = facts.docker.containers if facts is not None else []
        have = {c.name: c for c in containers if PROBE_LABEL not in c.labels and c.name != store}
        for name in sorted(set(wanted) | set(have)):
            self._container(box, host, if_id, name, have.get(name), wanted.get(name), local, facts is None, dead)

    def _container(
        self,
        box: HostBox,
        host: str,
        if_id: str,
        name: str,
        c: ContainerFact | None,
        w: WantedContainer | None,
        local: dict[str, str],
        wanted_only: bool,
        dead: Mark,
    ) -> None:
        """One container: live (``c``) against wanted (``w``); ``wanted_only`` draws the inventory's."""
        nid = node_id("ctr", host, name)
        mark: Mark = dead if wanted_only else ("missing" if c is None else "")
        why = ""
        image = c.image if c is not None else (w.image if w is not None else "")
        state = (c.status or ("running" if c.running else "stopped")) if c is not None else ""
        lines = [name, image, state]
        if c is not None:
            nets = list(c.networks)
        else:
            nets = list(w.networks) if w is not None else []
            if w is not None and w.network_mode:
                nets = [w.network_mode]
        special = [n for n in nets if n in ("host", "none")]
        if special:
            lines.append(f"network {', '.join(special)}")
        want_addr = dict(w.addresses) if w is not None else {}
        have_addr = {n: a.ipv4 for n, a in c.addresses.items() if a.ipv4} if c is not None else {}
        if w is not None and c is not None:
            want_nets = [w.network_mode] if w.network_mode else list(w.networks)
            if sorted(want_nets) != sorted(c.networks):
                mark, why = "different", f"networks {', '.join(c.networks) or 'none'}, wants {', '.join(want_nets)}"
            elif not c.running:
                mark, why = "different", f"{c.status or 'not running'}, wants running"
            else:
                off = [n for n, a in want_addr.items() if n in have_addr and have_addr[n] != a]
                if off:
                    mark, why = "different", f"address on {off[0]} {have_addr[off[0]]}, wants {want_addr[off[0]]}"
        self.find(host, f"container {name} {mark}{': ' + why if why else ''}", mark)
        box.nodes.append(Node(nid, "container", _mark_lines([x for x in lines if x], mark, why), mark))
        for n in nets:
            target = local.get(n)
            if target is not None:
                label = have_addr.get(n) or want_addr.get(n, "")
                self.topo.edges.append(Edge(nid, target, "attach", label, mark, n, name, host))
        if c is not None:
            # published: the host's address and port forwarded (DNAT) to the container's port
            ports = [_publish_label(p.host_ip, p.host_port, p.container_port, p.proto) for p in c.ports]
        else:
            ports = list(w.ports) if w is not None else []
        for label in ports:
            self.topo.edges.append(Edge(if_id, nid, "publish", label, mark))


def build(
    inventory: Inventory,
    live: Mapping[str, HostFacts | str] | None = None,
    checks: Sequence[Mapping[str, Any]] | None = None,
) -> Topology:
    """The inventory's topology; with ``live`` (host -> facts, or the error that kept them from being
    gathered) what the hosts run, drift marked; with ``checks`` (the pairs of a JSON report's ``verify``)
    each VXLAN link and container attachment coloured by what the checks over it found."""
    topo = _Builder(inventory, live).build()
    if checks:
        color_by_checks(topo, checks)
    return topo


_FAILED_VERDICTS = ("no reply", "isolation broken", "not run")


def color_by_checks(topo: Topology, pairs: Sequence[Mapping[str, Any]]) -> None:
    """Every VXLAN link (a host on an overlay) and container attachment that checks went over gets the
    verdict: broken (with the first failure's cause) when any failed, else reached, else isolated (as
    expected). Links no check used keep their look."""
    out: list[Edge] = []
    for e in topo.edges:
        if e.kind not in ("vxlan", "attach") or not e.network:
            out.append(e)
            continue
        mine = [
            p
            for p in pairs
            if p.get("network") == e.network
            and p.get("network_host") in (None, "", e.host)
            and e.endpoint in (p.get("source"), p.get("destination"))
        ]
        failed = [p for p in mine if p.get("verdict") in _FAILED_VERDICTS]
        if failed:
            cause = str(failed[0].get("cause") or failed[0].get("verdict"))
            out.append(replace(e, check="broken", label=f"{e.label + ': ' if e.label else ''}BROKEN: {cause}"))
        elif any(p.get("expected") == "reach" and p.get("verdict") == "ok" for p in mine):
            out.append(replace(e, check="reached"))
        elif any(p.get("verdict") == "ok" for p in mine):
            out.append(replace(e, check="isolated"))
        else:
            out.append(e)
    topo.edges[:] = out
    broken = sum(1 for e in out if e.check == "broken")
    if broken:
        topo.findings.append(f"checks: {broken} link(s) broken (red in the drawing)")


def check_pairs(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every checked pair in a JSON report (``provisioner verify --output json``)."""
    pairs: list[Mapping[str, Any]] = []
    for h in (report.get("hosts") or {}).values():
        for t in h.get("tasks") or []:
            data = t.get("verify")
            if isinstance(data, Mapping):
                pairs.extend(p for p in data.get("pairs") or [] if isinstance(p, Mapping))
    return pairs
