"""The SSH transport: one paramiko Transport per host, shared by every command of a run.

``SSHConnection.open(target)`` resolves the target against ``~/.ssh/config``, connects (through one or
more ProxyJump hops if configured), checks the host key against known_hosts itself, authenticates and
returns a live connection. Every ``run``/``put``/``get`` is one session channel on that transport; the
transport is safe to use from several threads at once. ``forward()`` tunnels local TCP connections to a
port as seen from the host (the KV store's HTTP API) through the same transport.

Precedence of settings, per field: a value set on ``SSHTarget`` (not None) wins; otherwise the value
from ``~/.ssh/config`` (or ``SSHTarget.ssh_config``) for the target's ``address``; otherwise the built-in
default (port 22, user root, ``~/.ssh/known_hosts``, the default identity files). ``HostName`` from
the config always replaces ``address`` (the address is what is looked up, like ``ssh ADDRESS``).
``host_key_policy`` comes from the target only; ``StrictHostKeyChecking`` in the config is ignored.

Known hosts: entries are matched like OpenSSH does (plain, hashed ``|1|`` and wildcard patterns,
``[host]:port`` for ports other than 22, ``@revoked``). ``accept-new`` appends the new key under the
same name form, hashed when the config says ``HashKnownHosts yes`` and in plain text otherwise (plain
is easier to audit; ``ssh-keygen -H`` hashes a file later). The file is replaced atomically under a
lock on its directory, so parallel connections to many new hosts lose no entry.

Nothing here retries a command: a connection lost mid-command raises ConnectError, and whether it is
safe to run the command again is the caller's decision.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import functools
import hashlib
import hmac
import logging
import os
import re
import select
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message
from paramiko.pkey import UnknownKeyType

from provisioner.connection.base import ConnectionStats, ShellConnection, Stdin, stdin_chunks
from provisioner.errors import ConnectError, HostKeyError, RemoteError

HostKeyPolicy = Literal["strict", "accept-new"]

# paramiko logs what it also raises (a refused port forward while a store starts: "Secsh channel 5 open
# FAILED"); with no handler, Python prints such warnings on stderr in the middle of the run's output.
# Every failure reaches the operator as our own error, so its log goes nowhere unless a handler is set.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# exit code reported for a command stopped by its timeout (the convention of coreutils' timeout)
TIMEOUT_RC = 124
_BACKOFF_FIRST = 0.5  # seconds before the second connection attempt; doubles each time
_DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")
_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
_KEYSCAN_TYPE = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}


@dataclass(frozen=True)
class SSHTarget:
    """How to reach one inventory host. None means "from ~/.ssh/config, else the default"."""

    name: str  # inventory host name, used in every message
    address: str
    port: int | None = None  # default 22
    user: str | None = None  # default root
    private_key: Path | None = None
    known_hosts: Path | None = None  # default ~/.ssh/known_hosts
    host_key_policy: HostKeyPolicy = "strict"
    become: bool | None = None  # None: use sudo when the user is not root
    password: str | None = field(default=None, repr=False)
    key_passphrase: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    retries: int = 2  # extra attempts after a network failure; auth and host key failures never retry
    keepalive: int = 15  # seconds; 0 disables
    ssh_config: Path | None = None  # default ~/.ssh/config when it exists
    proxy_jump: str | None = None  # "[user@]host[:port][,...]"; "none" disables a configured one
    use_agent: bool = True  # try the keys of $SSH_AUTH_SOCK (IdentitiesOnly yes in the config disables)
    max_sessions: int = 10  # concurrent commands; must not exceed the server's MaxSessions (default 10)


@dataclass(frozen=True)
class Endpoint:
    """One SSH hop after ~/.ssh/config has been applied."""

    label: str  # for messages: the inventory name, or "jump host X for NAME"
    address: str
    port: int
    user: str
    identities: tuple[Path, ...]
    identities_required: bool  # an explicitly given key must load; default keys may be skipped
    use_agent: bool
    jump: bool = False

    @property
    def known_hosts_name(self) -> str:
        return known_hosts_name(self.address, self.port)


@dataclass(frozen=True)
class Route:
    """The hops to the target (jumps first) and the shared host key settings."""

    jumps: tuple[Endpoint, ...]
    target: Endpoint
    known_hosts: Path
    hash_known_hosts: bool


# ---------------------------------------------------------------------------------------------------
# ~/.ssh/config resolution


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _load_config(host: str, path: Path | None) -> paramiko.SSHConfig:
    if path is None:
        path = _home() / ".ssh" / "config"
        if not path.exists():
            return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(path.expanduser()))
    except OSError as exc:
        raise ConnectError(host, f"cannot read SSH config {path}: {exc.strerror}", "fix the ssh_config path") from exc
    except paramiko.SSHException as exc:
        raise ConnectError(host, f"invalid SSH config {path}: {exc}", "fix the file") from exc


def _config_identities(cfg: paramiko.SSHConfigDict) -> tuple[Path, ...]:
    raw = cast(Any, cfg).get("identityfile") or []
    items = [raw] if isinstance(raw, str) else list(raw)
    return tuple(Path(os.path.expanduser(str(p))) for p in items)


def _default_identities() -> tuple[Path, ...]:
    ssh_dir = _home() / ".ssh"
    return tuple(ssh_dir / n for n in _DEFAULT_IDENTITIES if (ssh_dir / n).exists())


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """``[ssh://][user@]host[:port]`` (host may be ``[v6]``) -> (user, host, port)."""
    spec = spec.strip().removeprefix("ssh://")
    user, _, hostport = spec.rpartition("@")
    port: str | None = None
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    else:
        host = hostport
    if not host or (port is not None and not port.isdigit()):
        raise ValueError(f"invalid ProxyJump hop {spec!r}; expected [user@]host[:port]")
    return (user or None), host, (int(port) if port else None)


def resolve(target: SSHTarget) -> Route:
    """Apply the SSH config to ``target``: where each hop goes, as whom, with which keys."""
    config = _load_config(target.name, target.ssh_config)
    cfg = config.lookup(target.address)
    identities: tuple[Path, ...]
    if target.private_key is not None:
        identities, required = (Path(os.path.expanduser(str(target.private_key))),), True
    elif _config_identities(cfg):
        identities, required = _config_identities(cfg), False
    else:
        identities, required = _default_identities(), False
    use_agent = target.use_agent and cfg.get("identitiesonly", "no").lower() != "yes"
    dest = Endpoint(
        label=target.name,
        address=cfg.get("hostname", target.address),
        port=target.port if target.port is not None else int(cfg.get("port", 22)),
        user=target.user if target.user is not None else cfg.get("user", "root"),
        identities=identities,
        identities_required=required,
        use_agent=use_agent,
    )
    jump_spec = target.proxy_jump if target.proxy_jump is not None else cfg.get("proxyjump")
    jumps: list[Endpoint] = []
    if jump_spec and jump_spec.strip().lower() != "none":
        for hop in jump_spec.split(","):
            try:
                user, host, port = parse_jump(hop)
            except ValueError as exc:
                raise ConnectError(target.name, str(exc), "fix ProxyJump in the SSH config") from exc
            hcfg = config.lookup(host)
            hop_ids = _config_identities(hcfg) or identities
            jumps.append(
                Endpoint(
                    label=f"jump host {host} (for {target.name})",
                    address=hcfg.get("hostname", host),
                    port=port if port is not None else int(hcfg.get("port", 22)),
                    user=user or hcfg.get("user", "root"),
                    identities=hop_ids,
                    identities_required=False,
                    use_agent=target.use_agent and hcfg.get("identitiesonly", "no").lower() != "yes",
                    jump=True,
                )
            )
    if target.known_hosts is not None:
        known_hosts = target.known_hosts
    elif cfg.get("userknownhostsfile"):
        known_hosts = Path(cfg["userknownhostsfile"].split()[0])
    else:
        known_hosts = _home() / ".ssh" / "known_hosts"
    return Route(
        jumps=tuple(jumps),
        target=dest,
        known_hosts=Path(os.path.expanduser(str(known_hosts))),
        hash_known_hosts=cfg.get("hashknownhosts", "no").lower() == "yes",
    )


# ---------------------------------------------------------------------------------------------------
# known_hosts


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class KnownKey:
    key_type: str
    blob: bytes
    line: int
    marker: str  # "" or "@revoked" / "@cert-authority"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    """OpenSSH patterns know only * and ? (``[`` is literal: ``[host]:port``)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()))


def _pattern_matches(patterns: str, name: str) -> bool:
    if patterns.startswith("|1|"):
        try:
            _, _, salt64, hash64 = patterns.split("|")
            digest = hmac.new(base64.b64decode(salt64), name.encode(), hashlib.sha1).digest()
        except ValueError:
            return False
        return hmac.compare_digest(digest, base64.b64decode(hash64))
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _glob(pattern.lstrip("!")).fullmatch(name.lower()):
            if negated:
                return False
            matched = True
    return matched


def known_keys(path: Path, name: str) -> list[KnownKey]:
    """The keys ``path`` holds for ``name`` (a host or ``[host]:port``); unreadable lines are skipped."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    keys: list[KnownKey] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        if len(fields) < 3 or not _pattern_matches(fields[0], name):
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except ValueError:
            continue
        keys.append(KnownKey(fields[1], blob, lineno, marker))
    return keys


def _key_types_to_offer(known: list[KnownKey], offered: list[str]) -> list[str]:
    """Put the host key algorithms we already know for this host first, as OpenSSH does."""
    first: list[str] = []
    for k in known:
        if k.marker:
            continue
        algs = _RSA_ALGORITHMS if k.key_type == "ssh-rsa" else (k.key_type,)
        first += [a for a in algs if a in offered and a not in first]
    return first + [a for a in offered if a not in first]


@contextlib.contextmanager
def _locked_dir(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _append_known_host(path: Path, line: str) -> None:
    """Append ``line`` to ``path`` atomically (temp file + rename), creating ~/.ssh-like dirs 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        old = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        old, mode = b"", 0o600
    if old and not old.endswith(b"\n"):
        old += b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(old + line.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _hash_name(name: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def check_host_key(
    ep: Endpoint, key: paramiko.PKey, route: Route, policy: HostKeyPolicy, host: str
) -> Literal["known", "recorded"]:
    """Compare the key the server presented with known_hosts; record it under accept-new.

    Raises HostKeyError for an unknown key (strict), a changed key, a key of a type other than the
    known ones (a server that "lost" its known key type is treated as changed), or a revoked key.
    """
    name = ep.known_hosts_name
    kh = route.known_hosts
    offered_type, offered_blob = key.get_name(), key.asbytes()
    offered_fp = fingerprint(offered_blob)
    offered = f"{offered_type} {offered_fp}"
    where = f"{ep.label} ({name})" if ep.label != host else name

    def changed(expected: list[KnownKey], why: str) -> HostKeyError:
        exp = ", ".join(f"{k.key_type} {k.fingerprint} (line {k.line})" for k in expected)
        return HostKeyError(
            host,
            f"SSH HOST KEY CHANGED for {where}: {why}. Someone could be eavesdropping on you right now "
            f"(a man-in-the-middle attack), or the host was reinstalled. Expected {exp} in {kh}; the "
            f"server offered {offered}. Refusing to connect.",
            f"confirm the new fingerprint out of band (on the host: ssh-keygen -lf "
            f"/etc/ssh/ssh_host_*_key.pub); if the change is legitimate, remove the old key with "
            f"`ssh-keygen -f {kh} -R '{name}'` and connect again (host_key_policy: accept-new records "
            f"the new key)",
        )

    def decide() -> Literal["known", "recorded"] | HostKeyError:
        entries = known_keys(kh, name)
        if any(k.marker == "@revoked" and k.blob == offered_blob for k in entries):
            return HostKeyError(
                host,
                f"the SSH host key of {where} ({offered}) is marked @revoked in {kh}; refusing to connect",
                "the host must get a new host key; then remove the old lines for it from known_hosts",
            )
        plain = [k for k in entries if not k.marker]
        same_type = [k for k in plain if k.key_type == offered_type]
        if any(k.blob == offered_blob for k in same_type):
            return "known"
        if same_type:
            return changed(same_type, "the key differs from the one recorded")
        if plain:
            return changed(plain, f"the server no longer offers the key type on record ({offered_type})")
        if policy != "accept-new":
            scan_type = _KEYSCAN_TYPE.get(offered_type, "ecdsa")
            port = f"-p {ep.port} " if ep.port != 22 else ""
            return HostKeyError(
                host,
                f"unknown SSH host key for {where}: {offered}; refusing to connect "
                f"(host_key_policy: strict, known_hosts: {kh})",
                f"verify the fingerprint out of band (on the host: ssh-keygen -lf "
                f"/etc/ssh/ssh_host_{scan_type}_key.pub), then add it: "
                f"`ssh-keyscan {port}-t {scan_type} {ep.address} >> {kh}`; "
                f"or set host_key_policy: accept-new to record keys of new hosts on first contact",
            )
        return "recorded"

    verdict = decide()
    if verdict == "recorded":
        kh.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked_dir(kh.parent):
            verdict = decide()  # another thread or process may have recorded this host meanwhile
            if verdict == "recorded":
                stored = _hash_name(name) if route.hash_known_hosts else name
                _append_known_host(kh, f"{stored} {offered_type} {key.get_base64()}\n")
    if isinstance(verdict, HostKeyError):
        raise verdict
    return verdict


# ---------------------------------------------------------------------------------------------------
# connecting


def _slice(deadline: float | None, most: float) -> float:
    """How long to block before looking at the deadline and the transport again."""
    return most if deadline is None else max(0.0, min(most, deadline - time.monotonic()))


class _Transient(Exception):
    """A network failure worth another attempt; carries the operator-facing message and fix."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def _network_error(host: str, ep: Endpoint, exc: BaseException, timeout: float) -> _Transient | ConnectError:
    at = f"{ep.address}:{ep.port}"
    who = f" ({ep.label})" if ep.jump else ""
    if isinstance(exc, socket.gaierror):
        return ConnectError(
            host,
            f"cannot resolve host name {ep.address!r}{who}: {exc.strerror}",
            "check the address in the inventory (or HostName in the SSH config) and DNS",
        )
    if isinstance(exc, ConnectionRefusedError):
        return _Transient(
            f"connection refused by {at}{who}",
            f"check that sshd runs on the host and listens on port {ep.port} (the inventory's port or "
            f"Port in the SSH config) and that no firewall rejects it",
        )
    if isinstance(exc, TimeoutError):
        return _Transient(
            f"no answer from {at}{who} within {timeout:g}s",
            "check that the host is up, the address is right and no firewall drops SSH; "
            "raise connect_timeout for slow links",
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        return _Transient(
            f"cannot reach {at}{who}: {exc.strerror}",
            "check that the host is up and routed from here (ip route get ADDRESS)",
        )
    if isinstance(exc, paramiko.ChannelException):
        return _Transient(
            f"the jump host could not open a connection to {at}: {exc.text}",
            "check that the target is reachable from the jump host and that it allows TCP forwarding "
            "(AllowTcpForwarding yes)",
        )
    return _Transient(
        f"SSH handshake with {at}{who} failed: {exc or type(exc).__name__}",
        "check that the port belongs to an SSH server and that the host is not overloaded",
    )


def _read_key(path: Path, passphrase: str | None) -> paramiko.PKey:
    secret = cast(Any, passphrase.encode() if passphrase is not None else None)
    try:
        return paramiko.PKey.from_path(path, secret)
    except TypeError:
        if passphrase is None:
            raise
        # a passphrase set for every host, and this key is not encrypted
        return paramiko.PKey.from_path(path, None)


def _load_key(host: str, ep: Endpoint, path: Path, passphrase: str | None) -> paramiko.PKey | None:
    """Load one identity; a default or config identity that cannot be used is skipped (None)."""
    what = f"private key {path}" + (f" for {ep.label}" if ep.jump else "")
    problem: tuple[str, str]
    try:
        return _read_key(path, passphrase)
    except FileNotFoundError as exc:
        if not ep.identities_required:
            return None
        raise ConnectError(host, f"{what} does not exist", "fix private_key in the inventory") from exc
    except PermissionError as exc:
        raise ConnectError(host, f"{what} is not readable", "check the file's owner and mode") from exc
    except (paramiko.PasswordRequiredException, TypeError) as exc:
        cause: Exception = exc
        problem = (
            f"{what} is encrypted and no passphrase was given",
            "set key_passphrase for the host, or load the key into ssh-agent (ssh-add)",
        )
    except (paramiko.SSHException, ValueError) as exc:
        cause = exc
        if passphrase is not None:
            problem = (f"cannot decrypt {what}: wrong passphrase, or not a private key", "check key_passphrase")
        else:
            problem = (f"cannot load {what}: not a private key", "use an OpenSSH or PEM private key")
    except UnknownKeyType as exc:
        cause = exc
        problem = (f"{what} has an unsupported key type", "use an ed25519, ecdsa or rsa key")
    if not ep.identities_required:
        return None
    raise ConnectError(host, *problem) from cause


def _authenticate(t: paramiko.Transport, host: str, ep: Endpoint, password: str | None, passphrase: str | None) -> None:
    tried: list[str] = []
    allowed: list[str] | None = None

    def attempt(label: str, fn: Callable[[], object]) -> bool:
        nonlocal allowed
        if (
            allowed is not None
            and label.split()[0] not in allowed
            and not (label.startswith("password") and "keyboard-interactive" in allowed)
        ):
            return False
        tried.append(label)
        try:
            fn()
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
            return False
        except paramiko.AuthenticationException:
            return False
        return t.is_authenticated()

    for path in ep.identities:
        key = _load_key(host, ep, path, passphrase)
        if key is not None and attempt(
            f"publickey {path} ({key.get_name()})", functools.partial(t.auth_publickey, ep.user, key)
        ):
            return
    if ep.use_agent and os.environ.get("SSH_AUTH_SOCK"):
        agent = paramiko.Agent()
        try:
            for akey in agent.get_keys():
                if attempt(
                    f"publickey agent ({akey.get_name()} {fingerprint(akey.asbytes())})",
                    functools.partial(t.auth_publickey, ep.user, akey),
                ):
                    return
        finally:
            agent.close()
    if password is not None and attempt("password", lambda: t.auth_password(ep.user, password)):
        return
    methods = ", ".join(tried) or "nothing (no key file, agent key or password available)"
    server = f"; the server accepts: {', '.join(allowed)}" if allowed else ""
    on = f"{ep.label} ({ep.address}:{ep.port})" if ep.jump else f"{ep.address}:{ep.port}"
    raise ConnectError(
        host,
        f"authentication as {ep.user!r} on {on} failed (tried: {methods}){server}",
        f"put the public key in ~{ep.user}/.ssh/authorized_keys on the host (ssh-copy-id -i KEY.pub -p "
        f"{ep.port} {ep.user}@{ep.address}), or fix user/private_key in the inventory; the host's sshd "
        "log (journalctl -u ssh) says why it refused",
    )


def _connect_hop(
    ep: Endpoint,
    via: paramiko.Transport | None,
    target: SSHTarget,
    route: Route,
    password: str | None,
) -> paramiko.Transport:
    timeout = target.connect_timeout
    sock: Any = None
    t: paramiko.Transport | None = None
    try:
        try:
            if via is None:
                sock = socket.create_connection((ep.address, ep.port), timeout=timeout)
                # small request/response packets: without this every exchange waits for a delayed ACK
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                sock = via.open_channel("direct-tcpip", (ep.address, ep.port), ("127.0.0.1", 0), timeout=timeout)
            t = paramiko.Transport(sock)
            t.banner_timeout = t.handshake_timeout = t.auth_timeout = timeout
            opts = t.get_security_options()
            known = known_hosts_name(ep.address, ep.port)
            opts.key_types = _key_types_to_offer(known_keys(route.known_hosts, known), list(opts.key_types))
            t.start_client(timeout=timeout)
            key = t.get_remote_server_key()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _network_error(target.name, ep, exc, timeout) from exc
        check_host_key(ep, key, route, target.host_key_policy, target.name)
        try:
            _authenticate(t, target.name, ep, password, target.key_passphrase)
        except (OSError, EOFError) as exc:
            raise _network_error(target.name, ep, exc, timeout) from exc
        except paramiko.SSHException as exc:
            raise ConnectError(
                target.name,
                f"SSH authentication on {ep.address}:{ep.port} broke off: {exc}",
                "check the host's sshd log (journalctl -u ssh)",
            ) from exc
        if target.keepalive > 0:
            t.set_keepalive(target.keepalive)
        return t
    except BaseException:
        if t is not None:
            t.close()
        if sock is not None:
            sock.close()
        raise


# ---------------------------------------------------------------------------------------------------
# the connection


class SSHConnection(ShellConnection):
    """A live SSH connection to one host; see the module docstring."""

    def __init__(
        self, target: SSHTarget, route: Route, transport: paramiko.Transport, jumps: list[paramiko.Transport]
    ) -> None:
        self.host = target.name
        self.target = target
        self.route = route
        self.user = route.target.user
        self.needs_become = target.become if target.become is not None else route.target.user != "root"
        self.stats = ConnectionStats(connects=1)
        self._transport = transport
        self._jumps = jumps
        self._sessions = threading.BoundedSemaphore(max(1, target.max_sessions))
        self._closed = False

    def __repr__(self) -> str:
        ep = self.route.target
        via = f" via {','.join(j.address for j in self.route.jumps)}" if self.route.jumps else ""
        state = "closed" if self._closed else "open"
        return f"<SSHConnection {self.host} {ep.user}@{ep.address}:{ep.port}{via} {state}>"

    @classmethod
    def open(cls, target: SSHTarget) -> SSHConnection:
        """Connect, check the host key, authenticate. Raises ConnectError / HostKeyError."""
        route = resolve(target)
        attempts = max(0, target.retries) + 1
        delay = _BACKOFF_FIRST
        for attempt in range(1, attempts + 1):
            opened: list[paramiko.Transport] = []
            try:
                via: paramiko.Transport | None = None
                for hop in route.jumps:
                    via = _connect_hop(hop, via, target, route, None)
                    opened.append(via)
                t = _connect_hop(route.target, via, target, route, target.password)
                return cls(target, route, t, opened)
            except _Transient as exc:
                for jt in reversed(opened):
                    jt.close()
                if attempt == attempts:
                    tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
                    raise ConnectError(target.name, exc.message + tries, exc.fix) from exc.__cause__
                time.sleep(delay)
                delay *= 2
            except BaseException:
                for jt in reversed(opened):
                    jt.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def __enter__(self) -> SSHConnection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self._transport.close()
        for t in reversed(self._jumps):
            t.close()

    @property
    def transport(self) -> paramiko.Transport:
        return self._transport

    # -- commands -----------------------------------------------------------------------------------

    def _lost(self, what: str, exc: BaseException | None = None) -> ConnectError:
        ep = self.route.target
        return ConnectError(
            self.host,
            f"SSH connection to {ep.address}:{ep.port} lost {what}",
            "check that the host is up and reachable; the command may or may not have completed, "
            "so re-run the playbook (its steps are idempotent) rather than the command by hand",
        )

    def _open_channel(self, kind: str, cmd: str, dest: tuple[str, int] | None = None) -> paramiko.Channel:
        if self._closed:
            raise self._lost(f"(connection already closed) before: {cmd}")
        timeout = self.target.connect_timeout
        deadline = time.monotonic() + timeout
        pause = 0.005
        try:
            if kind != "session":
                return self._transport.open_channel(kind, dest, ("127.0.0.1", 0), timeout=timeout)
            while True:
                try:
                    return self._transport.open_session(timeout=timeout)
                except paramiko.SSHException:
                    # sshd frees a session slot only after it has processed our close of an earlier
                    # channel; right after one closes, the next open can be refused for a moment.
                    # (paramiko keeps one "last error" per transport, so a refusal seen by several
                    # threads at once can surface as a bare SSHException instead of ChannelException.)
                    if not self._transport.is_active() or time.monotonic() + pause > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, 0.2)
        except paramiko.ChannelException as exc:
            raise RemoteError(
                self.host,
                cmd,
                -1,
                f"channel refused: {exc.text}",
                what="the SSH server refused a channel",
                fix="check MaxSessions / AllowTcpForwarding in the host's sshd_config",
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if self._transport.is_active():
                raise RemoteError(
                    self.host,
                    cmd,
                    -1,
                    str(exc),
                    what="the SSH server did not open a channel",
                    fix="check MaxSessions / AllowTcpForwarding in the host's sshd_config and its log",
                ) from exc
            raise self._lost(f"before: {cmd}") from exc

    def _exec(self, cmd: str, stdin: Stdin | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        with self._sessions:
            chan = self._open_channel("session", cmd)
            try:
                rc, out, err = self._run_channel(chan, cmd, stdin, timeout)
            finally:
                chan.close()
        if self.needs_become and cmd.startswith("sudo -n "):
            self._check_sudo(cmd, rc, err)
        return rc, out, err

    def _run_channel(
        self, chan: paramiko.Channel, cmd: str, stdin: Stdin | None, timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        sender: threading.Thread | None = None
        read_error: list[OSError] = []
        try:
            chan.exec_command(cmd)
            if stdin is not None and stdin != b"":
                # a separate writer, so a command that answers while reading cannot deadlock us.
                # Chunks of one packet each: paramiko's sendall re-slices what is left of its argument
                # after every packet, quadratic in the size (a 70 MB upload took 30 s instead of 0.4 s).
                def send() -> None:
                    chunks = stdin_chunks(stdin)
                    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                        while True:
                            try:
                                chunk = next(chunks, None)
                            except OSError as exc:  # reading the local stream: the command sees EOF
                                read_error.append(exc)
                                chunk = None
                            if chunk is None:
                                break
                            chan.sendall(chunk)
                        chan.shutdown_write()

                sender = threading.Thread(target=send, name=f"ssh-stdin-{self.host}", daemon=True)
                sender.start()
            else:
                chan.shutdown_write()
            ready = chan.fileno()  # readable when stdout or stderr has data, or at EOF/close
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.eof_received or chan.closed:
                    while chan.recv_ready():
                        out += chan.recv(65536)
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out(chan, cmd, timeout, out, err)
                select.select([ready], [], [], _slice(deadline, 5.0))
                if not self._transport.is_active():
                    raise self._lost(f"while running: {cmd}")
            while not chan.status_event.wait(_slice(deadline, 0.5)):
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out(chan, cmd, timeout, out, err)
                if not self._transport.is_active():
                    raise self._lost(f"while running: {cmd}")
            if chan.exit_status == -1 and not self._transport.is_active():
                raise self._lost(f"while running: {cmd}")
            if sender is not None:
                sender.join(timeout=5)
            if read_error:
                raise RemoteError(
                    self.host,
                    cmd,
                    chan.exit_status,
                    str(read_error[0]),
                    what="could not read the local data to send to the command (it saw a truncated input)",
                    fix="check that the local file is readable and complete",
                )
            return chan.exit_status, bytes(out), bytes(err)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if not self._transport.is_active():
                raise self._lost(f"while running: {cmd}") from exc
            raise RemoteError(self.host, cmd, -1, str(exc), what="SSH channel failed") from exc
        finally:
            if sender is not None:
                chan.close()  # unblocks a writer still waiting for window space
                sender.join(timeout=5)

    def _timed_out(
        self, chan: paramiko.Channel, cmd: str, timeout: float | None, out: bytearray, err: bytearray
    ) -> RemoteError:
        self._signal(chan, "KILL")
        chan.close()
        tail = (bytes(out) + bytes(err)).decode("utf-8", "replace")
        return RemoteError(
            self.host,
            cmd,
            TIMEOUT_RC,
            tail,
            what=f"command timed out after {timeout:g}s and was stopped",
            fix="find out why it hangs on the host, or give it a longer timeout; its SSH channel was "
            "closed (a process that ignores its closed output may still be running: check with ps)",
        )

    def _signal(self, chan: paramiko.Channel, name: str) -> None:
        """Best effort RFC 4254 "signal" request; OpenSSH honours it for logins other than root."""
        msg = Message()
        msg.add_byte(cMSG_CHANNEL_REQUEST)
        msg.add_int(chan.remote_chanid)
        msg.add_string("signal")
        msg.add_boolean(False)
        msg.add_string(name)
        with contextlib.suppress(Exception):
            cast(Any, self._transport)._send_user_message(msg)

    def _check_sudo(self, cmd: str, rc: int, err: bytes) -> None:
        text = err.decode("utf-8", "replace")
        if rc == 1 and ("password is required" in text or "a terminal is required" in text):
            raise RemoteError(
                self.host,
                cmd,
                rc,
                text,
                what=f"sudo asks user {self.user!r} for a password, so commands cannot run as root",
                fix=f"allow passwordless sudo for {self.user} on the host (e.g. "
                f"/etc/sudoers.d/provisioner: `{self.user} ALL=(ALL) NOPASSWD: ALL`), or connect as root "
                "(user: root in the inventory)",
            )
        if rc in (126, 127) and "sudo" in text and ("not found" in text or "No such file" in text):
            raise RemoteError(
                self.host,
                cmd,
                rc,
                text,
                what=f"sudo is not installed, so user {self.user!r} cannot act as root",
                fix="install sudo on the host and allow passwordless sudo for the user, or connect as root",
            )

    # -- port forwarding ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def forward(self, remote_host: str, remote_port: int) -> Iterator[int]:
        """Listen on 127.0.0.1:<ephemeral> and tunnel each connection to remote_host:remote_port.

        ``remote_host`` is resolved by the SSH host. Yields the local port; everything is closed on exit.
        A connection the host cannot open is closed at once; ``last_error`` of the forwarder says why.
        """
        fwd = _Forwarder(self, remote_host, remote_port)
        try:
            yield fwd.port
        finally:
            fwd.stop()


class _Forwarder:
    def __init__(self, conn: SSHConnection, remote_host: str, remote_port: int) -> None:
        self.conn = conn
        self.dest = (remote_host, remote_port)
        self.last_error: BaseException | None = None
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"ssh-forward-{conn.host}-{remote_port}", daemon=True
        )
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            th = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(th)
            th.start()

    def _serve(self, client: socket.socket) -> None:
        chan: paramiko.Channel | None = None
        try:
            chan = self.conn._open_channel("direct-tcpip", f"forward to {self.dest[0]}:{self.dest[1]}", self.dest)
        except Exception as exc:
            self.last_error = exc
            client.close()
            return
        with self._lock:
            if self._stopping:
                chan.close()
                client.close()
                return
            self._open.update((client, chan))
        try:
            self._pump(client, chan)
        except (OSError, ValueError, EOFError, paramiko.SSHException) as exc:
            if not self._stopping:
                self.last_error = exc
        finally:
            with self._lock:
                self._open.discard(client)
                self._open.discard(chan)
            chan.close()
            client.close()

    @staticmethod
    def _pump(client: socket.socket, chan: paramiko.Channel) -> None:
        sources: list[Any] = [client, chan]
        while sources:
            readable, _, _ = select.select(sources, [], [], 1.0)
            if client in readable:
                data = client.recv(65536)
                if data:
                    chan.sendall(data)
                else:
                    chan.shutdown_write()
                    sources.remove(client)
            if chan in readable:
                data = chan.recv(65536)
                if data:
                    client.sendall(data)
                else:
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_WR)
                    sources.remove(chan)

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            items = list(self._open)
            threads = list(self._threads)
        for item in items:
            with contextlib.suppress(Exception):
                item.close()
        for th in threads:
            th.join(timeout=5)
