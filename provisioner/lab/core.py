"""lab_up / lab_down / lab_status / lab_exec: the lab's Python API (the CLI is a thin layer over it)."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.errors import LabError
from provisioner.lab import engine, hosts, image, inventory, paths, safety, state
from provisioner.lab.progress import Reporter
from provisioner.lab.state import HostRecord, LabState

if TYPE_CHECKING:
    import docker

MAX_HOSTS = 50


@dataclass(frozen=True)
class LabInfo:
    state_dir: Path
    inventory_path: Path
    key_path: Path
    known_hosts_path: Path
    hosts: list[tuple[str, str]]  # (name, address); the first is the kv host
    engine: str  # Docker engine URL the host containers run on
    archives: dict[str, Path]  # consul | probe | etcd -> `docker save` tar
    images: dict[str, str] = field(default_factory=dict)  # same keys -> image name inside the archive
    suite: str = "bullseye"  # as given to `up`: one suite, or several comma separated (mixed lab)
    subnet: str = paths.DEFAULT_SUBNET
    host_suites: dict[str, str] = field(default_factory=dict)  # host name -> its suite


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    container: str
    state: str  # ready | booting | missing | exited | ... | unknown (engine down)
    suite: str = ""


@dataclass(frozen=True)
class LabStatus:
    state_dir: Path
    up: bool
    engine: str
    engine_running: bool
    private_engine: bool
    suite: str
    subnet: str
    hosts: list[HostStatus]


def _forward_rule(bridge: str) -> list[str]:
    # bridged traffic between lab hosts passes iptables FORWARD when br_netfilter is loaded, and another
    # dockerd on this machine may have set its policy to DROP
    return ["-t", "filter", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def egress_rule(bridge: str, lid: str) -> list[str]:
    """Nothing from the lab leaves this machine: drop every packet forwarded from the lab bridge to any
    other interface (the uplink, another lab's bridge, docker0). Lab hosts route everything that is not on
    the lab via the bridge, so where this machine forwards, an isolation or NAT-out probe would otherwise
    leave through the uplink un-NATed. In mangle FORWARD, which comes before filter FORWARD and which no
    dockerd writes to: an ACCEPT that a dockerd (re)inserts at the top of filter FORWARD cannot precede it."""
    return ["-t", "mangle", "FORWARD", "-i", bridge, "!", "-o", bridge,
            "-m", "comment", "--comment", f"provisioner lab {lid}: no lab packet leaves this machine",
            "-j", "DROP"]  # fmt: skip


def _clean_dead_private_engine(st: LabState, reporter: Reporter) -> None:
    """The private dockerd of this lab died (killed session, reboot): remove what it left in the kernel."""
    with reporter.step("cleaning leftovers of this lab's earlier dockerd"):
        safety.unmount_all([st.data_root, st.exec_root])
        if st.bridge:
            safety.remove_bridge(st.bridge)
        for rule in st.iptables_rules:
            safety.delete_rule(rule)
        st.iptables_rules = []
        st.dockerd_pid = None


def lab_up(
    hosts: int = 3,
    suite: str = "bullseye",
    subnet: str = paths.DEFAULT_SUBNET,
    state_dir: Path | None = None,
    quiet: bool = True,
    engine_url: str | None = None,
) -> LabInfo:
    """Bring the lab to `hosts` ready hosts (adding or removing hosts as needed) and write its inventory."""
    if not 1 <= hosts <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}, not {hosts}")
    suites = paths.parse_suites(suite)
    suite = ",".join(suites)
    net = paths.check_subnet(subnet)
    specs_addr = [paths.host_address(net, i) for i in range(1, hosts + 1)]
    sd = paths.state_dir(state_dir)
    lid = paths.lab_id(sd)
    reporter = Reporter(quiet)
    with state.locked(sd):
        st = state.load(sd, lid)
        if st.hosts and st.suite != suite:
            raise LabError(
                f"the lab in {sd} runs {st.suite} hosts, not {suite}\n"
                "    fix: `provisioner lab down` first to change the suite"
            )
        if (st.hosts or st.network) and st.subnet != str(net):
            raise LabError(
                f"the lab in {sd} is up on subnet {st.subnet}, not {net}\n"
                "    fix: `provisioner lab down` first to change the subnet"
            )
        wanted = engine.requested_engine(engine_url)
        pp = engine.private_paths(sd)
        if not st.is_empty and (wanted or pp.url) != st.engine_url:
            raise LabError(
                f"the lab in {sd} runs on engine {st.engine_url}, not {wanted or 'a private dockerd'}\n"
                "    fix: `provisioner lab down` first, or use the same --engine / DOCKER_HOST"
            )
        owned = wanted is None
        alive = owned and engine.pid_is_our_dockerd(st.dockerd_pid, st.data_root)
        if owned and not alive and st.engine_owned:
            _clean_dead_private_engine(st, reporter)
            state.save(sd, st)
        own_bridge = st.bridge if st.network else ""
        own_nat = [safety.rule_as_save_line(r) for r in st.iptables_rules if r[1] == "nat"]
        safety.check_subnet_free(net, own_bridge, paths.bridge_name(lid), own_nat)

        if owned and not alive:
            with reporter.step(f"starting private dockerd ({pp.socket})"):
                st.dockerd_pid = engine.start_private(sd, lid)
            st.engine_owned, st.engine_url = True, pp.url
            st.data_root, st.exec_root = str(pp.data_root), str(pp.exec_root)
            state.save(sd, st)
        elif not owned:
            assert wanted is not None
            st.engine_owned, st.engine_url = False, wanted
        client = engine.connect(st.engine_url)
        try:
            return _converge(client, st, sd, lid, net, suite, specs_addr, reporter)
        finally:
            client.close()


def _converge(
    client: docker.DockerClient,
    st: LabState,
    sd: Path,
    lid: str,
    net: ipaddress.IPv4Network,
    suite: str,
    addresses: list[str],
    reporter: Reporter,
) -> LabInfo:
    st.suite, st.subnet = suite, str(net)
    suites = paths.parse_suites(suite)
    host_images = {s: image.ensure_host_image(client, s, reporter) for s in dict.fromkeys(suites)}
    st.image = host_images[suites[0]]
    archives = image.ensure_archives(client, sd, reporter)
    st.archives = {a.name: str(a.path) for a in archives}
    st.images = {a.name: a.image for a in archives}
    state.save(sd, st)

    bridge = paths.bridge_name(lid)
    st.network = hosts.ensure_network(client, lid, net, bridge)
    st.bridge = bridge
    state.save(sd, st)
    rules = [_forward_rule(bridge)] if st.engine_owned else []
    if st.engine_url.startswith("unix://"):  # the bridge is on this machine (a remote engine: on its own)
        rules.insert(0, egress_rule(bridge, lid))  # before any host starts
    for rule in rules:
        # recorded before it is added: a run killed in between leaves nothing this lab does not know of
        if rule not in st.iptables_rules:
            st.iptables_rules.append(rule)
            state.save(sd, st)
        safety.add_rule(rule)

    key_path = sd / "id_ed25519"
    pubkey = hosts.write_private_key(key_path)
    specs = [
        hosts.HostSpec(
            name=paths.host_name(i),
            address=addr,
            container=paths.container_name(lid, paths.host_name(i)),
            volume=paths.volume_name(lid, paths.host_name(i)),
            suite=paths.host_suite(suites, i),
        )
        for i, addr in enumerate(addresses, start=1)
    ]
    keep = {s.name for s in specs}
    for rec in st.hosts:
        if rec.name not in keep:
            with reporter.step(f"removing {rec.name}"):
                hosts.remove_host(client, rec.container, rec.volume)
    st.hosts = [HostRecord(s.name, s.address, s.container, s.volume, s.suite, host_images[s.suite]) for s in specs]
    state.save(sd, st)
    raised = hosts.ensure_inotify_instances(len(specs))
    if raised:
        reporter.info(raised)
    with reporter.step(f"starting {len(specs)} {suite} hosts on {net}") as step:
        for s in specs:
            step.update(f"{s.name} ({s.suite})")
            hosts.ensure_host(client, lid, s, host_images[s.suite], st.network, pubkey)
    local = st.engine_url.startswith("unix://")
    with reporter.step("waiting for sshd and docker on every host") as step:
        hosts.wait_ready(client, specs, step, check_ssh=local)

    known_hosts_path = sd / "known_hosts"
    entries = [(s.address, hosts.read_host_key(client, s)) for s in specs]
    _write(known_hosts_path, inventory.known_hosts(entries))
    archive_paths = {a.name: a.path for a in archives}
    inventory_path = sd / "inventory.yml"
    _write(inventory_path, inventory.render(sd, [(s.name, s.address) for s in specs], st.images,
                                            archive_paths, suite, {s.name: s.suite for s in specs}))  # fmt: skip
    state.save(sd, st)
    reporter.info(f"lab up: {', '.join(f'{s.name} {s.address}' for s in specs)}; inventory {inventory_path}")
    return LabInfo(
        state_dir=sd,
        inventory_path=inventory_path,
        key_path=key_path,
        known_hosts_path=known_hosts_path,
        hosts=[(s.name, s.address) for s in specs],
        engine=st.engine_url,
        archives=archive_paths,
        images=dict(st.images),
        suite=suite,
        subnet=str(net),
        host_suites={s.name: s.suite for s in specs},
    )


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def lab_down(state_dir: Path | None = None, keep_image: bool = False, quiet: bool = True) -> list[str]:
    """Remove everything the lab created; returns what was done (empty when there was no lab)."""
    sd = paths.state_dir(state_dir)
    lid = paths.lab_id(sd)
    reporter = Reporter(quiet)
    done: list[str] = []
    if not (sd / state.STATE_FILE).exists():
        return done
    with state.locked(sd):
        st = state.load(sd, lid)
        alive = st.engine_owned and engine.pid_is_our_dockerd(st.dockerd_pid, st.data_root)
        if alive or (st.engine_url and not st.engine_owned):
            client = engine.connect(st.engine_url)
            try:
                with reporter.step("removing lab hosts, volumes and network"):
                    done += _remove_engine_objects(client, st, lid, keep_image)
            finally:
                client.close()
        if st.engine_owned:
            if alive:
                with reporter.step("stopping private dockerd"):
                    engine.stop_private(st.dockerd_pid, st.data_root)
                done.append(f"stopped private dockerd (pid {st.dockerd_pid})")
            unmounted = safety.unmount_all([st.data_root, st.exec_root])
            if unmounted:
                done.append(f"unmounted {len(unmounted)} leftover mounts")
            # only ever delete below the state dir, whatever state.json says
            if st.exec_root and Path(st.exec_root).resolve().is_relative_to(sd):
                shutil.rmtree(st.exec_root, ignore_errors=True)
            if not keep_image and st.data_root and Path(st.data_root).resolve().is_relative_to(sd):
                shutil.rmtree(st.data_root, ignore_errors=True)
                done.append(f"removed engine data {st.data_root}")
            for f in ("docker.sock", "dockerd.pid"):
                (sd / f).unlink(missing_ok=True)
        if st.bridge:
            with contextlib.suppress(LabError):
                safety.remove_bridge(st.bridge)  # normally gone with the network; not after a killed dockerd
        for rule in st.iptables_rules:
            safety.delete_rule(rule)
            done.append(f"deleted iptables rule {' '.join(rule)}")
        for f in ("inventory.yml", "known_hosts"):
            (sd / f).unlink(missing_ok=True)
        state.save(sd, LabState(lab_id=lid, archives=st.archives, images=st.images))
    return done


def _remove_engine_objects(client: docker.DockerClient, st: LabState, lid: str, keep_image: bool) -> list[str]:
    import docker.errors

    done = []
    label = {"label": f"{paths.LABEL}={lid}"}
    names = {h.container for h in st.hosts} | {c.name for c in client.containers.list(all=True, filters=label)}
    for name in sorted(names):
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)
            done.append(f"removed container {name}")
    volumes = {h.volume for h in st.hosts} | {v.name for v in client.volumes.list(filters=label)}
    for name in sorted(volumes):
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(name).remove(force=True)
            done.append(f"removed volume {name}")
    nets = {st.network} - {""} | {n.name for n in client.networks.list(filters=label)}
    for name in sorted(nets):
        with contextlib.suppress(docker.errors.NotFound):
            client.networks.get(name).remove()
            done.append(f"removed network {name}")
    if not keep_image and not st.engine_owned:  # a private engine's data root goes as a whole
        for tag in dict.fromkeys([st.image, *(h.image for h in st.hosts), *st.images.values()]):
            if tag:
                with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                    client.images.remove(tag)
                    done.append(f"removed image {tag}")
    return done


def lab_status(state_dir: Path | None = None) -> LabStatus:
    sd = paths.state_dir(state_dir)
    lid = paths.lab_id(sd)
    st = state.load(sd, lid)
    running = False
    client = None
    if st.engine_url and (not st.engine_owned or engine.pid_is_our_dockerd(st.dockerd_pid, st.data_root)):
        try:
            client = engine.connect(st.engine_url)
            running = True
        except LabError:
            client = None
    out = []
    try:
        for h in st.hosts:
            suite = h.suite or st.suite
            spec = hosts.HostSpec(h.name, h.address, h.container, h.volume, suite)
            s = hosts.host_state(client, spec, st.engine_url.startswith("unix://")) if client else "unknown"
            out.append(HostStatus(h.name, h.address, h.container, s, suite))
    finally:
        if client is not None:
            client.close()
    return LabStatus(
        state_dir=sd,
        up=bool(st.hosts),
        engine=st.engine_url,
        engine_running=running,
        private_engine=st.engine_owned,
        suite=st.suite,
        subnet=st.subnet,
        hosts=out,
    )


def lab_exec(name: str, cmd: str | list[str], state_dir: Path | None = None) -> tuple[int, str]:
    """Run `cmd` inside lab host `name` from the outside (docker exec): (exit code, stdout+stderr).

    A string runs through `sh -c`; a list runs as is. Meant for tests that break hosts on purpose.
    """
    sd = paths.state_dir(state_dir)
    st = state.load(sd, paths.lab_id(sd))
    rec = next((h for h in st.hosts if name in (h.name, h.container, h.address)), None)
    if rec is None:
        known = ", ".join(h.name for h in st.hosts) or "none (the lab is down)"
        raise LabError(f"no lab host {name!r} in {sd}; hosts: {known}\n    fix: `provisioner lab status`")
    client = engine.connect(st.engine_url)
    try:
        return hosts.exec_in(client, rec.container, cmd)
    finally:
        client.close()
