"""``container_verify``: prove what the inventory's ``containers:`` declare, both ways (a read-only check).

Run once; it works on every host that runs a declared container (plus the other docker hosts, as clients
of published ports, and the ``verify.outside`` host, as the listener of the NAT check):

1. one round trip per host reads what runs now (``docker inspect`` of the declared containers, the
   networks' subnets, the host's interfaces and their IPv4 networks, Docker's DOCKER* chains, MASQUERADE
   and DOCKER-USER rules) and, on the outside host, starts a listener that answers with the address a
   request arrives from (its image loaded from ``verify.image_archive`` first when the host lacks it);
2. the expectations are built from the inventory, those live addresses and each host's engine rules
   (``build``: pure, tested as data);
3. the check engine (``provisioner.checks``) runs them from probes that share each container's network
   namespace (``--network container:NAME``, so a workload image needs no ping or shell) or the host's;
   all of a probe's tests run at once, a pair that must reach stops at its first reply and one that must
   not costs 2 s, so a tutorial-sized check takes seconds, not a timeout per isolated pair.

What is expected (``build``):

* every pair of containers on one network (the same overlay; the same macvlan segment; the same bridge on
  the same host) pings on that network's addresses (macvlan ``private``: same-host pairs isolated;
  ``vepa``: same-host pairs unknown, the switch decides; ``passthru``: one container per host; across
  hosts whose parents share no IPv4 subnet: unknown; ipvlan ``l3`` across hosts: unknown; a bridge with
  ``enable_icc: false``: isolated);
* a pair on one host that shares no network does not reach the other's bridge addresses (Docker's
  isolation; what the host's engine makes of it: ``rule_set``);
* a docker host reaches its own macvlan containers only with ``shim: true``;
* every published port exchanges bytes with a client on each other docker host through the host's
  address; one bound to 127.0.0.1 does not;
* NAT out: a container with a way out reaches ``verify.outside`` (and, when that is a host of the
  inventory, arrives there from its docker host's address); one only on internal networks does not;
* ``network_mode: none`` has only ``lo``; ``host`` sees the host's interfaces;
* ``verify.expect`` overrides any pair.

Not tested, and said so in the notes: pairs across hosts that share no network (the only path between
them is the hosts' default route, which Docker does not govern), and any address that also exists on
the probing host (same-named bridges on two hosts hand out the same addresses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from provisioner.checks import (
    ISOLATION_HINTS,
    MARK,
    OVERLAY_HINTS,
    PING,
    SWARM_HINTS,
    Expectation,
    Expected,
    Kind,
    Matrix,
    Net,
    Outcome,
    Port,
    Probe,
    Results,
    Via,
    register_kind,
    run_checks,
)
from provisioner.connection.base import ShellConnection, q
from provisioner.errors import ProvisionerError, TaskError
from provisioner.facts import HostFacts
from provisioner.inventory import Inventory, Network, VerifySettings
from provisioner.modules._docker import archive_info, normalize_ref
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
from provisioner.modules.docker_image import load_step
from provisioner.steps import StepState
from provisioner.workloads import Container

PROBE_PREFIX = "prov-cv-"
LISTENER = "prov-cv-listener"
LISTENER_LABEL = "provisioner.listener"
LISTEN_PORTS = (47991, 47992, 47993)
OUTSIDE = "verify.outside"
# the terminal shows a task's message indented by 6 columns: what is printed must fit 80 columns there
WIDTH = 72
_SECTION = "@@CV@@"


# ---- kinds of test -------------------------------------------------------------------------------------


def _stdin(x: str) -> str:
    """The prefix for a command fed on stdin: the fallback's ``docker exec`` needs -i to pass it on."""
    return x.replace("docker exec ", "docker exec -i ")


def _bytes_body(_s: VerifySettings, x: str) -> str:
    # ADDRESS:PORT; a request any service answers with something (HTTP answers HEAD; a banner service
    # talks first); docker-proxy accepts the connection even when nothing listens behind the port, and
    # then closes it without a byte: that must fail
    return (
        "a=${2%:*}; p=${2##*:}; "
        f"r=$({{ printf 'HEAD / HTTP/1.0\\r\\n\\r\\n'; sleep 1; }} | "
        f'{_stdin(x)}timeout 5 nc -w 3 "$a" "$p" 2>&1 '
        "| head -c 300 | tr -d '\\000\\r'); "
        'case "$r" in '
        f'"nc: "*|timeout*) echo "{MARK} $3 FAIL no connection: $(printf %s "$r" | head -n 1)" ;; '
        f'"") echo "{MARK} $3 FAIL connected, but not one byte came back" ;; '
        f'*) echo "{MARK} $3 ok" ;; esac'
    )


def _nat_body(_s: VerifySettings, x: str) -> str:
    # ADDRESS:PORT from SOURCE: the listener answers with the address the request arrived from
    return (
        "a=${2%%:*}; r=${2#*:}; p=${r%% *}; s=${r##* }; "
        f"f=$({{ printf 'GET /cgi-bin/src HTTP/1.0\\r\\n\\r\\n'; sleep 1; }} | "
        f'{_stdin(x)}timeout 5 nc -w 3 "$a" "$p" '
        "2>/dev/null | tr -d '\\r[]' | sed -n 's/^src \\(::ffff:\\)\\{0,1\\}//p' | head -n 1); "
        f'if [ -z "$f" ]; then echo "{MARK} $3 FAIL no answer from the listener on $a:$p"; '
        f'elif [ "$f" = "$s" ]; then echo "{MARK} $3 ok arrived from $f"; '
        f'else echo "{MARK} $3 FAIL arrived from $f, not from $s"; fi'
    )


def _netns_body(_s: VerifySettings, x: str) -> str:
    # only:NAMES (exactly these interfaces) or has:NAMES (at least these), names space-separated, sorted
    return (
        f"n=$({x}cat /proc/net/dev | sed -n 's/^ *\\([^:]*\\):.*/\\1/p' | sort | tr '\\n' ' '); "
        "w=${2#*:}; m=; "
        'case "$2" in '
        f'only:*) if [ "$n" = "$w " ]; then echo "{MARK} $3 ok"; else echo "{MARK} $3 FAIL sees $n"; fi ;; '
        '*) for i in $w; do case " $n" in *" $i "*) ;; *) m="$m $i" ;; esac; done; '
        f'if [ -z "$m" ]; then echo "{MARK} $3 ok"; else echo "{MARK} $3 FAIL missing$m (sees $n)"; fi ;; esac'
    )


