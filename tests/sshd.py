"""A real OpenSSH server on loopback for e2e tests of the SSH transport.

``start_sshd()`` runs ``/usr/sbin/sshd -D -e -f <generated config>`` on 127.0.0.1 on a free port, with
its own host key, an ``authorized_keys`` holding generated client keys (ed25519, rsa, and an ecdsa key
protected by a passphrase), root login by key, and password login for the test users. It waits until
the server answers with an SSH banner and is stopped by its pid.

``sudo_users()`` creates (only if missing) ``provtest``, a non-root user with passwordless sudo,
``provtest-nosudo``, a user sudo asks a password from, and a password-login user; it removes what it
added on exit.

Use the ``sshd`` fixture (module scope: one server per test module)::

    from tests.sshd import sshd  # noqa: F401  (pytest finds the fixture by name)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from provisioner.connection.ssh import SSHTarget

SSHD = "/usr/sbin/sshd"
SUDO_USER = "provtest"
NOSUDO_USER = "provtest-nosudo"
PASSWORD_USER = "password"  # key in Sshd.users of the per-process password-login user
KEY_PASSPHRASE = "correct horse battery staple"


@dataclass
class TestUser:
    name: str
    password: str = field(repr=False)


@dataclass
class Sshd:
    """A running sshd and everything a client needs to talk to it."""

    address: str
    port: int
    user: str
    directory: Path
    client_key: Path  # ed25519, no passphrase
    rsa_key: Path  # rsa, no passphrase
    ecdsa_key: Path  # ecdsa, protected by KEY_PASSPHRASE
    host_public_key: str  # "ssh-ed25519 AAAA..."
    known_hosts: Path  # holds host_public_key for [address]:port
    log: Path
    pid: int
    users: dict[str, TestUser] = field(default_factory=dict)

    @property
    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def write_known_hosts(self, path: Path, public_key: str | None = None) -> Path:
        """A known_hosts file at ``path`` with ``public_key`` (default: the real host key)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{self.known_hosts_name} {public_key or self.host_public_key}\n")
        return path

    def write_wrong_known_hosts(self, path: Path) -> Path:
        """A known_hosts file claiming a different ed25519 key for this server (a 'changed' key)."""
        other = self.directory / "other_host_key"
        if not other.exists():
            _keygen(other, "ed25519")
        return self.write_known_hosts(path, " ".join(other.with_suffix(".pub").read_text().split()[:2]))

    def target(self, **overrides: Any) -> SSHTarget:
        """An SSHTarget for this server as root with the ed25519 key; isolated from ~/.ssh."""
        from provisioner.connection.ssh import SSHTarget

        empty_config = self.directory / "empty_ssh_config"
        empty_config.touch()
        values: dict[str, Any] = {
            "name": "sshd-test",
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "private_key": self.client_key,
            "known_hosts": self.known_hosts,
            "ssh_config": empty_config,
            "use_agent": False,
            "retries": 0,
            "connect_timeout": 5.0,
        }
        values.update(overrides)
        return SSHTarget(**values)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, check=True, input=stdin, text=True, capture_output=True)


def _keygen(path: Path, kind: str, passphrase: str = "") -> None:
    bits = ["-b", "3072"] if kind == "rsa" else []
    _run("ssh-keygen", "-q", "-t", kind, *bits, "-N", passphrase, "-C", f"provtest-{kind}", "-f", str(path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _config(d: Path, port: int) -> str:
    return f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/ssh_host_ed25519_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
PermitTunnel no
X11Forwarding no
MaxSessions 10
MaxStartups 50
MaxAuthTries 10
PrintMotd no
PermitUserEnvironment no
LogLevel VERBOSE
"""


@contextlib.contextmanager
def start_sshd(users: dict[str, TestUser] | None = None) -> Iterator[Sshd]:
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the loopback sshd tests need root (sshd privilege separation, test users)")
    # sshd's privilege-separation directory; normally made by the ssh service, left in place for others
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    # sshd reads authorized_keys as the logging-in user: the directory must be traversable by them
    d = Path(tempfile.mkdtemp(prefix="prov-sshd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        d.chmod(0o755)
        _keygen(d / "ssh_host_ed25519_key", "ed25519")
        _keygen(d / "id_ed25519", "ed25519")
        _keygen(d / "id_rsa", "rsa")
        _keygen(d / "id_ecdsa", "ecdsa", KEY_PASSPHRASE)
        pubs = [(d / f"{k}.pub").read_text() for k in ("id_ed25519", "id_rsa", "id_ecdsa")]
        (d / "authorized_keys").write_text("".join(pubs))
        (d / "authorized_keys").chmod(0o644)
        host_pub = " ".join((d / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        log = d / "sshd.log"
        for _attempt in range(5):  # the free port can be taken between probing and binding
            port = free_port()
            (d / "sshd_config").write_text(_config(d, port))
            with log.open("ab") as logf:
                proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=logf, stderr=logf)
            if _wait_for_banner(port, proc, time.monotonic() + 10):
                break
            _stop(proc)
            proc = None
        else:
            raise RuntimeError(f"sshd did not start; its log:\n{log.read_text(errors='replace')}")
        server = Sshd(
            address="127.0.0.1",
            port=port,
            user="root",
            directory=d,
            client_key=d / "id_ed25519",
            rsa_key=d / "id_rsa",
            ecdsa_key=d / "id_ecdsa",
            host_public_key=host_pub,
            known_hosts=d / "known_hosts",
            log=log,
            pid=proc.pid,
            users=dict(users or {}),
        )
        server.write_known_hosts(server.known_hosts)
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(d, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def sudo_users() -> Iterator[dict[str, TestUser]]:
    """Test users; only what this call added is removed.

    ``provtest`` (passwordless sudo) and ``provtest-nosudo`` (sudo wants a password) are shared by
    concurrent test runs, so they get no password at all (hash ``*``: no password login, but not
    locked, so key logins work). Password logins use a user of this process only, ``provpw-<pid>``,
    so that no other run can change its password underneath.
    """
    if os.geteuid() != 0:
        pytest.skip("creating test users needs root")
    if shutil.which("sudo") is None:
        _run("apt-get", "install", "-y", "-q", "sudo")
    created: list[str] = []
    sudoers = Path(f"/etc/sudoers.d/{SUDO_USER}-{os.getpid()}")
    pw_user = f"provpw-{os.getpid()}"
    users = {
        SUDO_USER: TestUser(SUDO_USER, ""),
        NOSUDO_USER: TestUser(NOSUDO_USER, ""),
        PASSWORD_USER: TestUser(pw_user, secrets.token_urlsafe(18)),
    }
    try:
        for user in users.values():
            if not _user_exists(user.name):
                _run("useradd", "--create-home", "--shell", "/bin/sh", user.name)
                created.append(user.name)
            if user.password:
                _run("chpasswd", stdin=f"{user.name}:{user.password}\n")
            else:
                _run("usermod", "--password", "*", user.name)
        sudoers.write_text(f"{SUDO_USER} ALL=(ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        _run("visudo", "-c", "-q", "-f", str(sudoers))
        yield users
    finally:
        sudoers.unlink(missing_ok=True)
        for name in created:
            _remove_user(name)


def _remove_user(name: str) -> None:
    """userdel refuses while the user's sshd session processes are still exiting: wait, then force."""
    for _ in range(20):
        subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
        if not _user_exists(name):
            return
        time.sleep(0.1)
    subprocess.run(["userdel", "--force", "--remove", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    """One loopback sshd (and the sudo test users) per test module."""
    with sudo_users() as users, start_sshd(users) as server:
        yield server
