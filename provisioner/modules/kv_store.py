"""``kv_store``: the key-value store Docker's cluster store points at, run as a container on the kv hosts.

The backend table (``BACKENDS``) says, per store, how its container is run (single node or quorum),
how its health is checked and which URL scheme dockerd's ``--cluster-store`` uses. The container
carries a spec label (hash of image id + arguments): a running container with the same spec is left
alone, a different one is recreated, and the plan says what changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from provisioner.connection.base import ShellConnection, q
from provisioner.errors import ProvisionerError, TaskError
from provisioner.inventory import Inventory
from provisioner.modules._docker import (
    LABEL_ARGS,
    LABEL_IMAGE,
    LABEL_SPEC,
    StoreClient,
    archive_info,
    args_hash,
    http_get,
    kv_endpoint_of,
    normalize_ref,
    shell_get_command,
    short_id,
    spec_hash,
    wait_for,
)
from provisioner.modules.base import ApplyContext, Change, Module, ModuleArgs, NoOp, Plan, PlanContext, register
from provisioner.modules.capabilities import SWARM_ALTERNATIVE, ZOOKEEPER_REASON, overlay_mode
from provisioner.steps import Call, Run, Step

# how long a (re)created store may take to answer healthy (leader elected)
HEALTH_TIMEOUT = 90.0


@dataclass(frozen=True)
class StoreNode:
    """One store host as its container sees it."""

    name: str  # inventory host name
    address: str  # address the store is published/advertised on
    port: int  # client port, as published
    peers: tuple[str, ...]  # addresses of the other store hosts
    size: int  # number of store hosts


@dataclass(frozen=True)
class Backend:
    name: str
    container: str  # container name, as in the classic recipe
    scheme: str  # dockerd --cluster-store URL scheme
    all_endpoints: bool  # the cluster-store URL lists every store host (else only the first)
    # docker run options (before the image) and the arguments after the image
    run_args: Callable[[StoreNode], tuple[list[str], list[str]]]
    health_path: str
    healthy: Callable[[str], bool]  # body of GET health_path -> healthy?
    what_healthy: str  # for messages: "a leader is elected"


def _consul_args(n: StoreNode) -> tuple[list[str], list[str]]:
    # `agent ...` suits both the official image (its entrypoint prefixes `consul` for `agent`) and an image
    # whose entrypoint is the consul binary; -data-dir is given explicitly because the latter has no default.
    common = ["agent", "-server", "-data-dir=/consul/data"]
    if n.size == 1:
        return (
            ["-p", f"{n.address}:{n.port}:8500", "-h", "consul"],
            [*common, "-bootstrap", "-client=0.0.0.0"],
        )
    # a quorum talks serf/raft between hosts: host networking, bound and advertised on the host's address
    return (
        ["--network", "host"],
        [
            *common,
            f"-bootstrap-expect={n.size}",
            f"-node={n.name}",
            f"-bind={n.address}",
            f"-advertise={n.address}",
            f"-client={n.address}",
            f"-http-port={n.port}",
            *[f"-retry-join={p}" for p in n.peers],
        ],
    )


def _consul_healthy(body: str) -> bool:
    try:
        leader = json.loads(body)
    except json.JSONDecodeError:
        return False
    return isinstance(leader, str) and bool(leader)


def _etcd_args(n: StoreNode) -> tuple[list[str], list[str]]:
    # dockerd talks etcd's v2 API: etcd 3.4+ needs it enabled. The entrypoint is named because images
    # differ: the official one has none, an image built from Debian's etcd-server has etcd itself.
    cmd = [f"--name={n.name}", "--data-dir=/etcd-data", "--enable-v2=true"]
    if n.size == 1:
        return (
            ["--entrypoint", "etcd", "-p", f"{n.address}:{n.port}:2379", "-h", "etcd"],
            [*cmd, "--listen-client-urls=http://0.0.0.0:2379", f"--advertise-client-urls=http://{n.address}:{n.port}"],
        )
    cluster = ",".join(f"{name}=http://{addr}:2380" for name, addr in _etcd_members(n))
    return (
        ["--entrypoint", "etcd", "--network", "host"],
        [
            *cmd,
            f"--listen-client-urls=http://{n.address}:{n.port}",
            f"--advertise-client-urls=http://{n.address}:{n.port}",
            f"--listen-peer-urls=http://{n.address}:2380",
            f"--initial-advertise-peer-urls=http://{n.address}:2380",
            f"--initial-cluster={cluster}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=provisioner",
        ],
    )


def _etcd_members(n: StoreNode) -> list[tuple[str, str]]:
    # peers are named by their address: the store only needs unique, stable names
    return sorted([(n.name, n.address), *((p, p) for p in n.peers)], key=lambda m: m[1])


def _etcd_healthy(body: str) -> bool:
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:
        return False
    return isinstance(doc, dict) and str(doc.get("health")).lower() == "true"


BACKENDS: dict[str, Backend] = {
    "consul": Backend(
        "consul", "consul", "consul", False, _consul_args, "/v1/status/leader", _consul_healthy, "a leader is elected"
    ),
    "etcd": Backend("etcd", "etcd", "etcd", True, _etcd_args, "/health", _etcd_healthy, "etcd reports healthy"),
}


def backend_of(inventory: Inventory) -> Backend:
    name = inventory.store().backend
    if name == "zookeeper":
        raise TaskError(ZOOKEEPER_REASON, fix=f"set kv_store.backend: etcd, or {SWARM_ALTERNATIVE}")
    if name not in BACKENDS:
        raise TaskError(
            f"kv_store.backend {name} is not supported by this version of provisioner (supported: "
            f"{', '.join(BACKENDS)})",
            fix="set kv_store.backend: consul or etcd",
        )
    return BACKENDS[name]


def cluster_store_url(inventory: Inventory) -> str:
    """What dockerd's --cluster-store must say, e.g. consul://198.18.0.11:8500."""
    b = backend_of(inventory)
    eps = [f"{addr}:{port}" for _, addr, port in inventory.kv_endpoints()]
    return f"{b.scheme}://{','.join(eps if b.all_endpoints else eps[:1])}"


