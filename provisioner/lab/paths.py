"""Where the lab keeps its state (machine-wide) and its image cache, and the names it gives things."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from pathlib import Path

from provisioner.errors import LabError

DEFAULT_STATE_DIR = Path("/var/lib/provisioner/lab")
DEFAULT_CACHE_DIR = Path("/var/cache/provisioner")
DEFAULT_SUBNET = "198.18.0.0/24"
ALLOWED_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
SUITES = ("bullseye", "bookworm", "trixie", "forky")
# what `--suite` accepts, for messages
SUITES_HELP = "bullseye | bookworm | trixie | forky, or several comma separated (one per host in turn)"
LABEL = "io.provisioner.lab"
# unix sockets have a 108-byte path limit; containerd puts its socket deep under the exec root
MAX_SOCKET_PATH = 100


def parse_suites(spec: str) -> list[str]:
    """``bullseye`` or ``bullseye,trixie``: the suites host 1, 2, ... get in turn (host 1 the first)."""
    suites = [s.strip() for s in spec.split(",")]
    bad = [s for s in suites if s not in SUITES]
    if bad or not suites:
        raise LabError(
            f"unknown suite {', '.join(repr(b) for b in bad) or repr(spec)} in --suite {spec!r}\n"
            f"    fix: use --suite {SUITES_HELP}, e.g. --suite trixie or --suite bullseye,trixie"
        )
    return suites


def host_suite(suites: list[str], index: int) -> str:
    """1-based host index -> its suite: the list is used in turn (lab1 the first, lab2 the second, ...)."""
    return suites[(index - 1) % len(suites)]


def state_dir(given: Path | None = None) -> Path:
    if given is not None:
        return given.expanduser().resolve()
    return Path(os.environ.get("PROVISIONER_LAB_DIR") or DEFAULT_STATE_DIR).expanduser().resolve()


def cache_dir() -> Path:
    return Path(os.environ.get("PROVISIONER_CACHE_DIR") or DEFAULT_CACHE_DIR).expanduser().resolve()


def lab_id(state: Path) -> str:
    """Short stable id of a lab, derived from its state directory: names never collide across labs."""
    return hashlib.sha256(str(state).encode()).hexdigest()[:6]


def bridge_name(lid: str) -> str:
    return f"plab-{lid}"  # <= 15 chars, the Linux interface name limit


def network_name(lid: str) -> str:
    return f"provisioner-lab-{lid}"


def container_name(lid: str, host: str) -> str:
    return f"plab-{lid}-{host}"


def volume_name(lid: str, host: str) -> str:
    return f"plab-{lid}-{host}-docker"


def host_name(index: int) -> str:
    """1-based: lab1, lab2, ..."""
    return f"lab{index}"


def check_subnet(cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise LabError(
            f"lab subnet {cidr!r} is not a valid network: {exc}\n"
            "    fix: give a network address with its prefix, e.g. --subnet 198.18.0.0/24"
        ) from exc
    if not (isinstance(net, ipaddress.IPv4Network) and net.subnet_of(ALLOWED_RANGE)):
        raise LabError(
            f"lab subnet {cidr} is outside 198.18.0.0/15; the lab only uses that range "
            "(reserved for benchmarking, never routed) so no lab traffic can reach a real network\n"
            "    fix: pick a subnet inside 198.18.0.0/15, e.g. --subnet 198.18.0.0/24 or 198.18.4.0/24"
        )
    if net.prefixlen > 27:
        raise LabError(
            f"lab subnet {cidr} is too small (at most {net.num_addresses} addresses)\n"
            "    fix: use a /27 or larger, e.g. --subnet 198.18.0.0/24"
        )
    return net


def host_address(net: ipaddress.IPv4Network, index: int) -> str:
    """Host i (1-based) gets .10+i; the gateway (the Linux bridge) is .1."""
    addr = net.network_address + 10 + index
    if addr >= net.broadcast_address:
        raise LabError(
            f"subnet {net} has no room for host {index} (address {addr} is past the end)\n"
            "    fix: use fewer hosts or a larger subnet, e.g. --subnet 198.18.0.0/24"
        )
    return str(addr)


def gateway(net: ipaddress.IPv4Network) -> str:
    return str(net.network_address + 1)
