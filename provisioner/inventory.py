"""Inventory v1: which hosts, how to reach them, the key-value store, Docker settings, networks.

``load_inventory(path)`` reads a YAML file and returns a validated, frozen :class:`Inventory`, or raises
:class:`~provisioner.errors.InputError` listing every problem with file:line:col, field and fix.

Names of hosts, groups, networks and interfaces are restricted to safe characters because they end up
in shell commands and Docker object names.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from provisioner.errors import InputError
from provisioner.workloads import Container, ContainerName, port_clash
from provisioner.yamlsrc import invalid, load_yaml, many_invalid, problems_from_validation, require_type

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IFACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]*$")

KV_DEFAULT_PORTS = {"consul": 8500, "etcd": 2379, "zookeeper": 2181}
KV_DEFAULT_IMAGES = {
    "consul": "hashicorp/consul:1.15",
    "etcd": "quay.io/coreos/etcd:v3.5.9",
    "zookeeper": "zookeeper:3.8",
}


# ---------------------------------------------------------------------------------------------------
# field types


def _safe_name(kind: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise invalid(f"{kind} name must be text, got {v!r}", f"quote the {kind} name")
        if not _SAFE_NAME.fullmatch(v):
            cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", v).strip("-._")[:63] or "name1"
            raise invalid(
                f"unsafe {kind} name {v!r}: only letters, digits, '_', '.', '-' are allowed "
                "(starting with a letter or digit, at most 63 characters)",
                f"rename it, e.g. {cleaned!r}",
            )
        return v

    return check


def _interface(v: Any) -> str:
    if not isinstance(v, str):
        raise invalid(f"interface name must be text, got {v!r}", "quote it, e.g. 'eth0'")
    if len(v) > 15:
        raise invalid(
            f"interface name {v!r} is {len(v)} characters; Linux allows at most 15",
            "use the name shown by 'ip -br link' on the host",
        )
    if not _IFACE.fullmatch(v) or v in (".", ".."):
        raise invalid(
            f"invalid interface name {v!r}: only letters, digits, '_', '.', '-' are allowed",
            "use the name shown by 'ip -br link' on the host, e.g. eth0 or ens3",
        )
    return v


HostName = Annotated[str, PlainValidator(_safe_name("host"))]
GroupName = Annotated[str, PlainValidator(_safe_name("group"))]
NetworkName = Annotated[str, PlainValidator(_safe_name("network"))]
Interface = Annotated[str, PlainValidator(_interface)]


def _opt(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def _address(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise invalid(
            f"address must be an IP address or DNS name as text, got {v!r}",
            "write e.g. 192.168.115.21 or host1.example.com",
        )
    v = v.strip()
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", v):
        raise invalid(
            f"{v!r} is not a valid IPv4 address", "write four numbers 0-255 separated by dots, e.g. 192.168.115.21"
        )
    if ":" in v:
        raise invalid(f"{v!r} is not a valid IPv6 address", "write e.g. 2001:db8::21 (no brackets, no port)")
    if len(v) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in v.rstrip(".").split(".")):
        raise invalid(
            f"{v!r} is neither an IP address nor a valid DNS name / ssh-config alias",
            "write an IP address (192.168.115.21) or a host name (host1.example.com), no spaces or ports",
        )
    return str(v)


def _ip(v: Any) -> IPAddress:
    try:
        return ipaddress.ip_address(str(v).strip())
    except ValueError:
        raise invalid(f"{v!r} is not a valid IP address", "write e.g. 10.0.0.1 or 2001:db8::1") from None


def _subnet(v: Any) -> IPNetwork:
    if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return v
    text = str(v).strip()
    if "/" not in text:
        raise invalid(f"{v!r} is not a network in CIDR notation", "add the prefix length, e.g. 10.0.0.0/24")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise invalid(f"{v!r} is not a valid IP network", "write e.g. 10.0.0.0/24 or fd00:1::/64") from None
    raise invalid(
        f"{text} has host bits set (the address part is not the start of the /{loose.prefixlen} network)",
        f"did you mean {loose}?",
    )


_ip_ser = PlainSerializer(str, return_type=str)
IPField = Annotated[IPAddress, PlainValidator(_ip), _ip_ser]
OptIPField = Annotated[IPAddress | None, PlainValidator(_opt(_ip)), _ip_ser]
SubnetField = Annotated[IPNetwork, PlainValidator(_subnet), _ip_ser]
OptSubnetField = Annotated[IPNetwork | None, PlainValidator(_opt(_subnet)), _ip_ser]


def _local_path(kind: str, must_exist: bool) -> Callable[[Any, ValidationInfo], Path | None]:
    """A path on this machine: ``~`` expanded, relative to the inventory's folder."""

    def check(v: Any, info: ValidationInfo) -> Path | None:
        if v is None or v is False:
            return None
        if not isinstance(v, (str, Path)) or not str(v).strip():
            raise invalid(f"{kind} must be a file path, got {v!r}", "write a path such as ~/.ssh/id_ed25519")
        p = Path(str(v).strip()).expanduser()
        base = (info.context or {}).get("base_dir")
        if not p.is_absolute():
            p = (Path(base) if base is not None else Path.cwd()) / p
        policy = getattr(info, "data", None) and info.data.get("host_key_policy")
        if kind == "known_hosts file" and policy == "strict" and not p.is_file():
            raise invalid(
                f"known_hosts file {p} does not exist and host_key_policy is strict",
                f"record the host keys first (ssh-keyscan -H {_ADDRESSES} >> {p}) or set host_key_policy: accept-new",
            )
        if must_exist and not p.is_file():
            rel = "" if Path(str(v)).expanduser().is_absolute() else " (relative paths start at the inventory's folder)"
            fix = _MISSING_FILE_FIX.get(kind, "check the path")
            raise invalid(f"{kind} {p} does not exist{rel}", fix)
        return p

    return check


