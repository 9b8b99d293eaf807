"""SSHConnection against a real OpenSSH server on loopback (tests/sshd.py): no mocks."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from provisioner.connection.ssh import SSHConnection, fingerprint
from provisioner.errors import ConnectError, HostKeyError, RemoteError
from tests.sshd import KEY_PASSPHRASE, NOSUDO_USER, PASSWORD_USER, SUDO_USER, Sshd, free_port, sshd  # noqa: F401

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def conn(sshd: Sshd) -> Iterator[SSHConnection]:  # noqa: F811
    """One root connection shared by the tests that only run commands."""
    with SSHConnection.open(sshd.target()) as c:
        yield c


@pytest.fixture
def workdir(conn: SSHConnection) -> Iterator[str]:
    path = conn.check("mktemp -d /tmp/prov-ssh-test.XXXXXX").stdout.strip()
    yield path
    conn.check(f"rm -rf {path}")


def accepted_logins(sshd: Sshd) -> int:  # noqa: F811
    lines = sshd.log.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if line.startswith(("Accepted publickey for", "Accepted password for")))


# -- commands ----------------------------------------------------------------------------------------


def test_run_returns_rc_stdout_stderr_and_feeds_stdin(conn: SSHConnection) -> None:
    res = conn.run("echo out; echo err >&2; exit 3")
    assert (res.rc, res.stdout, res.stderr) == (3, "out\n", "err\n")
    assert conn.run("tr a-z A-Z", stdin=b"hello").stdout == "HELLO"
    big = os.urandom(3 * 1024 * 1024)  # larger than the channel window: flow control both ways
    rc, out, _ = conn.exec_bytes("cat", stdin=big)
    assert rc == 0 and out == big
    # lots of stderr while stdout is also written must not deadlock
    res = conn.run("i=0; while [ $i -lt 20000 ]; do echo e$i >&2; echo o$i; i=$((i+1)); done")
    assert res.ok and res.stdout.count("\n") == 20000 and res.stderr.count("\n") == 20000


def test_put_is_atomic_with_mode_and_owner(conn: SSHConnection, workdir: str) -> None:
    path = f"{workdir}/conf"
    conn.check(f"echo old > {path} && chmod 600 {path}")
    old_inode = conn.check(f"stat -c %i {path}").stdout
    conn.put(b"new content\n", path, mode=0o640, owner="root:root")
    assert conn.get(path) == b"new content\n"
    assert conn.check(f"stat -c '%a %U:%G' {path}").stdout.split() == ["640", "root:root"]
    assert conn.check(f"stat -c %i {path}").stdout != old_inode  # replaced by rename, not rewritten
    assert conn.check(f"ls -A {workdir}").stdout.split() == ["conf"]  # no temp file left


def test_failed_put_leaves_old_file_and_no_temp_file(conn: SSHConnection, workdir: str) -> None:
    path = f"{workdir}/conf"
    conn.put(b"v1", path)
    with pytest.raises(RemoteError, match="could not write"):
        conn.put(b"v2", path, owner="no-such-user-xyz")
    assert conn.get(path) == b"v1"
    assert conn.check(f"ls -A {workdir}").stdout.split() == ["conf"]


def test_get_returns_bytes_or_none(conn: SSHConnection, workdir: str) -> None:
    data = bytes(range(256)) * 4
    conn.put(data, f"{workdir}/bin")
    assert conn.get(f"{workdir}/bin") == data
    assert conn.get(f"{workdir}/missing") is None
    with pytest.raises(RemoteError):
        conn.get(workdir)  # a directory cannot be read


def test_one_connection_for_many_and_concurrent_commands(sshd: Sshd) -> None:  # noqa: F811
    before = accepted_logins(sshd)
    # as the sudo user: its /bin/sh starts in 2 ms, root's bash here sources a slow ~/.bashrc
    with SSHConnection.open(sshd.target(user=SUDO_USER)) as c:
        for i in range(10):
            assert c.run(f"echo {i}").stdout == f"{i}\n"

        def work(i: int) -> str:
            return c.run(f"sleep 0.0{i % 5}; echo t{i}").stdout

        # 40 commands on 16 threads: more at once than sshd's MaxSessions (10)
        with ThreadPoolExecutor(16) as pool:
            outs = list(pool.map(work, range(40)))
        assert outs == [f"t{i}\n" for i in range(40)]
        c.put(b"x", "/tmp/prov-ssh-count-test")
        assert c.get("/tmp/prov-ssh-count-test") == b"x"
        c.run("rm -f /tmp/prov-ssh-count-test")
        assert c.stats.connects == 1
        assert c.stats.round_trips == 10 + 40 + 3
    assert accepted_logins(sshd) - before == 1  # the server saw one login


def test_command_timeout_raises_and_connection_survives(sshd: Sshd) -> None:  # noqa: F811
    with SSHConnection.open(sshd.target(user=SUDO_USER)) as c:
        start = time.monotonic()
        with pytest.raises(RemoteError, match=r"timed out after 1s") as err:
            c.run("echo started; sleep 31.5", timeout=1)
        assert time.monotonic() - start < 3
        assert "sleep 31.5" in str(err.value) and "started" in str(err.value)
        assert err.value.rc == 124
        assert c.run("echo alive").stdout == "alive\n"
        time.sleep(0.3)
        # for a non-root login sshd delivers the KILL signal: the command is gone
        assert c.run("pgrep -f 'sleep 31[.]5'").rc == 1


def test_lost_connection_is_a_connect_error(sshd: Sshd) -> None:  # noqa: F811
    with SSHConnection.open(sshd.target()) as c:
        with pytest.raises(ConnectError, match="lost while running"):
            c.run("kill -9 $PPID; sleep 5")  # kills this connection's sshd process
        with pytest.raises(ConnectError, match="lost"):
            c.run("true")


# -- become ------------------------------------------------------------------------------------------


def test_become_for_non_root_user(sshd: Sshd, conn: SSHConnection, workdir: str) -> None:  # noqa: F811
    conn.check(f"chmod 755 {workdir} && mkdir -m 755 {workdir}/etc")
    path = f"{workdir}/etc/owned-by-root"
    with SSHConnection.open(sshd.target(user=SUDO_USER)) as u:
        assert u.needs_become
        assert u.run("id -un").stdout == f"{SUDO_USER}\n"
        assert u.run("id -un", sudo=True).stdout == "root\n"
        u.put(b"via sudo\n", path, mode=0o600, owner="root:root")
        assert u.get(path) == b"via sudo\n"  # readable only as root
    assert conn.check(f"stat -c '%a %U' {path}").stdout.split() == ["600", "root"]
    with SSHConnection.open(sshd.target(user=SUDO_USER, become=False)) as plain:
        assert not plain.needs_become
        with pytest.raises(RemoteError, match="could not write"):
            plain.put(b"x", f"{workdir}/etc/other")
        assert plain.run(f"cat {path}").rc != 0


def test_sudo_asking_for_password_says_how_to_fix(sshd: Sshd) -> None:  # noqa: F811
    with SSHConnection.open(sshd.target(user=NOSUDO_USER)) as u, pytest.raises(RemoteError) as err:
        u.run("true", sudo=True)
    text = str(err.value)
    assert "password" in text and "NOPASSWD" in text and "connect as root" in text
    assert NOSUDO_USER in text


# -- authentication ----------------------------------------------------------------------------------


def test_rsa_key_and_passphrase_protected_ecdsa_key(sshd: Sshd) -> None:  # noqa: F811
    with SSHConnection.open(sshd.target(private_key=sshd.rsa_key)) as c:
        assert c.run("true").ok
    with SSHConnection.open(sshd.target(private_key=sshd.ecdsa_key, key_passphrase=KEY_PASSPHRASE)) as c:
        assert c.run("true").ok
    with pytest.raises(ConnectError, match="encrypted and no passphrase"):
        SSHConnection.open(sshd.target(private_key=sshd.ecdsa_key))
    with pytest.raises(ConnectError, match="wrong passphrase") as err:
        SSHConnection.open(sshd.target(private_key=sshd.ecdsa_key, key_passphrase="s3cr3t-wrong"))
    assert "s3cr3t-wrong" not in str(err.value)


def test_password_auth_and_secrets_stay_out_of_messages(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    user = sshd.users[PASSWORD_USER]
    target = sshd.target(user=user.name, private_key=None, password=user.password)
    assert user.password not in repr(target)
    with SSHConnection.open(target) as c:
        assert c.run("id -un").stdout == f"{user.name}\n"
        assert user.password not in repr(c)
    bad = sshd.target(user=user.name, private_key=None, password="hunter2-wrong", retries=2)
    start = time.monotonic()
    with pytest.raises(ConnectError, match=f"authentication as '{user.name}'") as err:
        SSHConnection.open(bad)
    assert time.monotonic() - start < 5  # auth failures are not retried with backoff
    assert "hunter2-wrong" not in str(err.value) and "password" in str(err.value)
    assert not isinstance(err.value, HostKeyError)


def test_unauthorized_key_names_user_and_fix(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(ConnectError) as err:
        SSHConnection.open(sshd.target(private_key=key))
    assert "authentication as 'root'" in str(err.value) and str(key) in str(err.value)
    assert "authorized_keys" in str(err.value)


def test_ssh_agent_keys(sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(sshd.rsa_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))  # no default ~/.ssh keys: only the agent can help
        with SSHConnection.open(sshd.target(private_key=None, use_agent=True)) as c:
            assert c.run("true").ok
        with pytest.raises(ConnectError, match="authentication"):
            SSHConnection.open(sshd.target(private_key=None, use_agent=False))
    finally:
        agent.terminate()
        agent.wait(timeout=5)


# -- host keys ---------------------------------------------------------------------------------------


def host_fp(sshd: Sshd) -> str:  # noqa: F811
    out = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=sshd.host_public_key, text=True, capture_output=True, check=True
    ).stdout
    return out.split()[1]


def test_fingerprint_matches_openssh(sshd: Sshd) -> None:  # noqa: F811
    import base64

    assert fingerprint(base64.b64decode(sshd.host_public_key.split()[1])) == host_fp(sshd)


def test_strict_refuses_unknown_key(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    with pytest.raises(HostKeyError) as err:
        SSHConnection.open(sshd.target(known_hosts=kh))
    text = str(err.value)
    assert "unknown SSH host key" in text and f"[127.0.0.1]:{sshd.port}" in text
    assert f"ssh-ed25519 {host_fp(sshd)}" in text
    assert f"ssh-keyscan -p {sshd.port} -t ed25519 127.0.0.1 >> {kh}" in text
    assert kh.read_text() == ""  # strict never writes


def test_strict_refuses_changed_key_naming_mitm(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    kh = sshd.write_wrong_known_hosts(tmp_path / "known_hosts")
    for policy in ("strict", "accept-new"):
        with pytest.raises(HostKeyError) as err:
            SSHConnection.open(sshd.target(known_hosts=kh, host_key_policy=policy))
        text = str(err.value)
        assert "man-in-the-middle" in text and "CHANGED" in text
        assert host_fp(sshd) in text  # offered
        wrong = kh.read_text().split()
        assert fingerprint(__import__("base64").b64decode(wrong[2])) in text  # expected
        assert f"ssh-keygen -f {kh} -R '[127.0.0.1]:{sshd.port}'" in text


def test_accept_new_records_then_reconnects_strictly(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    kh = tmp_path / "fresh" / ".ssh" / "known_hosts"
    with SSHConnection.open(sshd.target(known_hosts=kh, host_key_policy="accept-new")) as c:
        assert c.run("true").ok
    assert stat.S_IMODE(kh.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    assert kh.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}\n"
    # OpenSSH itself finds the recorded key
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(kh)], capture_output=True)
    assert found.returncode == 0
    with SSHConnection.open(sshd.target(known_hosts=kh, host_key_policy="strict")) as c:
        assert c.run("true").ok
    with SSHConnection.open(sshd.target(known_hosts=kh, host_key_policy="accept-new")) as c:
        assert c.run("true").ok
    assert kh.read_text().count("\n") == 1  # not recorded twice


def test_accept_new_hashes_when_config_says_so(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    kh = tmp_path / "known_hosts"
    kh.write_text(
        "# keep me\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    )
    cfg = tmp_path / "config"
    cfg.write_text("Host *\n  HashKnownHosts yes\n")
    with SSHConnection.open(sshd.target(known_hosts=kh, host_key_policy="accept-new", ssh_config=cfg)):
        pass
    lines = kh.read_text().splitlines()
    assert lines[:2] == kh.read_text().splitlines()[:2] and lines[0] == "# keep me" and len(lines) == 3
    assert lines[2].startswith("|1|") and "127.0.0.1" not in lines[2]
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(kh)], capture_output=True)
    assert found.returncode == 0
    with SSHConnection.open(sshd.target(known_hosts=kh, ssh_config=cfg)) as c:
        assert c.run("true").ok


# -- network failures --------------------------------------------------------------------------------


def test_closed_port_fails_fast_with_connect_error(sshd: Sshd) -> None:  # noqa: F811
    port = free_port()
    start = time.monotonic()
    with pytest.raises(ConnectError, match="connection refused") as err:
        SSHConnection.open(sshd.target(port=port, retries=2))
    elapsed = time.monotonic() - start
    assert 1.4 < elapsed < 3  # two backoff sleeps: 0.5 s + 1 s
    assert "gave up after 3 attempts" in str(err.value) and "sshd" in str(err.value)
    assert not isinstance(err.value, HostKeyError)


def test_silent_server_hits_the_connect_timeout(sshd: Sshd) -> None:  # noqa: F811
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # accepts TCP, never says a word
        start = time.monotonic()
        with pytest.raises(ConnectError, match=r"handshake|no answer"):
            SSHConnection.open(sshd.target(port=silent.getsockname()[1], connect_timeout=0.5))
        assert time.monotonic() - start < 3


# -- ssh_config and ProxyJump ------------------------------------------------------------------------


def test_ssh_config_hostname_port_user_identityfile(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    cfg = tmp_path / "config"
    cfg.write_text(
        f"Host web1\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {SUDO_USER}\n  IdentityFile {sshd.rsa_key}\n"
    )
    target = sshd.target(address="web1", port=None, user=None, private_key=None, ssh_config=cfg)
    with SSHConnection.open(target) as c:
        assert (c.route.target.address, c.route.target.port, c.user) == ("127.0.0.1", sshd.port, SUDO_USER)
        assert c.run("id -un").stdout == f"{SUDO_USER}\n"
        assert c.needs_become  # become follows the resolved user
    # explicit target values win over the config
    with SSHConnection.open(sshd.target(address="web1", port=None, user="root", ssh_config=cfg)) as c:
        assert c.run("id -un").stdout == "root\n"


def test_proxyjump_through_the_same_sshd(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    cfg = tmp_path / "config"
    cfg.write_text(
        f"Host target\n  HostName 127.0.0.1\n  Port {sshd.port}\n  ProxyJump bastion\n"
        f"Host bastion\n  HostName 127.0.0.1\n  Port {sshd.port}\n  IdentityFile {sshd.rsa_key}\n"
    )
    before = accepted_logins(sshd)
    with SSHConnection.open(sshd.target(address="target", port=None, ssh_config=cfg)) as c:
        assert [j.address for j in c.route.jumps] == ["127.0.0.1"]
        # the command runs on the target, reached from the jump host (itself): the peer is loopback
        assert c.run("echo $SSH_CONNECTION").stdout.split()[0] == "127.0.0.1"
        assert c.stats.connects == 1
    assert accepted_logins(sshd) - before == 2  # jump host login + target login


def test_proxyjump_host_key_is_checked(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    cfg = tmp_path / "config"
    # the jump host is known as "localhost", which known_hosts does not list
    cfg.write_text(f"Host target\n  HostName 127.0.0.1\n  Port {sshd.port}\n  ProxyJump localhost:{sshd.port}\n")
    with pytest.raises(HostKeyError, match=rf"jump host localhost .*\[localhost\]:{sshd.port}"):
        SSHConnection.open(sshd.target(address="target", port=None, ssh_config=cfg))


# -- port forwarding ---------------------------------------------------------------------------------


class _EchoPath(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(0.05)  # keep several requests in flight at once
        body = f"path={self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_forward_tunnels_concurrent_http(sshd: Sshd, conn: SSHConnection) -> None:  # noqa: F811
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoPath)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connects = conn.stats.connects
        with conn.forward("127.0.0.1", server.server_address[1]) as port:

            def fetch(i: int) -> str:
                h = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    out = []
                    for j in range(3):  # keep-alive: several requests on one tunnelled connection
                        h.request("GET", f"/{i}/{j}")
                        out.append(h.getresponse().read().decode())
                    return ",".join(out)
                finally:
                    h.close()

            with ThreadPoolExecutor(12) as pool:
                results = list(pool.map(fetch, range(12)))
            assert results == [f"path=/{i}/0,path=/{i}/1,path=/{i}/2" for i in range(12)]
        assert conn.stats.connects == connects
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the listener is gone
    finally:
        server.shutdown()
        server.server_close()


def test_forward_to_closed_port_closes_the_client(conn: SSHConnection) -> None:
    with conn.forward("127.0.0.1", free_port()) as port, socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(10) == b""
    assert conn.run("true").ok  # the transport is unharmed
