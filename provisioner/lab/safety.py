"""Kernel-level leftovers: find conflicts on the lab subnet, clean what this lab recorded as its own.

A stale bridge or MASQUERADE rule on the lab subnet silently breaks VXLAN between lab hosts (packets arrive
source-NATed and get no reply), so `up` refuses foreign ones and removes its own.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.errors import LabError
from provisioner.lab.proc import try_run


@dataclass(frozen=True)
class Conflict:
    what: str
    cleanup: tuple[str, ...]


@dataclass
class NetView:
    """What the kernel has: routes (dst, dev), addresses (dev, cidr), links (name -> kind), nat rules."""

    routes: list[tuple[str, str]] = field(default_factory=list)
    addresses: list[tuple[str, str]] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    masters: dict[str, str] = field(default_factory=dict)  # link -> its bridge
    nat_rules: list[str] = field(default_factory=list)


def _json(cmd: list[str]) -> list[dict[str, object]]:
    rc, out = try_run(cmd)
    if rc != 0:
        raise LabError(
            f"cannot inspect the host network: {shlex.join(cmd)} failed (exit {rc}): {out.strip()[:300]}\n"
            "    fix: install iproute2 and run the lab as root"
        )
    data = json.loads(out or "[]")
    return data if isinstance(data, list) else []


def read_netview() -> NetView:
    view = NetView()
    for r in _json(["ip", "-j", "route", "show", "table", "all"]):
        dst, dev = str(r.get("dst", "")), str(r.get("dev", ""))
        if dst and dst != "default" and r.get("type", "unicast") in ("unicast", "local", "blackhole"):
            view.routes.append((dst, dev))
    for link in _json(["ip", "-j", "-d", "addr"]):
        name = str(link.get("ifname", ""))
        info = link.get("linkinfo")
        kind = str(info.get("info_kind", "")) if isinstance(info, dict) else ""
        view.links[name] = kind
        if link.get("master"):
            view.masters[name] = str(link["master"])
        addr_info = link.get("addr_info")
        for a in addr_info if isinstance(addr_info, list) else []:
            if isinstance(a, dict) and a.get("family") == "inet":
                view.addresses.append((name, f"{a['local']}/{a['prefixlen']}"))
    rc, out = try_run(["iptables", "-w", "-t", "nat", "-S"])
    if rc == 0:
        view.nat_rules = [line for line in out.splitlines() if line.startswith("-A ")]
    return view


def _overlaps(text: str, net: ipaddress.IPv4Network) -> bool:
    try:
        other = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return isinstance(other, ipaddress.IPv4Network) and other.overlaps(net)


def _rule_nets(rule: str) -> list[str]:
    words = rule.split()
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-s", "-d", "--source", "--destination")]


def find_conflicts(
    view: NetView,
    subnet: ipaddress.IPv4Network,
    own_bridge: str,
    bridge_name: str,
    own_rules: list[str],
) -> list[Conflict]:
    """Everything on `subnet` that this lab does not own. `own_bridge` is "" when none is recorded."""
    conflicts: list[Conflict] = []
    seen_devs: set[str] = set()
    for dev, cidr in view.addresses:
        if dev != own_bridge and _overlaps(cidr, subnet):
            seen_devs.add(dev)
            fix = [f"ip addr del {cidr} dev {dev}"]
            if view.links.get(dev) in ("bridge", "dummy"):
                fix = [f"ip link delete {dev}"]
            conflicts.append(Conflict(f"interface {dev} ({view.links.get(dev) or 'link'}) has {cidr}", tuple(fix)))
    for dst, dev in view.routes:
        if dev != own_bridge and dev not in seen_devs and _overlaps(dst, subnet):
            conflicts.append(Conflict(f"route {dst} via {dev or '?'}", (f"ip route del {dst} dev {dev}",)))
    if not own_bridge and bridge_name in view.links and bridge_name not in seen_devs:
        conflicts.append(
            Conflict(
                f"bridge {bridge_name} exists but this lab's state does not record it",
                (f"ip link delete {bridge_name}",),
            )
        )
    for rule in view.nat_rules:
        if "MASQUERADE" in rule and rule not in own_rules and any(_overlaps(n, subnet) for n in _rule_nets(rule)):
            conflicts.append(
                Conflict(f"NAT rule `{rule}`", ("iptables -t nat -D " + rule.removeprefix("-A ").strip(),))
            )
    return conflicts


def conflict_error(subnet: ipaddress.IPv4Network, conflicts: list[Conflict], docker_hint: bool) -> LabError:
    lines = [f"lab subnet {subnet} is already in use on this machine, refusing to start:"]
    lines += [f"  - {c.what}" for c in conflicts]
    lines.append("    fix: pick another subnet (--subnet 198.18.4.0/24), or remove these if they are stale:")
    for c in conflicts:
        lines += [f"        {cmd}" for cmd in c.cleanup]
    if docker_hint:
        lines.append("      (a br-* bridge belongs to a Docker network: `docker network ls`, `docker network rm NAME`)")
    return LabError("\n".join(lines))


def check_subnet_free(subnet: ipaddress.IPv4Network, own_bridge: str, bridge_name: str, own_rules: list[str]) -> None:
    conflicts = find_conflicts(read_netview(), subnet, own_bridge, bridge_name, own_rules)
    if conflicts:
        raise conflict_error(subnet, conflicts, any("br-" in c.what for c in conflicts))


# ---- cleaning this lab's own leftovers ----------------------------------------------------------


def mounts_under(roots: list[str], mountinfo: str | None = None) -> list[str]:
    """Mount points below any of `roots`, deepest first (the order to unmount them)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    found: list[str] = []
    prefixes = [r.rstrip("/") + "/" for r in roots if r]
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if any(point.startswith(p) or point + "/" == p for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def unmount_all(roots: list[str]) -> list[str]:
    """Unmount leftovers of a dead dockerd (netns, overlay, shm mounts); returns what was unmounted."""
    done = []
    for point in mounts_under(roots):
        rc, _ = try_run(["umount", point])
        if rc != 0:
            rc, _ = try_run(["umount", "-l", point])
        if rc == 0:
            done.append(point)
    left = mounts_under(roots)
    if left:
        raise LabError(
            f"cannot unmount lab leftovers: {', '.join(left[:5])}\n"
            "    fix: unmount them by hand (umount -l PATH) and retry"
        )
    return done


def remove_bridge(bridge: str) -> None:
    """Delete the lab bridge and the veths still enslaved to it (their containers are gone)."""
    view = read_netview()
    for link, master in view.masters.items():
        if master == bridge and view.links.get(link) == "veth":
            try_run(["ip", "link", "delete", link.split("@")[0]])
    if bridge in view.links:
        rc, out = try_run(["ip", "link", "delete", bridge])
        if rc != 0:
            raise LabError(f"cannot delete lab bridge {bridge}: {out.strip()}\n    fix: ip link delete {bridge}")


def add_rule(rule: list[str]) -> None:
    """rule = ["-t", TABLE, CHAIN, spec...]; inserted once."""
    table, chain, spec = rule[:2], rule[2], rule[3:]
    rc, _ = try_run(["iptables", "-w", *table, "-C", chain, *spec])
    if rc == 0:
        return
    rc, out = try_run(["iptables", "-w", *table, "-I", chain, *spec])
    if rc != 0:
        raise LabError(
            f"cannot add iptables rule {shlex.join(rule)}: {out.strip()}\n"
            "    fix: the lab needs root and iptables (apt-get install iptables)"
        )


def delete_rule(rule: list[str]) -> None:
    table, chain, spec = rule[:2], rule[2], rule[3:]
    while try_run(["iptables", "-w", *table, "-C", chain, *spec])[0] == 0:
        rc, out = try_run(["iptables", "-w", *table, "-D", chain, *spec])
        if rc != 0:
            raise LabError(
                f"cannot delete iptables rule {shlex.join(rule)}: {out.strip()}\n"
                f"    fix: iptables {' '.join(table)} -D {chain} {shlex.join(spec)}"
            )


def rule_as_save_line(rule: list[str]) -> str:
    """The `iptables -S` form of a rule, to compare with what the kernel lists."""
    return "-A " + " ".join(rule[2:])
