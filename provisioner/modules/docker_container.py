"""``docker_container``: the inventory's ``containers:`` (the workloads), converged on their hosts.

Each declared container runs on its ``host``. A missing one is created (``docker create`` on its first
network, ``docker network connect`` for the others, ``docker start``: the same on Docker 20.10 and 26+,
and the process starts with every network in place). Its image is pulled, or uploaded and loaded from
``image_archive``, first.

Managed containers carry two labels: ``io.provisioner.container`` (a hash of the spec; its presence is
what "managed" means) and ``io.provisioner.container.fields`` (a short hash per field, so a spec change
is named field by field even where the container cannot show the old value). Drift is judged against the
live container as well (``docker inspect``, facts sections ``container_config`` and ``addresses``):

* image (reference, and the image id the tag or archive stands for now), command, env, ports, volumes,
  labels, network mode differ: recreated (``docker rm -f`` and created again), every field shown;
* restart policy differs (``docker update --restart`` by hand): ``docker update``, no recreation;
* a network added or removed (or an address/aliases changed): ``docker network connect``/``disconnect``,
  no recreation (the container keeps its id);
* stopped: started. ``state: absent``: removed.

A managed container no longer declared on its host is removed only with ``--prune`` (apply without it
leaves it and says so); a container of a declared name that provisioner did not create is replaced only
with ``--adopt`` (apply without it refuses). Env values that are secrets (``{from_env: ...}``,
``{from_file: ...}``) reach Docker through an env file written with mode 0600 and removed once the
container is created: they are in no printed step, and every output masks them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from provisioner.connection.base import q
from provisioner.errors import TaskError
from provisioner.facts import ADDRESSES, CONTAINER_CONFIG, ContainerFact, DockerFacts, env_digest
from provisioner.inventory import Inventory
from provisioner.modules._docker import archive_info, normalize_ref, short_id
from provisioner.modules.base import Change, Module, ModuleArgs, NoOp, Plan, PlanContext, register
from provisioner.modules.docker_image import image_change
from provisioner.steps import Put, Run, Step
from provisioner.workloads import Container, ContainerNetwork

# the spec hash; a container with this label is managed by provisioner
LABEL = "io.provisioner.container"
# field=hash,... of the fields a container is created with
LABEL_FIELDS = "io.provisioner.container.fields"
# the fields only a recreation changes, in the order the plan names them
FIELDS = ("image", "command", "env", "ports", "volumes", "labels", "network_mode")


class DockerContainerArgs(ModuleArgs):
    # one container of the inventory; default: every container declared on the host (and then managed
    # containers no longer declared there are drift: removed with --prune)
    name: str | None = None


def env_file(name: str) -> str:
    """Where a container's secret env values wait for `docker create` (removed right after)."""
    return f"/run/provisioner-container-{name}.env"


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _restart(policy: str) -> tuple[str, int]:
    name, _, count = policy.partition(":")
    return name, int(count) if count else 0


def _port_key(address: str, host_port: int | None, container_port: int, proto: str) -> str:
    return f"{address or '*'}:{host_port or '*'}:{container_port}/{proto}"


