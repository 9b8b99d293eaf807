"""Sections read from the Docker CLI: `docker info`, images, and one `docker inspect` shared by networks and
containers. Each CLI call is a process start costing ~30 ms of CPU on the host, so the default sections
make five, and the four independent ones run at once as jobs. The optional sections here (``engine``,
``addresses``, ``ports``) only read what those calls already printed: they cost no remote work."""

from __future__ import annotations

from typing import Any

from provisioner.facts.model import ContainerAddress, ContainerFact, HostFacts, NetworkFact, PublishedPort
from provisioner.facts.registry import Output, section

ENGINE = "engine"
ADDRESSES = "addresses"
PORTS = "ports"


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


@section("info", "job info", jobs={"info": "$D info --format '{{json .}}' 2>&1"})
def _info(out: Output, facts: HostFacts) -> None:
    d = facts.docker
    info = out.json("info")
    if not isinstance(info, dict) or not info.get("ServerVersion"):
        d.info_error = out.text("info").strip()[-500:] or None
        return
    d.active = True
    d.server_version = info.get("ServerVersion")
    d.cluster_store = info.get("ClusterStore") or None
    d.cluster_advertise = info.get("ClusterAdvertise") or None
    swarm = _dict(info.get("Swarm"))
    d.swarm_state = swarm.get("LocalNodeState") or "inactive"
    d.swarm_node_id = swarm.get("NodeID") or None
    d.swarm_cluster_id = _dict(swarm.get("Cluster")).get("ID") or None
    d.swarm_manager = bool(swarm.get("ControlAvailable"))
    d.swarm_node_addr = swarm.get("NodeAddr") or None
    d.swarm_remote_managers = sorted(
        str(m["NodeID"]) for m in _list(swarm.get("RemoteManagers")) if isinstance(m, dict) and m.get("NodeID")
    )
    d.live_restore = bool(info.get("LiveRestoreEnabled"))
    d.running_containers = _int(info.get("ContainersRunning")) or 0


@section(
    "images",
    "job images",
    jobs={"images": "$D images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' 2>/dev/null"},
)
def _images(out: Output, facts: HostFacts) -> None:
    for line in out.text("images").splitlines():
        parts = line.split()
        if len(parts) == 2 and not parts[0].startswith("<none>"):
            facts.docker.images[parts[0]] = parts[1]


def _inspected(out: Output, kind: str) -> list[dict[str, Any]]:
    """Networks (they have IPAM) or containers (they have State) from the shared `docker inspect`."""
    return [o for o in _list(out.json("inspect")) if isinstance(o, dict) and kind in o]


@section(
    "inspect",
    'ids=$(job nets; job ps); [ -z "$ids" ] || $D inspect $ids 2>/dev/null',
    jobs={"nets": "$D network ls -q --no-trunc 2>/dev/null", "ps": "$D ps -aq --no-trunc 2>/dev/null"},
)
def _inspect(out: Output, facts: HostFacts) -> None:
    d = facts.docker
    for n in _inspected(out, "IPAM"):
        ipam = [c for c in _list(_dict(n.get("IPAM")).get("Config")) if isinstance(c, dict)]
        d.networks.append(
            NetworkFact(
                name=n.get("Name", ""),
                id=n.get("Id", ""),
                driver=n.get("Driver", ""),
                scope=n.get("Scope", ""),
                subnets=[c["Subnet"] for c in ipam if c.get("Subnet")],
                gateways=[c["Gateway"] for c in ipam if c.get("Gateway")],
                ip_ranges=[c["IPRange"] for c in ipam if c.get("IPRange")],
                attachable=bool(n.get("Attachable")),
                internal=bool(n.get("Internal")),
                options=n.get("Options") or {},
                labels=n.get("Labels") or {},
                containers=sorted(_dict(c).get("Name", "") for c in _dict(n.get("Containers")).values()),
            )
        )
    for c in _inspected(out, "State"):
        cfg = _dict(c.get("Config"))
        state = _dict(c.get("State"))
        d.containers.append(
            ContainerFact(
                name=(c.get("Name") or "").lstrip("/"),
                id=c.get("Id", ""),
                image=cfg.get("Image", ""),
                image_id=c.get("Image", ""),
                running=bool(state.get("Running")),
                status=state.get("Status", ""),
                labels=cfg.get("Labels") or {},
                args=c.get("Args") or [],
                networks=sorted(_dict(_dict(c.get("NetworkSettings")).get("Networks"))),
                restart_policy=_dict(_dict(c.get("HostConfig")).get("RestartPolicy")).get("Name", ""),
            )
        )


