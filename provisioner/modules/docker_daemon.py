"""``docker_daemon``: point dockerd at the cluster store, restart it safely, never leave it dead.

Two ways to configure, per inventory ``docker.config``:

* ``systemd-dropin``: a drop-in that resets ExecStart and runs the host's own dockerd command line (from
  facts, without the drop-in) plus ``--cluster-store``, ``--cluster-advertise`` and registry mirrors.
* ``daemon-json``: the same settings merged into the existing daemon.json (other keys kept, in order).

A setting given both as a flag and in daemon.json makes dockerd refuse to start, so such a plan is
refused before anything is touched. Docker restarts when the file changed or the running daemon does not
report the expected store/advertise address (a restart a previous run missed is done now). After the
restart the daemon must be active and report both; if it does not, the previous file is put back, Docker
restarted again, and the task fails with the tail of Docker's journal.

A restart the new configuration needs is remembered on the host (the lost-handler problem): before the
first file is written, ``PENDING_MARKER`` records the configuration's hash; it is removed only once Docker
is verified running with the files on disk. A run killed or disconnected in between leaves the marker,
and the next run restarts Docker even though the files no longer differ, which also covers settings
``docker info`` does not show (registry mirrors, any other flag of the drop-in).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provisioner.connection.base import RunResult, q
from provisioner.errors import RemoteError, TaskError
from provisioner.facts import HostFacts
from provisioner.inventory import Inventory
from provisioner.modules._docker import wait_for
from provisioner.modules.base import ApplyContext, Change, Module, ModuleArgs, NoOp, Plan, PlanContext, register
from provisioner.modules.capabilities import (
    BACKENDS_PROBE,
    BACKENDS_SCRIPT,
    docker_host_reasons,
    overlay_mode,
    reach_probes,
)
from provisioner.modules.kv_store import Backend, backend_of, cluster_store_url, health_route, quorum_down
from provisioner.steps import Call, Put, Run, Step, StepState, Wait, WaitFailed

# how long Docker may take to come back after a restart (and after the rollback restart)
RESTART_TIMEOUT = 60.0
EXCLUSIVE_GROUP = "docker-restart"
# present while a written configuration has not been verified running yet (content: its hash)
PENDING_MARKER = "/var/lib/provisioner/pending-restart-docker"

OUR_FLAGS = ("--cluster-store", "--cluster-advertise", "--registry-mirror")
HEADER = "# Written by provisioner (docker_daemon): Docker's cluster store. Local edits are overwritten.\n"

# dockerd flags whose daemon.json key is not simply the long flag's name
_FLAG_KEYS = {
    "-H": "hosts", "--host": "hosts", "-D": "debug", "-l": "log-level", "-g": "data-root", "--graph": "data-root",
    "-G": "group", "-b": "bridge", "-p": "pidfile", "-s": "storage-driver",
    "--registry-mirror": "registry-mirrors", "--insecure-registry": "insecure-registries", "--label": "labels",
    "--storage-opt": "storage-opts", "--log-opt": "log-opts", "--exec-opt": "exec-opts", "--add-runtime": "runtimes",
    "--dns-opt": "dns-opts", "--authorization-plugin": "authorization-plugins", "--default-ulimit": "default-ulimits",
    "--cluster-store-opt": "cluster-store-opts", "--node-generic-resource": "node-generic-resources",
}  # fmt: skip
_ENV_WORD = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*\}?$")
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_./:=,@+-]+$")


class DockerDaemonArgs(ModuleArgs):
    """No arguments: store, advertise interface/port, mirrors and restart policy come from the inventory."""


@dataclass(frozen=True)
class Desired:
    store: str  # --cluster-store URL
    advertise: str  # --cluster-advertise as configured, IFACE:PORT
    expect_advertise: str | None  # what `docker info` reports once it works: IP:PORT (None: interface missing)
    mirrors: tuple[str, ...]


@dataclass(frozen=True)
class FileOp:
    path: str
    before: str | None  # None: the file did not exist
    after: str | None  # None: remove it


def desired(inventory: Inventory, host: str, facts: HostFacts) -> Desired:
    iface = inventory.advertise_interface(host)
    port = inventory.docker.advertise_port
    ip = facts.address_of(iface)
    return Desired(
        cluster_store_url(inventory),
        f"{iface}:{port}",
        f"{ip}:{port}" if ip else None,
        tuple(inventory.docker.registry_mirrors),
    )


def strip_flags(argv: list[str], flags: tuple[str, ...] = OUR_FLAGS) -> list[str]:
    """argv without ``flags`` (both ``--flag=value`` and ``--flag value`` forms)."""
    out: list[str] = []
    skip = False
    for tok in argv:
        if skip:
            skip = False
            continue
        if tok in flags:
            skip = True
            continue
        if any(tok.startswith(f + "=") for f in flags):
            continue
        out.append(tok)
    return out


def systemd_word(tok: str) -> str:
    """One ExecStart word: $VAR/${VAR} stay bare so systemd expands them; the rest quoted when needed."""
    if _ENV_WORD.fullmatch(tok):
        return tok
    tok = tok.replace("%", "%%")
    if _PLAIN_WORD.fullmatch(tok):
        return tok
    return '"' + tok.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'


def dropin_content(argv: list[str]) -> str:
    return HEADER + "[Service]\nExecStart=\nExecStart=" + " ".join(systemd_word(t) for t in argv) + "\n"


def flag_keys(argv: list[str]) -> dict[str, str]:
    """daemon.json key -> the flag in argv that sets it."""
    out: dict[str, str] = {}
    for tok in argv[1:]:
        if not tok.startswith("-") or tok == "-" or _ENV_WORD.fullmatch(tok):
            continue
        flag = tok.split("=", 1)[0]
        key = _FLAG_KEYS.get(flag) or (flag[2:] if flag.startswith("--") else None)
        if key:
            out.setdefault(key, flag)
    return out


def parse_daemon_json(path: str, text: str | None, exists: bool) -> dict[str, Any]:
    if not exists or text is None or not text.strip():
        if exists and text is None:
            raise TaskError(f"{path} is not UTF-8 text", fix=f"fix or remove {path}; dockerd cannot read it either")
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskError(
            f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})",
            fix=f"fix {path} by hand (dockerd refuses to start with it as it is)",
        ) from e
    if not isinstance(doc, dict):
        raise TaskError(f"{path} must hold a JSON object", fix=f"fix {path} by hand")
    return doc


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


@register
class DockerDaemonModule(Module[DockerDaemonArgs]):
    name = "docker_daemon"
    Args = DockerDaemonArgs
    summary = "dockerd's cluster store/advertise (systemd drop-in or daemon.json); safe rolling restart"

    def describe(self, args: DockerDaemonArgs) -> str:
        return "docker_daemon cluster store"

    def watch(self, args: DockerDaemonArgs, inventory: Inventory) -> list[str]:
        return [PENDING_MARKER, inventory.docker.dropin, inventory.docker.daemon_json]

    def probes(self, args: DockerDaemonArgs) -> dict[str, str]:
        return {BACKENDS_PROBE: BACKENDS_SCRIPT}

    def inventory_probes(self, args: DockerDaemonArgs, inventory: Inventory) -> dict[str, str]:
        return reach_probes(inventory) if inventory.docker.overlay_mode != "swarm" else {}

    def preflight(self, ctx: PlanContext, args: DockerDaemonArgs) -> list[str]:
        return docker_host_reasons(ctx.inventory, ctx.facts, ctx.all_facts)

    def plan(self, ctx: PlanContext, args: DockerDaemonArgs) -> Plan:
        inv, f = ctx.inventory, ctx.facts
        d = f.docker
        choice = overlay_mode(inv, {**ctx.all_facts, ctx.host: f})
        if inv.kv_store is None and choice.mode != "swarm":
            return NoOp("the inventory has no kv_store: Docker needs no cluster store; configuration left as it is")
        if choice.mode == "swarm":
            return NoOp(f"{choice.label()}: Docker needs no cluster store; configuration left as it is, no restart")
        if not d.installed:
            raise TaskError(f"{ctx.host}: Docker is not installed", fix="install it first: apt-get install docker.io")
        want = desired(inv, ctx.host, f)
        dropin, djson = inv.docker.dropin, inv.docker.daemon_json
        dropin_fact, json_fact = f.file(dropin), f.file(djson)
        existing_json = parse_daemon_json(djson, json_fact.content, json_fact.exists)
        ours = [
            f"--cluster-store={want.store}",
            f"--cluster-advertise={want.advertise}",
            *[f"--registry-mirror={m}" for m in want.mirrors],
        ]
        ops: list[FileOp] = []
        if inv.docker.config == "systemd-dropin":
            if not d.base_execstart:
                raise TaskError(
                    f"{ctx.host}: cannot tell which dockerd command line docker.service runs "
                    f"(unit {d.unit_path or 'not found'})",
                    fix="check `systemctl cat docker` on the host; the drop-in repeats the unit's ExecStart",
                )
            argv = [*strip_flags(d.base_execstart), *ours]
            final_json = existing_json
            content = dropin_content(argv)
            if dropin_fact.content != content:
                ops.append(FileOp(dropin, dropin_fact.content if dropin_fact.exists else None, content))
        else:
            argv = list(d.base_execstart or [])
            final_json = dict(existing_json)
            final_json["cluster-store"] = want.store
            final_json["cluster-advertise"] = want.advertise
            if want.mirrors:
                final_json["registry-mirrors"] = list(want.mirrors)
            if dropin_fact.exists:
                # our drop-in from systemd-dropin mode would set the same settings as flags
                ops.append(FileOp(dropin, dropin_fact.content, None))
            if final_json != existing_json or not json_fact.exists:
                ops.append(FileOp(djson, json_fact.content if json_fact.exists else None, render_json(final_json)))
        conflicts = sorted(set(flag_keys(argv)) & set(final_json))
        if conflicts:
            flags = flag_keys(argv)
            listing = ", ".join(f'{flags[k]} (flag) / "{k}" (daemon.json)' for k in conflicts)
            raise TaskError(
                f"{ctx.host}: {listing} would be set both on dockerd's command line and in {djson}; "
                "dockerd refuses to start like that. Nothing was changed",
                fix=f"remove the setting from {djson} or from the docker unit/drop-ins "
                f"({', '.join([d.unit_path or 'docker.service', *d.unit_dropins])}), "
                "or switch docker.config in the inventory",
            )
        reasons = _restart_reasons(f, want)
        pending = f.file(PENDING_MARKER)
        if pending.exists and d.active:
            reasons.append(
                f"an earlier run changed the configuration but did not finish restarting Docker ({PENDING_MARKER} "
                f"is present, configuration {(pending.content or '?').strip()[:12]})"
            )
        if not ops and not reasons:
            return NoOp(
                f"Docker runs with cluster store {want.store}, advertise {d.cluster_advertise} ({choice.label()})"
            )
        change = _change(ctx, inv, want, ops, reasons)
        change.notes.insert(0, choice.label())
        return [change]


def _restart_reasons(f: HostFacts, want: Desired) -> list[str]:
    d = f.docker
    if not d.active:
        return [f"Docker is not running ({d.state})"]
    out = []
    if d.cluster_store != want.store:
        out.append(f"the running daemon uses cluster store {d.cluster_store or '(none)'}, wanted {want.store}")
    if want.expect_advertise is not None and d.cluster_advertise != want.expect_advertise:
        out.append(
            f"the running daemon advertises {d.cluster_advertise or '(nothing)'}, wanted {want.expect_advertise}"
        )
    return out


def _change(ctx: PlanContext, inv: Inventory, want: Desired, ops: list[FileOp], reasons: list[str]) -> Change:
    d = ctx.facts.docker
    rolling = inv.docker.restart == "rolling"
    notes: list[str] = []
    if d.live_restore:
        notes.append(f"restarts Docker: live-restore keeps {d.running_containers} running containers up")
    else:
        notes.append(f"restarts Docker: stops {d.running_containers} running containers")
    notes.append(
        "rolling restart: one host at a time; stops at the first host that fails"
        if rolling
        else "parallel restart: all hosts at once"
    )
    notes.extend(f"restart needed: {r}" for r in reasons if ops)
    iface = inv.advertise_interface(ctx.host)
    if want.expect_advertise is None:
        notes.append(
            f"interface {iface} has no address on {ctx.host} (interfaces: {', '.join(sorted(ctx.facts.interfaces))}); "
            "dockerd will likely not start and the previous configuration will be restored"
        )
    shown = next((op for op in ops if op.after is not None), None)
    if shown is not None:
        verb = "update" if shown.before is not None else "write"
        description = f"{verb} {shown.path} and restart Docker"
    else:
        description = f"restart Docker: {'; '.join(reasons)}"
    return Change(
        description,
        steps=restart_steps(ctx.host, ops, want, config_hash(ops, want), backend_of(inv), inv.kv_endpoints()),
        rollback=[
            Call(
                f"put back the files as they were ({', '.join(op.path for op in ops) or 'none changed'}), "
                "restart Docker, wait for it; report Docker's journal",
                _rollback(ops, want),
            )
        ],
        path=shown.path if shown else None,
        before=shown.before if shown else None,
        after=shown.after if shown else None,
        notes=notes,
        exclusive=EXCLUSIVE_GROUP if rolling else None,
    )


STATE_COMMAND = (
    "systemctl is-active docker; timeout 10 docker info --format '{{.ClusterStore}}|{{.ClusterAdvertise}}' 2>&1"
)


def parse_state(stdout: str) -> tuple[str, str, str]:
    """(systemctl state, ClusterStore, ClusterAdvertise) from STATE_COMMAND's output."""
    lines = stdout.strip().splitlines()
    state = lines[0].strip() if lines else "unknown"
    store, _, adv = (lines[1] if len(lines) > 1 else "").partition("|")
    return state, store.strip(), adv.strip()


