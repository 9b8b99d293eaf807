"""Optional sections about the host's network links, for local-scope Docker networks.

``link_kinds``: which link types the kernel can create, tried for real: a veth pair and a macvlan/ipvlan
on it, made inside a throw-away network namespace (``unshare -n``), so nothing is left behind on the host
and no module needs loading. The kernel of the lab machines has no ipvlan: there ``ip link add ... type
ipvlan`` says "Unknown device type" (Docker would create the network, then fail every ``docker run``).

``macvlan_links``: the host's own macvlan interfaces (the shims that let a host reach its macvlan
containers) with their parent, mode and addresses, and the IPv4 routes (a shim's route to the host's slice).
"""

from __future__ import annotations

import json
from typing import Any

from provisioner.facts.model import HostFacts, LinkKind, MacvlanLink, Route
from provisioner.facts.registry import Output, section

LINK_KINDS = "link_kinds"
MACVLAN_LINKS = "macvlan_links"
# the kinds tried; a "no" answer only when ip itself says the type is unknown
KINDS = ("macvlan", "ipvlan")

_KINDS_SCRIPT = (
    f"for k in {' '.join(KINDS)}; do "
    'e=$(unshare -n sh -c "ip link add pv0 type veth peer name pv1 && ip link add pk0 link pv0 type $k" 2>&1); '
    'r=$?; printf "%s %s %s\\n" "$k" "$r" "$(printf %s "$e" | tr "\\n" " ")"; done'
)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


@section(LINK_KINDS, _KINDS_SCRIPT, default=False)
def _link_kinds(out: Output, facts: HostFacts) -> None:
    for line in out.text(LINK_KINDS).splitlines():
        kind, _, rest = line.partition(" ")
        rc, _, err = rest.partition(" ")
        if kind not in KINDS or not rc.isdigit():
            continue
        err = err.strip()
        if rc == "0":
            facts.link_kinds[kind] = LinkKind(supported=True)
        elif "Unknown device type" in err:
            facts.link_kinds[kind] = LinkKind(supported=False, error=err)
        else:  # no unshare, no root, no iproute2: could not tell
            facts.link_kinds[kind] = LinkKind(supported=None, error=err or f"exit {rc}")


@section(
    MACVLAN_LINKS,
    "printf '@@PART@@ links\\n'; ip -d -j addr show type macvlan 2>/dev/null; "
    "printf '\\n@@PART@@ routes\\n'; ip -4 -j route show 2>/dev/null",
    default=False,
)
def _macvlan_links(out: Output, facts: HostFacts) -> None:
    parts = out.parts(MACVLAN_LINKS)

    def loaded(key: str) -> list[Any]:
        try:
            v = json.loads(parts.get(key, "").strip() or "[]")
        except json.JSONDecodeError:
            return []
        return v if isinstance(v, list) else []

    for item in loaded("links"):
        if not isinstance(item, dict) or not item.get("ifname"):
            continue
        info = _dict(item.get("linkinfo"))
        data = _dict(info.get("info_data"))
        addrs = [a for a in item.get("addr_info") or [] if isinstance(a, dict) and a.get("family") == "inet"]
        facts.macvlan_links[str(item["ifname"])] = MacvlanLink(
            name=str(item["ifname"]),
            parent=str(item.get("link") or ""),
            mode=str(data.get("mode") or ""),
            up="UP" in (item.get("flags") or []),
            cidrs=[f"{a['local']}/{a.get('prefixlen')}" for a in addrs if "local" in a],
        )
    for r in loaded("routes"):
        if isinstance(r, dict) and r.get("dst"):
            dev, gw = str(r.get("dev") or ""), str(r.get("gateway") or "")
            facts.routes.append(Route(dst=str(r["dst"]), dev=dev, gateway=gw))