@dataclass(frozen=True)
class Wanted:
    """A declared container as this module plans it."""

    name: str
    spec: Container

    @property
    def ref(self) -> str:
        return normalize_ref(self.spec.image)

    @property
    def networks(self) -> dict[str, ContainerNetwork]:
        """The networks it must be on: as declared; Docker's bridge when none is (and no network_mode)."""
        if self.spec.network_mode is not None:
            return {}
        return dict(self.spec.networks) or {"bridge": ContainerNetwork()}

    @property
    def plain_env(self) -> dict[str, str]:
        return {k: v for k, v in self.spec.env.items() if isinstance(v, str)}

    @property
    def secret_env(self) -> dict[str, str]:
        return {k: v.get_secret_value() for k, v in self.spec.env.items() if isinstance(v, SecretStr)}

    def ports(self) -> list[str]:
        return sorted(_port_key(p.address or "", p.host_port, p.container_port, p.proto) for p in self.spec.ports)

    def field_values(self) -> dict[str, Any]:
        """What each immutable field is declared as; secret env values are left out (they are judged on the
        live container, never hashed into a label a plan prints)."""
        return {
            "image": self.ref,
            "command": self.spec.command,
            "env": {**self.plain_env, **{k: "(secret)" for k in self.secret_env}},
            "ports": self.ports(),
            "volumes": sorted(self.spec.volumes),
            "labels": dict(sorted(self.spec.labels.items())),
            "network_mode": self.spec.network_mode,
        }

    def field_hashes(self) -> dict[str, str]:
        return {k: _hash(v)[:8] for k, v in self.field_values().items()}

    def spec_hash(self) -> str:
        return _hash(self.field_hashes())[:16]

    def labels(self) -> dict[str, str]:
        fields = ",".join(f"{k}={v}" for k, v in self.field_hashes().items())
        return {**self.spec.labels, LABEL: self.spec_hash(), LABEL_FIELDS: fields}


def recorded_fields(have: ContainerFact) -> dict[str, str]:
    """field -> hash, as the container's fields label recorded them when it was created."""
    out: dict[str, str] = {}
    for item in have.labels.get(LABEL_FIELDS, "").split(","):
        k, sep, v = item.partition("=")
        if sep:
            out[k] = v
    return out


def _shown(v: Any) -> str:
    if v is None or v == [] or v == {}:
        return "(none)"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _differ(names: list[str]) -> str:
    one = len(names) == 1 and names[0] not in ("ports", "volumes", "labels")
    return f"{', '.join(names)} {'differs' if one else 'differ'}"


def differences(w: Wanted, have: ContainerFact, image_id: str | None, archive: Path | None) -> dict[str, str]:
    """field -> what differs, for the fields only a recreation changes (empty: none). ``image_id`` is what
    the container must run: the id of ``archive`` when its ref comes from one, else what the tag names."""
    out: dict[str, str] = {}
    spec = w.spec
    if normalize_ref(have.image) != w.ref:
        out["image"] = f"{have.image} on the host, {spec.image} declared"
    elif image_id and have.image_id and have.image_id != image_id:
        out["image"] = f"the container runs {short_id(have.image_id)}, {w.ref} is {short_id(image_id)} " + (
            f"(in {archive.name})" if archive else "on the host"
        )
    if spec.command is not None and have.cmd != spec.command:
        out["command"] = f"{_shown(have.cmd)} on the host, {_shown(spec.command)} declared"
    env = [k for k, v in spec.env_values().items() if have.env_digests.get(k) != env_digest(v)]
    if env:
        out["env"] = f"{_differ(env)} on the host (or are not set there)"
    have_ports = sorted(_port_key(p.host_ip, p.host_port, p.container_port, p.proto) for p in have.port_bindings)
    if have_ports != w.ports():
        out["ports"] = f"{_shown(have_ports)} on the host, {_shown(w.ports())} declared"
    binds = sorted(v for v in spec.volumes if ":" in v)
    anonymous = [v for v in spec.volumes if ":" not in v and v not in have.volumes]
    if binds != have.binds or anonymous:
        out["volumes"] = f"{_shown(have.binds + have.volumes)} on the host, {_shown(sorted(spec.volumes))} declared"
    labels = [k for k, v in spec.labels.items() if have.labels.get(k) != v]
    if labels:
        out["labels"] = f"{_differ(labels)} on the host"
    mode: str | None = have.network_mode
    if mode not in ("none", "host") and not have.network_mode.startswith("container:"):
        mode = None  # on a network (default, bridge, a network's name)
    if mode != spec.network_mode:
        out["network_mode"] = f"{_shown(mode)} on the host, {_shown(spec.network_mode)} declared"
    # what the container cannot show (an env var or label removed, a command back to the image's default)
    recorded = recorded_fields(have)
    for field, h in w.field_hashes().items():
        if field not in out and recorded.get(field) != h:
            out[field] = f"changed in the inventory since the container was created; declared: {_declared(w, field)}"
    return {f: out[f] for f in FIELDS if f in out}