def _reach_body(s: VerifySettings, x: str) -> str:
    # one reply is enough: `ping -c 1 -w D` sends a packet a second and stops at the first reply. A pair
    # that must reach gets the probe matrix's deadline (a new overlay endpoint takes a moment to be
    # learned); one that must not (BRIEF set) 2 s: a broken isolation answers within milliseconds on one
    # host, and all of a probe's tests run side by side
    deadline = max(2, round((s.retries + 1) * s.timeout / 2))
    return (
        f'd={deadline}; [ -n "$4" ] && d=2; '
        f'if {x}ping -c 1 -w "$d" -W 1 "$2" >/dev/null 2>&1; then echo "{MARK} $3 ok"; else echo "{MARK} $3 FAIL"; fi'
    )


REACH = register_kind(Kind("cping", PING.title, _reach_body, PING.hints))
BYTES = register_kind(
    Kind(
        "cbytes",
        "bytes through the published port, from (row) to (column)",
        _bytes_body,
        {
            "no reply": (
                "nothing listens behind the port inside the container (docker-proxy accepts, then closes)",
                "the service listens on 127.0.0.1 inside the container",
                "a firewall on the docker host drops the port",
            ),
            "isolation broken": ("the port is published on every address of the host, not on 127.0.0.1",),
        },
    )
)
NAT = register_kind(
    Kind(
        "cnat",
        "NAT out: from (row) to verify.outside",
        _nat_body,
        {
            "no reply": (
                "no MASQUERADE rule for the container's network on its docker host (iptables -t nat -S POSTROUTING)",
                "net.ipv4.ip_forward is 0 on the docker host",
            ),
            "isolation broken": ("the network is not internal on its host (created without --internal)",),
        },
    )
)
OUT = register_kind(Kind("cout", "ping from (row) to verify.outside", _reach_body, NAT.hints))
NETNS = register_kind(Kind("cnetns", "interfaces seen in (row)", _netns_body, {}))


# ---- what runs now, per host ---------------------------------------------------------------------------


