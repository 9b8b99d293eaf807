"""One check engine for every verification: expectations, probes with a lifecycle, a matrix per kind.

A check is a list of ``Expectation``s (who must reach whom, over which network or port, by what test,
and why) and the ``Probe``s that run them. ``run_checks`` works in three round trips per host:

1. start: every probe of the host in one script (a throw-away container on a network, or one that
   shares a container's or the host's namespace), leftovers of earlier runs removed by label first;
2. test: every expectation runs in its source's probe, one ``docker exec`` per probe running all its
   tests at once (an image without ``sh`` falls back to one ``docker exec`` per test);
3. cleanup: the probes are removed, always: also when a start or a test failed or the run stopped.

Hosts are worked on through ``ApplyContext.fan_out``, the executor's pool, so ``--forks`` bounds them.
Each expectation gets an ``Outcome`` (observed: reached / no reply / not run, and a verdict), grouped in
a ``Matrix`` per kind and network, rendered as text for the terminal and as data for the JSON report.

Networks are keyed by ``Net(name, host)``: same-named local networks (bridges) on different hosts are
different networks; a global one (overlay) has no host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from provisioner.connection.base import ShellConnection, q
from provisioner.errors import ProvisionerError, TaskError
from provisioner.inventory import VerifySettings

if TYPE_CHECKING:
    # only a type here: importing provisioner.modules loads overlay_verify, which uses this module
    from provisioner.modules.base import ApplyContext

T = TypeVar("T")

Expected = Literal["reach", "isolated", "unknown"]
Observed = Literal["reached", "no reply", "not run"]
Verdict = Literal["ok", "no reply", "isolation broken", "not run", "unknown"]
FAILED: frozenset[Verdict] = frozenset({"no reply", "isolation broken", "not run"})

PROBE_LABEL = "provisioner.probe"
MARK = "@@V@@"
_EXEC = 'docker exec "$1" '  # how the fallback runs a test's command in the probe named by its first argument
# a pair that must not reach is tried this many times (about a second each): enough for ARP and a
# learned endpoint; the check must not wait a reach's whole deadline for every isolated pair
BRIEF_ATTEMPTS = 3


@dataclass(frozen=True)
class Net:
    """A network as checks key it: ``host`` is set for a local-scope network (a bridge exists once per
    host, and two hosts' bridges of one name are two networks), None for a global one (overlay)."""

    name: str
    host: str | None = None

    def __str__(self) -> str:
        return self.name if self.host is None else f"{self.name}@{self.host}"


@dataclass(frozen=True)
class Port:
    """A published port (the destination's address for it is given: the docker host's address)."""

    number: int
    proto: Literal["tcp", "udp"] = "tcp"

    def __str__(self) -> str:
        return f"{self.number}/{self.proto}"


Via = Net | Port


@dataclass(frozen=True)
class Expectation:
    """``source`` tests ``destination`` over ``via`` with the test ``kind``; ``expected`` is what must
    happen, ``why`` the rule that says so (shown when the check fails, and in the JSON report).
    Sources and destinations are endpoint names: a docker host for the probe matrix, a container later."""

    source: str
    destination: str
    via: Via
    kind: str = "ping"
    expected: Expected = "reach"
    why: str = ""


@dataclass(frozen=True)
class Probe:
    """A throw-away container on ``host`` that runs the tests of ``endpoint``.

    It joins either ``net`` (it then has an address of its own there, learned at start: ``ip`` when that
    is free, any address when not, and it is the destination address of tests aimed at ``endpoint`` over
    ``net``), or ``mode``, a Docker network mode (``container:NAME`` shares that container's namespace, so
    tests leave from the container's own addresses; ``host`` the host's). ``name`` is its container name;
    a start that fails is tried once more as ``NAME-TIMESTAMP``.
    """

    endpoint: str
    host: str
    name: str
    net: Net | None = None
    ip: str | None = None
    mode: str | None = None

    def __post_init__(self) -> None:
        if (self.net is None) == (self.mode is None):
            raise ValueError(f"probe {self.name}: give exactly one of net and mode")
        if self.ip is not None and self.net is None:
            raise ValueError(f"probe {self.name}: a fixed ip needs a net")


# ---- kinds of test -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A kind of test. ``body(settings, x)`` is the body of a shell function called as ``F PROBE TARGET
    TAG [BRIEF]``; it prefixes every command that must run inside the probe with ``x`` (``''`` when the
    function itself runs inside the probe, ``docker exec "$1" `` for the fallback on the host) and prints
    ``MARK TAG ok`` (reached) or ``MARK TAG FAIL [detail]``. ``BRIEF`` is set for a pair that must not
    reach (or is undecided): try a few seconds, not the whole deadline a reach gets to come up.
    ``hints`` are the usual causes of a failure, by verdict, or by ``verdict/context`` for a context the
    caller names (e.g. ``no reply/swarm``)."""

    name: str  # also part of the shell function names: letters and _ only
    title: str  # matrix header after the network: "ping from (row) to (column)"
    body: Callable[[VerifySettings, str], str]
    hints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def deadline(self, s: VerifySettings) -> float:
        """Seconds one test may take at most (its retries included)."""
        return (s.retries + 1) * (s.ping_count + s.timeout + 1)


def _ping_body(s: VerifySettings, x: str) -> str:
    # A new overlay endpoint is reachable only once the other hosts learned it (through the store and
    # gossip): that takes a moment, longer on a loaded cluster. So each attempt first sends one quick
    # ping and only then the real `count` pings; attempts repeat every second until the deadline
    # ((retries + 1) x timeout), so a healthy pair passes as soon as it can and a broken one fails then.
    wait = max(1, round(s.timeout))
    attempts = max(s.retries + 1, round((s.retries + 1) * s.timeout / 2))
    return (
        f'n={attempts}; [ -n "$4" ] && n={BRIEF_ATTEMPTS}; i=0; while :; do '
        f'if {x}ping -c 1 -W 1 "$2" >/dev/null 2>&1 && {x}ping -c {s.ping_count} -W {wait} "$2" >/dev/null 2>&1; '
        f'then echo "{MARK} $3 ok"; return; fi; '
        f'i=$((i+1)); [ $i -ge $n ] && break; sleep 1; done; echo "{MARK} $3 FAIL"'
    )


OVERLAY_HINTS = (
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

ISOLATION_HINTS = (
    "a rule in DOCKER-USER that accepts traffic between the networks (it comes before Docker's isolation)",
    "Docker 29 and later have no DOCKER-ISOLATION chains: networks on one host are no longer kept apart",
    "a container connected to both networks (docker network connect), routing between them",
    'iptables disabled for the daemon ("iptables": false), so no isolation rules at all',
)

PING = Kind(
    "ping",
    "ping from (row) to (column)",
    _ping_body,
    {
        "no reply": ("ICMP dropped by a firewall between the two", "the destination's network is down on its host"),
        "no reply/overlay": OVERLAY_HINTS,
        "no reply/swarm": SWARM_HINTS,
        "isolation broken": ISOLATION_HINTS,
    },
)

KINDS: dict[str, Kind] = {PING.name: PING}


def register_kind(kind: Kind) -> Kind:
    if not kind.name.replace("_", "").isalpha():
        raise ValueError(f"kind name {kind.name!r}: letters and _ only (it names shell functions)")
    KINDS[kind.name] = kind
    return kind


# ---- results -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one expectation found: ``address`` aimed at, ``observed``, and ``cause`` (why it was not run,
    or the probe's detail on a failure)."""

    expectation: Expectation
    address: str | None = None
    observed: Observed = "not run"
    cause: str = ""
    # not run because a probe did not start (that start error is reported once, not per pair)
    start_failed: bool = False

    @property
    def verdict(self) -> Verdict:
        exp = self.expectation.expected
        if exp == "unknown":
            return "unknown"
        if self.observed == "not run":
            return "not run"
        if exp == "reach":
            return "ok" if self.observed == "reached" else "no reply"
        return "ok" if self.observed == "no reply" else "isolation broken"

    @property
    def failed(self) -> bool:
        return self.verdict in FAILED

    def cell(self) -> str:
        if self.observed == "not run":
            return "n/a"
        reached = self.observed == "reached"
        if self.expectation.expected == "unknown":
            return "ok?" if reached else "none?"
        if self.expectation.expected == "reach":
            return "ok" if reached else "FAIL"
        return "BROKEN" if reached else "isolated"

    def explain(self) -> str:
        """The failure line's reason ('' when this outcome is no failure)."""
        v = self.verdict
        e = self.expectation
        if v == "no reply":
            return "no reply" + (f" ({self.cause})" if self.cause else "")
        if v == "isolation broken":
            return f"isolation broken: it reached, but must not ({e.why or 'isolation expected'})"
        if v == "not run":
            return f"not run: {self.cause}"
        return ""

    def to_json(self) -> dict[str, Any]:
        e = self.expectation
        v = self.verdict
        if v == "no reply":
            cause: str | None = f"no reply from {self.address} over {e.via}" + (f": {self.cause}" if self.cause else "")
        elif v == "isolation broken":
            cause = f"{e.source} reached {self.address} over {e.via}, but isolation was expected"
        elif v == "not run":
            cause = self.cause
        else:
            cause = None
        return {
            "kind": e.kind,
            "source": e.source,
            "destination": e.destination,
            "network": e.via.name if isinstance(e.via, Net) else None,
            "network_host": e.via.host if isinstance(e.via, Net) else None,
            "port": str(e.via) if isinstance(e.via, Port) else None,
            "address": self.address,
            "expected": e.expected,
            "why": e.why,
            "observed": self.observed,
            "verdict": v,
            "cause": cause,
        }


LEGEND = "  (ok: reached; isolated: no reply, as expected; BROKEN: reached, isolation expected; ?: not decided)"


@dataclass
class Matrix:
    """The outcomes of one kind over one network or port, source (row) x destination (column)."""

    kind: Kind
    via: Via
    endpoints: list[str]
    cells: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    # probes of this network that did not start: endpoint -> why
    start_errors: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        texts = {k: o.cell() for k, o in self.cells.items()}
        width = max(6, *(len(h) for h in self.endpoints), *(len(t) for t in texts.values())) + 2
        lines = [f"{self.via}: {self.kind.title}", " " * width + "".join(h.ljust(width) for h in self.endpoints)]
        for src in self.endpoints:
            cells = []
            for dst in self.endpoints:
                if (src, dst) in texts:
                    cells.append(texts[(src, dst)])
                else:
                    cells.append("-")  # itself, or no expectation for the pair
            lines.append(src.ljust(width) + "".join(c.ljust(width) for c in cells))
        if set(texts.values()) - {"ok", "FAIL", "n/a"}:
            lines.append(LEGEND)
        return "\n".join(line.rstrip() for line in lines)

    def failures(self) -> list[str]:
        out = [f"{h}: probe did not start: {e}" for h, e in self.start_errors.items()]
        for (src, dst), o in sorted(self.cells.items()):
            if o.failed and not o.start_failed:
                out.append(f"{src} -> {dst} ({o.address or '?'}) over {self.via}: {o.explain()}")
        return out


@dataclass
class Results:
    outcomes: list[Outcome]
    matrices: list[Matrix]
    # every probe that did not start: probe name -> why
    start_errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.start_errors and not any(o.failed for o in self.outcomes)

    def render(self) -> str:
        return "\n\n".join(m.render() for m in self.matrices)

    def failures(self) -> list[str]:
        return [f for m in self.matrices for f in m.failures()]

    def hints(self, context: str = "") -> list[str]:
        """The usual causes of the failures present, per kind (a probe that did not start counts as no
        reply: its pairs could not be tested); ``context`` picks e.g. ``no reply/swarm`` over ``no reply``."""
        out: list[str] = []
        for m in self.matrices:
            verdicts = {o.verdict for o in m.cells.values() if o.failed}
            if m.start_errors or "not run" in verdicts:
                verdicts.add("no reply")
            for v in ("no reply", "isolation broken"):
                if v in verdicts:
                    hints = m.kind.hints.get(f"{v}/{context}") or m.kind.hints.get(v, ())
                    out.extend(h for h in hints if h not in out)
        return out

    def data(self) -> dict[str, Any]:
        """The JSON report's ``verify``: every pair with its expectation, observation and verdict."""
        return {
            "ok": self.ok,
            "pairs": [o.to_json() for o in self.outcomes],
            "probes_not_started": dict(self.start_errors),
        }


# ---- the lifecycle -----------------------------------------------------------------------------------


class Trial(NamedTuple):
    """One test as a probe runs it."""

    probe: str  # the probe's container
    kind: Kind
    target: str
    tag: str  # names its result line
    brief: bool  # must not reach, or undecided: tried briefly


@dataclass
class _Started:
    name: str  # the container's name (a retried start renames it)
    address: str | None


def start_script(host: str, probes: Sequence[Probe], image: str, lifetime: int, *, parallel: bool = False) -> str:
    """Start this host's probes; prints ``MARK pI ok ADDRESS NAME`` or ``MARK pI err WHY`` per probe I.
    ``parallel``: the probes that share a namespace start side by side.

    Docker 20.10 in cluster-store mode sometimes fails a container start with a store error under load
    (its store connection made from the wrong network namespace: "network is unreachable") and leaves
    the endpoint's name behind in the store ("endpoint with name ... already exists"). So a stale endpoint
    of the name is disconnected first, a failed start is tried once more under a fresh name, and
    leftovers of earlier runs are removed by label first.
    """
    lines = [
        f"docker ps -aq --filter label={PROBE_LABEL} | xargs -r docker rm -f >/dev/null 2>&1",
        # s NET [--ip IP]: (re)start probe "$n" on NET; a failed try's container is removed before the next
        f's() {{ net=$1; shift; docker rm -f "$n" >/dev/null 2>&1; docker run -d --rm --label {PROBE_LABEL}={q(host)} '
        f'--network "$net" --name "$n" "$@" {q(image)} sleep {lifetime} 2>&1; }}',
    ]
    for i, p in enumerate(probes):
        if p.net is not None:
            net = p.net.name
            # the fixed address may be taken by a container of the user's: then any free address will do
            start = f"s {q(net)} --ip {q(p.ip)} || s {q(net)}" if p.ip else f"s {q(net)}"
            fmt = q(f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}')
            stale = f'docker network disconnect -f {q(net)} "$n" >/dev/null 2>&1; '
            address = f'$(docker inspect -f {fmt} "$n")'
        else:
            start, stale, address = f"s {q(p.mode)}", "", "-"
        line = (
            f"n={q(p.name)}; {stale}"
            f"if ! out=$({start}); then n={q(p.name)}-$(date +%s); out=$({start}) || n=; fi; "
            f'if [ -n "$n" ]; then echo "{MARK} p{i} ok {address} $n"; '
            f'else echo "{MARK} p{i} err $(printf \'%s\' "$out" | tail -n 1)"; fi'
        )
        # a probe that shares a namespace touches no network: with ``parallel`` those start side by side
        # (one `docker run` is ~0.3 s, and a host of ten containers has ten); probes on a network in order
        side = parallel and p.net is None
        lines.append(f"( {line} ) &" if side else line)
    if parallel and any(p.net is None for p in probes):
        lines.append("wait")
    return "\n".join(lines) + "\n"


def probe_script(tests: Sequence[Trial], settings: VerifySettings) -> str:
    """Each probe's tests run in parallel inside it; prints ``MARK TAG ok|FAIL`` per test.

    One `docker exec` per probe runs every test of that probe (a `docker exec` costs a CLI process, the
    daemon and runc: ~0.1 s of CPU, and N hosts x N-1 of them made the matrix the slowest part of a
    run). A probe image without a shell falls back to one `docker exec ... ping` per target.
    """
    kinds = list({t.kind.name: t.kind for t in tests}.values())
    lines = [f"x_{k.name}() {{ {k.body(settings, _EXEC)}; }}" for k in kinds]
    lines.append("o=$(mktemp) || exit 1; trap 'rm -f \"$o\"' EXIT")
    by_probe: dict[str, list[Trial]] = {}
    for t in tests:
        by_probe.setdefault(t.probe, []).append(t)

    def args(t: Trial) -> str:
        return f"{q(t.target)} {t.tag}" + (" brief" if t.brief else "")

    for k, (probe, group) in enumerate(by_probe.items()):
        used = list({t.kind.name: t.kind for t in group}.values())
        inner = "\n".join(
            [f"c_{kd.name}() {{ {kd.body(settings, '')}; }}" for kd in used]
            + [f"c_{t.kind.name} - {args(t)} &" for t in group]
            + ["wait"]
        )
        out = f'"$o.{k}"'
        lines += [
            f"( docker exec {q(probe)} sh -c {q(inner)} >{out} 2>&1",
            f'if grep -q "^{MARK} " {out}; then grep "^{MARK} " {out}; else',
            *(f"x_{t.kind.name} {q(probe)} {args(t)} &" for t in group),
            f"wait; fi; rm -f {out} ) &",
        ]
    lines.append("wait")
    return "\n".join(lines) + "\n"


def cleanup_command(probes: Sequence[Probe]) -> str:
    names = " ".join(q(p.name) for p in probes)
    disconnect = "; ".join(f"docker network disconnect -f {q(p.net.name)} {q(p.name)}" for p in probes if p.net)
    # every probe of this host (renamed ones too) by label; the endpoint leaves the store with the
    # container, and should that fail, the forced disconnect removes it
    return (
        f"docker rm -f {names} >/dev/null 2>&1; docker ps -aq --filter label={PROBE_LABEL} | xargs -r docker rm -f "
        f">/dev/null 2>&1; {{ {disconnect or 'true'}; }} >/dev/null 2>&1; true"
    )


def marked(stdout: str) -> list[list[str]]:
    """The marked lines of a script's output, each split in at most 3 fields after the mark."""
    return [line.split(" ", 3)[1:] for line in stdout.splitlines() if line.startswith(MARK + " ")]


def _guarded(fn: Callable[[str], T]) -> Callable[[str], T | str]:
    """Errors on one host become that host's message instead of aborting the whole check."""

    def call(host: str) -> T | str:
        try:
            return fn(host)
        except ProvisionerError as e:
            return str(e).splitlines()[0]

    return call


def _validate(probes: Sequence[Probe], expectations: Sequence[Expectation]) -> None:
    names = [p.name for p in probes]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise TaskError(f"internal: probe names used twice: {', '.join(dup)}", fix="report this as a bug")
    unknown = sorted({e.kind for e in expectations} - KINDS.keys())
    if unknown:
        raise TaskError(
            f"internal: unknown check kind {', '.join(unknown)} (known: {', '.join(KINDS)})",
            fix="report this as a bug",
        )


def run_checks(
    ctx: ApplyContext,
    probes: Sequence[Probe],
    expectations: Sequence[Expectation],
    *,
    settings: VerifySettings,
    addresses: Mapping[tuple[str, Via], str] | None = None,
    progress: str = "",
    parallel_start: bool = False,
) -> Results:
    """Start ``probes``, run ``expectations`` from them, remove the probes (always); see the module doc.

    A test's target is the destination's address over its ``via``: the address its probe on that network
    got at start, else ``addresses[(destination, via)]`` (e.g. a container's address from the facts, or
    ``host:port`` for a published port). A test leaves from the source's probe on that network, else
    from the source's probe that shares a namespace (``mode``). An expectation without either is reported
    "not run" with the reason.
    """
    _validate(probes, expectations)
    by_host: dict[str, list[Probe]] = {}
    for p in probes:
        by_host.setdefault(p.host, []).append(p)
    hosts = list(by_host)

    def conn_of(host: str) -> ShellConnection:
        if host == ctx.host or ctx.connection_to is None:
            return ctx.conn
        return ctx.connection_to(host)

    per_test = max((KINDS[e.kind].deadline(settings) for e in expectations), default=0.0)
    lifetime = int(per_test + 120)
    started: dict[str, _Started] = {}  # probe name -> started container
    start_errors: dict[str, str] = {}  # probe name -> why not
    outcomes = [Outcome(e) for e in expectations]

    def start(host: str) -> list[list[str]]:
        mine = by_host[host]
        script = start_script(host, mine, settings.image, lifetime, parallel=parallel_start)
        res = conn_of(host).run("sh -s", sudo=True, stdin=script.encode(), timeout=120)
        rows = {r[0]: r + [""] * (3 - len(r)) for r in marked(res.stdout)}
        last = (res.output.strip().splitlines() or ["no output"])[-1]
        return [rows.get(f"p{i}", [f"p{i}", "err", last]) for i in range(len(mine))]

    try:
        ctx.log(f"starting probes on {len(hosts)} hosts")
        for host, out in zip(hosts, ctx.fan_out(_guarded(start), hosts), strict=True):
            for i, p in enumerate(by_host[host]):
                if isinstance(out, str):
                    start_errors[p.name] = out
                    continue
                _, status, rest = out[i]
                addr, _, name = rest.partition(" ")
                if status != "ok":
                    start_errors[p.name] = rest.strip() or "no output"
                elif addr in ("", "-") and p.net is not None:
                    start_errors[p.name] = "no IP address on the network"
                else:
                    started[p.name] = _Started(name.strip() or p.name, None if addr in ("", "-") else addr)

        plans = _plan_tests(by_host, outcomes, started, start_errors, addresses or {})
        tags = {f"t{i}": o for i, o in enumerate(outcomes)}
        ctx.log(progress or f"running {sum(len(t) for t in plans.values())} tests from {len(started)} probes")
        timeout = per_test * 2 + 30

        def test(host: str) -> list[list[str]]:
            if not plans[host]:
                return []
            script = probe_script(plans[host], settings)
            return marked(conn_of(host).run("sh -s", sudo=True, stdin=script.encode(), timeout=timeout).stdout)

        for host, rows in zip(hosts, ctx.fan_out(_guarded(test), hosts), strict=True):
            for t in plans[host]:
                o = tags[t.tag]
                if isinstance(rows, str):
                    o.cause = rows if rows.startswith(f"{host}:") else f"{host}: {rows}"
                else:
                    o.observed = "no reply"  # also when its line is missing (the test was cut short)
            if isinstance(rows, str):
                continue
            for row in rows:
                if row[0] in tags and len(row) > 1:
                    tags[row[0]].observed = "reached" if row[1] == "ok" else "no reply"
                    tags[row[0]].cause = row[2].strip() if len(row) > 2 else ""
    finally:
        ctx.fan_out(_guarded(lambda h: conn_of(h).run(cleanup_command(by_host[h]), sudo=True, timeout=60).rc), hosts)
    return Results(outcomes, _matrices(probes, outcomes, start_errors), start_errors)


def _plan_tests(
    by_host: Mapping[str, Sequence[Probe]],
    outcomes: Sequence[Outcome],
    started: Mapping[str, _Started],
    start_errors: Mapping[str, str],
    addresses: Mapping[tuple[str, Via], str],
) -> dict[str, list[Trial]]:
    """Per host, the tests its probes run. Outcomes that cannot run get their reason."""
    on_net: dict[tuple[str, Via], Probe] = {}
    shared: dict[str, Probe] = {}
    for host_probes in by_host.values():
        for p in host_probes:
            if p.net is not None:
                on_net.setdefault((p.endpoint, p.net), p)
            else:
                shared.setdefault(p.endpoint, p)
    plans: dict[str, list[Trial]] = {h: [] for h in by_host}
    for i, o in enumerate(outcomes):
        e = o.expectation
        src = on_net.get((e.source, e.via)) or shared.get(e.source)
        dst = on_net.get((e.destination, e.via))
        if dst is not None and dst.name in started:
            o.address = started[dst.name].address
        else:
            o.address = addresses.get((e.destination, e.via))
        if src is None:
            o.cause = f"no probe runs as {e.source} on {e.via}"
        elif src.name in start_errors:
            o.cause, o.start_failed = f"{src.endpoint}: probe did not start: {start_errors[src.name]}", True
        elif o.address is None and dst is not None and dst.name in start_errors:
            o.cause, o.start_failed = f"{dst.endpoint}: probe did not start: {start_errors[dst.name]}", True
        elif o.address is None:
            o.cause = f"no address of {e.destination} on {e.via}"
        else:
            brief = e.expected != "reach"
            plans[src.host].append(Trial(started[src.name].name, KINDS[e.kind], o.address, f"t{i}", brief))
    return plans


def _matrices(probes: Iterable[Probe], outcomes: Sequence[Outcome], start_errors: Mapping[str, str]) -> list[Matrix]:
    """One matrix per kind and network, in the order the expectations name them, then the networks that
    have probes and no expectation (shown as a ping grid); endpoints in the order they first appear."""
    order: dict[str, None] = {}
    keys: dict[tuple[str, Via], None] = {}
    for p in probes:
        order.setdefault(p.endpoint)
    for o in outcomes:
        order.setdefault(o.expectation.source)
        order.setdefault(o.expectation.destination)
        keys.setdefault((o.expectation.kind, o.expectation.via))
    tested = {via for _, via in keys}
    for p in probes:
        if p.net is not None and p.net not in tested:
            keys.setdefault((PING.name, p.net))
    out: list[Matrix] = []
    listed: set[str] = set()  # a probe's start error is listed once
    for kind, via in keys:
        mine = [o for o in outcomes if (o.expectation.kind, o.expectation.via) == (kind, via)]
        on_via = [p for p in probes if p.net == via]
        sources = {o.expectation.source for o in mine}
        names = {p.endpoint for p in on_via} | sources | {o.expectation.destination for o in mine}
        m = Matrix(KINDS[kind], via, [n for n in order if n in names])
        for o in mine:
            m.cells[(o.expectation.source, o.expectation.destination)] = o
        for p in probes:
            if p.name in listed or p.name not in start_errors:
                continue
            if p in on_via or (p.net is None and p.endpoint in sources):
                m.start_errors[p.endpoint] = start_errors[p.name]
                listed.add(p.name)
        out.append(m)
    return out
