"""Sections about the host itself: OS, hostname, kernel, user, init system, interfaces."""

from __future__ import annotations

from provisioner.facts.model import HostFacts, Interface
from provisioner.facts.registry import Output, section


@section("os", "cat /etc/os-release 2>/dev/null")
def _os(out: Output, facts: HostFacts) -> None:
    osr: dict[str, str] = {}
    for line in out.text("os").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            osr[k] = v.strip().strip('"')
    facts.os.id = osr.get("ID", "")
    facts.os.version_id = osr.get("VERSION_ID", "")
    facts.os.codename = osr.get("VERSION_CODENAME", "")
    facts.os.pretty_name = osr.get("PRETTY_NAME", "")


@section("hostname", "hostname 2>/dev/null || cat /etc/hostname")
def _hostname(out: Output, facts: HostFacts) -> None:
    facts.hostname = out.text("hostname").strip()


@section("kernel", "uname -r")
def _kernel(out: Output, facts: HostFacts) -> None:
    facts.os.kernel = out.text("kernel").strip()


@section("user", "id -u; id -un")
def _user(out: Output, facts: HostFacts) -> None:
    user = out.text("user").split()
    if len(user) >= 2:
        facts.uid = int(user[0]) if user[0].isdigit() else None
        facts.user = user[1]


@section("init", "if [ -d /run/systemd/system ]; then echo systemd; else cat /proc/1/comm 2>/dev/null; fi")
def _init(out: Output, facts: HostFacts) -> None:
    facts.init = out.text("init").strip() or "unknown"


@section("ip", "ip -j addr 2>/dev/null")
def _ip(out: Output, facts: HostFacts) -> None:
    items = out.json("ip")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        name = item.get("ifname", "")
        addrs = [a for a in item.get("addr_info") or [] if isinstance(a, dict) and a.get("family") in ("inet", "inet6")]
        facts.interfaces[name] = Interface(
            name=name,
            up="UP" in (item.get("flags") or []),
            addresses=[a["local"] for a in addrs if "local" in a],
            cidrs=[f"{a['local']}/{a.get('prefixlen')}" for a in addrs if "local" in a],
            mtu=item.get("mtu"),
        )