def store_node(inventory: Inventory, host: str) -> StoreNode:
    address, port = kv_endpoint_of(inventory, host)
    others = tuple(addr for name, addr, _ in inventory.kv_endpoints() if name != host)
    return StoreNode(host, address, port, others, len(inventory.store().hosts))


def check_health(conn: Callable[[], ShellConnection], inventory: Inventory, host: str) -> str | None:
    """One health check of the store on ``host``: None when healthy, else why not (one line).

    ``conn`` gives the connection to ``host``; it is used only when the store's port is not reachable
    from here (for a forwarded port, or curl on the host)."""
    b = backend_of(inventory)
    address, port = kv_endpoint_of(inventory, host)
    client = StoreClient(conn, address, port, direct=inventory.store().check_via == "auto")
    with client.endpoint() as ep:
        if ep is None:
            body = client.get_via_shell(b.health_path)
        elif b.name == "consul":
            return _consul_leader(ep[0], ep[1])
        else:
            body = http_get(ep[0], ep[1], b.health_path)
    if body is None:
        return f"no answer from {address}:{port}{b.health_path}"
    return None if b.healthy(body) else f"not healthy yet ({b.health_path} says {body.strip()[:80]!r})"


def health_route(host: str, address: str, port: int, path: str) -> str:
    """How a health check reaches a store host, as a plan prints it: an HTTP GET from this machine, or,
    when the store's port is not reachable from here, this command on the store host."""
    return (
        f"GET http://{address}:{port}{path} from here, or when that port cannot be reached from here, "
        f"on {host}: {shell_get_command(address, port, path)}"
    )


def quorum_down(ctx: ApplyContext) -> list[str] | None:
    """None while a majority of the store hosts is healthy; else, per unhealthy host, why not.

    Each store host is checked over the run's own connection to it (ctx.connection_to)."""
    inv = ctx.inventory
    down: list[str] = []
    for host in inv.store().hosts:

        def conn(h: str = host) -> ShellConnection:
            return ctx.conn if h == ctx.host or ctx.connection_to is None else ctx.connection_to(h)

        try:
            why = check_health(conn, inv, host)
        except ProvisionerError as e:
            why = str(e).splitlines()[0]
        if why is not None:
            down.append(f"{host}: {why}")
    return None if (len(inv.store().hosts) - len(down)) * 2 > len(inv.store().hosts) else down


def _consul_leader(host: str, port: int) -> str | None:
    import consul  # lazily: only runs that talk to Consul pay for the import

    try:
        leader = consul.Consul(host=host, port=port, connections_timeout=3).status.leader()
    except Exception as e:  # requests/consul errors: the store is not answering (yet)
        return f"Consul at {host}:{port} does not answer: {type(e).__name__}: {str(e)[:160]}"
    return None if leader else "Consul answers but has no leader yet"


class KVStoreArgs(ModuleArgs):
    """No arguments: everything comes from the inventory's kv_store section."""


