"""The typed host facts modules plan from. Every field has a default: a section that was not gathered,
or whose tool is missing on the host, leaves its fields at their defaults."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
    internal: bool = False  # --internal: no way out
    options: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    containers: list[str] = Field(default_factory=list)  # names of attached containers (this host)


class LinkKind(BaseModel):
    """Whether the kernel can create a link type (section ``link_kinds``): None when it could not be told."""

    supported: bool | None = None
    error: str = ""  # what `ip link add` said when it failed


class MacvlanLink(BaseModel):
    """A macvlan interface of the host itself (section ``macvlan_links``), e.g. a shim."""

    name: str
    parent: str = ""
    mode: str = ""  # bridge | private | vepa | passthru | source
    up: bool = False
    cidrs: list[str] = Field(default_factory=list)  # IPv4 addresses with prefix length


class Route(BaseModel):
    """An IPv4 route of the main table (section ``macvlan_links``)."""

    dst: str  # "default" or a CIDR ("198.18.86.32/27")
    dev: str = ""
    gateway: str = ""


class ContainerAddress(BaseModel):
    """A container's endpoint on one network (section ``addresses``)."""

    network_id: str = ""
    ipv4: str = ""  # without prefix length
    ipv4_prefix: int | None = None
    gateway: str = ""
    ipv6: str = ""
    ipv6_prefix: int | None = None
    gateway6: str = ""
    mac: str = ""
    aliases: list[str] = Field(default_factory=list)
    dns_names: list[str] = Field(default_factory=list)  # Docker 26+
    # the addresses asked for with --ip/--ip6 (IPAMConfig); empty when Docker chose them
    requested_ipv4: str = ""
    requested_ipv6: str = ""


class PublishedPort(BaseModel):
    """One host binding of a published container port (section ``ports``)."""

    container_port: int
    proto: str = "tcp"
    host_ip: str = ""  # "" or "0.0.0.0"/"::": every address
    host_port: int | None = None  # None: an ephemeral port not yet chosen (container not running)


class ContainerMount(BaseModel):
    """A container's mount (section ``container_config``): a bind, a named or anonymous volume, a tmpfs."""

    type: str = ""  # bind | volume | tmpfs
    name: str = ""  # the volume's name (anonymous volumes get a generated one)
    source: str = ""
    destination: str = ""
    rw: bool = True


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
    addresses: dict[str, ContainerAddress] = Field(default_factory=dict)  # network name -> endpoint
    ports: list[PublishedPort] = Field(default_factory=list)
    # section ``container_config``: what the container was created with (``docker inspect``)
    cmd: list[str] = Field(default_factory=list)  # Config.Cmd: the arguments after the image
    entrypoint: list[str] = Field(default_factory=list)
    # env name -> digest of its value (facts.containers.env_digest): values never appear in the facts
    env_digests: dict[str, str] = Field(default_factory=dict)
    restart_max_retries: int = 0  # HostConfig.RestartPolicy.MaximumRetryCount
    network_mode: str = ""  # HostConfig.NetworkMode: default | bridge | NETWORK | none | host | container:ID
    port_bindings: list[PublishedPort] = Field(default_factory=list)  # as requested (-p), running or not
    binds: list[str] = Field(default_factory=list)  # HostConfig.Binds: -v SRC:DST[:OPTS] as given
    volumes: list[str] = Field(default_factory=list)  # Config.Volumes: anonymous volumes (and the image's)
    mounts: list[ContainerMount] = Field(default_factory=list)


class Masquerade(BaseModel):
    """A nat POSTROUTING MASQUERADE rule (what Docker adds per bridge: ``-s SUBNET ! -o BRIDGE``)."""

    source: str = ""
    not_out: str = ""  # the interface after ``! -o`` (the network's own bridge)
    rule: str = ""  # the rule as iptables-save prints it


class DockerFirewall(BaseModel):
    """The engine's packet filtering (section ``firewall``): its settings as the running dockerd has them
    (command line over daemon.json over Docker's defaults; None while no dockerd runs) and the chains and
    NAT rules present in the kernel's tables."""

    dockerd_running: bool = False
    argv: list[str] = Field(default_factory=list)  # the running dockerd's command line
    config_file: str = ""  # the daemon.json it reads
    iptables: bool | None = None
    ip_forward: bool | None = None
    userland_proxy: bool | None = None
    kernel_ip_forward: bool | None = None  # net.ipv4.ip_forward
    rules_read: bool = False  # iptables-save ran and printed the filter table
    filter_chains: list[str] = Field(default_factory=list)  # chains named DOCKER* in the filter table
    nat_chains: list[str] = Field(default_factory=list)  # chains named DOCKER* in the nat table
    forward_policy: str = ""  # the filter FORWARD chain's policy (ACCEPT, DROP)
    masquerade: list[Masquerade] = Field(default_factory=list)

    def has_chain(self, name: str) -> bool:
        return name in self.filter_chains or name in self.nat_chains

    @property
    def isolation_chains(self) -> bool:
        """Bridge-to-bridge isolation as 20.10-28 do it (29 removed the chains)."""
        return "DOCKER-ISOLATION-STAGE-1" in self.filter_chains


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
    # section ``engine``: more of `docker info`
    driver: str = ""  # storage driver
    cgroup_driver: str = ""
    cgroup_version: str = ""
    kernel_version: str = ""
    operating_system: str = ""
    architecture: str = ""
    security_options: list[str] = Field(default_factory=list)  # e.g. "name=seccomp,profile=builtin"
    warnings: list[str] = Field(default_factory=list)
    default_address_pools: list[dict[str, str]] = Field(default_factory=list)  # {"Base": ..., "Size": ...}
    ipv4_forwarding: bool | None = None
    bridge_nf_iptables: bool | None = None
    # section ``firewall``
    firewall: DockerFirewall = Field(default_factory=DockerFirewall)

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
    # sections ``link_kinds`` and ``macvlan_links``: link type -> can the kernel make it; the host's own
    # macvlan interfaces by name; its IPv4 routes
    link_kinds: dict[str, LinkKind] = Field(default_factory=dict)
    macvlan_links: dict[str, MacvlanLink] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    sections: list[str] = Field(default_factory=list)  # the sections gathered (an empty fact vs not asked)

    def gathered(self, section: str) -> bool:
        return section in self.sections

    def file(self, path: str) -> FileFact:
        return self.files.get(path, FileFact(exists=False))

    def address_of(self, interface: str) -> str | None:
        iface = self.interfaces.get(interface)
        if iface is None:
            return None
        v4 = [a for a in iface.addresses if ":" not in a]
        found = v4 or iface.addresses
        return found[0] if found else None
