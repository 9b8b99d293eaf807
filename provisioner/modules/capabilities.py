"""What each Docker engine can do, which overlay mode a run uses, and the preflight checks built on that.

Everything here is pure: it reads facts (including the probes below, gathered in the facts round trip)
and the inventory. The verdicts come from what was seen on real hosts:

* Docker 23 removed ``--cluster-store``/``--cluster-advertise``: only swarm mode gives overlays there.
* Debian's docker.io 20.10.24+dfsg1 (bookworm) has the Consul backend patched out (dockerd exits with
  "discovery service not supported"); etcd:// and zk:// are compiled in. Which backends a dockerd has is
  read from the binary itself (libkv's store packages are named in every Go binary), so a rebuilt or
  patched engine is judged by what it contains, not by its version string.
* ZooKeeper: dockerd 20.10.5 and 20.10.24 both panic in libnetwork (``endpointCnt.Key``, nil pointer)
  as soon as a container joins an overlay network, with ZooKeeper 3.4.13 and 3.8, with or without a
  chroot path in the zk:// URL. It is refused everywhere, with the alternatives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from provisioner.facts import HostFacts
from provisioner.inventory import Inventory

# probe: exit 64 + bitmask of the libkv backends compiled into dockerd (1 consul, 2 etcd, 4 zookeeper);
# 100 when there is no dockerd binary; anything else: could not tell
BACKENDS_PROBE = "dockerd-kv-backends"
BACKENDS_SCRIPT = (
    "d=$(command -v dockerd) || exit 100; r=64; for b in consul:1 etcd:2 zookeeper:4; do "
    'grep -q "libkv/store/${b%:*}\\.New" "$d" && r=$((r + ${b#*:})); done; exit $r'
)
_BITS = {"consul": 1, "etcd": 2, "zookeeper": 4}
REACH_PREFIX = "kv-reach "
REACH_TIMEOUT = 3  # seconds

ZOOKEEPER_REASON = (
    "ZooKeeper as Docker's cluster store crashes dockerd: libnetwork panics (endpointCnt.Key, nil pointer) "
    "as soon as a container joins the overlay network (seen with docker.io 20.10.5 and 20.10.24, ZooKeeper "
    "3.4.13 and 3.8, with and without a chroot path in the zk:// URL; moby/libnetwork#2006)"
)
SWARM_ALTERNATIVE = "docker.overlay_mode: swarm"

Mode = Literal["kv", "swarm"]


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``20.10.24+dfsg1-1+b3`` / ``5:24.0.7-1~debian.12`` / ``24.0.7`` -> (20, 10, 24) / (24, 0, 7)."""
    if not text:
        return None
    m = re.match(r"^(?:\d+:)?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


@dataclass(frozen=True)
class Engine:
    """One host's Docker engine as far as overlay networking is concerned."""

    host: str
    installed: bool
    version: tuple[int, ...] | None
    label: str  # for messages: "docker.io 20.10.24+dfsg1-1+b3" or "Docker 24.0.7"
    # libkv backends compiled into dockerd (None: could not tell)
    backends: frozenset[str] | None

    @property
    def has_cluster_store(self) -> bool:
        return self.version is None or self.version < (23,)


def engine_of(facts: HostFacts) -> Engine:
    d = facts.docker
    version = parse_version(d.server_version) or parse_version(d.package_version)
    if d.package and d.package_version:
        label = f"{d.package} {d.package_version}"
    else:
        label = f"Docker {d.server_version or 'of unknown version'}"
    rc = facts.probes.get(BACKENDS_PROBE)
    backends: frozenset[str] | None = None
    if rc is not None and 64 <= rc < 64 + 8:
        backends = frozenset(b for b, bit in _BITS.items() if (rc - 64) & bit)
    elif d.package == "docker.io" and d.package_version and "dfsg" in d.package_version and version:
        # no probe result: Debian's own builds after bullseye's 20.10.5 have no Consul backend
        backends = frozenset({"etcd", "zookeeper"} | ({"consul"} if version <= (20, 10, 5) else set()))
    return Engine(facts.host, d.installed or rc in range(64, 72), version, label, backends)


def kv_refusal(engine: Engine, backend: str) -> str | None:
    """Why this engine cannot use ``backend`` as its cluster store (with what works instead), or None."""
    if not engine.has_cluster_store:
        return (
            f"{engine.label} has no --cluster-store (removed in Docker 23), so no key-value store overlay; "
            f"use {SWARM_ALTERNATIVE}"
        )
    if backend == "zookeeper":
        return f"{ZOOKEEPER_REASON}; use kv_store.backend: etcd, or {SWARM_ALTERNATIVE}"
    if engine.backends is not None and backend not in engine.backends:
        others = sorted(b for b in engine.backends if b != "zookeeper")
        alt = (
            f"use kv_store.backend: {' or '.join(others)}, or {SWARM_ALTERNATIVE}"
            if others
            else f"use {SWARM_ALTERNATIVE}"
        )
        return f"{engine.label} cannot use {backend}:// (its {backend} backend is not in this build); {alt}"
    return None


@dataclass(frozen=True)
class ModeChoice:
    mode: Mode
    why: str  # "docker.overlay_mode: kv", "auto: lab2: docker.io ... cannot use consul://"
    # auto only, on a cluster where neither mode works on every docker host: what blocks kv there
    # ("lab2: docker.io 26.1.5 has no --cluster-store ..."); preflight then refuses on the swarm blockers
    blocked: str = ""

    def label(self) -> str:
        return f"overlay mode {self.mode} ({self.why})"


def docker_hosts(inventory: Inventory) -> list[str]:
    """The hosts that run overlay containers: docker.group (every host when the default `docker` group is absent)."""
    return inventory.docker_hosts()


def kv_blockers(inventory: Inventory, all_facts: Mapping[str, HostFacts]) -> str:
    """Why kv mode cannot work on every docker host ("lab2: <engine> has no --cluster-store ..."), or ""."""
    if inventory.kv_store is None:
        return "the inventory has no kv_store"
    seen = [h for h in docker_hosts(inventory) if h in all_facts]
    for host in seen:
        why = kv_refusal(engine_of(all_facts[host]), inventory.store().backend)
        if why is not None:
            return f"{host}: {why.split(';')[0]}"
    in_swarm = [h for h in seen if all_facts[h].docker.swarm_state == "active"]
    return f"{', '.join(in_swarm)} already in a swarm" if in_swarm else ""


def swarm_blocker(facts: HostFacts) -> str | None:
    """Why this host's Docker, as it runs, cannot be a swarm node (something only its owner should undo)."""
    if facts.docker.cluster_store:
        return f"Docker runs with cluster store {facts.docker.cluster_store}"
    if facts.docker.live_restore:
        return "live-restore is enabled"
    return None


def overlay_mode(inventory: Inventory, all_facts: Mapping[str, HostFacts]) -> ModeChoice:
    """The run's overlay mode. ``auto`` decides for the whole cluster (kv and swarm overlays do not
    mix): swarm when a docker host cannot use the store or is already in a swarm, kv otherwise. When
    swarm cannot work either (a host runs with a cluster store or live-restore), ``blocked`` says why kv
    is out and preflight refuses on the hosts that block swarm."""
    wanted = inventory.docker.overlay_mode
    if wanted != "auto":
        return ModeChoice(wanted, "set in docker.overlay_mode")
    if inventory.kv_store is None:
        if any(n.driver == "overlay" for n in inventory.networks.values()):
            return ModeChoice("swarm", "auto: the inventory has no kv_store")
        return ModeChoice("kv", "auto: no overlay network and no kv_store, so neither a store nor a swarm")
    seen = [h for h in docker_hosts(inventory) if h in all_facts]
    if not seen:
        return ModeChoice("kv", "auto: no docker host facts; kv by default")
    kv_out = kv_blockers(inventory, all_facts)
    if not kv_out:
        return ModeChoice("kv", f"auto: every docker host can use {inventory.store().backend}://")
    swarm_out = [h for h in seen if swarm_blocker(all_facts[h])]
    return ModeChoice("swarm", f"auto: {kv_out}", blocked=kv_out if swarm_out else "")


def reach_probes(inventory: Inventory) -> dict[str, str]:
    """Probes run on each docker host: can it open a TCP connection to each store endpoint?
    0 connected, 1 refused (host reachable, nothing listening yet), 124 no answer, 127 no bash."""
    return {
        f"{REACH_PREFIX}{addr}:{port}": f"timeout {REACH_TIMEOUT} bash -c '</dev/tcp/{addr}/{port}'"
        for _, addr, port in inventory.kv_endpoints()
    }


def _advertise_problem(inventory: Inventory, facts: HostFacts, what: str) -> str | None:
    iface = inventory.advertise_interface(facts.host)
    have = facts.interfaces.get(iface)
    known = ", ".join(sorted(facts.interfaces)) or "none"
    if have is None:
        return (
            f"advertise interface {iface} does not exist (interfaces: {known}); set advertise_interface for "
            f"{facts.host} (or docker.advertise_interface) to the interface the other hosts reach, then run again"
        )
    v4 = [a for a in have.addresses if ":" not in a and not a.startswith("127.")]
    if not v4:
        return (
            f"advertise interface {iface} has no usable IPv4 address ({', '.join(have.addresses) or 'none'}); "
            f"{what} needs one: give {iface} an address or pick another interface ({known})"
        )
    return None


def docker_host_reasons(inventory: Inventory, facts: HostFacts, all_facts: Mapping[str, HostFacts]) -> list[str]:
    """Preflight of one docker host: every reason the chosen overlay mode cannot work there."""
    choice = overlay_mode(inventory, {**all_facts, facts.host: facts})
    eng = engine_of(facts)
    d = facts.docker
    if not eng.installed:
        return ["Docker is not installed; install it first (apt-get install docker.io)"]
    out: list[str] = []
    if choice.mode == "kv" and inventory.kv_store is None:
        return out  # no overlay in kv mode (validation made sure): nothing to configure in Docker
    if choice.mode == "swarm":
        if d.installed and not d.active:
            out.append(f"Docker is not running ({d.state}); swarm mode needs it running: systemctl start docker")
        # kv is a way out only when every docker host can run it (a mixed cluster during an upgrade cannot)
        kv_out = choice.blocked or kv_blockers(inventory, {**all_facts, facts.host: facts})
        alt = (
            f"kv mode is no way out ({kv_out}): every docker host must run the same mode"
            if kv_out
            else "or use docker.overlay_mode: kv"
        )
        if d.cluster_store:
            out.append(
                f"Docker runs with cluster store {d.cluster_store}, which swarm mode refuses to join with; remove "
                f"--cluster-store/--cluster-advertise ({inventory.docker.dropin} or {inventory.docker.daemon_json}) "
                f"and restart Docker; {alt}"
            )
        if d.live_restore:
            out.append(
                f'live-restore is enabled, which swarm mode refuses; set "live-restore": false in '
                f"{inventory.docker.daemon_json} and restart Docker; {alt}"
            )
        iface = _advertise_problem(inventory, facts, "swarm's --advertise-addr")
        if iface:
            out.append(iface)
        return out
    why = kv_refusal(eng, inventory.store().backend)
    if why:
        out.append(why)
    if inventory.docker.config == "systemd-dropin" and facts.init != "systemd":
        out.append(
            f"init system is {facts.init}, not systemd, so a systemd drop-in cannot configure Docker; "
            "use docker.config: daemon-json"
        )
    if d.swarm_state not in ("inactive", ""):
        out.append(
            f"this Docker is in a swarm (state {d.swarm_state}, node {d.swarm_node_id or '?'}), and dockerd "
            "refuses --cluster-store in swarm mode; use docker.overlay_mode: swarm, or `docker swarm leave "
            "--force` on the host"
        )
    iface = _advertise_problem(inventory, facts, "--cluster-advertise")
    if iface:
        out.append(iface)
    out.extend(_reach_reasons(inventory, facts, all_facts))
    return out


def _reach_reasons(inventory: Inventory, facts: HostFacts, all_facts: Mapping[str, HostFacts]) -> list[str]:
    out: list[str] = []
    container = inventory.store().backend
    for name, addr, port in inventory.kv_endpoints():
        rc = facts.probes.get(f"{REACH_PREFIX}{addr}:{port}")
        if rc is None or rc == 0 or rc == 127:
            continue  # not probed, reachable, or no bash to tell
        store = all_facts.get(name)
        running = store is not None and any(c.name == container and c.running for c in store.docker.containers)
        if rc == 1 and not running:
            continue  # refused: the host answers, the store is simply not started yet
        what = "refused the connection" if rc == 1 else f"gave no answer within {REACH_TIMEOUT}s"
        out.append(
            f"the {container} store on {name} ({addr}:{port}) {what} from here"
            + (" although its container runs" if running and rc == 1 else "")
            + f"; dockerd must reach it: open TCP {port} from {facts.host} to {addr} (firewall, routing), "
            "or set kv_store.publish_address to an address the docker hosts reach"
        )
    return out