_MISSING_FILE_FIX = {
    "private key": "create one with 'ssh-keygen -t ed25519' or point private_key at an existing key",
    "image archive": "create it with 'docker save IMAGE -o FILE', or remove image_archive to pull the image",
    "ssh config": "point ssh_config at an existing file, or set ssh_config: false",
}

# placeholder in a fix hint; load_inventory fills in the addresses written in the file
_ADDRESSES = "ADDRESS..."

KeyPath = Annotated[Path | None, PlainValidator(_local_path("private key", True))]
KnownHostsPath = Annotated[Path | None, PlainValidator(_local_path("known_hosts file", False))]
ArchivePath = Annotated[Path | None, PlainValidator(_local_path("image archive", True))]
SshConfigPath = Annotated[Path | None, PlainValidator(_local_path("ssh config", True))]


def _remote_path(v: Any) -> str:
    if not isinstance(v, str) or not _REMOTE_PATH.fullmatch(v) or "/../" in v + "/":
        raise invalid(
            f"{v!r} is not an absolute path on the host (letters, digits, . _ / @ + - only)",
            "write an absolute path such as /etc/docker/daemon.json",
        )
    return v


RemotePath = Annotated[str, PlainValidator(_remote_path)]


def _url(v: Any) -> str:
    parts = urlsplit(str(v)) if isinstance(v, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"{v!r} is not an http(s) URL", "write e.g. https://mirror.example.com")
    return str(v)