def _containers(out: Output, facts: HostFacts) -> list[tuple[dict[str, Any], ContainerFact]]:
    """Each inspected container with the fact the ``inspect`` section made of it."""
    by_id = {c.id: c for c in facts.docker.containers}
    return [(c, by_id[c.get("Id", "")]) for c in _inspected(out, "State") if c.get("Id", "") in by_id]


@section(ADDRESSES, reads=("inspect",), default=False)
def _addresses(out: Output, facts: HostFacts) -> None:
    for raw, fact in _containers(out, facts):
        for net, ep in _dict(_dict(raw.get("NetworkSettings")).get("Networks")).items():
            if not isinstance(ep, dict):
                continue
            ipam = _dict(ep.get("IPAMConfig"))
            fact.addresses[net] = ContainerAddress(
                network_id=ep.get("NetworkID") or "",
                ipv4=ep.get("IPAddress") or "",
                ipv4_prefix=_int(ep.get("IPPrefixLen")) if ep.get("IPAddress") else None,
                gateway=ep.get("Gateway") or "",
                ipv6=ep.get("GlobalIPv6Address") or "",
                ipv6_prefix=_int(ep.get("GlobalIPv6PrefixLen")) if ep.get("GlobalIPv6Address") else None,
                gateway6=ep.get("IPv6Gateway") or "",
                mac=ep.get("MacAddress") or "",
                aliases=[str(a) for a in _list(ep.get("Aliases"))],
                dns_names=[str(a) for a in _list(ep.get("DNSNames"))],
                requested_ipv4=ipam.get("IPv4Address") or "",
                requested_ipv6=ipam.get("IPv6Address") or "",
            )


@section(PORTS, reads=("inspect",), default=False)
def _ports(out: Output, facts: HostFacts) -> None:
    for raw, fact in _containers(out, facts):
        # a running container's actual bindings; a stopped one has none: then what it was created with
        bound = _dict(_dict(raw.get("NetworkSettings")).get("Ports"))
        if not any(bound.values()):
            bound = _dict(_dict(raw.get("HostConfig")).get("PortBindings"))
        fact.ports = published(bound)


def published(bound: dict[str, Any]) -> list[PublishedPort]:
    """Port bindings as Docker inspects them ({"80/tcp": [{"HostIp": ..., "HostPort": ...}]}), in order."""
    out = []
    for key, bindings in sorted(bound.items()):
        port, _, proto = str(key).partition("/")
        cport = _int(port)
        if cport is None:
            continue
        for b in _list(bindings):  # null: exposed, not published
            if isinstance(b, dict):
                out.append(
                    PublishedPort(
                        container_port=cport,
                        proto=proto or "tcp",
                        host_ip=b.get("HostIp") or "",
                        host_port=_int(b.get("HostPort")),
                    )
                )
    return out


def _flag(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


@section(ENGINE, reads=("info",), default=False)
def _engine(out: Output, facts: HostFacts) -> None:
    info = out.json("info")
    if not isinstance(info, dict) or not info.get("ServerVersion"):
        return
    d = facts.docker
    d.driver = str(info.get("Driver") or "")
    d.cgroup_driver = str(info.get("CgroupDriver") or "")
    d.cgroup_version = str(info.get("CgroupVersion") or "")
    d.kernel_version = str(info.get("KernelVersion") or "")
    d.operating_system = str(info.get("OperatingSystem") or "")
    d.architecture = str(info.get("Architecture") or "")
    d.security_options = [str(o) for o in _list(info.get("SecurityOptions"))]
    d.warnings = [str(w) for w in _list(info.get("Warnings"))]
    d.default_address_pools = [
        {str(k): str(v) for k, v in p.items()} for p in _list(info.get("DefaultAddressPools")) if isinstance(p, dict)
    ]
    d.ipv4_forwarding = _flag(info.get("IPv4Forwarding"))
    d.bridge_nf_iptables = _flag(info.get("BridgeNfIptables"))
