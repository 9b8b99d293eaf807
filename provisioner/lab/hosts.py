"""Lab hosts: containers booting systemd with sshd and their own dockerd, on the lab bridge network."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import socket
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.errors import LabError
from provisioner.lab import paths
from provisioner.lab.progress import Step

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    container: str
    volume: str
    suite: str = "bullseye"


CGROUP_ROOT = Path("/sys/fs/cgroup")
# systemd 258 dropped cgroup v1: these suites' hosts get only the v2 (unified) hierarchy
CGROUP_V2_ONLY = frozenset({"forky"})


def cgroup_source(suite: str, root: Path = CGROUP_ROOT) -> str:
    """What this machine's cgroup tree to bind at a host's /sys/fs/cgroup.

    The whole tree, except for suites whose systemd refuses cgroup v1: on a hybrid machine (v1 controllers,
    v2 at <root>/unified) they get only the unified hierarchy, on a pure v2 machine the root as usual.
    """
    if suite not in CGROUP_V2_ONLY or (root / "cgroup.controllers").exists():
        return str(root)
    unified = root / "unified"
    if (unified / "cgroup.controllers").exists():
        return str(unified)
    raise LabError(
        f"{suite} hosts need a cgroup v2 hierarchy (their systemd refuses cgroup v1), and this machine has "
        f"none mounted ({root} is cgroup v1 without {unified})\n"
        "    fix: boot this machine with cgroup v2 (systemd.unified_cgroup_hierarchy=1), or use --suite trixie"
    )


def ensure_network(client: docker.DockerClient, lab_id: str, subnet: ipaddress.IPv4Network, bridge: str) -> str:
    """The lab's bridge network (created once); returns its name."""
    import docker.errors
    from docker.types import IPAMConfig, IPAMPool

    name = paths.network_name(lab_id)
    try:
        net = client.networks.get(name)
    except docker.errors.NotFound:
        net = None
    if net is not None:
        configs = (net.attrs.get("IPAM") or {}).get("Config") or []
        have = {c.get("Subnet") for c in configs}
        if str(subnet) not in have:
            raise LabError(
                f"the lab network {name} exists with subnet {', '.join(sorted(filter(None, have)))}, "
                f"not {subnet}\n    fix: `provisioner lab down` first to change the subnet"
            )
        return name
    try:
        client.networks.create(
            name,
            driver="bridge",
            ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=paths.gateway(subnet))]),
            options={
                "com.docker.network.bridge.name": bridge,
                # lab hosts never talk to the outside: no NAT rule, nothing to leave behind
                "com.docker.network.bridge.enable_ip_masquerade": "false",
            },
            labels={paths.LABEL: lab_id},
        )
    except docker.errors.APIError as exc:
        raise LabError(
            f"cannot create the lab network {name} ({subnet}, bridge {bridge}): {exc.explanation or exc}\n"
            "    fix: another Docker network may use this subnet: `docker network ls`, or pick --subnet"
        ) from exc
    return name


def _authorized_keys_tar(pubkey: str) -> bytes:
    buf = io.BytesIO()
    data = pubkey.strip().encode() + b"\n"
    with tarfile.open(fileobj=buf, mode="w") as tar:
        d = tarfile.TarInfo("root/.ssh")
        d.type, d.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(d)
        f = tarfile.TarInfo("root/.ssh/authorized_keys")
        f.size, f.mode = len(data), 0o600
        tar.addfile(f, io.BytesIO(data))
    return buf.getvalue()


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
_INOTIFY_PER_HOST = 16  # a lab host's systemd, journald, logind, dockerd... hold about 8 (measured)


def ensure_inotify_instances(hosts: int, knob: Path = INOTIFY_INSTANCES) -> str | None:
    """Raise fs.inotify.max_user_instances so `hosts` systemd hosts can boot; returns what changed.

    Every lab host's processes run as root and share root's limit (default 128): past ~12 hosts a new
    host's systemd cannot get an inotify instance and its container exits 255 without a word. The
    limit is only ever raised, never lowered.
    """
    want = max(512, _INOTIFY_PER_HOST * hosts)
    try:
        have = int(knob.read_text().strip())
    except (OSError, ValueError):
        return None  # not Linux-like: nothing to tune
    if have >= want:
        return None
    try:
        knob.write_text(f"{want}\n")
    except OSError as e:
        raise LabError(
            f"{hosts} lab hosts need more inotify instances than fs.inotify.max_user_instances={have} allows "
            f"(each host's systemd uses several): {e}\n"
            f"    fix: sysctl -w fs.inotify.max_user_instances={want} (as root), then `provisioner lab up` again"
        ) from e
    return f"raised fs.inotify.max_user_instances from {have} to {want} for {hosts} hosts"


