"""``overlay_verify``: prove cross-host reachability over the overlay networks (a read-only check).

Run once; it works on every docker host over the run's connections: checks the key-value store first,
starts a probe container per host and overlay network, pings every other probe from each (N x N, with
bounded retries; one round trip per host, hosts in parallel), renders the host x host matrix and
removes the probes whatever happened.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from provisioner.connection.base import ShellConnection, q
from provisioner.errors import ProvisionerError, TaskError
from provisioner.inventory import Inventory
from provisioner.modules.base import ApplyContext, Check, Module, ModuleArgs, NoOp, Plan, PlanContext, register
from provisioner.modules.capabilities import overlay_mode
from provisioner.modules.kv_store import backend_of, cluster_store_url, quorum_down

T = TypeVar("T")

PROBE_PREFIX = "prov-probe-"
_MARK = "@@V@@"

HINTS = (
    "UDP 4789 (VXLAN data) or TCP/UDP 7946 (overlay control) blocked between the hosts",
    "NAT between the hosts (the advertise address must be the address the other hosts reach)",
    "an MTU too small for VXLAN's 50 extra bytes on the path between the hosts",
    "a dockerd that started while the store was down: restart Docker on that host (systemctl restart docker)",
    "the key-value store unreachable from a docker host",
)


SWARM_HINTS = (
    "UDP 4789 (VXLAN data), TCP/UDP 7946 (gossip) or TCP 2377 (swarm control) blocked between the hosts",
    "NAT between the hosts (the advertise address must be the address the other hosts reach)",
    "an MTU too small for VXLAN's 50 extra bytes on the path between the hosts",
    "the network was created without --attachable (plain containers cannot join it)",
)


class OverlayVerifyArgs(ModuleArgs):
    # one network of the inventory; default: every overlay network in the inventory
    network: str | None = None
    # which hosts take part (host pattern); default: the docker group
    hosts: str = "docker"


@dataclass
class Matrix:
    network: str
    hosts: list[str]
    ips: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # probe container per host (renamed on a retried start)
    start_errors: dict[str, str] = field(default_factory=dict)
    results: dict[tuple[str, str], bool] = field(default_factory=dict)

    def failures(self) -> list[str]:
        out = [f"{h}: probe did not start: {e}" for h, e in self.start_errors.items()]
        for (src, dst), ok in sorted(self.results.items()):
            if not ok:
                out.append(f"{src} -> {dst} ({self.ips.get(dst, '?')}) over {self.network}: no reply")
        return out

    def render(self) -> str:
        width = max(6, *(len(h) for h in self.hosts)) + 2
        lines = [
            f"{self.network}: ping from (row) to (column)",
            " " * width + "".join(h.ljust(width) for h in self.hosts),
        ]
        for src in self.hosts:
            cells = []
            for dst in self.hosts:
                if src == dst:
                    cells.append("-")
                elif src in self.start_errors or dst in self.start_errors:
                    cells.append("n/a")
                else:
                    cells.append("ok" if self.results.get((src, dst)) else "FAIL")
            lines.append(src.ljust(width) + "".join(c.ljust(width) for c in cells))
        return "\n".join(line.rstrip() for line in lines)


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


PROBE_LABEL = "provisioner.probe"


def start_script(networks: list[str], host: str, image: str, lifetime: int, ips: dict[str, str] | None = None) -> str:
    """Start this host's probe on each network; prints ``MARK net ok IP NAME`` or ``MARK net err WHY``.

    Docker 20.10 in cluster-store mode sometimes fails a container start with a store error under load
    (its store connection made from the wrong network namespace: "network is unreachable") and leaves
    the endpoint's name behind in the store ("endpoint with name ... already exists"). So a failed start
    is tried once more under a fresh name, and leftovers of earlier runs are removed by label first.
    """
    lines = [
        f"docker ps -aq --filter label={PROBE_LABEL} | xargs -r docker rm -f >/dev/null 2>&1",
        # s NET [--ip IP]: (re)start probe "$n" on NET; a failed try's container is removed before the next
        f's() {{ net=$1; shift; docker rm -f "$n" >/dev/null 2>&1; docker run -d --rm --label {PROBE_LABEL}={q(host)} '
        f'--network "$net" --name "$n" "$@" {q(image)} sleep {lifetime} 2>&1; }}',
    ]
    for net in networks:
        base = probe_name(net, host)
        ip = (ips or {}).get(net)
        # the fixed address may be taken by a container of the user's: then any free address will do
        start = f"s {q(net)} --ip {q(ip)} || s {q(net)}" if ip else f"s {q(net)}"
        fmt = q(f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}')
        lines.append(
            f"n={q(base)}; docker network disconnect -f {q(net)} \"$n\" >/dev/null 2>&1; "
            f"if ! out=$({start}); then n={q(base)}-$(date +%s); out=$({start}) || n=; fi; "
            f'if [ -n "$n" ]; then echo "{_MARK} {net} ok $(docker inspect -f {fmt} "$n") $n"; '
            f'else echo "{_MARK} {net} err $(printf \'%s\' "$out" | tail -n 1)"; fi'
        )
    return "\n".join(lines) + "\n"


def ping_script(
    host: str,
    targets: list[tuple[str, str, str]],
    count: int,
    timeout: float,
    retries: int,
    names: dict[str, str] | None = None,
) -> str:
    """targets: (network, target host, target ip); pings run in parallel, each retried ``retries`` times.

    One `docker exec` per probe runs every ping of that probe inside it (a `docker exec` costs a CLI
    process, the daemon and runc: ~0.1 s of CPU, and N hosts x N-1 of them made the matrix the slowest
    part of a run). A probe image without a shell falls back to one `docker exec ... ping` per target.
    """
    # A new overlay endpoint is reachable only once the other hosts learned it (through the store and
    # gossip): that takes a moment, longer on a loaded cluster. So each attempt first sends one quick
    # ping and only then the real `count` pings; attempts repeat every second until the deadline
    # ((retries + 1) x timeout), so a healthy pair passes as soon as it can and a broken one fails then.
    wait = max(1, round(timeout))
    attempts = max(retries + 1, round((retries + 1) * timeout / 2))
    attempt = (
        "i=0; while :; do "
        f'if {{ping}} -c 1 -W 1 "$2" >/dev/null 2>&1 && {{ping}} -c {count} -W {wait} "$2" >/dev/null 2>&1; '
        f'then echo "{_MARK} $3 $4 ok"; return; fi; '
        f'i=$((i+1)); [ $i -ge {attempts} ] && break; sleep 1; done; echo "{_MARK} $3 $4 FAIL"'
    )
    lines = [
        "p() { " + attempt.replace("{ping}", 'docker exec "$1" ping') + "; }",
        "o=$(mktemp) || exit 1; trap 'rm -f \"$o\"' EXIT",
    ]
    by_probe: dict[str, list[tuple[str, str, str]]] = {}
    for net, target, ip in targets:
        by_probe.setdefault((names or {}).get(net) or probe_name(net, host), []).append((net, target, ip))
    for k, (probe, group) in enumerate(by_probe.items()):
        inner = "\n".join(
            ["c() { " + attempt.replace("{ping}", "ping") + "; }"]
            + [f"c - {q(ip)} {q(net)} {q(target)} &" for net, target, ip in group]
            + ["wait"]
        )
        out = f'"$o.{k}"'
        lines += [
            f"( docker exec {q(probe)} sh -c {q(inner)} >{out} 2>&1",
            f'if grep -q "^{_MARK} " {out}; then grep "^{_MARK} " {out}; else',
            *(f"p {q(probe)} {q(ip)} {q(net)} {q(target)} &" for net, target, ip in group),
            f"wait; fi; rm -f {out} ) &",
        ]
    lines.append("wait")
    return "\n".join(lines) + "\n"


def cleanup_command(networks: list[str], host: str) -> str:
    names = " ".join(q(probe_name(n, host)) for n in networks)
    disconnect = "; ".join(f"docker network disconnect -f {q(n)} {q(probe_name(n, host))}" for n in networks)
    # every probe of this host (renamed ones too) by label; the endpoint leaves the store with the
    # container, and should that fail, the forced disconnect removes it
    return (
        f"docker rm -f {names} >/dev/null 2>&1; docker ps -aq --filter label={PROBE_LABEL} | xargs -r docker rm -f "
        f">/dev/null 2>&1; {{ {disconnect}; }} >/dev/null 2>&1; true"
    )


def _marked(stdout: str) -> list[list[str]]:
    return [line.split(" ", 3)[1:] for line in stdout.splitlines() if line.startswith(_MARK + " ")]


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
        hosts = _hosts(ctx.inventory, args.hosts)
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


def run_verify(ctx: ApplyContext, networks: list[str], hosts: list[str]) -> str:
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

    def conn_of(host: str) -> ShellConnection:
        if host == ctx.host or ctx.connection_to is None:
            return ctx.conn
        return ctx.connection_to(host)

    v = inv.verify
    per_try = v.ping_count + v.timeout + 1
    lifetime = int((v.retries + 1) * per_try + 120)
    matrices = {n: Matrix(n, list(hosts)) for n in networks}
    with ThreadPoolExecutor(max_workers=max(1, len(hosts)), thread_name_prefix="verify") as pool:
        try:
            ctx.log(f"starting probes on {len(hosts)} hosts")
            started = dict(
                zip(
                    hosts,
                    pool.map(
                        _guarded(_start(conn_of, networks, v.image, lifetime, probe_ips(inv, networks, hosts))), hosts
                    ),
                    strict=True,
                )
            )
            for host, out in started.items():
                if isinstance(out, str):
                    for m in matrices.values():
                        m.start_errors[host] = out
                    continue
                for net, status, rest in out:
                    if status == "ok" and rest.strip():
                        ip, _, name = rest.strip().partition(" ")
                        matrices[net].ips[host] = ip
                        if name:
                            matrices[net].names[host] = name
                    else:
                        matrices[net].start_errors[host] = rest.strip() or "no IP address on the network"
            plans = {
                h: [(n, t, m.ips[t]) for n, m in matrices.items() if h in m.ips for t in hosts if t != h and t in m.ips]
                for h in hosts
            }
            ctx.log("pinging every probe from every other host")
            timeout = (v.retries + 1) * per_try * 2 + 30
            script_of = {
                h: ping_script(
                    h,
                    plans[h],
                    v.ping_count,
                    v.timeout,
                    v.retries,
                    {n: m.names[h] for n, m in matrices.items() if h in m.names},
                )
                for h in hosts
            }

            def ping(host: str) -> list[list[str]] | str:
                if not plans[host]:
                    return []
                res = conn_of(host).run("sh -s", sudo=True, stdin=script_of[host].encode(), timeout=timeout)
                return _marked(res.stdout)

            for host, out in zip(hosts, pool.map(_guarded(ping), hosts), strict=True):
                if isinstance(out, str):
                    for n, t, _ in plans[host]:
                        matrices[n].results[(host, t)] = False
                    continue
                for net, target, status in out:
                    matrices[net].results[(host, target)] = status.strip() == "ok"
                for n, t, _ in plans[host]:
                    matrices[n].results.setdefault((host, t), False)
        finally:
            list(
                pool.map(
                    _guarded(lambda h: conn_of(h).run(cleanup_command(networks, h), sudo=True, timeout=60).rc), hosts
                )
            )
    rendered = "\n\n".join(m.render() for m in matrices.values())
    failures = [f for m in matrices.values() for f in m.failures()]
    if not failures:
        return f"all {len(hosts)} hosts reach each other over {', '.join(networks)}\n{rendered}"
    hints = list(SWARM_HINTS if swarm else HINTS)
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
    if any(
        "No such image" in e or "Unable to find image" in e for m in matrices.values() for e in m.start_errors.values()
    ):
        hints.insert(0, f"the probe image {v.image} is missing: apply playbooks/overlay.yml (it loads it)")
    raise TaskError(
        "overlay check failed:\n"
        + "\n".join(f"    {f}" for f in failures)
        + "\n"
        + rendered
        + "\n  usual causes:\n"
        + "\n".join(f"    - {h}" for h in hints),
        fix="fix the first cause that applies, then run `provisioner verify -i INVENTORY` again",
    )


def _start(
    conn_of: Callable[[str], ShellConnection],
    networks: list[str],
    image: str,
    lifetime: int,
    ips: dict[str, dict[str, str]],
) -> Callable[[str], list[list[str]]]:
    def start(host: str) -> list[list[str]]:
        script = start_script(networks, host, image, lifetime, ips.get(host))
        res = conn_of(host).run("sh -s", sudo=True, stdin=script.encode(), timeout=120)
        rows = [r + [""] * (3 - len(r)) for r in _marked(res.stdout)]
        seen = {r[0] for r in rows}
        for net in networks:
            if net not in seen:
                rows.append([net, "err", (res.output.strip().splitlines() or ["no output"])[-1]])
        return rows

    return start


def _guarded(fn: Callable[[str], T]) -> Callable[[str], T | str]:
    """Errors on one host become that host's message instead of aborting the whole matrix."""

    def call(host: str) -> T | str:
        try:
            return fn(host)
        except ProvisionerError as e:
            return str(e).splitlines()[0]

    return call