def _judge(want: Desired | None) -> Callable[[RunResult], tuple[bool | None, str]]:
    def until(res: RunResult) -> tuple[bool | None, str]:
        state, store, adv = parse_state(res.stdout)
        if state != "active":
            return (False if state == "failed" else None), f"docker.service is {state}"
        if want is None:
            return True, ""
        if store != want.store or (want.expect_advertise is not None and adv != want.expect_advertise):
            return None, f"Docker is active but reports cluster store {store or '(none)'}, advertise {adv or '(none)'}"
        return True, ""

    return until


def restart_steps(
    host: str, ops: list[FileOp], want: Desired, digest: str, b: Backend, endpoints: list[tuple[str, str, int]]
) -> list[Step]:
    """The restart, in the order that keeps it safe: the store must be healthy (a dockerd started
    while its store is down never finds its peers); the marker goes first, so whenever a new file is on
    disk the restart it needs is recorded; the marker goes last, once Docker runs what is on disk."""
    folders = sorted({posixpath.dirname(PENDING_MARKER)} | {posixpath.dirname(op.path) for op in ops if op.after})
    steps: list[Step] = [
        Call(
            f"wait up to {STORE_WAIT:.0f} s until a quorum of the {b.name} store is healthy ({want.store}), "
            "otherwise change nothing; each store host by "
            + "; ".join(health_route(name, addr, port, b.health_path) for name, addr, port in endpoints),
            _store_gate(want),
        ),
        Run(f"mkdir -p {' '.join(q(f) for f in folders)}", what="could not create the folders of the files"),
        Put(PENDING_MARKER, f"{digest}\n".encode()),
    ]
    for op in ops:
        if op.after is None:
            steps.append(Run(f"rm -f {q(op.path)}", what=f"could not remove {op.path}"))
        else:
            steps.append(Put(op.path, op.after.encode()))
    steps += [
        Run(
            "systemctl daemon-reload && systemctl restart docker",
            timeout=180,
            what="could not restart Docker",
            progress="restarting Docker",
        ),
        Wait(
            STATE_COMMAND,
            _judge(want),
            f"Docker is active with cluster store {want.store} and advertise {want.expect_advertise or want.advertise}",
            timeout=RESTART_TIMEOUT,
            what="Docker did not come back with the new configuration",
            progress="waiting until Docker is back with its cluster store",
        ),
        Run(f"rm -f {q(PENDING_MARKER)}", what=f"could not remove {PENDING_MARKER}"),
    ]
    return steps


