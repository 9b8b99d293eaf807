"""Host image (debootstrap -> customised rootfs tarball, cached machine-wide) and service image archives.

The rootfs tarball is keyed by suite + package list + recipe, so a fresh clone on the same machine reuses
it. Service images (consul, probe, etcd) are built from files (no registry): a rootfs tarball holding only
the program and its libraries, imported with `docker import`, then written with `docker save`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.errors import LabError
from provisioner.lab import paths
from provisioner.lab.proc import run, try_run
from provisioner.lab.progress import Reporter

if TYPE_CHECKING:
    import docker

COMMON_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "docker.io",
    "iproute2",
    "iputils-ping",
    "python3",
    "ca-certificates",
    "procps",
)
# trixie split the Docker client out of docker.io into docker-cli
SUITE_PACKAGES = {"bullseye": ("consul",), "bookworm": (), "trixie": ("docker-cli",), "forky": ("docker-cli",)}
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
# Bump when anything in _customise changes: it is part of the cache key.
RECIPE = "host-recipe-3"
HOST_REPO = "provisioner-lab/host"

_HOSTKEY_UNIT = """\
[Unit]
Description=Generate SSH host keys on first boot (provisioner lab)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
RequiredBy=ssh.service
"""
_SSHD_CONF = """\
# provisioner lab: key-only root login, no reverse DNS on connect
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
"""
# Units that only make sense on real hardware or a VM console.
_MASKED = (
    "getty.target",
    "console-getty.service",
    "systemd-remount-fs.service",
    "dev-hugepages.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "systemd-modules-load.service",
)


def packages(suite: str) -> list[str]:
    return sorted({*COMMON_PACKAGES, *SUITE_PACKAGES[suite]})


def host_image_key(suite: str) -> str:
    material = json.dumps({"suite": suite, "packages": packages(suite), "recipe": RECIPE})
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def host_image_tag(suite: str) -> str:
    return f"{HOST_REPO}:{suite}-{host_image_key(suite)}"


def host_tarball(suite: str) -> Path:
    return paths.cache_dir() / f"host-{suite}-{host_image_key(suite)}.tar"


def debian_mirror(sources: list[Path] | None = None) -> str:
    """The Debian mirror apt already uses here (deb822 or one-line format), else deb.debian.org."""
    override = os.environ.get("PROVISIONER_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    if sources is None:
        sources = [Path("/etc/apt/sources.list")]
        d = Path("/etc/apt/sources.list.d")
        if d.is_dir():
            sources += sorted(d.iterdir())
    for src in sources:
        try:
            text = src.read_text()
        except OSError:
            continue
        for uri in parse_source_uris(text):
            if re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def parse_source_uris(text: str) -> list[str]:
    uris: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("URIs:"):
            uris += line.split()[1:]
        elif line.startswith("deb "):
            parts = [p for p in line.split() if not p.startswith("[") and not p.endswith("]")]
            if len(parts) >= 2:
                uris.append(parts[1])
    return uris


def raw_tarball(suite: str) -> Path:
    """The plain debootstrap result, keyed by suite + package list only (recipe changes reuse it)."""
    material = json.dumps({"suite": suite, "packages": packages(suite)})
    return paths.cache_dir() / f"debootstrap-{suite}-{hashlib.sha256(material.encode()).hexdigest()[:12]}.tar"


def ensure_host_tarball(suite: str, reporter: Reporter) -> Path:
    """The customised rootfs tarball for `suite`, built unless the cache has it."""
    if suite not in paths.SUITES:
        raise LabError(f"unknown suite {suite!r}\n    fix: use --suite {paths.SUITES_HELP}")
    target = host_tarball(suite)
    if target.exists():
        return target
    raw = _ensure_raw_tarball(suite, reporter)
    work = Path(tempfile.mkdtemp(prefix=f"custom-{suite}-", dir=paths.cache_dir()))
    try:
        with reporter.step(f"customising {suite} host image"):
            rootfs = work / "rootfs"
            rootfs.mkdir()
            run(["tar", "--numeric-owner", "-C", str(rootfs), "-xf", str(raw)], what="unpack rootfs")
            _customise(rootfs)
            partial = work / "host.tar"
            run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], what="pack rootfs")
            partial.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def debootstrap_script(suite: str, scripts: Path = DEBOOTSTRAP_SCRIPTS) -> list[str]:
    """The script argument debootstrap needs for `suite`: none when it knows the suite; else the `sid`
    script, which every Debian suite newer than this debootstrap uses (bookworm's does not know forky)."""
    if (scripts / suite).exists():
        return []
    sid = scripts / "sid"
    if not sid.exists():
        raise LabError(
            f"debootstrap knows neither {suite} nor sid (no {scripts / suite}, no {sid})\n"
            "    fix: install a newer debootstrap (apt-get install debootstrap)"
        )
    return [str(sid)]


def _ensure_raw_tarball(suite: str, reporter: Reporter) -> Path:
    target = raw_tarball(suite)
    if target.exists():
        return target
    if shutil.which("debootstrap") is None:
        raise LabError(
            "building the lab host image needs debootstrap, which is not installed\n"
            "    fix: apt-get install debootstrap"
        )
    cache = paths.cache_dir()
    debs = cache / f"debs-{suite}"
    debs.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"debootstrap-{suite}-", dir=cache))
    rootfs = work / "rootfs"
    mirror = debian_mirror()
    try:
        with reporter.step(f"debootstrap {suite} from {mirror} (a few minutes, once per machine)") as step:
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--cache-dir={debs}",
                    f"--include={','.join(packages(suite))}",
                    "--components=main",
                    suite,
                    str(rootfs),
                    mirror,
                    *debootstrap_script(suite),
                ],
                step=step,
                what=f"debootstrap {suite}",
                fix=f"check that {mirror} is reachable (or set PROVISIONER_DEBIAN_MIRROR to a Debian mirror), "
                "then retry",
            )
            step.update("packing")
            partial = work / "raw.tar"
            run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], what="pack rootfs")
            partial.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _customise(rootfs: Path) -> None:
    etc = rootfs / "etc"
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "machine-id").write_text("")
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    system = etc / "systemd/system"
    (system / "lab-ssh-hostkeys.service").write_text(_HOSTKEY_UNIT)
    _link(system / "ssh.service.requires/lab-ssh-hostkeys.service", "/etc/systemd/system/lab-ssh-hostkeys.service")
    for unit in ("ssh.service", "docker.service"):
        _link(system / "multi-user.target.wants" / unit, f"/lib/systemd/system/{unit}")
    for unit in _MASKED:
        _link(system / unit, "/dev/null")
    conf_d = etc / "ssh/sshd_config.d"
    conf_d.mkdir(exist_ok=True)
    (conf_d / "provisioner-lab.conf").write_text(_SSHD_CONF)
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (rootfs / junk).glob("*"):
            if f.is_file():
                f.unlink()


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