def _declared(w: Wanted, field: str) -> str:
    if field == "env":
        return _shown(sorted(w.spec.env)) + " (names)"
    return _shown(w.field_values()[field])


def _alias_drift(have: ContainerFact, net: str, want: ContainerNetwork) -> str:
    """How the container's endpoint on ``net`` differs from the declared one ('' when it does not)."""
    ep = have.addresses.get(net)
    if ep is None:
        return ""
    out = []
    if ep.requested_ipv4 != str(want.ipv4_address or ""):
        out.append(f"address {ep.requested_ipv4 or '(any)'} -> {want.ipv4_address or '(any)'}")
    # Docker adds the short id (20.10) and, in DNSNames (26+), the name; only the declared ones count
    aliases = sorted(set(ep.aliases) - {have.id[:12], have.name})
    if aliases != sorted(set(want.aliases)):
        out.append(f"aliases {_shown(aliases)} -> {_shown(sorted(set(want.aliases)))}")
    return ", ".join(out)


def _connect(net: str, name: str, want: ContainerNetwork) -> Run:
    opts = [f"--ip {q(str(want.ipv4_address))}"] if want.ipv4_address is not None else []
    opts += [f"--alias {q(a)}" for a in want.aliases]
    return Run(
        " ".join(["docker network connect", *opts, q(net), q(name)]),
        what=f"could not connect {name} to network {net}",
        fix=f"check that network {net} exists on the host (the docker_network task creates it) and that the "
        "address is free",
    )


def _disconnect(net: str, name: str) -> Run:
    return Run(f"docker network disconnect {q(net)} {q(name)}", what=f"could not disconnect {name} from {net}")


def _start(name: str) -> Run:
    return Run(
        f"docker start {q(name)}",
        what=f"could not start container {name}",
        fix=f"`docker logs {name}` on the host shows why it does not run",
    )


def create_steps(w: Wanted) -> tuple[list[Step], list[Step]]:
    """(steps, rollback): ``docker create`` on the first network, connect the others, start."""
    spec, name = w.spec, w.name
    nets = list(w.networks.items())
    parts = ["docker create", f"--name {q(name)}"]
    parts += [f"--label {q(f'{k}={v}')}" for k, v in w.labels().items()]
    parts.append(f"--restart {q(spec.restart)}")
    parts += [f"--env {q(f'{k}={v}')}" for k, v in w.plain_env.items()]
    steps: list[Step] = []
    rollback: list[Step] = []
    if w.secret_env:
        path = env_file(name)
        data = "".join(f"{k}={v}\n" for k, v in w.secret_env.items()).encode()
        steps.append(Put(path, data, mode=0o600))
        rollback.append(Run(f"rm -f {q(path)}"))
        parts.append(f"--env-file {q(path)}")
    parts += [f"--publish {q(p.text)}" for p in spec.ports]
    parts += [f"--volume {q(v)}" for v in spec.volumes]
    if spec.network_mode is not None:
        parts.append(f"--network {spec.network_mode}")
    elif nets:
        first, attach = nets[0]
        parts.append(f"--network {q(first)}")
        if attach.ipv4_address is not None:
            parts.append(f"--ip {q(str(attach.ipv4_address))}")
        parts += [f"--network-alias {q(a)}" for a in attach.aliases]
    parts.append(q(spec.image))
    parts += [q(a) for a in spec.command or []]
    steps.append(
        Run(
            " ".join(parts),
            timeout=120,
            what=f"could not create container {name}",
            fix="read Docker's message above: a network missing on the host, a port or address taken, a bad volume",
        )
    )
    if w.secret_env:
        steps.append(Run(f"rm -f {q(env_file(name))}"))
    steps += [_connect(net, name, attach) for net, attach in nets[1:]]
    steps.append(_start(name))
    return steps, rollback


def _remove(name: str) -> Run:
    return Run(f"docker rm -f {q(name)}", what=f"could not remove container {name}")