@dataclass
class LiveContainer:
    name: str
    status: str = "missing"
    network_mode: str = ""
    addresses: dict[str, str] = field(default_factory=dict)  # network -> IPv4
    # (container port, proto) -> [(host ip, host port)]
    ports: dict[tuple[int, str], list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass
class LiveHost:
    containers: dict[str, LiveContainer] = field(default_factory=dict)
    subnets: dict[str, list[str]] = field(default_factory=dict)  # docker network -> its subnets here
    interfaces: list[str] = field(default_factory=list)
    cidrs: dict[str, list[str]] = field(default_factory=dict)  # interface -> its IPv4 networks
    chains: list[str] | None = None  # DOCKER* chains of the filter table; None: not read
    masquerade: list[str] = field(default_factory=list)  # nat POSTROUTING MASQUERADE rules
    docker_user: list[str] = field(default_factory=list)  # DOCKER-USER rules other than the default RETURN
    raw_accepts: list[str] = field(default_factory=list)  # ACCEPTs in raw PREROUTING (ahead of Docker 28's drops)
    listener: int | None = None  # the port of the NAT listener started here
    listener_error: str = ""


def discovery_script(names: Sequence[str], listener: str | None) -> str:
    """Read what runs on a host; with ``listener`` (the probe image), also start the NAT listener."""
    lines = [
        f'echo "{_SECTION} containers"; '
        + (f"docker inspect {' '.join(q(n) for n in names)} 2>/dev/null" if names else "echo []"),
        f'echo "{_SECTION} networks"; ids=$(docker network ls -q 2>/dev/null); '
        '[ -z "$ids" ] || docker network inspect $ids 2>/dev/null',
        f'echo "{_SECTION} interfaces"; sed -n "s/^ *\\([^:]*\\):.*/\\1/p" /proc/net/dev',
        f'echo "{_SECTION} addresses"; ip -o -4 addr show 2>/dev/null',
        f'echo "{_SECTION} chains"; iptables -S 2>/dev/null | sed -n "s/^-N \\(DOCKER[^ ]*\\).*/\\1/p"; echo end',
        f'echo "{_SECTION} masquerade"; iptables -t nat -S POSTROUTING 2>/dev/null | grep MASQUERADE',
        f'echo "{_SECTION} docker_user"; iptables -S DOCKER-USER 2>/dev/null | grep "^-A" '
        '| grep -v "^-A DOCKER-USER -j RETURN$"',
        f'echo "{_SECTION} raw_accepts"; iptables -t raw -S PREROUTING 2>/dev/null | grep -e "-j ACCEPT"',
    ]
    if listener is not None:
        lines.append(f'echo "{_SECTION} listener"; ' + listener_script(listener))
    return "\n".join(lines) + "\ntrue\n"


NO_IMAGE = "no image"
# in the background, detached from the connection: nothing waits for its ~1 s
REMOVE_LISTENER = f"docker rm -f {LISTENER} </dev/null >/dev/null 2>&1 &"


def listener_script(image: str, lifetime: int = 300) -> str:
    """Start an HTTP listener in the host's network namespace whose CGI answers ``src ADDRESS``: the address
    a request arrived from (busybox httpd sets REMOTE_ADDR), on the first free port of LISTEN_PORTS.
    Prints ``ok PORT``, ``err WHY``, or NO_IMAGE when the image is not on the host (never pulled: a pull
    that cannot reach a registry waits for its DNS timeout)."""
    cgi = 'printf "#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho src \\$REMOTE_ADDR\\n"'
    inner = (
        f"mkdir -p /tmp/w/cgi-bin && {cgi} >/tmp/w/cgi-bin/src && chmod 755 /tmp/w/cgi-bin/src && "
        f'exec timeout {lifetime} httpd -f -p "0.0.0.0:$0" -h /tmp/w'
    )
    return "\n".join(
        [
            f"docker ps -aq --filter label={LISTENER_LABEL} | xargs -r docker rm -f >/dev/null 2>&1; e=",
            f"if ! docker image inspect {q(image)} >/dev/null 2>&1; then echo {q(NO_IMAGE)}; else",
            "for p in " + " ".join(map(str, LISTEN_PORTS)) + "; do",
            # a port something listens on (state 0A) is skipped; connections of earlier runs do not count
            '  grep -qiE "^ *[0-9]+: [0-9a-f]+:$(printf %04X "$p") [0-9a-f]+:[0-9a-f]+ 0A " '
            "/proc/net/tcp /proc/net/tcp6 2>/dev/null && continue",
            f"  if ! e=$(docker run -d --rm --label {LISTENER_LABEL}=1 --network host --name {LISTENER} "
            f'{q(image)} sh -c {q(inner)} "$p" 2>&1); then break; fi',
            # started: running unless its httpd could not bind (the port taken after all): then the next
            f'  sleep 0.3; if [ "$(docker inspect -f "{{{{.State.Running}}}}" {LISTENER} 2>/dev/null)" = true ]; '
            'then echo "ok $p"; e=; break; fi',
            f'  e="port $p: $(docker logs {LISTENER} 2>&1 | tail -n 1)"; docker rm -f {LISTENER} >/dev/null 2>&1',
            "done",
            # the line that says what went wrong, not docker's "Run 'docker run --help'" after it
            '[ -z "$e" ] || echo "err $(printf %s "$e" | grep -m 1 -i -e error -e port -e unable || '
            'printf %s "$e" | head -n 1)"',
            "fi",
        ]
    )


def parse_discovery(stdout: str) -> LiveHost:
    parts: dict[str, str] = {}
    key = ""
    for line in stdout.splitlines():
        if line.startswith(_SECTION + " "):
            key = line[len(_SECTION) + 1 :].strip()
            parts[key] = ""
        elif key:
            parts[key] += line + "\n"
    live = LiveHost()
    for c in _json_list(parts.get("containers", "")):
        lc = LiveContainer(str(c.get("Name", "")).lstrip("/"))
        lc.status = str(_d(c.get("State")).get("Status", ""))
        lc.network_mode = str(_d(c.get("HostConfig")).get("NetworkMode", ""))
        settings = _d(c.get("NetworkSettings"))
        for net, ep in _d(settings.get("Networks")).items():
            if isinstance(ep, dict) and ep.get("IPAddress"):
                lc.addresses[str(net)] = str(ep["IPAddress"])
        for key_, binds in _d(settings.get("Ports")).items():
            port, _, proto = str(key_).partition("/")
            for b in binds if isinstance(binds, list) else []:
                if isinstance(b, dict) and str(b.get("HostPort", "")).isdigit() and port.isdigit():
                    lc.ports.setdefault((int(port), proto or "tcp"), []).append(
                        (str(b.get("HostIp") or ""), int(b["HostPort"]))
                    )
        live.containers[lc.name] = lc
    for n in _json_list(parts.get("networks", "")):
        cfg = _d(n.get("IPAM")).get("Config")
        live.subnets[str(n.get("Name", ""))] = [
            str(c["Subnet"]) for c in (cfg if isinstance(cfg, list) else []) if isinstance(c, dict) and c.get("Subnet")
        ]
    live.interfaces = sorted({i.strip() for i in parts.get("interfaces", "").split() if i.strip()})
    for line in parts.get("addresses", "").splitlines():
        words = line.split()  # 2: eth0    inet 198.18.0.12/24 brd ... scope global eth0
        if len(words) > 3 and words[2] == "inet":
            try:
                net = str(ipaddress.ip_interface(words[3]).network)
            except ValueError:
                continue
            live.cidrs.setdefault(words[1].split("@")[0], []).append(net)
    chains = parts.get("chains", "").split()
    live.chains = [c for c in chains if c != "end"] if "end" in chains and len(chains) > 1 else None
    live.masquerade = [r for r in parts.get("masquerade", "").splitlines() if r.strip()]
    live.docker_user = [r for r in parts.get("docker_user", "").splitlines() if r.strip()]
    live.raw_accepts = [r for r in parts.get("raw_accepts", "").splitlines() if r.strip()]
    listener = parts.get("listener", "").split()
    if listener[:1] == ["ok"] and len(listener) > 1 and listener[1].isdigit():
        live.listener = int(listener[1])
    elif "listener" in parts:
        live.listener_error = parts["listener"].strip().removeprefix("err ").strip() or "no output"
    return live


def _json_list(text: str) -> list[dict[str, Any]]:
    try:
        v = json.loads(text) if text.strip() else []
    except json.JSONDecodeError:
        return []
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


# ---- what the engine makes of it -----------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSet:
    """What a host's engine and daemon settings make of isolation, NAT out and published ports."""

    name: str
    isolation: Expected
    isolation_why: str
    nat: Expected
    nat_why: str
    publish: Expected
    publish_why: str


def _major(version: str | None) -> int | None:
    m = re.match(r"(\d+)\.", version or "")
    return int(m.group(1)) if m else None


def rule_set(host: str, facts: HostFacts | None, chains: Sequence[str] | None = None) -> RuleSet:
    """The rules that apply on ``host``: its engine version (facts), its daemon's iptables and
    userland-proxy settings (the ``firewall`` facts) and the DOCKER* chains present (read live, else from
    the facts). Where they make an expectation unknowable, it is ``unknown`` with the reason."""
    version = facts.docker.server_version if facts is not None else None
    major = _major(version)
    fw = facts.docker.firewall if facts is not None and facts.docker.firewall.dockerd_running else None
    iptables = True if fw is None or fw.iptables is None else fw.iptables
    proxy = True if fw is None or fw.userland_proxy is None else fw.userland_proxy
    if chains is None and fw is not None and fw.rules_read:
        chains = fw.filter_chains
    settings = "" if fw is not None else " (daemon settings not read: Docker's defaults assumed)"
    if version is None:
        why = f"{host}'s engine version is not known (Docker not running when the facts were read)"
        return RuleSet(f"{host}: engine unknown", "unknown", why, "unknown", why, "unknown", why)
    if not iptables:
        name = f"Docker {version}, iptables: false{settings}"
        iso = f"{host}'s dockerd runs with iptables: false: no isolation rules, so the host's own firewall decides"
        nat = f"{host}'s dockerd runs with iptables: false: no MASQUERADE for its networks"
        if proxy:
            return RuleSet(name + ", docker-proxy publishes", "unknown", iso, "unknown", nat, "reach",
                           f"docker-proxy (userland-proxy) listens on {host}'s published ports")  # fmt: skip
        pub = f"{host}'s dockerd has iptables and userland-proxy off: nothing forwards a published port"
        return RuleSet(name + ", userland-proxy: false", "unknown", iso, "unknown", nat, "unknown", pub)
    proxy_text = "docker-proxy" if proxy else "DNAT only (userland-proxy: false)"
    pub_why = f"published on every address of {host} ({proxy_text})"
    nat_why = f"{host} masquerades its bridge networks (Docker's MASQUERADE rules)"
    if major is not None and major >= 29:
        return RuleSet(
            f"Docker {version}: no isolation chains; NAT by MASQUERADE; ports by {proxy_text}{settings}",
            "unknown",
            f"Docker {version} on {host} has no DOCKER-ISOLATION chains: this tool does not know how it keeps "
            "networks apart",
            "reach", nat_why, "reach", pub_why,
        )  # fmt: skip
    needed = (
        ("DOCKER-ISOLATION-STAGE-1", "DOCKER-FORWARD")
        if major is not None and major >= 28
        else ("DOCKER-ISOLATION-STAGE-1",)
    )
    if chains is not None and not any(c in chains for c in needed):
        return RuleSet(
            f"Docker {version}: isolation chains missing; NAT by MASQUERADE; ports by {proxy_text}{settings}",
            "unknown",
            f"{host}'s filter table has no {' or '.join(needed)} chain although iptables is on: something removed "
            "Docker's rules (restart Docker to restore them)",
            "reach", nat_why, "reach", pub_why,
        )  # fmt: skip
    if major is not None and major >= 28:
        name = (
            f"Docker {version}: DOCKER-FORWARD + isolation chains, and a container's address dropped in raw "
            f"PREROUTING from any interface but its bridge (DOCKER-USER alone cannot open it); NAT by "
            f"MASQUERADE; ports by {proxy_text}{settings}"
        )
        iso = (
            f"Docker {version} on {host} drops traffic between its networks (DOCKER-ISOLATION-STAGE-1/2, and "
            "per container in raw PREROUTING)"
        )
        return RuleSet(name, "isolated", iso, "reach", nat_why, "reach", pub_why)
    else:
        name = (
            f"Docker {version}: bridges apart by DOCKER-ISOLATION-STAGE-1/2 (DOCKER-USER first); NAT by "
            f"MASQUERADE; ports by {proxy_text}{settings}"
        )
    iso = f"Docker {version} on {host} drops traffic between its networks (DOCKER-ISOLATION-STAGE-1/2)"
    return RuleSet(name, "isolated", iso, "reach", nat_why, "reach", pub_why)


# ---- expectations ---------------------------------------------------------------------------------------


@dataclass
class Built:
    """What ``build`` makes of the inventory and what runs: the check engine's input, plus notes."""

    expectations: list[Expectation] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    addresses: dict[tuple[str, Via], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what is not tested, and why
    problems: list[str] = field(default_factory=list)  # declared containers that do not run as declared
    rule_sets: dict[str, str] = field(default_factory=dict)  # host -> the rule set that applied

    def table(self) -> dict[tuple[str, str, str], Expected]:
        """(source, destination, via) -> expected: the expected matrix as data."""
        return {(e.source, e.destination, str(e.via)): e.expected for e in self.expectations}


def _driver(inv: Inventory, net: str) -> str:
    spec = inv.networks.get(net)
    return spec.driver if spec is not None else "bridge"  # Docker's own `bridge`


def net_key(inv: Inventory, net: str, host: str) -> Net:
    """A bridge is a network per host; an overlay or a macvlan/ipvlan segment spans its hosts."""
    return Net(net, host) if _driver(inv, net) == "bridge" else Net(net)


def _in_any(addr: str, subnets: Sequence[str]) -> bool:
    try:
        a = ipaddress.ip_address(addr)
        return any(a in ipaddress.ip_network(s, strict=False) for s in subnets)
    except ValueError:
        return False


def build(
    inv: Inventory,
    live: Mapping[str, LiveHost],
    rules: Mapping[str, RuleSet],
    *,
    listener: tuple[str, int] | None = None,
) -> Built:
    """The expectations for the inventory's containers, from what runs (``live``: per host) and each
    host's rules. ``listener``: (outside host, port) of the NAT listener when it started. Pure."""
    b = Built()
    for host in sorted({c.host for c in inv.containers.values()} | set(inv.docker_hosts())):
        if host in rules:
            b.rule_sets[host] = rules[host].name
    declared = {n: c for n, c in inv.containers.items() if c.state == "present"}
    running: dict[str, LiveContainer] = {}
    for name, c in declared.items():
        lc = live.get(c.host, LiveHost()).containers.get(name)
        if lc is None or not lc.running:
            status = "missing" if lc is None else lc.status
            b.problems.append(
                f"{name}: not running on {c.host} ({status}); its pairs cannot be tested "
                "(apply the containers task, or `docker start` it there)"
            )
        else:
            running[name] = lc
            b.probes.append(Probe(name, c.host, f"{PROBE_PREFIX}{name}", mode=f"container:{name}"))
    host_ep = _host_endpoints(inv)
    hosts_probed: set[str] = set()

    def host_probe(host: str) -> str:
        if host not in hosts_probed:
            hosts_probed.add(host)
            b.probes.append(Probe(host_ep[host], host, f"{PROBE_PREFIX}host-{host}", mode="host"))
        return host_ep[host]

    def add(src: str, dst: str, via: Via, kind: Kind, expected: Expected, why: str, address: str | None) -> None:
        b.expectations.append(Expectation(src, dst, via, kind.name, expected, why))
        if address is not None:
            b.addresses.setdefault((dst, via), address)

    def address(name: str, net: str) -> str | None:
        lc = running.get(name)
        return lc.addresses.get(net) if lc is not None else None

    exp: Expected
    attached = {n: networks_of(c) for n, c in declared.items() if c.network_mode is None}
    keys = {n: {net_key(inv, net, declared[n].host) for net in nets} for n, nets in attached.items()}

    # 1. pairs: on one network they reach; on one host and no shared network they are isolated
    # pairs not tested (a pair once, however many networks the destination is on)
    skipped_cross: set[tuple[str, str]] = set()
    skipped_routed: set[tuple[str, str]] = set()
    for dst, nets in attached.items():
        dc = declared[dst]
        for net in nets:
            via = net_key(inv, net, dc.host)
            spec = inv.networks.get(net)
            for src in attached:
                if src == dst:
                    continue
                sc = declared[src]
                same_host = sc.host == dc.host
                if via in keys[src]:
                    exp, why = _shared(inv, net, src, dst, same_host, live)
                    add(src, dst, via, REACH, exp, why, address(dst, net))
                    continue
                if keys[src] & keys[dst]:
                    continue  # they share another network: reach is tested there
                if not same_host:
                    skipped_cross.add((src, dst))
                    continue
                if _driver(inv, net) != "bridge" or not any(
                    _driver(inv, n) in ("bridge", "overlay") for n in attached[src]
                ):
                    skipped_routed.add((src, dst))  # routing, not Docker's isolation
                    continue
                addr = address(dst, net)
                here = live.get(dc.host, LiveHost())
                others = [s for n, subs in here.subnets.items() if n != net for s in subs]
                if addr is not None and _in_any(addr, others):
                    b.notes.append(
                        f"{src} -> {dst} on {via}: not tested, {addr} also lies in another network of {dc.host}"
                    )
                    continue
                rs = rules.get(dc.host)
                exp = rs.isolation if rs is not None else "unknown"
                why = f"{src} and {dst} share no network on {dc.host}; " + (
                    rs.isolation_why if rs is not None else f"{dc.host}'s engine is not known"
                )
                add(src, dst, via, REACH, exp, why, addr)
            # a docker host and its macvlan containers
            if spec is not None and spec.driver == "macvlan":
                for host in inv.network_hosts(net):
                    own = host == dc.host
                    if spec.shim:
                        why = f"shim: true gives {host} a macvlan interface on {spec.parent}, so it reaches {net}"
                        add(host_probe(host), dst, via, REACH, "reach", why, address(dst, net))
                    elif own and ipaddress.ip_address(inv.address_of(host)) in spec.subnet:
                        why = (
                            f"a host cannot reach its own macvlan containers (kernel design); shim: true on {net} "
                            "would give it a way"
                        )
                        add(host_probe(host), dst, via, REACH, "isolated", why, address(dst, net))
    if skipped_routed:
        b.notes.append(
            f"not tested: {len(skipped_routed)} pairs on one host that share no network and whose path does not "
            "run between two of its bridges (an overlay or macvlan address, or a macvlan-only source): that is "
            "routing, not Docker's isolation"
        )
    if skipped_cross:
        b.notes.append(
            f"not tested: {len(skipped_cross)} pairs on different hosts that share no network (the only path is "
            "the hosts' default route, which Docker does not govern)"
        )

    # 2. published ports, from a client on every other docker host
    clients = inv.docker_hosts()
    for name, c in declared.items():
        for spec_p in c.ports:
            others = [h for h in clients if h != c.host]
            if not others:
                b.notes.append(f"{name} {spec_p.text}: no other docker host to test it from")
                continue
            binds = running[name].ports.get((spec_p.container_port, spec_p.proto), []) if name in running else []
            host_port = spec_p.host_port or next((p for _, p in binds), None)
            if host_port is None:
                if name in running:
                    b.problems.append(
                        f"{name}: port {spec_p.text} is not published on {c.host} (docker port {name} shows none)"
                    )
                continue
            port = Port(host_port, "udp" if spec_p.proto == "udp" else "tcp")
            bound = spec_p.address or "0.0.0.0"
            target = inv.address_of(c.host)
            rs = rules.get(c.host)
            if spec_p.proto != "tcp":
                exp = "unknown"
                why = f"{spec_p.proto} answers only its own protocol: no byte exchange this check knows"
            elif ipaddress.ip_address(bound).is_loopback:
                exp, why = "isolated", f"bound to {bound}: only {c.host} itself reaches it"
            elif bound in ("0.0.0.0", "::") or bound == target:
                exp = rs.publish if rs is not None else "unknown"
                why = rs.publish_why if rs is not None else f"{c.host}'s engine is not known"
            else:
                exp, why, target = "unknown", f"bound to {bound}, which other hosts may not route to", bound
            for h in others:
                add(host_probe(h), name, port, BYTES, exp, why, f"{target}:{host_port}")

    # 3. NAT out
    outside = inv.verify.outside
    if outside is not None:
        out_host = next((h for h in inv.hosts if inv.address_of(h) == str(outside)), None)
        dest = out_host or "outside"
        for name, c in declared.items():
            if c.network_mode is not None:
                continue
            drivers = {n: _driver(inv, n) for n in networks_of(c)}
            internal = {n for n in drivers if n in inv.networks and inv.networks[n].internal}
            nat_nets = [n for n, d in drivers.items() if d in ("bridge", "overlay") and n not in internal]
            macvlans = [n for n, d in drivers.items() if d in ("macvlan", "ipvlan")]
            via = Net(OUTSIDE, c.host)
            rs = rules.get(c.host)
            if nat_nets and macvlans:
                exp, why = (
                    "unknown",
                    (
                        f"{name}'s default route may go through {macvlans[0]} (no NAT there) or {nat_nets[0]}: "
                        "Docker picks one by engine and connect order"
                    ),
                )
            elif nat_nets:
                exp = rs.nat if rs is not None else "unknown"
                why = rs.nat_why if rs is not None else f"{c.host}'s engine is not known"
            elif internal and not macvlans:
                exp = "isolated"
                why = f"{name} is only on internal networks ({', '.join(sorted(internal))}): no way out"
            else:
                b.notes.append(
                    f"{name}: not in the NAT check: only on macvlan/ipvlan networks, where Docker does no NAT "
                    "(the way out is the segment's router)"
                )
                continue
            own = out_host == c.host
            if listener is not None and not own and exp != "isolated":
                target = f"{outside}:{listener[1]} from {inv.address_of(c.host)}"
                add(name, dest, via, NAT, exp, why, target)
            else:  # a ping: its destination is the address (the listener's tests are keyed by the host)
                add(name, str(outside), via, OUT, exp, why, str(outside))

    # 4. namespaces of network_mode none and host
    for name, c in declared.items():
        if c.network_mode == "none":
            add(name, name, Net("none", c.host), NETNS, "reach", "network_mode: none has only lo", "only:lo")
        elif c.network_mode == "host":
            b.notes.append(
                f"{name}: network_mode host is {c.host} itself: not in the pair matrices, its interfaces checked"
            )
            seen = [i for i in live.get(c.host, LiveHost()).interfaces if not i.startswith("veth")]
            add(name, name, Net("host", c.host), NETNS, "reach",
                f"network_mode: host sees {c.host}'s interfaces", "has:" + " ".join(sorted(seen)))  # fmt: skip

    _apply_expect(inv, b, declared, running)
    # a container that does not run is one problem (listed), not a failure per pair
    down = set(declared) - set(running)
    b.expectations = [e for e in b.expectations if e.source not in down and e.destination not in down]
    return b


def networks_of(c: Container) -> list[str]:
    """A container's networks: without networks and network_mode, Docker puts it on its own bridge."""
    return list(c.networks) or (["bridge"] if c.network_mode is None else [])


def _host_endpoints(inv: Inventory) -> dict[str, str]:
    """How a docker host is named as a matrix endpoint (``host:NAME`` when a container has its name)."""
    return {h: (f"host:{h}" if h in inv.containers else h) for h in inv.hosts}


def _segment_apart(spec: Network, a: str, b: str, live: Mapping[str, LiveHost]) -> str:
    """Why hosts ``a`` and ``b`` may not share the segment of ``spec.parent`` ('' when nothing says so):
    their parents' (a VLAN sub-interface: its base interface's) IPv4 networks have none in common."""
    base = (spec.parent or "").split(".")[0]
    nets = [set(live[h].cidrs.get(base, [])) if h in live else set() for h in (a, b)]
    if not nets[0] or not nets[1] or nets[0] & nets[1]:
        return ""
    return (
        f"{a}'s {base} is on {', '.join(sorted(nets[0]))} and {b}'s on {', '.join(sorted(nets[1]))}: perhaps not "
        f"one segment, and macvlan reaches across hosts only on one"
    )


def _shared(
    inv: Inventory, net: str, src: str, dst: str, same_host: bool, live: Mapping[str, LiveHost]
) -> tuple[Expected, str]:
    spec = inv.networks.get(net)
    if spec is None:
        return "reach", f"{src} and {dst} are both on Docker's bridge of {inv.containers[dst].host}"
    if spec.driver == "bridge":
        if spec.options.get("com.docker.network.bridge.enable_icc", "true").lower() == "false":
            return "isolated", f"{net} has enable_icc false: containers on it cannot talk to each other"
        return "reach", f"{src} and {dst} are both on bridge {net} of {inv.containers[dst].host}"
    if spec.driver == "overlay":
        return "reach", f"{src} and {dst} are both on overlay {net}"
    mode = spec.mode or ("bridge" if spec.driver == "macvlan" else "l2")
    if same_host and mode == "private":
        return "isolated", f"macvlan mode private on {net}: containers on one host cannot talk"
    if same_host and mode == "vepa":
        return "unknown", (
            f"macvlan mode vepa on {net}: same-host traffic goes out to the switch and comes back only if the switch "
            "reflects it (hairpin): the inventory does not say"
        )
    if spec.driver == "ipvlan" and mode == "l3" and not same_host:
        return "unknown", (
            f"ipvlan l3 on {net}: each host routes its own containers; across hosts only where the network "
            "routes the subnet to them, which the inventory does not say"
        )
    if same_host and mode == "passthru":
        return (
            "unknown",
            f"macvlan mode passthru on {net} allows one container per host: this pair cannot both be on it",
        )
    apart = "" if same_host else _segment_apart(spec, inv.containers[src].host, inv.containers[dst].host, live)
    if apart:
        return "unknown", apart
    return "reach", f"{src} and {dst} are both on {spec.driver} {net} (mode {mode}, one segment)"


def _apply_expect(
    inv: Inventory,
    b: Built,
    declared: Mapping[str, Container],
    running: Mapping[str, LiveContainer],
) -> None:
    """verify.expect: the inventory's stated exceptions override any pair (and add pairs not tested)."""
    for x in inv.verify.expect:
        exp: Expected = "reach" if x.reach else "isolated"
        why = f"verify.expect: {x.why or 'stated in the inventory'}"
        hit = False
        for i, e in enumerate(b.expectations):
            if (e.source, e.destination) != (x.from_, x.to) or e.kind not in (REACH.name, BYTES.name):
                continue
            if x.network is not None and isinstance(e.via, Net) and e.via.name != x.network:
                continue
            b.expectations[i] = Expectation(e.source, e.destination, e.via, e.kind, exp, why)
            hit = True
        if hit or x.to not in declared or x.from_ not in declared:
            continue
        dc = declared[x.to]
        for net in networks_of(dc):
            if x.network is not None and net != x.network:
                continue
            via = net_key(inv, net, dc.host)
            b.expectations.append(Expectation(x.from_, x.to, via, REACH.name, exp, why))
            addr = running[x.to].addresses.get(net) if x.to in running else None
            if addr is not None:
                b.addresses.setdefault((x.to, via), addr)


def expect_problems(inv: Inventory) -> list[str]:
    """verify.expect entries that name no declared container."""
    out = []
    names = set(inv.containers) | set(inv.hosts)
    for i, x in enumerate(inv.verify.expect):
        for key, v in (("from", x.from_), ("to", x.to)):
            if v not in names:
                out.append(f"verify.expect[{i}].{key}: {v!r} is not a container of the inventory")
        if x.network is not None and x.to in inv.containers and x.network not in inv.containers[x.to].networks:
            out.append(f"verify.expect[{i}].network: {x.to} is not on {x.network}")
    return out


# ---- the module ------------------------------------------------------------------------------------------


class ContainerVerifyArgs(ModuleArgs):
    pass


@register
class ContainerVerifyModule(Module[ContainerVerifyArgs]):
    name = "container_verify"
    Args = ContainerVerifyArgs
    summary = "the declared containers' reach and isolation, published ports, NAT out and namespaces (read-only)"

    def describe(self, args: ContainerVerifyArgs) -> str:
        return "container_verify"

    def fact_sections(self, args: ContainerVerifyArgs, inventory: Inventory) -> Sequence[str]:
        return ("engine", "firewall")

    def plan(self, ctx: PlanContext, args: ContainerVerifyArgs) -> Plan:
        inv = ctx.inventory
        if not any(c.state == "present" for c in inv.containers.values()):
            return NoOp("the inventory declares no containers")
        problems = expect_problems(inv)
        if problems:
            raise TaskError(
                "verify.expect names what the inventory does not have:\n" + "\n".join(f"    {p}" for p in problems),
                fix="name declared containers in from/to (and a network the 'to' container is on)",
            )
        policy = inv.verify.on_apply
        if not ctx.options.get("verify"):
            if policy == "never":
                return NoOp("verify.on_apply is never; `provisioner verify` runs the container checks")
            if policy == "on-change" and ctx.run_changed == 0:
                return NoOp(
                    "nothing changed in this run, so the container checks were skipped (verify.on_apply: on-change); "
                    "`provisioner verify` runs them"
                )
        n = sum(1 for c in inv.containers.values() if c.state == "present")
        return Check(f"reach, isolation, ports, NAT out and namespaces of {n} containers", run_verify)


def run_verify(ctx: ApplyContext) -> CheckOutcome:
    inv = ctx.inventory
    v = inv.verify
    declared = {n: c for n, c in inv.containers.items() if c.state == "present"}
    outside_host = next((h for h in inv.hosts if v.outside is not None and inv.address_of(h) == str(v.outside)), None)
    hosts = list(dict.fromkeys([*(c.host for c in declared.values()), *inv.docker_hosts()]))
    read = hosts + ([outside_host] if outside_host is not None and outside_host not in hosts else [])

    def conn_of(host: str) -> ShellConnection:
        if host == ctx.host or ctx.connection_to is None:
            return ctx.conn
        return ctx.connection_to(host)

    def discover(host: str) -> LiveHost | str:
        names = [n for n, c in declared.items() if c.host == host]
        script = discovery_script(names, v.image if host == outside_host else None)
        try:
            res = conn_of(host).run("sh -s", sudo=True, stdin=script.encode(), timeout=60)
        except ProvisionerError as e:
            return str(e).splitlines()[0]
        if f"{_SECTION} containers" not in res.stdout:  # the script did not run (sudo, no sh): say what it said
            return f"exit {res.rc}: " + ((res.output.strip().splitlines() or ["no output"])[-1])
        return parse_discovery(res.stdout)

    ctx.log(f"reading the containers on {len(read)} hosts")
    found = dict(zip(read, ctx.fan_out(discover, read), strict=True))
    try:
        live = {h: x for h, x in found.items() if isinstance(x, LiveHost)}
        unread = {h: x for h, x in found.items() if isinstance(x, str)}
        rules = {h: rule_set(h, ctx.all_facts.get(h), live[h].chains if h in live else None) for h in hosts}
        listener = None
        notes: list[str] = []
        if outside_host is not None and outside_host in live:
            lh = live[outside_host]
            if lh.listener_error == NO_IMAGE and v.image_archive is not None:
                # the outside host is no docker host of the playbooks, so it has no probe image: load it
                ctx.log(f"loading {v.image} on {outside_host} for the NAT listener")
                lh.listener, lh.listener_error = _load_and_listen(ctx, conn_of(outside_host), outside_host)
                if lh.listener is not None:
                    notes.append(f"loaded {v.image} on {outside_host} (verify.image_archive) for the NAT listener")
            if lh.listener is not None:
                listener = (outside_host, lh.listener)
            else:
                notes.append(
                    f"the NAT listener did not start on {outside_host} ({lh.listener_error}): NAT out is pinged, "
                    f"the source address not seen (give verify.image_archive, or load {v.image} there)"
                )
        built = build(inv, live, rules, listener=listener)
        built.notes[:0] = notes
        # the outside host only listens: when it cannot be reached, NAT out is pinged instead (a note)
        built.problems[:0] = [f"{h}: cannot read its containers: {e}" for h, e in unread.items() if h in hosts]
        built.notes[:0] = [
            f"{h} (verify.outside) could not be read ({e}): NAT out is pinged, the source address not seen"
            for h, e in unread.items()
            if h not in hosts
        ]
        res = run_checks(
            ctx,
            built.probes,
            built.expectations,
            settings=v,
            addresses=built.addresses,
            progress=f"testing {len(built.expectations)} pairs from {len(built.probes)} probes",
            parallel_start=True,
        )
    finally:
        if outside_host is not None and isinstance(found.get(outside_host), LiveHost):
            # should this fail, the listener stops by itself (its httpd runs under timeout)
            with contextlib.suppress(ProvisionerError):
                conn_of(outside_host).run(REMOVE_LISTENER, sudo=True, timeout=60)
    causes = [likely_cause(inv, o, live) for o in res.outcomes]
    data = res.data()
    for pair, cause in zip(data["pairs"], causes, strict=True):
        pair["likely_cause"] = cause
    data.update(rule_sets=built.rule_sets, notes=built.notes, problems=built.problems)
    ok = res.ok and not built.problems
    data["ok"] = ok
    text = render(res, built)
    if ok:
        tested = sum(1 for o in res.outcomes if o.verdict == "ok")
        return CheckOutcome(f"all {tested} expectations of {len(declared)} containers hold\n{text}", data)
    lines = [_wrap(p, "    ") for p in [*built.problems, *failures(res, causes)]]
    hints = res.hints()
    raise CheckFailed(
        "container check failed:\n"
        + "\n".join(lines)
        + "\n"
        + text
        + ("\n  usual causes:\n" + "\n".join(_wrap(f"- {h}", "    ") for h in hints) if hints else ""),
        fix="fix the first cause that applies, then run `provisioner verify -i INVENTORY` again",
        data=data,
    )


def _load_and_listen(ctx: ApplyContext, conn: ShellConnection, host: str) -> tuple[int | None, str]:
    """Load verify.image from verify.image_archive on ``host``, then start the listener: (port, error)."""
    v = ctx.inventory.verify
    assert v.image_archive is not None
    try:
        step = load_step(archive_info(v.image_archive), normalize_ref(v.image))
        step.run(dataclasses.replace(ctx, host=host, conn=conn), StepState())
        res = conn.run("sh -s", sudo=True, stdin=listener_script(v.image).encode(), timeout=120)
    except ProvisionerError as e:
        return None, str(e).splitlines()[0]
    live = parse_discovery(f"{_SECTION} listener\n{res.stdout}")
    return live.listener, live.listener_error


def likely_cause(inv: Inventory, o: Outcome, live: Mapping[str, LiveHost]) -> str | None:
    """The most likely cause of a failed outcome, from what the hosts run (None when it did not fail)."""
    if not o.failed:
        return None
    e = o.expectation
    v = o.verdict
    if v == "not run":
        return o.cause
    src_host = _host_of(inv, e.source)
    dst_host = _host_of(inv, e.destination)
    if e.kind == REACH.name and isinstance(e.via, Net):
        if v == "isolation broken":
            src_live = live[src_host].containers.get(e.source) if src_host in live else None
            if src_live is not None and e.via.name in src_live.addresses:
                return (
                    f"{e.source} is connected to {e.via.name} on {src_host}, which the inventory does not declare "
                    f"(apply the containers task, or docker network disconnect {e.via.name} {e.source} there)"
                )
            rules = live[dst_host].docker_user if dst_host in live else []
            raw = live[dst_host].raw_accepts if dst_host in live else []
            if rules:
                return f"DOCKER-USER on {dst_host} accepts traffic before Docker's isolation: {rules[0]}" + (
                    f"; and raw PREROUTING accepts before Docker 28's per-container drop: {raw[0]}" if raw else ""
                )
            return ISOLATION_HINTS[0]
        drv = _driver(inv, e.via.name)
        if drv == "overlay":
            mode = inv.docker.overlay_mode
            return (SWARM_HINTS if mode == "swarm" else OVERLAY_HINTS)[0]
        if drv in ("macvlan", "ipvlan"):
            return "the hosts' parent interfaces are not on one segment, or it drops unknown MACs (promiscuous mode)"
        return REACH.hints["no reply"][0]
    if e.kind == BYTES.name:
        if v == "isolation broken":
            return BYTES.hints["isolation broken"][0]
        if "not one byte" in o.cause:
            return (
                f"nothing listens behind {e.via} in {e.destination}: docker-proxy on {dst_host} accepted the "
                "connection, then closed it"
            )
        lc = live[dst_host].containers.get(e.destination) if dst_host in live else None
        bound = (
            isinstance(e.via, Port)
            and lc is not None
            and any(p == e.via.number for binds in lc.ports.values() for _, p in binds)
        )
        if bound and "refused" in o.cause:
            return (
                f"nothing listens behind {e.via} in {e.destination}: {dst_host} forwards the port to it (DNAT) "
                "and the container refuses the connection"
            )
        return f"nothing publishes {o.address} ({e.destination} stopped, or the port not published): {o.cause}"
    if e.kind in (NAT.name, OUT.name):
        if v == "isolation broken":
            return NAT.hints["isolation broken"][0]
        c = inv.containers.get(e.source)
        subnets = []
        if c is not None and src_host in live:
            subnets = [s for n in networks_of(c) for s in live[src_host].subnets.get(n, [])]
        missing = [
            s for s in subnets if src_host in live and not any(f"-s {s}" in r for r in live[src_host].masquerade)
        ]
        if "arrived from" in o.cause or missing:
            what = ", ".join(missing or subnets) or "the container's network"
            return f"missing MASQUERADE on {src_host} for {what}: packets leave with the container's own address" + (
                f" ({o.cause})" if o.cause else ""
            )
        return NAT.hints["no reply"][1]
    if e.kind == NETNS.name:
        return f"{e.source} does not have the namespace its network_mode declares: {o.cause}"
    return o.cause or None


def _host_of(inv: Inventory, endpoint: str) -> str:
    if endpoint in inv.containers:
        return inv.containers[endpoint].host
    return endpoint.removeprefix("host:")


# ---- rendering -------------------------------------------------------------------------------------------

LEGEND = (
    "  ok: reached; FAIL: no reply, reach expected; isolated: no reply, as\n"
    "  expected; BROKEN: reached, isolation expected; ok?/none?: no\n"
    "  expectation (the report says why)"
)


def render(res: Results, built: Built) -> str:
    """Matrices (at most 80 columns: a line per row when a grid is wider), then the line checks."""
    blocks: list[str] = []
    lines: list[str] = []
    for m in res.matrices:
        if m.kind.name in (REACH.name, BYTES.name):
            blocks.append(_grid(m))
        else:
            lines.extend(_line(o) for o in m.cells.values())
    if lines:
        blocks.append("\n".join(["NAT out and namespaces:", *lines]))
    if any(o.cell() not in ("ok", "FAIL", "n/a") for o in res.outcomes):
        blocks.append(LEGEND)
    if built.rule_sets:
        blocks.append("\n".join(["rule sets:", *(_wrap(f"{h}: {r}") for h, r in built.rule_sets.items())]))
    if built.notes:
        blocks.append("\n".join(["notes:", *(_wrap(n) for n in built.notes)]))
    return "\n\n".join(blocks)


def _wrap(text: str, indent: str = "  ") -> str:
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False)


def _grid(m: Matrix) -> str:
    """Sources (rows) x destinations (columns); a line per source when that is wider than 80 columns."""
    sources = [e for e in m.endpoints if any(s == e for s, _ in m.cells)]
    dests = [e for e in m.endpoints if any(d == e for _, d in m.cells)]
    texts = {k: o.cell() for k, o in m.cells.items()}
    for src in m.start_errors:
        for dst in dests:
            texts.setdefault((src, dst), "n/a")
    width = max(6, *(len(x) for x in sources + dests), *(len(t) for t in texts.values())) + 2
    title = f"{m.via}: {m.kind.title}"
    if width * (len(dests) + 1) <= WIDTH:
        rows = [title, " " * width + "".join(d.ljust(width) for d in dests)]
        for src in sources:
            rows.append(src.ljust(width) + "".join(texts.get((src, d), "-").ljust(width) for d in dests))
        return "\n".join(r.rstrip() for r in rows)
    out = [f"{m.via}: {m.kind.title.replace(' (row)', '').replace('(column)', 'each')}"]
    for src in sources:
        by: dict[str, list[str]] = {}
        for d in dests:
            if (src, d) in texts:
                by.setdefault(texts[(src, d)], []).append(d)
        out.append(_wrap(f"{src} -> " + "; ".join(f"{cell}: {', '.join(ds)}" for cell, ds in by.items())))
    return "\n".join(out)


def _line(o: Outcome) -> str:
    e = o.expectation
    cell = o.cell()
    failed = o.failed or cell.endswith("?")
    if e.kind == NAT.name:
        to, _, src = (o.address or "?").partition(" from ")
        text = f"{e.source} -> {to} (NAT out as {src}): {cell}"
    elif e.kind == OUT.name:
        text = f"{e.source} -> {o.address} (ping out): {cell}"
    else:
        text = f"{e.source} ({'network_mode ' + str(e.via.name) if isinstance(e.via, Net) else ''}): {cell}"
    return _wrap(text + (f" ({o.cause})" if failed and o.cause else ""))


def failures(res: Results, causes: Sequence[str | None]) -> list[str]:
    out = [f"{name}: probe did not start: {why}" for name, why in res.start_errors.items()]
    for o, cause in zip(res.outcomes, causes, strict=True):
        if o.failed and not o.start_failed:
            e = o.expectation
            line = f"{e.source} -> {e.destination} ({o.address or '?'}) over {e.via}: {o.explain()}"
            if cause and cause not in line:
                line += f"; likely: {cause}"
            out.append(line)
    return out
