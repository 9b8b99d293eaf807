"""Helpers shared by the Docker modules: image references, `docker save` archives, store health, waiting."""

from __future__ import annotations

import hashlib
import json
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.error import URLError
from urllib.request import urlopen

from provisioner.connection.base import q
from provisioner.errors import TaskError

if TYPE_CHECKING:
    from provisioner.connection.base import ShellConnection
    from provisioner.inventory import Inventory

T = TypeVar("T")

# labels the provisioner puts on the containers it runs
LABEL_SPEC = "io.provisioner.spec"
LABEL_IMAGE = "io.provisioner.image-id"
LABEL_ARGS = "io.provisioner.args"


def normalize_ref(ref: str) -> str:
    """``busybox`` -> ``busybox:latest`` (how `docker images` lists it); digests and tags stay."""
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class ArchiveInfo:
    path: Path
    image_id: str  # "sha256:<hex>" of the image config, as `docker images --no-trunc` shows it
    repo_tags: tuple[str, ...]
    size: int
    sha256: str  # of the archive file itself


_ARCHIVES: dict[tuple[str, int, int], ArchiveInfo] = {}
_ARCHIVE_LOCK = threading.Lock()


def archive_info(path: Path) -> ArchiveInfo:
    """Read a `docker save` archive locally (no Docker needed): the image id and tags it holds.

    The image id is the sha256 of the image's config JSON named by manifest.json. The result is
    cached per (path, size, mtime), so every host of a run shares one read of the file.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise TaskError(
            f"image archive {path} cannot be read: {e}",
            fix="create it with 'docker save IMAGE -o FILE' or fix image_archive in the inventory",
        ) from e
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _ARCHIVE_LOCK:
        if key in _ARCHIVES:
            return _ARCHIVES[key]
        info = _read_archive(path, st.st_size)
        _ARCHIVES[key] = info
        return info


def _read_archive(path: Path, size: int) -> ArchiveInfo:
    bad = f"{path} is not a `docker save` archive"
    fix = "create it with 'docker save IMAGE -o FILE' (one image per archive)"
    try:
        with tarfile.open(path, "r:") as tar:
            manifest = _member_json(tar, "manifest.json")
            if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
                raise TaskError(f"{bad}: manifest.json must describe exactly one image", fix=fix)
            entry: dict[str, Any] = manifest[0]
            config_name = entry.get("Config")
            if not isinstance(config_name, str):
                raise TaskError(f"{bad}: manifest.json has no Config entry", fix=fix)
            member = tar.extractfile(config_name)
            if member is None:
                raise TaskError(f"{bad}: {config_name} named by manifest.json is missing", fix=fix)
            image_id = "sha256:" + hashlib.sha256(member.read()).hexdigest()
            tags = tuple(t for t in entry.get("RepoTags") or [] if isinstance(t, str))
    except (tarfile.TarError, OSError, KeyError) as e:
        raise TaskError(f"{bad}: {e}", fix=fix) from e
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return ArchiveInfo(path, image_id, tags, size, digest.hexdigest())


def _member_json(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    if member is None:
        raise KeyError(name)
    return json.loads(member.read())


def spec_hash(image_id: str, args: list[str]) -> str:
    return hashlib.sha256(json.dumps([image_id, args]).encode()).hexdigest()[:16]


def args_hash(args: list[str]) -> str:
    return hashlib.sha256(json.dumps(args).encode()).hexdigest()[:16]


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T | None:
    """Call ``probe`` until it returns something other than None, or ``timeout`` passes (then None)."""
    deadline = clock() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if clock() >= deadline:
            return None
        sleep(interval)


def tcp_reachable(address: str, port: int, timeout: float = 1.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---- talking to the key-value store ---------------------------------------------------------------


class StoreClient:
    """HTTP GETs against a store endpoint: directly when reachable from here, else through the host's
    SSH connection (a forwarded port when the transport has one, else curl/wget on the host)."""

    def __init__(self, conn: Callable[[], ShellConnection], address: str, port: int, direct: bool = True) -> None:
        # a factory: the connection to the store host is opened only when the direct route is not taken
        self.conn = conn
        self.address = address
        self.port = port
        self.direct = direct

    @contextmanager
    def endpoint(self) -> Iterator[tuple[str, int] | None]:
        """(host, port) reachable from here, or None when only the shell route is left."""
        if self.direct and tcp_reachable(self.address, self.port):
            yield (self.address, self.port)
            return
        forward = getattr(self.conn(), "forward", None)
        if forward is None:
            yield None
            return
        with forward(self.address, self.port) as local_port:
            yield ("127.0.0.1", int(local_port))

    def get_via_shell(self, path: str) -> str | None:
        conn = self.conn()
        res = conn.run(shell_get_command(self.address, self.port, path), timeout=15)
        if res.rc == 127:
            raise TaskError(
                f"{conn.host}: cannot reach the store at {self.address}:{self.port} from here, the connection "
                "cannot forward ports, and the host has neither curl nor wget",
                fix="make the store's port reachable from this machine, or install curl on the host",
            )
        return res.stdout if res.ok else None


def shell_get_command(address: str, port: int, path: str) -> str:
    """The command a store host runs when the store's port cannot be reached from here (plans print it)."""
    url = f"http://{address}:{port}{path}"
    return (
        f"if command -v curl >/dev/null; then curl -fsS -m 5 {q(url)}; "
        f"elif command -v wget >/dev/null; then wget -q -T 5 -O - {q(url)}; "
        f"else echo 'neither curl nor wget on the host' >&2; exit 127; fi"
    )


def http_get(host: str, port: int, path: str, timeout: float = 3.0) -> str | None:
    """Body of GET http://host:port/path, or None when the store does not answer 2xx."""
    try:
        with urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
            body: bytes = resp.read()
            return body.decode("utf-8", "replace")
    except (URLError, OSError, ValueError):
        return None


def kv_endpoint_of(inventory: Inventory, host: str) -> tuple[str, int]:
    for name, address, port in inventory.kv_endpoints():
        if name == host:
            return address, port
    raise TaskError(
        f"{host} is not one of kv_store.hosts ({', '.join(inventory.store().hosts)})",
        fix="run the kv_store task on the hosts listed in kv_store.hosts only",
    )


def first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]