def _declared_here(inv: Inventory, host: str, only: str | None) -> dict[str, Container]:
    return {n: c for n, c in inv.containers.items() if c.host == host and (only is None or n == only)}


def image_sources(declared: Mapping[str, Container]) -> dict[str, Path | None]:
    """ref -> where the host gets it: the archive any container of that ref names, else a registry."""
    out: dict[str, Path | None] = {}
    for c in declared.values():
        ref = normalize_ref(c.image)
        if c.state == "present" and out.get(ref) is None:
            out[ref] = c.image_archive
    return out


def _image_id(d: DockerFacts, ref: str, archive: Path | None) -> str | None:
    """The image id a container of ``ref`` must run: the archive's, else what the tag names on the host now."""
    return archive_info(archive).image_id if archive is not None else d.images.get(ref)


@register
class DockerContainerModule(Module[DockerContainerArgs]):
    name = "docker_container"
    Args = DockerContainerArgs
    summary = "the inventory's containers on their hosts: created, recreated on a changed spec, networks connected"

    def describe(self, args: DockerContainerArgs) -> str:
        return f"docker_container {args.name or 'inventory containers'}"

    def fact_sections(self, args: DockerContainerArgs, inventory: Inventory) -> Iterable[str]:
        return (ADDRESSES, CONTAINER_CONFIG)

    def preflight(self, ctx: PlanContext, args: DockerContainerArgs) -> list[str]:
        out = []
        for name, c in _declared_here(ctx.inventory, ctx.host, args.name).items():
            if c.networks.get("bridge", ContainerNetwork()).aliases:
                out.append(
                    f"container {name}: Docker's default bridge has no network-scoped aliases; remove "
                    "networks.bridge.aliases, or put the container on a user-defined network for them"
                )
            bad = [k for k, v in Wanted(name, c).secret_env.items() if "\n" in v]
            if bad:
                out.append(
                    f"container {name}: env {', '.join(bad)} holds a line break, which Docker's env file cannot "
                    "carry; store the value on one line (e.g. base64) and decode it in the container"
                )
        return out

    def plan(self, ctx: PlanContext, args: DockerContainerArgs) -> Plan:
        inv, d = ctx.inventory, ctx.facts.docker
        if args.name is not None and args.name not in inv.containers:
            raise TaskError(
                f"container {args.name!r} is not in the inventory (containers: {', '.join(inv.containers) or 'none'})",
                fix="add it under 'containers:' in the inventory or fix the name",
            )
        declared = _declared_here(inv, ctx.host, args.name)
        if not d.active:
            if not declared:
                return NoOp(f"no container is declared on {ctx.host} (and Docker does not run here)")
            raise TaskError(
                f"{ctx.host}: Docker is not running ({d.state}); cannot run {', '.join(declared)}",
                fix=f"install and start Docker on {ctx.host} (apt-get install docker.io)",
            )
        removals: list[Change] = []
        sources = image_sources(declared)
        images: dict[str, tuple[Change, list[str]]] = {}  # ref -> what gets it onto the host, for whom
        updates: list[Change] = []
        in_sync: list[str] = []
        for name, c in declared.items():
            have = d.container(name)
            managed = have is not None and LABEL in have.labels
            if c.state == "absent":
                if have is not None:
                    removals.append(_absent(name, have, managed))
                continue
            w = Wanted(name, c)
            if w.ref in images:
                images[w.ref][1].append(name)
            elif isinstance(found := image_change(d.images, w.ref, sources[w.ref]), Change):
                images[w.ref] = (found, [name])
            change = self._converge(w, have, managed, _image_id(d, w.ref, sources[w.ref]), sources[w.ref])
            if change is None:
                in_sync.append(name)
            else:
                updates.append(change)
        if args.name is None:
            removals += self._undeclared(ctx, d, declared)
        image_changes = []
        for found, users in images.values():
            found.description += f" (for {', '.join(users)})"
            image_changes.append(found)
        changes = [*removals, *image_changes, *updates]
        if changes:
            return changes
        gone = [n for n, c in declared.items() if c.state == "absent"]
        said = [f"{', '.join(in_sync)} {'runs' if len(in_sync) == 1 else 'run'} as declared"] if in_sync else []
        said += [f"{', '.join(gone)} absent as declared"] if gone else []
        return NoOp(
            "; ".join(said) or f"no container is declared on {ctx.host}, and none provisioner manages is left here"
        )

    def _converge(
        self, w: Wanted, have: ContainerFact | None, managed: bool, image_id: str | None, archive: Path | None
    ) -> Change | None:
        """The one change that brings this container where it is declared (None: it is)."""
        name = w.name
        secrets = tuple(w.secret_env.values())
        steps, rollback = create_steps(w)
        where = ", ".join(w.networks) or f"network_mode {w.spec.network_mode}"
        if have is None:
            return Change(
                f"create container {name} ({w.spec.image} on {where})", steps=steps, rollback=rollback, secrets=secrets
            )
        if not managed:
            return Change(
                f"replace container {name}: it exists ({have.image}, {have.status or 'unknown state'}) but "
                f"provisioner did not create it (no {LABEL} label)",
                steps=[_remove(name), *steps],
                rollback=rollback,
                notes=[f"removes the container {name} that is there now and creates the declared one"],
                requires="adopt",
                secrets=secrets,
            )
        diffs = differences(w, have, image_id, archive)
        if diffs:
            return Change(
                f"recreate container {name} ({_differ(list(diffs))})",
                steps=[_remove(name), *steps],
                rollback=rollback,
                notes=[f"{field}: {why}" for field, why in diffs.items()]
                + [f"the container gets a new id; {'its processes restart' if have.running else 'it was not running'}"],
                secrets=secrets,
            )
        what: list[str] = []
        todo: list[Step] = []
        want_restart = _restart(w.spec.restart)
        have_restart = (have.restart_policy or "no", have.restart_max_retries)
        if have_restart != want_restart:
            what.append(f"restart policy {_policy(have_restart)} -> {w.spec.restart}")
            todo.append(Run(f"docker update --restart {q(w.spec.restart)} {q(name)}", what="could not update"))
        if w.spec.network_mode is None:
            live = set(have.networks)
            for net, attach in w.networks.items():
                if net not in live:
                    what.append(f"connect to {net}")
                    todo.append(_connect(net, name, attach))
                elif why := _alias_drift(have, net, attach):
                    what.append(f"reconnect to {net} ({why})")
                    todo += [_disconnect(net, name), _connect(net, name, attach)]
            for net in sorted(live - set(w.networks)):
                what.append(f"disconnect from {net}")
                todo.append(_disconnect(net, name))
        if not have.running:
            what.append(f"start it (it is {have.status or 'stopped'})")
            todo.append(_start(name))
        if not todo:
            return None
        return Change(f"update container {name}: {'; '.join(what)}", steps=todo, notes=["the container keeps its id"])

    def _undeclared(self, ctx: PlanContext, d: DockerFacts, declared: Mapping[str, Container]) -> list[Change]:
        out = []
        for have in d.containers:
            if LABEL not in have.labels or have.name in declared:
                continue
            elsewhere = ctx.inventory.containers.get(have.name)
            why = f"declared on {elsewhere.host} now" if elsewhere is not None else "no longer in the inventory"
            out.append(
                Change(
                    f"remove undeclared container {have.name} (provisioner created it; {why})",
                    steps=[_remove(have.name)],
                    notes=[f"{have.name} runs {have.image} ({'running' if have.running else have.status})"],
                    requires="prune",
                    optional=True,
                )
            )
        return out


def _policy(p: tuple[str, int]) -> str:
    return f"{p[0]}:{p[1]}" if p[1] else p[0]


def _absent(name: str, have: ContainerFact, managed: bool) -> Change:
    if managed:
        return Change(f"remove container {name} (state: absent)", steps=[_remove(name)])
    return Change(
        f"remove container {name} (state: absent), which provisioner did not create (no {LABEL} label)",
        steps=[_remove(name)],
        requires="adopt",
    )