def ensure_host(
    client: docker.DockerClient, lab_id: str, spec: HostSpec, image: str, network: str, pubkey: str
) -> bool:
    """Create and start the host container unless it runs; returns True when something was done."""
    import docker.errors

    try:
        c = client.containers.get(spec.container)
    except docker.errors.NotFound:
        c = None
    if c is not None:
        if c.status == "running":
            return False
        c.start()
        return True
    api = client.api
    host_config = api.create_host_config(
        cap_add=["ALL"],
        cap_drop=["SYS_RESOURCE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        device_cgroup_rules=["a *:* rwm"],
        cgroupns="host",
        binds={cgroup_source(spec.suite): {"bind": "/sys/fs/cgroup", "mode": "rw"},
               spec.volume: {"bind": "/var/lib/docker", "mode": "rw"}},
        tmpfs={"/run": "rw,exec,mode=755", "/run/lock": "rw,mode=1777"},
        network_mode=network,
    )  # fmt: skip
    # the CLI's `--security-opt systempaths=unconfined` is these two in the API
    host_config["MaskedPaths"] = []
    host_config["ReadonlyPaths"] = []
    networking = api.create_networking_config({network: api.create_endpoint_config(ipv4_address=spec.address)})
    labels = {paths.LABEL: lab_id, f"{paths.LABEL}.host": spec.name}
    try:
        client.volumes.create(spec.volume, labels=labels)
        created = api.create_container(
            image,
            command=["/sbin/init"],
            hostname=spec.name,
            name=spec.container,
            environment={"container": "docker"},
            stop_signal="SIGRTMIN+3",
            labels=labels,
            host_config=host_config,
            networking_config=networking,
            volumes=["/var/lib/docker"],
        )
        cid = created["Id"]
        api.put_archive(cid, "/", _authorized_keys_tar(pubkey))
        api.start(cid)
    except docker.errors.APIError as exc:
        raise LabError(
            f"{spec.name}: cannot create/start lab host container {spec.container}: "
            f"{exc.explanation or exc}\n    fix: `provisioner lab down`, then `provisioner lab up` again"
        ) from exc
    return True


def remove_host(client: docker.DockerClient, container: str, volume: str) -> None:
    import docker.errors

    try:
        c = client.containers.get(container)
        c.remove(force=True)
    except docker.errors.NotFound:
        pass
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(volume).remove(force=True)


def exec_in(client: docker.DockerClient, container: str, cmd: str | list[str]) -> tuple[int, str]:
    """Run ``cmd`` in a lab host (a string through ``sh -c``): (exit code, stdout+stderr).

    The output goes to a file in the host (/var/tmp) and is read back as an archive: the attached stream of
    an exec sometimes ends empty although the command printed (seen: exit 0 and no output, on bookworm and
    forky hosts), and a command cannot be run again to make up for that. Reading the file back can be.
    """
    import docker.errors

    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else cmd
    # not /run or /tmp: a tmpfs there hides the file from the archive API
    out_file = f"/var/tmp/provisioner-lab-exec-{uuid.uuid4().hex[:12]}"
    wrapped = ["sh", "-c", f'"$@" >{out_file} 2>&1', "sh", *argv]
    try:
        c: Container = client.containers.get(container)
        rc, streamed = c.exec_run(wrapped)
        text = _read_back(c, out_file)
        c.exec_run(["rm", "-f", out_file])
    except docker.errors.NotFound as exc:
        raise LabError(f"lab host container {container} does not exist\n    fix: `provisioner lab up`") from exc
    except docker.errors.APIError as exc:
        raise LabError(f"cannot run a command in {container}: {exc.explanation or exc}") from exc
    if text is None:  # the shell could not even create the file: what it said came on the stream
        text = streamed.decode(errors="replace") if isinstance(streamed, bytes) else str(streamed)
    return int(rc if rc is not None else -1), text


def _read_back(c: Container, path: str, attempts: int = 3) -> str | None:
    import docker.errors

    for _ in range(attempts):
        try:
            chunks, _stat = c.get_archive(path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
                member = tar.next()
                data = tar.extractfile(member) if member is not None else None
                return data.read().decode(errors="replace") if data is not None else ""
        except docker.errors.NotFound:
            return None
        except (docker.errors.APIError, tarfile.TarError):
            time.sleep(0.2)
    return None


def sshd_answers(address: str, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def host_state(client: docker.DockerClient, spec: HostSpec, check_ssh: bool = True) -> str:
    """missing | <docker status> | booting | ready. Each unit is checked on its own."""
    import docker.errors

    try:
        c = client.containers.get(spec.container)
    except docker.errors.NotFound:
        return "missing"
    if c.status != "running":
        return str(c.status)
    for unit in ("ssh", "docker"):
        rc, _ = c.exec_run(["systemctl", "is-active", "-q", unit])
        if rc != 0:
            return "booting"
    if check_ssh and not sshd_answers(spec.address):
        return "booting"
    return "ready"


def wait_ready(
    client: docker.DockerClient, specs: list[HostSpec], step: Step, timeout: float = 180, check_ssh: bool = True
) -> None:
    deadline = time.monotonic() + timeout
    pending = list(specs)
    states: dict[str, str] = {}
    while pending:
        for spec in list(pending):
            states[spec.name] = host_state(client, spec, check_ssh)
            if states[spec.name] == "ready":
                pending.remove(spec)
            elif states[spec.name] not in ("booting", "running"):
                raise LabError(
                    f"{spec.name}: lab host container is {states[spec.name]}, not running\n"
                    f"{_boot_tail(client, spec)}\n    fix: `provisioner lab down` and up again"
                )
        step.update(", ".join(f"{n}: {s}" for n, s in states.items()))
        if not pending:
            break
        if time.monotonic() > deadline:
            spec = pending[0]
            raise LabError(
                f"{spec.name} ({spec.address}) not ready after {timeout:.0f}s "
                f"(ssh and docker must both be active; sshd must answer on port 22)\n"
                f"{_boot_tail(client, spec)}\n"
                f"    fix: look inside: provisioner lab status; docker exec {spec.container} "
                "systemctl --failed"
            )
        time.sleep(1)


def _boot_tail(client: docker.DockerClient, spec: HostSpec) -> str:
    try:
        _rc, out = exec_in(
            client,
            spec.container,
            "systemctl --failed --no-legend; journalctl -b --no-pager -n 10 -u ssh -u docker 2>&1",
        )
    except LabError:
        return ""
    return "\n".join(f"    | {line}" for line in out.strip().splitlines()[-15:])


def read_host_key(client: docker.DockerClient, spec: HostSpec, timeout: float = 60.0) -> str:
    # seen: exit 0 with empty output right after boot for over 10 s while the machine's two cores ran
    # several labs (the key read as it was being written); it is only trusted once a read returns a
    # whole one, and a loaded machine gets a minute for that
    deadline = time.monotonic() + timeout
    while True:
        rc, out = exec_in(client, spec.container, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
        parts = out.split()
        if (rc == 0 and len(parts) >= 2 and parts[0] == "ssh-ed25519") or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if rc != 0 or len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise LabError(
            f"{spec.name}: cannot read its SSH host key (exit {rc}): {out.strip()[:200]}\n"
            "    fix: the first-boot key unit may have failed: "
            f"docker exec {spec.container} systemctl status lab-ssh-hostkeys"
        )
    return f"{parts[0]} {parts[1]}"


def memory_usage(client: docker.DockerClient, container: str) -> dict[str, int]:
    """Memory of a host container and everything in it, in bytes: rss and working set (usage minus
    inactive page cache), read from its cgroup (this machine's engine only); {} when not readable."""
    try:
        cid = client.containers.get(container).id
    except Exception:
        return {}
    for base, usage_file in (
        (Path("/sys/fs/cgroup/memory/docker") / cid, "memory.usage_in_bytes"),  # cgroup v1
        (Path("/sys/fs/cgroup/docker") / cid, "memory.current"),  # cgroup v2
    ):
        try:
            usage = int((base / usage_file).read_text())
            stat: dict[str, str] = {}
            for line in (base / "memory.stat").read_text().splitlines():
                k, _, v = line.partition(" ")
                stat[k] = v
        except (OSError, ValueError):
            continue
        rss = int(stat.get("total_rss", stat.get("anon", "0")))
        inactive = int(stat.get("total_inactive_file", stat.get("inactive_file", "0")))
        return {"usage": usage, "rss": rss, "working_set": usage - inactive}
    return {}


def write_private_key(path: Path) -> str:
    """Generate the lab's ed25519 key pair once; returns the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub_path = path.with_name(path.name + ".pub")
    if path.exists() and pub_path.exists():
        return pub_path.read_text().strip()
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(private)
    tmp.chmod(0o600)
    tmp.rename(path)
    line = public.decode() + " provisioner-lab"
    pub_path.write_text(line + "\n")
    return line