@register
class KVStoreModule(Module[KVStoreArgs]):
    name = "kv_store"
    Args = KVStoreArgs
    summary = "run the key-value store (Consul, etcd) container on kv_store.hosts; wait until healthy"

    def describe(self, args: KVStoreArgs) -> str:
        return "kv_store"

    def plan(self, ctx: PlanContext, args: KVStoreArgs) -> Plan:
        inv = ctx.inventory
        if inv.kv_store is None:
            return NoOp("the inventory has no kv_store: no key-value store deployed (nor removed)")
        kv = inv.kv_store
        choice = overlay_mode(inv, {**ctx.all_facts, ctx.host: ctx.facts})
        if choice.mode == "swarm":
            return NoOp(f"{choice.label()}: swarm needs no key-value store; nothing deployed or removed")
        b = backend_of(inv)
        node = store_node(inv, ctx.host)
        d = ctx.facts.docker
        if not d.active:
            raise TaskError(
                f"{ctx.host}: Docker is not running ({d.state}); the {b.name} store runs as a container",
                fix=f"install and start Docker on {ctx.host} (apt-get install docker.io)",
            )
        ref = normalize_ref(kv.image)
        image_id = d.images.get(ref)
        if image_id is None and kv.image_archive is not None:
            image_id = archive_info(kv.image_archive).image_id
        opts, cmd = b.run_args(node)
        run_argv = [*opts, kv.image, *cmd]
        spec = spec_hash(image_id or "", run_argv)
        labels = {LABEL_SPEC: spec, LABEL_IMAGE: image_id or "", LABEL_ARGS: args_hash(run_argv)}
        run = (
            f"docker run -d --restart unless-stopped --name {b.container} "
            + " ".join(f"--label {q(f'{k}={v}')}" for k, v in labels.items())
            + " "
            + " ".join(q(a) for a in [*opts, kv.image, *cmd])
        )
        where = f"{node.address}:{node.port}"
        current = d.container(b.container)
        if current is None:
            return [
                Change(
                    f"create {b.container} container ({b.name} store on {where})",
                    steps=_steps(b, node, [run]),
                    notes=[] if image_id else [f"image {ref} is not on the host yet (the image task loads it)"],
                )
            ]
        why = _differences(current.labels, current.image_id, labels, image_id)
        if why:
            return [
                Change(
                    f"recreate {b.container}: {why}",
                    steps=_steps(b, node, [f"docker rm -f {b.container}", run]),
                    notes=[f"the {b.name} store is down until the new container is healthy"],
                )
            ]
        if not current.running:
            start = f"docker start {b.container}"
            return [
                Change(
                    f"start {b.container} (it is {current.status or 'stopped'}; same spec)",
                    steps=_steps(b, node, [start]),
                )
            ]
        return NoOp(f"{b.container} runs with the same spec ({short_id(image_id or '')}, {where})")


def _differences(have: dict[str, str], have_image: str, want: dict[str, str], want_image: str | None) -> str:
    if LABEL_SPEC not in have:
        return "it was not created by provisioner (no spec label)"
    if have.get(LABEL_SPEC) == want[LABEL_SPEC] and have_image == (want_image or have_image):
        return ""
    reasons = []
    if want_image is None:
        reasons.append("image not on the host yet")
    elif have_image != want_image:
        reasons.append(f"image changed ({short_id(have_image)} -> {short_id(want_image)})")
    if have.get(LABEL_ARGS) != want[LABEL_ARGS]:
        reasons.append("arguments changed")
    return ", ".join(reasons) or "spec changed"


def _steps(b: Backend, node: StoreNode, commands: list[str]) -> list[Step]:
    """The container command (one round trip), then the wait until the store answers healthy."""
    run = Run(
        " && ".join(commands),
        timeout=300,
        what=f"could not run the {b.name} container",
        fix=f"check the image and the ports; `docker logs {b.container}` on {node.name} shows the store's output",
    )
    wait = Call(
        f"wait up to {HEALTH_TIMEOUT:.0f} s until {b.what_healthy}: "
        + health_route(node.name, node.address, node.port, b.health_path)
        + f"; on timeout: docker logs --tail 30 {b.container}",
        lambda ctx, _state: wait_healthy(ctx, b),
    )
    return [run, wait]


def wait_healthy(ctx: ApplyContext, b: Backend, timeout: float = HEALTH_TIMEOUT) -> None:
    ctx.log(f"waiting until {b.what_healthy} ({b.name})")
    last: list[str] = []

    def probe() -> bool | None:
        why = check_health(lambda: ctx.conn, ctx.inventory, ctx.host)
        if why is None:
            return True
        last[:] = [why]
        return None

    if wait_for(probe, timeout=timeout, interval=1.0):
        return
    logs = ctx.conn.run(f"docker logs --tail 30 {b.container} 2>&1", sudo=True, timeout=20).output
    tail = "\n".join(f"    | {line}" for line in logs.splitlines()[-30:])
    raise TaskError(
        f"{ctx.host}: the {b.name} store did not become healthy within {timeout:.0f}s "
        f"(waiting until {b.what_healthy}); last check: {last[0] if last else '-'}\n"
        f"  docker logs --tail 30 {b.container}:\n{tail}",
        fix="with several store hosts, every one must run and reach the others (ports 8300-8302); "
        "otherwise read the store's log above",
    )
