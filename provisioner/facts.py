"""Host facts: everything modules plan from, gathered in a single round trip per host.

The gatherer sends one shell script. It prints sections separated by a marker line; each section
is parsed on this side into the typed ``HostFacts``. Every section tolerates a missing tool (no
Docker, no systemd, no iproute2): the fact is then empty, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from provisioner.connection.base import ShellConnection, q
from provisioner.errors import RemoteError

MARK = "@@PROV@@"


class Interface(BaseModel):
    name: str
    up: bool = False
    addresses: list[str] = Field(default_factory=list)  # without prefix length
    cidrs: list[str] = Field(default_factory=list)  # with prefix length
    mtu: int | None = None


class FileFact(BaseModel):
    exists: bool
    content: str | None = None  # text content when it decodes as UTF-8
    sha256: str | None = None
    mode: str | None = None  # octal, e.g. "644"
    owner: str | None = None  # "user:group"


class NetworkFact(BaseModel):
    name: str
    id: str = ""
    driver: str = ""
    scope: str = ""
    subnets: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    ip_ranges: list[str] = Field(default_factory=list)
    attachable: bool = False
    options: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    containers: list[str] = Field(default_factory=list)  # names of attached containers (this host)


class ContainerFact(BaseModel):
    name: str
    id: str = ""
    image: str = ""  # as given to `docker run`
    image_id: str = ""
    running: bool = False
    status: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    args: list[str] = Field(default_factory=list)
    networks: list[str] = Field(default_factory=list)
    restart_policy: str = ""


class DockerFacts(BaseModel):
    installed: bool = False  # a dockerd binary exists
    active: bool = False  # systemd says docker is active (or the API answers without systemd)
    state: str = "unknown"  # systemctl is-active output
    server_version: str | None = None
    package: str | None = None  # e.g. "docker.io"
    package_version: str | None = None  # e.g. "20.10.24+dfsg1-1+b3"
    unit_path: str | None = None
    unit_dropins: list[str] = Field(default_factory=list)
    # the dockerd argv the unit's ExecStart would run, ignoring our own drop-in (None: unknown)
    base_execstart: list[str] | None = None
    cluster_store: str | None = None
    cluster_advertise: str | None = None
    swarm_state: str = "inactive"
    swarm_node_id: str | None = None
    swarm_cluster_id: str | None = None
    swarm_manager: bool = False
    swarm_node_addr: str | None = None
    # node ids of the managers this node talks to (workers see no cluster id: this tells their swarm)
    swarm_remote_managers: list[str] = Field(default_factory=list)
    live_restore: bool = False
    running_containers: int = 0
    networks: list[NetworkFact] = Field(default_factory=list)
    containers: list[ContainerFact] = Field(default_factory=list)
    images: dict[str, str] = Field(default_factory=dict)  # "repo:tag" -> image id
    info_error: str | None = None  # why `docker info` failed, if it did

    def network(self, name: str) -> NetworkFact | None:
        return next((n for n in self.networks if n.name == name), None)

    def container(self, name: str) -> ContainerFact | None:
        return next((c for c in self.containers if c.name == name), None)


class OSFacts(BaseModel):
    id: str = ""
    version_id: str = ""
    codename: str = ""
    pretty_name: str = ""
    kernel: str = ""


class HostFacts(BaseModel):
    host: str
    hostname: str = ""
    os: OSFacts = Field(default_factory=OSFacts)
    init: str = "unknown"  # "systemd" or the name of PID 1
    user: str = ""
    uid: int | None = None
    interfaces: dict[str, Interface] = Field(default_factory=dict)
    files: dict[str, FileFact] = Field(default_factory=dict)
    probes: dict[str, int] = Field(default_factory=dict)  # probe name -> exit code
    docker: DockerFacts = Field(default_factory=DockerFacts)

    def file(self, path: str) -> FileFact:
        return self.files.get(path, FileFact(exists=False))

    def address_of(self, interface: str) -> str | None:
        iface = self.interfaces.get(interface)
        if iface is None:
            return None
        v4 = [a for a in iface.addresses if ":" not in a]
        found = v4 or iface.addresses
        return found[0] if found else None


def _script(files: list[str], probes: Mapping[str, str]) -> str:
    """The facts script. Watched files and probes get numbered sections (``file:0``, ``probe:0``):
    paths and probe names never appear in marker lines, so nothing in them needs escaping there."""
    lines = [
        f"m={MARK}",
        'sec() { printf "\\n%s %s\\n" "$m" "$1"; }',
        "D='timeout 20 docker'",
        "sec os; cat /etc/os-release 2>/dev/null",
        "sec hostname; hostname 2>/dev/null || cat /etc/hostname",
        "sec kernel; uname -r",
        "sec user; id -u; id -un",
        "sec init; if [ -d /run/systemd/system ]; then echo systemd; else cat /proc/1/comm 2>/dev/null; fi",
        "sec ip; ip -j addr 2>/dev/null",
        "sec dockerd; command -v dockerd 2>/dev/null",
        "sec package; for p in docker.io docker-ce moby-engine; do "
        'v=$(dpkg-query -W -f \'${Version}\' $p 2>/dev/null) && [ -n "$v" ] && echo "$p $v" && break; done',
        "sec active; systemctl is-active docker 2>/dev/null",
        "sec unit; systemctl show docker -p FragmentPath --value 2>/dev/null; "
        "systemctl show docker -p DropInPaths --value 2>/dev/null",
        "sec unitfiles; for f in $(systemctl show docker -p FragmentPath -p DropInPaths --value 2>/dev/null); "
        'do [ -f "$f" ] && printf "@@FILE@@ %s\\n" "$f" && cat "$f"; done',
        # Docker: each CLI call is a process start costing ~30 ms of CPU on the host, so there are five
        # (networks and containers share one `docker inspect`), and the four independent ones run at
        # once; each section goes to a file in a temp dir and is printed in one piece afterwards.
        "dinfo() { $D info --format '{{json .}}' 2>&1; }",
        "dimages() { $D images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' 2>/dev/null; }",
        "dnets() { $D network ls -q --no-trunc 2>/dev/null; }",
        "dps() { $D ps -aq --no-trunc 2>/dev/null; }",
        'dinspect() { [ -n "$(echo $1)" ] && $D inspect $1 2>/dev/null; }',
        "T=$(mktemp -d 2>/dev/null) || T=",
        'if [ -n "$T" ]; then',
        "  trap 'rm -rf \"$T\"' EXIT",
        '  dinfo >"$T/i" & dimages >"$T/m" & dnets >"$T/n" & dps >"$T/p" & wait',
        '  sec info; cat "$T/i"; sec images; cat "$T/m"; sec inspect; dinspect "$(cat "$T/n" "$T/p")"',
        "else",
        '  sec info; dinfo; sec images; dimages; sec inspect; dinspect "$(dnets; dps)"',
        "fi",
    ]
    for i, path in enumerate(files):
        lines.append(f"sec file:{i}; if [ -e {q(path)} ]; then stat -c '%a %U:%G' {q(path)}; base64 -w0 {q(path)}; fi")
    for i, cmd in enumerate(probes.values()):
        # the probe runs in a subshell with no stdin so it cannot eat the rest of this script
        lines.append(f"sec probe:{i}; ( {cmd} ) </dev/null >/dev/null 2>&1; echo $?")
    return "\n".join(lines) + "\n"


def _sections(output: str) -> dict[str, str]:
    out: dict[str, str] = {}
    name: str | None = None
    buf: list[str] = []
    for line in output.splitlines():
        if line.startswith(MARK + " "):
            if name is not None:
                out[name] = "\n".join(buf).strip("\n")
            name, buf = line[len(MARK) + 1 :], []
        elif name is not None:
            buf.append(line)
    if name is not None:
        out[name] = "\n".join(buf).strip("\n")
    return out


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None


def parse_execstart(unit_files: Mapping[str, str], ignore: str | None) -> list[str] | None:
    """The ExecStart argv after applying the unit file and its drop-ins, skipping ``ignore``.

    systemd semantics: an empty ``ExecStart=`` resets the list; the last non-empty one wins for
    a simple service. Line continuations (trailing backslash) are joined.
    """
    argv: list[str] | None = None
    for path, text in unit_files.items():
        if path == ignore:
            continue
        section = ""
        joined = text.replace("\\\n", " ")
        for raw in joined.splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line
                continue
            if section != "[Service]" or not line.startswith("ExecStart="):
                continue
            value = line[len("ExecStart=") :].strip()
            if not value:
                argv = None
                continue
            # strip systemd's exec prefixes (-, @, +, !, :)
            value = value.lstrip("-@+!:")
            try:
                argv = shlex.split(value)
            except ValueError:
                argv = value.split()
    return argv


def _parse_unit_files(text: str) -> dict[str, str]:
    files: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("@@FILE@@ "):
            current = line[len("@@FILE@@ ") :]
            files[current] = ""
        elif current is not None:
            files[current] += line + "\n"
    return files


def parse_facts(
    host: str,
    output: str,
    dropin: str | None = None,
    files: Sequence[str] = (),
    probes: Sequence[str] = (),
) -> HostFacts:
    """Parse the facts script's output; ``files``/``probes`` name the numbered sections, in order."""
    s = _sections(output)
    facts = HostFacts(host=host)
    osr: dict[str, str] = {}
    for line in s.get("os", "").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            osr[k] = v.strip().strip('"')
    facts.os = OSFacts(
        id=osr.get("ID", ""),
        version_id=osr.get("VERSION_ID", ""),
        codename=osr.get("VERSION_CODENAME", ""),
        pretty_name=osr.get("PRETTY_NAME", ""),
        kernel=s.get("kernel", "").strip(),
    )
    facts.hostname = s.get("hostname", "").strip()
    user = s.get("user", "").split()
    if len(user) >= 2:
        facts.uid = int(user[0]) if user[0].isdigit() else None
        facts.user = user[1]
    facts.init = s.get("init", "").strip() or "unknown"
    for item in _json(s.get("ip", "")) or []:
        name = item.get("ifname", "")
        addrs = [a for a in item.get("addr_info", []) if a.get("family") in ("inet", "inet6")]
        facts.interfaces[name] = Interface(
            name=name,
            up="UP" in item.get("flags", []),
            addresses=[a["local"] for a in addrs if "local" in a],
            cidrs=[f"{a['local']}/{a.get('prefixlen')}" for a in addrs if "local" in a],
            mtu=item.get("mtu"),
        )
    d = DockerFacts()
    d.installed = bool(s.get("dockerd", "").strip())
    pkg = s.get("package", "").split()
    if len(pkg) == 2:
        d.package, d.package_version = pkg
    d.state = s.get("active", "").strip() or "unknown"
    unit = [x for x in s.get("unit", "").split() if x]
    if unit:
        d.unit_path = unit[0]
        d.unit_dropins = [x for x in " ".join(unit[1:]).split() if x]
    unit_files = _parse_unit_files(s.get("unitfiles", ""))
    if unit_files:
        d.base_execstart = parse_execstart(unit_files, ignore=dropin)
    info = _json(s.get("info", ""))
    if isinstance(info, dict) and info.get("ServerVersion"):
        d.active = True
        d.server_version = info.get("ServerVersion")
        d.cluster_store = info.get("ClusterStore") or None
        d.cluster_advertise = info.get("ClusterAdvertise") or None
        swarm = info.get("Swarm") or {}
        d.swarm_state = swarm.get("LocalNodeState") or "inactive"
        d.swarm_node_id = swarm.get("NodeID") or None
        d.swarm_cluster_id = ((swarm.get("Cluster") or {}).get("ID")) or None
        d.swarm_manager = bool(swarm.get("ControlAvailable"))
        d.swarm_node_addr = swarm.get("NodeAddr") or None
        d.swarm_remote_managers = sorted(
            str(m.get("NodeID")) for m in swarm.get("RemoteManagers") or [] if isinstance(m, dict) and m.get("NodeID")
        )
        d.live_restore = bool(info.get("LiveRestoreEnabled"))
        d.running_containers = int(info.get("ContainersRunning") or 0)
    else:
        d.info_error = s.get("info", "").strip()[-500:] or None
    # `inspect` holds networks and containers together (older scripts: separate sections)
    mixed = [o for o in _json(s.get("inspect", "")) or [] if isinstance(o, dict)]
    networks = [o for o in mixed if "IPAM" in o] + list(_json(s.get("networks", "")) or [])
    containers = [o for o in mixed if "State" in o] + list(_json(s.get("containers", "")) or [])
    for n in networks:
        ipam = (n.get("IPAM") or {}).get("Config") or []
        d.networks.append(
            NetworkFact(
                name=n.get("Name", ""),
                id=n.get("Id", ""),
                driver=n.get("Driver", ""),
                scope=n.get("Scope", ""),
                subnets=[c["Subnet"] for c in ipam if c.get("Subnet")],
                gateways=[c["Gateway"] for c in ipam if c.get("Gateway")],
                ip_ranges=[c["IPRange"] for c in ipam if c.get("IPRange")],
                attachable=bool(n.get("Attachable")),
                options=n.get("Options") or {},
                labels=n.get("Labels") or {},
                containers=sorted(c.get("Name", "") for c in (n.get("Containers") or {}).values()),
            )
        )
    for c in containers:
        cfg = c.get("Config") or {}
        state = c.get("State") or {}
        d.containers.append(
            ContainerFact(
                name=(c.get("Name") or "").lstrip("/"),
                id=c.get("Id", ""),
                image=cfg.get("Image", ""),
                image_id=c.get("Image", ""),
                running=bool(state.get("Running")),
                status=state.get("Status", ""),
                labels=cfg.get("Labels") or {},
                args=c.get("Args") or [],
                networks=sorted((c.get("NetworkSettings") or {}).get("Networks") or {}),
                restart_policy=((c.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name", ""),
            )
        )
    for line in s.get("images", "").splitlines():
        parts = line.split()
        if len(parts) == 2 and not parts[0].startswith("<none>"):
            d.images[parts[0]] = parts[1]
    facts.docker = d
    for i, path in enumerate(files):
        facts.files[path] = _file_fact(s.get(f"file:{i}", ""))
    for i, name in enumerate(probes):
        rc = s.get(f"probe:{i}", "").strip().splitlines()[-1:]
        facts.probes[name] = int(rc[0]) if rc and rc[0].isdigit() else 255
    return facts


def _file_fact(body: str) -> FileFact:
    lines = body.split("\n", 1)
    if not lines[0].strip():
        return FileFact(exists=False)
    mode_owner = lines[0].split()
    try:
        data = base64.b64decode(lines[1].strip() if len(lines) > 1 else "", validate=True)
    except (binascii.Error, ValueError):
        data = b""
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return FileFact(
        exists=True,
        content=text,
        sha256=hashlib.sha256(data).hexdigest(),
        mode=mode_owner[0] if mode_owner else None,
        owner=mode_owner[1] if len(mode_owner) > 1 else None,
    )


def gather(
    conn: ShellConnection,
    *,
    files: Iterable[str] = (),
    probes: Mapping[str, str] | None = None,
    dropin: str | None = None,
) -> HostFacts:
    """Gather facts in one round trip. ``files`` are read (content, mode, owner); ``probes`` are
    shell commands whose exit codes become ``facts.probes`` (used by guards such as ``unless``)."""
    paths = list(dict.fromkeys(files))
    probes = dict(probes or {})
    script = _script(paths, probes)
    res = conn.run("sh -s", sudo=True, stdin=script.encode(), timeout=120)
    if MARK not in res.stdout:
        raise RemoteError(
            conn.host,
            "gather facts",
            res.rc,
            res.output,
            what="could not gather facts",
            fix="the host needs a POSIX sh; as a non-root user it needs passwordless sudo",
        )
    return parse_facts(conn.host, res.stdout, dropin=dropin, files=paths, probes=list(probes))