def wait_docker(ctx: ApplyContext, want: Desired | None, timeout: float = RESTART_TIMEOUT) -> str | None:
    """None once Docker is active (and, with ``want``, reports its store and advertise), else why not."""
    return Wait(STATE_COMMAND, _judge(want), "Docker is active", timeout=timeout).wait(ctx)


def config_hash(ops: list[FileOp], want: Desired) -> str:
    doc = {"files": [[op.path, op.after] for op in ops], "want": [want.store, want.advertise, list(want.mirrors)]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# how long a restart waits for the store to answer healthy (e.g. a store container that just started)
STORE_WAIT = 20.0


def store_down(ctx: ApplyContext, timeout: float = STORE_WAIT) -> str | None:
    """Why the cluster store cannot serve a (re)starting dockerd, or None once a quorum is healthy.

    dockerd reads its store once at start: one started while the store is down never finds its peers
    (its discovery watch dies) until it is restarted again, so Docker must not restart into a dead store."""
    last: list[str] = [""]

    def probe() -> bool | None:
        why = _store_down_once(ctx)
        last[0] = why or ""
        return True if why is None else None

    return None if wait_for(probe, timeout=timeout, interval=2.0) else last[0]


def _store_down_once(ctx: ApplyContext) -> str | None:
    down = quorum_down(ctx)
    return None if down is None else "; ".join(down)


class StoreDown(TaskError):
    """Docker was not restarted because its store is not healthy; nothing was touched."""


def _store_gate(want: Desired) -> Callable[[ApplyContext, StepState], None]:
    def gate(ctx: ApplyContext, _state: StepState) -> None:
        down = store_down(ctx)
        if down is None:
            return
        b = backend_of(ctx.inventory)
        raise StoreDown(
            f"{ctx.host}: not restarting Docker: the {b.name} store ({want.store}) is not healthy ({down}). "
            "A dockerd started while its store is down never finds its peers, which leaves the overlay "
            "silently broken. Nothing was changed on this host",
            fix=f"start the store first (`docker start {b.container}` on "
            f"{', '.join(ctx.inventory.store().hosts)}, or apply playbooks/overlay.yml with its kv_store "
            "play), then run again",
        )

    return gate


def _rollback(ops: list[FileOp], want: Desired) -> Callable[[ApplyContext, StepState], None]:
    def rollback(ctx: ApplyContext, state: StepState) -> None:
        failure = state.failure
        if isinstance(failure, WaitFailed):
            why = failure.why
        elif isinstance(failure, RemoteError):
            why = f"{failure.command} failed (exit {failure.rc}): {failure.output.strip()[:300]}"
        else:
            # the store gate refused before anything was touched, a lost connection (the next run
            # re-plans from what is on the host), or a file that could not be written (nothing restarted)
            return
        journal = ctx.conn.run("journalctl -u docker --no-pager -o cat -n 25", sudo=True, timeout=30).output
        tail = "\n".join(f"    | {line}" for line in journal.strip().splitlines()[-25:])
        ctx.log("Docker did not come back: restoring the previous configuration")
        for op in reversed(ops):
            if op.before is None:
                ctx.conn.check(f"rm -f {q(op.path)}", what=f"could not remove {op.path}")
            else:
                ctx.conn.put(op.before.encode(), op.path, mode=0o644, owner="root:root")
        ctx.conn.run(
            "systemctl daemon-reload; systemctl reset-failed docker; systemctl restart docker", sudo=True, timeout=180
        )
        back = wait_docker(ctx, None)
        if back is None:
            # Docker runs the files now on disk (the previous ones): no restart is owed any more
            _clear_marker(ctx)
        hint = (
            f"check that interface {want.advertise.rsplit(':', 1)[0]} exists on {ctx.host} and that the store "
            f"{want.store} is reachable from it; then run again"
        )
        if back is None:
            raise TaskError(
                f"{ctx.host}: Docker did not come back with the new configuration ({why}). The previous "
                f"configuration was restored and Docker is running again. Docker's journal:\n{tail}",
                fix=hint,
            )
        raise TaskError(
            f"{ctx.host}: Docker did not come back with the new configuration ({why}), and did NOT come back "
            f"after restoring the previous configuration either ({back}). Docker's journal:\n{tail}",
            fix=f"Docker is down on {ctx.host}: run `journalctl -u docker` there and start it by hand; {hint}",
        )

    return rollback


def _clear_marker(ctx: ApplyContext) -> None:
    ctx.conn.check(f"rm -f {q(PENDING_MARKER)}", what=f"could not remove {PENDING_MARKER}")