def _port(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        else:
            raise invalid(f"port must be a whole number, got {v!r}", "use a port between 1 and 65535")
    if not 1 <= v <= 65535:
        raise invalid(f"port {v} is out of range", "use a port between 1 and 65535")
    return int(v)


Port = Annotated[int, PlainValidator(_port)]
OptPort = Annotated[int | None, PlainValidator(_opt(_port))]


def _str_options(v: Any) -> Any:
    # Docker driver options are strings; let people write `mtu: 1450` or `encrypted: true`
    if isinstance(v, dict):
        return {
            k: (str(x).lower() if isinstance(x, bool) else str(x)) if isinstance(x, (int, float, bool)) else x
            for k, x in v.items()
        }
    return v


# ---------------------------------------------------------------------------------------------------
# models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


HostKeyPolicy = Literal["strict", "accept-new"]
# the implicit group of the key-value store's hosts
KV_GROUP = "kv_store"

# connection settings a host may override; every one of them is None when not given for the host
_CONN_FIELDS = (
    "user",
    "port",
    "private_key",
    "known_hosts",
    "host_key_policy",
    "become",
    "password",
    "key_passphrase",
    "connect_timeout",
    "retries",
    "ssh_config",
)


def _user(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", v):
        raise invalid(f"{v!r} is not a valid user name", "write a plain POSIX user name, e.g. root or ubuntu")
    return v


User = Annotated[str, PlainValidator(_user)]
OptUser = Annotated[str | None, PlainValidator(_opt(_user))]


class ConnectionSettings(_Model):
    """Defaults for every host; each can be overridden in the host's own entry."""

    user: User = "root"
    port: Port = 22
    private_key: KeyPath = None
    host_key_policy: HostKeyPolicy = "strict"  # before known_hosts: its check depends on the policy
    known_hosts: KnownHostsPath = None
    become: bool | None = None
    password: SecretStr | None = None
    key_passphrase: SecretStr | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    retries: int = Field(default=2, ge=0)
    # None: not given (use ~/.ssh/config when it exists); false or null given: do not read any
    ssh_config: SshConfigPath = None


class Host(_Model):
    address: Annotated[str, PlainValidator(_address)]
    groups: list[GroupName] = Field(default_factory=list)
    advertise_interface: Annotated[str | None, PlainValidator(_opt(_interface))] = None
    user: OptUser = None
    port: OptPort = None
    private_key: KeyPath = None
    host_key_policy: HostKeyPolicy | None = None
    known_hosts: KnownHostsPath = None
    become: bool | None = None
    password: SecretStr | None = None
    key_passphrase: SecretStr | None = None
    connect_timeout: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0)
    ssh_config: SshConfigPath = None

    @field_validator("groups", mode="after")
    @classmethod
    def _unique_groups(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class KVStore(_Model):
    backend: Literal["consul", "etcd", "zookeeper"] = "consul"
    hosts: list[HostName]
    image: str = Field(default=KV_DEFAULT_IMAGES["consul"], min_length=1)
    image_archive: ArchivePath = None
    port: Port = KV_DEFAULT_PORTS["consul"]
    publish_address: OptIPField = None
    # how the tool reaches the store for health checks: `auto` connects directly when the port answers
    # from here, else through the kv host's SSH connection; `ssh` always goes through SSH (for when the
    # store's address leads somewhere else from this machine, e.g. through a NAT or a proxy)
    check_via: Literal["auto", "ssh"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _backend_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("backend") in KV_DEFAULT_PORTS:
            backend = data["backend"]
            data = dict(data)
            data.setdefault("port", KV_DEFAULT_PORTS[backend])
            data.setdefault("image", KV_DEFAULT_IMAGES[backend])
        return data

    @field_validator("hosts", mode="after")
    @classmethod
    def _odd_unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise invalid("kv_store.hosts is empty", "name the host(s) that run the key-value store, e.g. [consul]")
        dups = sorted({h for h in v if v.count(h) > 1})
        if dups:
            raise invalid(f"host(s) listed twice: {', '.join(dups)}", "list each key-value store host once")
        if len(v) % 2 == 0:
            raise invalid(
                f"{len(v)} key-value store hosts: the store needs an odd number (1, 3, 5) to keep a quorum",
                f"add or remove one host (now: {', '.join(v)})",
            )
        return v


class DockerSettings(_Model):
    config: Literal["systemd-dropin", "daemon-json"] = "systemd-dropin"
    dropin: RemotePath = "/etc/systemd/system/docker.service.d/10-machine.conf"
    daemon_json: RemotePath = "/etc/docker/daemon.json"
    advertise_interface: Interface = "eth0"
    advertise_port: Port = 2376
    registry_mirrors: list[Annotated[str, PlainValidator(_url)]] = Field(default_factory=list)
    restart: Literal["rolling", "parallel"] = "rolling"
    overlay_mode: Literal["kv", "swarm", "auto"] = "kv"
    # the hosts that run Docker workloads (a host pattern, as in --limit); when the default group
    # `docker` does not exist, every host
    group: str = Field(default="docker", min_length=1)


class LockSettings(_Model):
    """Where `apply` takes the cluster lock (one run at a time). Default: the first kv_store host when
    the inventory has a store, else the first docker host."""

    host: HostName | None = None


# Docker's own networks: containers may use them, the tool never creates or removes them
BUILTIN_NETWORKS = ("bridge", "host", "none")
LOCAL_DRIVERS = ("bridge", "macvlan", "ipvlan")
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IPVLAN_MODES = ("l2", "l3")
# drivers the tutorial lists that cannot be had here, what became of them, and what gives the same result
THIRD_PARTY_DRIVERS = {
    "flannel": "flanneld is not packaged by any Debian release, PyPI or npm (nothing else is reachable here)",
    "weave": "Weave Net's maker, Weaveworks, closed in 2024 and its repositories are archived",
    "calico": "Calico dropped its Docker (libnetwork) plugin in v3.0 (2017)",
}
THIRD_PARTY_FIX = (
    "declare the network with a driver Docker has: overlay (VXLAN across hosts, what flannel's vxlan backend "
    "and Weave do), macvlan on a shared segment, or ipvlan mode l3 with routes where the kernel has ipvlan"
)


def _driver(v: Any) -> Any:
    if isinstance(v, str) and v.lower() in THIRD_PARTY_DRIVERS:
        raise invalid(f"driver {v}: {THIRD_PARTY_DRIVERS[v.lower()]}", THIRD_PARTY_FIX)
    return v


def _parent(v: Any) -> Any:
    """A host interface, or a VLAN sub-interface IFACE.N that Docker creates itself."""
    return None if v is None else _interface(v)


class Network(_Model):
    driver: Annotated[Literal["overlay", "bridge", "macvlan", "ipvlan"], BeforeValidator(_driver)] = "overlay"
    subnet: SubnetField
    gateway: OptIPField = None
    ip_range: OptSubnetField = None
    # macvlan/ipvlan across hosts: each host's own --ip-range slice (default: computed, see slices())
    ip_ranges: dict[HostName, SubnetField] | None = None
    attachable: bool = True
    # no way out: containers on it reach only each other (docker network create --internal)
    internal: bool = False
    options: Annotated[dict[str, str], BeforeValidator(_str_options)] = Field(default_factory=dict)
    parent: Annotated[str | None, PlainValidator(_parent)] = None
    # macvlan: bridge | private | vepa | passthru; ipvlan: l2 | l3
    mode: str | None = None
    # macvlan: give each host a macvlan interface of its own on the parent, so it reaches its containers
    shim: bool = False
    # local-scope networks (bridge, macvlan, ipvlan): the hosts that get one, a host pattern as in
    # --limit; default: docker.group
    hosts: str | list[str] | None = None

    @property
    def local(self) -> bool:
        return self.driver in LOCAL_DRIVERS

    @model_validator(mode="after")
    def _inside_subnet(self) -> Network:
        net = self.subnet
        if self.gateway is not None:
            if self.gateway.version != net.version or self.gateway not in net:
                raise invalid(
                    f"gateway {self.gateway} is outside subnet {net}",
                    f"use an address inside {net}, e.g. {next(net.hosts(), net.network_address)}",
                    at=("gateway",),
                )
            if self.gateway in (net.network_address, net.broadcast_address) and net.num_addresses > 2:
                raise invalid(
                    f"gateway {self.gateway} is the network or broadcast address of {net}",
                    f"use a host address, e.g. {next(net.hosts())}",
                    at=("gateway",),
                )
        if self.ip_range is not None and (
            self.ip_range.version != net.version or not self.ip_range.subnet_of(net)  # type: ignore[arg-type]
        ):
            raise invalid(
                f"ip_range {self.ip_range} is not inside subnet {net}", f"use a range inside {net}", at=("ip_range",)
            )
        if self.hosts is not None and self.driver == "overlay":
            raise invalid(
                "'hosts' places local-scope networks; an overlay network spans every docker host",
                "remove 'hosts' (overlay networks reach docker.group), or use driver: bridge or macvlan",
                at=("hosts",),
            )
        if self.driver in ("macvlan", "ipvlan"):
            if self.parent is None:
                raise invalid(
                    f"a {self.driver} network needs 'parent': the host interface its containers sit on",
                    "add parent: eth0 (or a VLAN sub-interface such as eth0.50, which Docker creates)",
                    at=("driver",),
                )
            modes = MACVLAN_MODES if self.driver == "macvlan" else IPVLAN_MODES
            if self.mode is not None and self.mode not in modes:
                raise invalid(
                    f"mode {self.mode!r} is not a {self.driver} mode", f"use one of {', '.join(modes)}", at=("mode",)
                )
        else:
            for key in ("parent", "mode"):
                if getattr(self, key) is not None:
                    raise invalid(
                        f"'{key}' only applies to macvlan and ipvlan networks (this one is {self.driver})",
                        f"remove '{key}', or set driver: macvlan",
                        at=(key,),
                    )
        if self.shim and self.driver != "macvlan":
            raise invalid("'shim' only applies to macvlan networks", "remove 'shim'", at=("shim",))
        if self.ip_ranges is not None:
            if self.driver not in ("macvlan", "ipvlan"):
                raise invalid(
                    "'ip_ranges' splits a macvlan/ipvlan subnet between hosts",
                    "remove 'ip_ranges' (use ip_range for one range)",
                    at=("ip_ranges",),
                )
            if self.ip_range is not None:
                raise invalid(
                    "give either ip_range or ip_ranges, not both",
                    "remove ip_range: each host gets its own slice from ip_ranges",
                    at=("ip_range",),
                )
            for host, rng in self.ip_ranges.items():
                if rng.version != net.version or not rng.subnet_of(net):  # type: ignore[arg-type]
                    raise invalid(
                        f"ip_ranges.{host}: {rng} is not inside subnet {net}",
                        f"give each host a slice inside {net}",
                        at=("ip_ranges", host),
                    )
            items = list(self.ip_ranges.items())
            for i, (host, rng) in enumerate(items):
                for other, orng in items[:i]:
                    if rng.overlaps(orng):
                        raise invalid(
                            f"ip_ranges.{host}: {rng} overlaps {orng} of {other}; both hosts' Docker would hand out "
                            "the same addresses",
                            "give each host a slice of its own",
                            at=("ip_ranges", host),
                        )
        return self


class Expectation(_Model):
    """An intended exception to the verify matrix: ``from`` reaches ``to`` (or must not)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: str = Field(alias="from")
    to: str
    reach: bool
    network: NetworkName | None = None
    why: str = ""


class VerifySettings(_Model):
    image: str = Field(default="busybox", min_length=1)
    # an address outside the container networks that containers on a non-internal network must reach
    # (NAT out); on the lab, a lab address
    outside: OptIPField = None
    expect: list[Expectation] = Field(default_factory=list)
    image_archive: ArchivePath = None
    ping_count: int = Field(default=3, ge=1)
    timeout: float = Field(default=10.0, gt=0)
    retries: int = Field(default=3, ge=0)
    # when `apply` runs the ping matrix: always, only when the run changed something, or never
    # (`provisioner verify` always runs it)
    on_apply: Literal["always", "on-change", "never"] = "on-change"


class ResolvedConnection(_Model):
    """Everything needed to open an SSH connection to one host."""

    host: str
    address: str
    port: int
    user: str
    private_key: Path | None
    known_hosts: Path | None
    host_key_policy: HostKeyPolicy
    become: bool
    password: SecretStr | None = None
    key_passphrase: SecretStr | None = None
    connect_timeout: float = 10.0
    retries: int = 2
    ssh_config: Path | None = None
    # fields the inventory sets itself (on the host or in `connection`); the others may come from
    # ~/.ssh/config (User, Port, IdentityFile) before falling back to the defaults above
    explicit: frozenset[str] = frozenset()


class Inventory(_Model):
    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)
    hosts: dict[HostName, Host]
    # required only when an overlay network runs in kv mode (Docker's cluster store)
    kv_store: KVStore | None = None
    docker: DockerSettings = Field(default_factory=DockerSettings)
    lock: LockSettings = Field(default_factory=LockSettings)
    networks: dict[NetworkName, Network] = Field(default_factory=dict)
    containers: dict[ContainerName, Container] = Field(default_factory=dict)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this inventory was loaded from (None when built in code)."""
        return self._source

    @model_validator(mode="after")
    def _remember_source(self, info: ValidationInfo) -> Inventory:
        src = (info.context or {}).get("source")
        if src is not None:
            self._source = Path(src)
        return self

    @field_validator("hosts", mode="after")
    @classmethod
    def _hosts(cls, hosts: dict[str, Host]) -> dict[str, Host]:
        if not hosts:
            raise invalid("no hosts defined", "add at least one host, e.g. 'host1: {address: 192.168.115.21}'")
        problems: list[tuple[tuple[str, ...], str, str]] = []
        seen: dict[str, str] = {}
        for name, host in hosts.items():
            if name == "all":
                problems.append(((name,), "'all' is reserved for the group of every host", "rename the host"))
            key = host.address.lower().rstrip(".")
            if key in seen:
                problems.append(
                    (
                        (name, "address"),
                        f"address {host.address} is also used by host '{seen[key]}'",
                        "give each host its own address (one inventory entry per machine)",
                    )
                )
            else:
                seen[key] = name
        if problems:
            raise many_invalid(problems)
        return hosts

    @field_validator("networks", mode="after")
    @classmethod
    def _no_overlap(cls, networks: dict[str, Network]) -> dict[str, Network]:
        problems = []
        items = list(networks.items())
        for i, (name, net) in enumerate(items):
            for other, onet in items[:i]:
                if net.subnet.version == onet.subnet.version and net.subnet.overlaps(onet.subnet):
                    problems.append(
                        (
                            (name, "subnet"),
                            f"subnet {net.subnet} of network '{name}' overlaps {onet.subnet} of network '{other}'",
                            "give each network its own, non-overlapping subnet",
                        )
                    )
        if problems:
            raise many_invalid(problems)
        return networks

    @model_validator(mode="after")
    def _cross_checks(self) -> Inventory:
        problems: list[tuple[tuple[str, ...], str, str]] = []
        known = list(self.hosts)
        store_hosts = self.kv_store.hosts if self.kv_store is not None else []
        for i, name in enumerate(store_hosts):
            if name not in self.hosts:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                problems.append(
                    (
                        ("kv_store", "hosts", str(i)),
                        f"unknown host '{name}'",
                        f"{hint}kv_store.hosts must name hosts defined under 'hosts' ({', '.join(known)})",
                    )
                )
        if self.kv_store is not None and self.kv_store.publish_address is not None and len(store_hosts) > 1:
            problems.append(
                (
                    ("kv_store", "publish_address"),
                    "publish_address can only be used with a single key-value store host",
                    "remove publish_address; each store host is published on its own address",
                )
            )
        problems.extend(self._mode_problems())
        problems.extend(self._placement_problems())
        if not problems:  # these rely on hosts and networks being sound
            problems.extend(self._network_problems())
            problems.extend(self._container_problems())
        groups = {g for h in self.hosts.values() for g in h.groups}
        for name, host in self.hosts.items():
            if KV_GROUP in host.groups:
                problems.append(
                    (
                        (("hosts", name, "groups")),
                        f"'{KV_GROUP}' is the implicit group of kv_store.hosts",
                        f"remove '{KV_GROUP}' from the host's groups and list the host in kv_store.hosts",
                    )
                )
            if name == KV_GROUP:
                problems.append(
                    (("hosts", name), f"'{KV_GROUP}' is reserved for the group of kv_store.hosts", "rename the host")
                )
        for name in self.hosts:
            if name in groups:
                problems.append(
                    (
                        ("hosts", name),
                        f"'{name}' is both a host and a group name",
                        "rename the host or the group so host patterns are unambiguous",
                    )
                )
        missing_kh: dict[tuple[tuple[str, ...], Path], list[str]] = {}
        for name, host in self.hosts.items():
            policy = host.host_key_policy or self.connection.host_key_policy
            kh = host.known_hosts or self.connection.known_hosts
            if policy == "strict" and kh is not None and not kh.is_file():
                where: tuple[str, ...] = (
                    ("hosts", name, "known_hosts") if host.known_hosts else ("connection", "known_hosts")
                )
                missing_kh.setdefault((where, kh), []).append(host.address)
        for (where, kh), addresses in missing_kh.items():
            problems.append(
                (
                    where,
                    f"known_hosts file {kh} does not exist and host_key_policy is strict",
                    f"record the host keys first (ssh-keyscan -H {' '.join(addresses)} >> {kh}) "
                    "or set host_key_policy: accept-new",
                )
            )
        if problems:
            raise many_invalid(problems)
        return self

    def _network_problems(self) -> list[tuple[tuple[str, ...], str, str]]:
        out: list[tuple[tuple[str, ...], str, str]] = []
        parents: dict[tuple[str, str], str] = {}
        for name, net in self.networks.items():
            if name in BUILTIN_NETWORKS:
                out.append(
                    (
                        ("networks", name),
                        f"'{name}' is Docker's own network: containers can use it without declaring it, and the "
                        "tool never creates or removes it",
                        f"remove networks.{name} (containers may still list {name}), or give your network another name",
                    )
                )
                continue
            if not net.local:
                continue
            where = self.network_hosts(name)
            for host in (net.ip_ranges or {}):
                if host not in where:
                    out.append(
                        (
                            ("networks", name, "ip_ranges", host),
                            f"{host} does not get network {name} (its hosts: {', '.join(where)})",
                            "give slices only to the network's hosts",
                        )
                    )
            if net.parent is not None:
                for host in where:
                    key = (host, net.parent)
                    if key in parents:
                        out.append(
                            (
                                ("networks", name, "parent"),
                                f"{parents[key]} and {name} both sit on {net.parent} of {host}; Docker allows one "
                                "macvlan/ipvlan network per parent interface",
                                f"put {name} on a VLAN sub-interface, e.g. parent: {net.parent}.50 (Docker creates it)",
                            )
                        )
                        break
                    parents[key] = name
            if net.driver in ("macvlan", "ipvlan"):
                slices = self.slices(name)
                if net.gateway is not None:
                    for host, rng in slices.items():
                        if net.gateway in rng:
                            out.append(
                                (
                                    ("networks", name, "gateway"),
                                    f"gateway {net.gateway} lies in {host}'s address slice {rng}",
                                    "move the gateway out of the slices, or give ip_ranges that leave it out",
                                )
                            )
        return out

    def _container_problems(self) -> list[tuple[tuple[str, ...], str, str]]:
        out: list[tuple[tuple[str, ...], str, str]] = []
        static: dict[tuple[str, str, str], str] = {}  # (scope, network, address) -> container
        ports: dict[str, list[tuple[tuple[str, int | None, str], str]]] = {}
        for name, c in self.containers.items():
            if c.host not in self.hosts:
                close = difflib.get_close_matches(c.host, list(self.hosts), n=1)
                out.append(
                    (
                        ("containers", name, "host"),
                        f"unknown host '{c.host}'",
                        (f"did you mean '{close[0]}'? " if close else "")
                        + f"name a host defined under 'hosts' ({', '.join(self.hosts)})",
                    )
                )
                continue
            for net_name, attach in c.networks.items():
                where = ("containers", name, "networks", net_name)
                if net_name in ("host", "none"):
                    out.append((where, f"'{net_name}' is a network mode", f"write network_mode: {net_name}"))
                    continue
                if net_name == "bridge":
                    if attach.ipv4_address is not None:
                        out.append(
                            (where, "Docker's default bridge takes no static address", "remove ipv4_address")
                        )
                    continue
                net = self.networks.get(net_name)
                if net is None:
                    close = difflib.get_close_matches(net_name, [*self.networks, *BUILTIN_NETWORKS], n=1)
                    out.append(
                        (
                            where,
                            f"unknown network '{net_name}'",
                            (f"did you mean '{close[0]}'? " if close else "")
                            + "declare it under 'networks:' (or use Docker's own 'bridge')",
                        )
                    )
                    continue
                if net.local and c.host not in self.network_hosts(net_name):
                    out.append(
                        (
                            where,
                            f"network {net_name} is not on {c.host} "
                            f"(its hosts: {', '.join(self.network_hosts(net_name))})",
                            f"add {c.host} to networks.{net_name}.hosts, or run the container on one of those hosts",
                        )
                    )
                    continue
                addr = attach.ipv4_address
                if addr is None:
                    continue
                if addr not in net.subnet:
                    out.append(
                        (
                            (*where, "ipv4_address"),
                            f"{addr} is outside {net_name}'s subnet {net.subnet}",
                            f"use an address inside {net.subnet}",
                        )
                    )
                    continue
                if net.gateway is not None and addr == net.gateway:
                    out.append(((*where, "ipv4_address"), f"{addr} is {net_name}'s gateway", "use another address"))
                    continue
                if net.driver in ("macvlan", "ipvlan"):
                    other = next((h for h, r in self.slices(net_name).items() if addr in r and h != c.host), None)
                    if other is not None:
                        out.append(
                            (
                                (*where, "ipv4_address"),
                                f"{addr} lies in {other}'s address slice of {net_name}, where {other}'s Docker "
                                "hands out addresses on its own",
                                f"use an address of {c.host}'s slice ({self.slices(net_name).get(c.host)}) or outside "
                                "every slice",
                            )
                        )
                        continue
                # a bridge is one network per host; overlay and macvlan segments span hosts
                scope = c.host if net.driver == "bridge" else "*"
                key = (scope, net_name, str(addr))
                if key in static:
                    out.append(
                        (
                            (*where, "ipv4_address"),
                            f"{addr} on {net_name} is also given to container {static[key]}",
                            "give each container its own address",
                        )
                    )
                static[key] = name
            for i, p in enumerate(c.ports):
                if p.host_port is None:
                    continue
                for bound, text in ports.get(c.host, []):
                    if port_clash(bound, p.key):
                        out.append(
                            (
                                ("containers", name, "ports", str(i)),
                                f"host port {p.host_port}/{p.proto} on {c.host} is already published by {text}",
                                "publish each host port once per host",
                            )
                        )
                        break
                ports.setdefault(c.host, []).append((p.key, f"{name} ({p.text})"))
        return out

    def _placement_problems(self) -> list[tuple[tuple[str, ...], str, str]]:
        """The lock host and the docker group must name what the inventory has."""
        out: list[tuple[tuple[str, ...], str, str]] = []
        if self.lock.host is not None and self.lock.host not in self.hosts:
            close = difflib.get_close_matches(self.lock.host, list(self.hosts), n=1)
            out.append(
                (
                    ("lock", "host"),
                    f"unknown host '{self.lock.host}'",
                    (f"did you mean '{close[0]}'? " if close else "")
                    + f"lock.host must name a host defined under 'hosts' ({', '.join(self.hosts)})",
                )
            )
        for name, net in self.networks.items():
            if net.hosts is None:
                continue
            try:
                found = self.resolve_pattern(net.hosts)
            except ValueError as e:
                out.append((("networks", name, "hosts"), str(e), "name hosts or groups of this inventory"))
                continue
            if not found:
                out.append((("networks", name, "hosts"), "matches no host", "name the hosts that get this network"))
        if "group" in self.docker.model_fields_set:
            try:
                found = self.resolve_pattern(self.docker.group)
            except ValueError as e:
                out.append((("docker", "group"), str(e), "name a group (or host pattern) of this inventory"))
            else:
                if not found:
                    out.append(
                        (
                            ("docker", "group"),
                            f"'{self.docker.group}' matches no host",
                            "name the group of the hosts that run Docker workloads, e.g. docker",
                        )
                    )
        return out

    def _mode_problems(self) -> list[tuple[tuple[str, ...], str, str]]:
        """Overlay mode / store combinations that can never work, whatever the hosts run."""
        out: list[tuple[tuple[str, ...], str, str]] = []
        mode = self.docker.overlay_mode
        if self.kv_store is None:
            if mode == "kv":
                for name, net in self.networks.items():
                    if net.driver == "overlay":
                        out.append(
                            (
                                ("networks", name, "driver"),
                                f"overlay network {name} in kv mode (docker.overlay_mode: kv, the default) needs "
                                "Docker's cluster store, and the inventory has no kv_store section",
                                "add kv_store: {backend: etcd, hosts: [HOST]} (consul on Docker 20.10 hosts that "
                                "have it), or set docker.overlay_mode: swarm (or auto) for swarm-scope overlays",
                            )
                        )
            return out
        if self.kv_store.backend == "zookeeper" and mode != "swarm":
            out.append(
                (
                    ("kv_store", "backend"),
                    "zookeeper cannot be Docker's cluster store: dockerd (20.10.5 and 20.10.24) panics in "
                    "libnetwork (endpointCnt.Key, nil pointer) as soon as a container joins the overlay network",
                    "set kv_store.backend: etcd (or consul on engines that have it), or docker.overlay_mode: swarm",
                )
            )
        if mode == "swarm":
            for name, net in self.networks.items():
                if net.driver == "overlay" and not net.attachable:
                    out.append(
                        (
                            ("networks", name, "attachable"),
                            f"overlay network {name} is not attachable, so in swarm mode only swarm services could "
                            "use it: plain containers (and the ping matrix probes) cannot join",
                            "remove 'attachable: false' (swarm overlays are created with --attachable)",
                        )
                    )
        return out

    # --- queries ----------------------------------------------------------------------------------

    def groups(self) -> dict[str, list[str]]:
        """Group name -> host names in inventory order; always includes "all" and "kv_store" (the
        hosts of kv_store.hosts, so playbooks follow the store wherever the inventory puts it)."""
        out: dict[str, list[str]] = {"all": list(self.hosts)}
        store = self.kv_store.hosts if self.kv_store is not None else []
        out[KV_GROUP] = [h for h in self.hosts if h in store]
        for name, host in self.hosts.items():
            for g in host.groups:
                if g not in ("all", KV_GROUP):
                    out.setdefault(g, []).append(name)
        return out

    def resolve_pattern(self, pattern: str | list[str]) -> list[str]:
        """Host names matched by ``pattern``, in inventory order.

        Items are host names, group names, "all" or shell-style globs (``web*``); a list or a
        comma-separated string unions them, ``!item`` removes. Only exclusions means "all except".
        Raises ValueError naming an unknown host or group.
        """
        items = pattern if isinstance(pattern, list) else [pattern]
        parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
        if not parts:
            raise ValueError("empty host pattern; use 'all', a group name or host names")
        groups = self.groups()
        include: set[str] = set()
        exclude: set[str] = set()
        only_exclusions = all(p.startswith("!") for p in parts)
        for part in parts:
            negate = part.startswith("!")
            name = part[1:].strip() if negate else part
            (exclude if negate else include).update(self._match(name, groups))
        if only_exclusions:
            include = set(self.hosts)
        return [h for h in self.hosts if h in include and h not in exclude]

    def _match(self, name: str, groups: dict[str, list[str]]) -> list[str]:
        if name in self.hosts:
            return [name]
        if name in groups:
            return groups[name]
        if any(c in name for c in "*?["):
            hosts = [h for h in self.hosts if fnmatch.fnmatchcase(h, name)]
            for g, members in groups.items():
                if fnmatch.fnmatchcase(g, name):
                    hosts.extend(members)
            return hosts
        names = [*self.hosts, *groups]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"'{name}' is neither a host nor a group{hint} "
            f"(hosts: {', '.join(self.hosts)}; groups: {', '.join(groups)})"
        )

    def _host(self, host: str) -> Host:
        try:
            return self.hosts[host]
        except KeyError:
            raise ValueError(f"unknown host '{host}' (hosts: {', '.join(self.hosts)})") from None

    def address_of(self, host: str) -> str:
        return self._host(host).address

    def advertise_interface(self, host: str) -> str:
        return self._host(host).advertise_interface or self.docker.advertise_interface

    def connection_for(self, host: str) -> ResolvedConnection:
        """Connection defaults merged with the host's own overrides."""
        h = self._host(host)
        c = self.connection
        merged: dict[str, Any] = {}
        for name in _CONN_FIELDS:
            merged[name] = getattr(h, name) if name in h.model_fields_set else getattr(c, name)
        if "ssh_config" not in h.model_fields_set and "ssh_config" not in c.model_fields_set:
            default = Path("~/.ssh/config").expanduser()
            merged["ssh_config"] = default if default.is_file() else None
        for name in ("user", "port", "host_key_policy", "connect_timeout", "retries"):
            if merged[name] is None:  # host wrote `key: null`: fall back to the default
                merged[name] = getattr(c, name)
        explicit = frozenset((h.model_fields_set | c.model_fields_set) & set(_CONN_FIELDS))
        if merged["become"] is None:
            merged["become"] = merged["user"] != "root"
        return ResolvedConnection(host=host, address=h.address, explicit=explicit, **merged)

    def store(self) -> KVStore:
        """The kv_store section, for code that runs only when the overlay uses Docker's cluster store."""
        if self.kv_store is None:
            from provisioner.errors import TaskError

            raise TaskError(
                "this needs Docker's cluster store (kv mode), and the inventory has no kv_store section",
                fix="add kv_store: {backend: etcd, hosts: [HOST]}, or set docker.overlay_mode: swarm (or auto)",
            )
        return self.kv_store

    def docker_hosts(self) -> list[str]:
        """The hosts that run Docker workloads: ``docker.group`` (every host when the default group
        `docker` does not exist)."""
        try:
            return self.resolve_pattern(self.docker.group) or list(self.hosts)
        except ValueError:
            return list(self.hosts)

    def network_hosts(self, name: str) -> list[str]:
        """Where a network exists: an overlay on every docker host, a local network on its ``hosts``."""
        net = self.networks[name]
        if not net.local or net.hosts is None:
            return self.docker_hosts()
        try:
            return self.resolve_pattern(net.hosts)
        except ValueError:
            return []

    def slices(self, name: str) -> dict[str, IPNetwork]:
        """Each host's --ip-range of a macvlan/ipvlan network, so hosts sharing a segment never hand out
        one address twice: ``ip_ranges`` when given; else the subnet cut into equal slices (at least 8,
        more as hosts need), slice 0 left for the gateway, static addresses and shims, and host i of
        the network's hosts (inventory order) taking slice i + 1. A host added at the end takes a new
        slice and moves nobody's (once made, a slice is also read back from the host's network)."""
        net = self.networks[name]
        if net.ip_ranges is not None:
            return {h: ipaddress.ip_network(str(r)) for h, r in net.ip_ranges.items()}
        hosts = self.network_hosts(name)
        count = 8
        while count < len(hosts) + 1:
            count *= 2
        extra = max(0, (count - 1).bit_length())
        if net.subnet.prefixlen + extra > net.subnet.max_prefixlen - 2:
            return {}  # too small to split: every host shares it (validation of containers still applies)
        cuts: list[IPNetwork] = [ipaddress.ip_network(str(c)) for c in net.subnet.subnets(prefixlen_diff=extra)]
        return {h: cuts[i + 1] for i, h in enumerate(hosts)}

    def lock_host(self) -> str:
        """Where the cluster lock lives: lock.host, else the first store host, else the first docker host."""
        if self.lock.host is not None:
            return self.lock.host
        if self.kv_store is not None:
            return self.kv_store.hosts[0]
        return self.docker_hosts()[0]

    def kv_endpoints(self) -> list[tuple[str, str, int]]:
        """(host name, address, port) of every key-value store host (none without a store)."""
        kv = self.kv_store
        if kv is None:
            return []
        out = []
        for name in kv.hosts:
            addr = str(kv.publish_address) if kv.publish_address is not None else self.address_of(name)
            out.append((name, addr, kv.port))
        return out


# ---------------------------------------------------------------------------------------------------
# loading


def load_inventory(path: Path | str) -> Inventory:
    """Load and validate an inventory file; raises InputError with every problem found."""
    doc = load_yaml(path, "inventory")
    require_type(doc, dict, "inventory", "a mapping with 'connection:', 'hosts:', 'kv_store:', ... at the top level")
    context = {"base_dir": doc.path.resolve().parent, "source": doc.path}
    try:
        return Inventory.model_validate(doc.data, context=context)
    except ValidationError as exc:
        problems = problems_from_validation(doc, exc, Inventory)
        hosts = doc.data.get("hosts")
        addresses = (
            [str(h["address"]) for h in hosts.values() if isinstance(h, dict) and "address" in h]
            if isinstance(hosts, dict)
            else []
        )
        if addresses:
            problems = [replace(p, fix=p.fix.replace(_ADDRESSES, " ".join(addresses))) for p in problems]
        raise InputError(problems) from exc