# ---- importing into an engine and service image archives ---------------------------------------

ARCHIVE_RECIPE = "archives-1"
# (import accepts no STOPSIGNAL: the host container sets SIGRTMIN+3 itself)
HOST_CHANGES = ['CMD ["/sbin/init"]', "ENV container=docker"]
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def image_present(client: docker.DockerClient, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def import_tarball(client: docker.DockerClient, tarball: Path, tag: str, changes: list[str]) -> None:
    import docker.errors

    repo, _, version = tag.rpartition(":")
    try:
        client.api.import_image(src=str(tarball), repository=repo, tag=version, changes=changes)
    except docker.errors.APIError as exc:
        raise LabError(
            f"cannot import {tarball} as {tag}: {exc.explanation or exc}\n"
            f"    fix: if the engine is fine, the cached tarball may be damaged: rm {tarball} and retry"
        ) from exc
    if not image_present(client, tag):
        raise LabError(f"importing {tarball} did not produce image {tag}\n    fix: rm {tarball} and retry")


def ensure_host_image(client: docker.DockerClient, suite: str, reporter: Reporter) -> str:
    tag = host_image_tag(suite)
    if image_present(client, tag):
        return tag
    tarball = ensure_host_tarball(suite, reporter)
    with reporter.step(f"importing {suite} host image into the engine"):
        import_tarball(client, tarball, tag, HOST_CHANGES)
    return tag


@dataclass(frozen=True)
class Archive:
    name: str  # consul | probe | etcd: file <name>.tar in the state dir
    image: str
    path: Path


def ensure_archives(client: docker.DockerClient, state_dir: Path, reporter: Reporter) -> list[Archive]:
    """The service image archives the playbooks upload, built once per machine, linked into state_dir."""
    built = [
        _cached_archive(client, "consul", reporter, _consul_source),
        _cached_archive(client, "probe", reporter, _probe_source),
        _cached_archive(client, "etcd", reporter, _etcd_source),
    ]
    out = []
    for name, image, cached in built:
        dest = state_dir / f"{name}.tar"
        if not (dest.exists() and os.path.samefile(dest, cached)):
            tmp = dest.with_suffix(".tar.tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(cached, tmp)
            except OSError:
                shutil.copyfile(cached, tmp)
            os.replace(tmp, dest)
        out.append(Archive(name, image, dest))
    return out


@dataclass
class _Source:
    """A minimal rootfs for one program: files to copy in and how to run it."""

    key: str
    image: str
    files: dict[str, Path]  # path in image -> file on disk
    links: dict[str, str]  # path in image -> symlink target
    dirs: dict[str, int]  # path in image -> mode
    changes: list[str]


def _cached_archive(client: docker.DockerClient, name: str, reporter: Reporter, source: Any) -> tuple[str, str, Path]:
    adir = paths.cache_dir() / "archives"
    adir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=adir))
    try:
        with reporter.step(f"{name} image archive") as step:
            src: _Source = source(work, reporter)
            cached = adir / f"{name}-{src.key}.tar"
            if cached.exists():
                return name, src.image, cached
            step.update("building")
            rootfs_tar = work / "rootfs.tar"
            _write_rootfs_tar(rootfs_tar, src)
            import_tarball(client, rootfs_tar, src.image, src.changes)
            partial = work / "save.tar"
            with open(partial, "wb") as fh:
                for chunk in client.images.get(src.image).save(named=True):
                    fh.write(chunk)
            partial.rename(cached)
            return name, src.image, cached
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_rootfs_tar(dest: Path, src: _Source) -> None:
    import tarfile

    with tarfile.open(dest, "w") as tar:
        made: set[str] = set()

        def parents(path: str) -> None:
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)

        for d, mode in sorted(src.dirs.items()):
            parents(d)
            info = tarfile.TarInfo(d.strip("/"))
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
            made.add(d.strip("/"))
        for path, target in sorted(src.links.items()):
            parents(path)
            info = tarfile.TarInfo(path.strip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for path, file in sorted(src.files.items()):
            parents(path)
            info = tar.gettarinfo(str(file), arcname=path.strip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(file, "rb") as fh:
                tar.addfile(info, fh)


def _base_files(work: Path) -> dict[str, Path]:
    etc = work / "etc-base"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(_PASSWD)
    (etc / "group").write_text(_GROUP)
    (etc / "nsswitch.conf").write_text("hosts: files dns\npasswd: files\ngroup: files\n")
    return {f"/etc/{f.name}": f for f in etc.iterdir()}


def _libraries(binary: str, root: Path | None) -> dict[str, Path]:
    """Shared libraries of `binary` (a path inside `root`, or on this machine), by asking ld.so."""
    loader = "/lib64/ld-linux-x86-64.so.2"
    cmd = ["chroot", str(root), loader, "--list", binary] if root else [loader, "--list", binary]
    rc, out = try_run(cmd)
    if rc != 0:
        if "not a dynamic executable" in out or "statically linked" in out:
            return {}
        raise LabError(f"cannot list the libraries of {binary}: {out.strip()[:300]}")
    base = root or Path("/")
    libs: dict[str, Path] = {}
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            inside = m.group(1)
            libs[inside] = _resolve(base, inside)
    return libs


def _resolve(root: Path, inside: str) -> Path:
    """A path inside `root`, with absolute symlinks resolved inside root as well."""
    p = root / inside.lstrip("/")
    for _ in range(20):
        if not p.is_symlink():
            return p
        target = os.readlink(p)
        p = (root / target.lstrip("/")) if target.startswith("/") else (p.parent / target)
    return p


def _consul_source(work: Path, reporter: Reporter) -> _Source:
    tarball = ensure_host_tarball("bullseye", reporter)
    key = hashlib.sha256(f"{ARCHIVE_RECIPE}:consul:{tarball.name}".encode()).hexdigest()[:12]
    marker = paths.cache_dir() / "archives" / f"consul-{key}.json"
    if (paths.cache_dir() / "archives" / f"consul-{key}.tar").exists() and marker.exists():
        return _Source(key, json.loads(marker.read_text())["image"], {}, {}, {}, [])
    root = work / "bullseye"
    root.mkdir()
    run(["tar", "-C", str(root), "-xf", str(tarball), "./usr", "./lib", "./lib64", "./bin", "./etc"],
        what="unpack bullseye rootfs for consul")  # fmt: skip
    rc, out = try_run(["chroot", str(root), "/usr/bin/consul", "version"])
    m = re.search(r"Consul v(\d+\.\d+\.\d+)", out)
    if rc != 0 or not m:
        raise LabError(f"cannot run bullseye's consul to read its version: {out.strip()[:300]}")
    image = f"provisioner-lab/consul:{m.group(1)}"
    marker.write_text(json.dumps({"image": image}))
    files = {"/usr/bin/consul": root / "usr/bin/consul", **_libraries("/usr/bin/consul", root), **_base_files(work)}
    certs = root / "etc/ssl/certs/ca-certificates.crt"
    if certs.exists():
        files["/etc/ssl/certs/ca-certificates.crt"] = certs
    return _Source(
        key,
        image,
        files,
        {},
        {"/tmp": 0o1777, "/consul/data": 0o755},
        [
            'ENTRYPOINT ["/usr/bin/consul"]',
            'CMD ["agent", "-dev", "-client", "0.0.0.0"]',
            "ENV PATH=/usr/bin:/bin",
            "EXPOSE 8300 8301 8302 8500 8600",
        ],
    )


def _download_deb(package: str, reporter: Reporter) -> Path:
    """The .deb of `package` for this machine's Debian, downloaded once into the cache."""
    debs = paths.cache_dir() / "debs-host"
    debs.mkdir(parents=True, exist_ok=True)
    have = sorted(debs.glob(f"{package}_*.deb"))
    if have:
        return have[-1]
    with reporter.step(f"downloading {package}.deb") as step:
        run(["apt-get", "download", package], cwd=str(debs), step=step, what=f"apt-get download {package}",
            fix="run `apt-get update` and check the Debian mirror is reachable")  # fmt: skip
    have = sorted(debs.glob(f"{package}_*.deb"))
    if not have:
        raise LabError(f"apt-get download {package} produced no .deb in {debs}")
    return have[-1]


def _deb_source(work: Path, reporter: Reporter, package: str) -> tuple[Path, Path, str]:
    deb = _download_deb(package, reporter)
    key = hashlib.sha256(f"{ARCHIVE_RECIPE}:{package}:{deb.name}".encode()).hexdigest()[:12]
    root = work / package
    run(["dpkg-deb", "-x", str(deb), str(root)], what=f"unpack {deb.name}")
    version = deb.name.split("_")[1].split(":")[-1]
    return root, deb, f"{key}|{version}"


def _probe_source(work: Path, reporter: Reporter) -> _Source:
    root, _, kv = _deb_source(work, reporter, "busybox-static")
    key = kv.split("|")[0]
    busybox = root / "bin/busybox"
    rc, out = try_run([str(busybox), "--list"])
    if rc != 0:
        raise LabError(f"busybox-static's busybox does not run here: {out.strip()[:200]}")
    links = {f"/bin/{applet}": "busybox" for applet in out.split() if applet != "busybox"}
    return _Source(
        key,
        "provisioner-lab/probe:latest",
        {"/bin/busybox": busybox, **_base_files(work)},
        links,
        {"/tmp": 0o1777, "/root": 0o700},
        ['CMD ["/bin/sh"]', "ENV PATH=/bin"],
    )


def _etcd_source(work: Path, reporter: Reporter) -> _Source:
    root, _, kv = _deb_source(work, reporter, "etcd-server")
    key, version = kv.split("|")
    binary = root / "usr/bin/etcd"
    if not binary.exists():
        raise LabError(f"etcd-server {version} has no /usr/bin/etcd")
    major_minor = ".".join(version.split(".")[:2])
    files = {"/usr/bin/etcd": binary, **_libraries(str(binary), None), **_base_files(work)}
    return _Source(
        key,
        f"provisioner-lab/etcd:{major_minor}",
        files,
        {},
        {"/tmp": 0o1777, "/var/lib/etcd": 0o700},
        [
            'ENTRYPOINT ["/usr/bin/etcd"]',
            'CMD ["--data-dir", "/var/lib/etcd", "--enable-v2=true", '
            '"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://127.0.0.1:2379"]',
            "ENV PATH=/usr/bin:/bin",
            "EXPOSE 2379 2380",
        ],
    )
