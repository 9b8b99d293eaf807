"""SSH target resolution (ssh_config precedence, ProxyJump) and known_hosts matching, without a network."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from pathlib import Path

import paramiko
import pytest

from provisioner.connection.ssh import (
    Endpoint,
    Route,
    SSHTarget,
    check_host_key,
    known_hosts_name,
    known_keys,
    parse_jump,
    resolve,
)
from provisioner.errors import HostKeyError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_target_values_win_over_config_and_config_over_defaults(tmp_path: Path) -> None:
    key = write(tmp_path / "cfgkey", "")
    cfg = write(
        tmp_path / "config",
        f"Host web1\n  HostName 10.1.2.3\n  Port 2200\n  User deploy\n  IdentityFile {key}\n"
        "  UserKnownHostsFile /srv/kh\n",
    )
    r = resolve(SSHTarget(name="web1", address="web1", ssh_config=cfg))
    assert (r.target.address, r.target.port, r.target.user) == ("10.1.2.3", 2200, "deploy")
    assert r.target.identities == (key,) and r.known_hosts == Path("/srv/kh")
    explicit = SSHTarget(
        name="web1",
        address="web1",
        port=22,
        user="root",
        private_key=tmp_path / "mine",
        known_hosts=tmp_path / "kh",
        ssh_config=cfg,
    )
    r = resolve(explicit)
    assert (r.target.address, r.target.port, r.target.user) == ("10.1.2.3", 22, "root")
    assert r.target.identities == (tmp_path / "mine",) and r.target.identities_required
    assert r.known_hosts == tmp_path / "kh"
    r = resolve(SSHTarget(name="db", address="192.0.2.9", ssh_config=cfg))
    assert (r.target.address, r.target.port, r.target.user) == ("192.0.2.9", 22, "root")
    assert not r.jumps and not r.hash_known_hosts


def test_proxyjump_from_config_and_explicit(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config",
        "Host inner\n  ProxyJump admin@bastion:2222\n  IdentitiesOnly yes\n"
        "Host bastion\n  HostName 198.18.0.1\n  User ignored\n",
    )
    r = resolve(SSHTarget(name="inner", address="inner", ssh_config=cfg))
    (jump,) = r.jumps
    assert (jump.address, jump.port, jump.user, jump.jump) == ("198.18.0.1", 2222, "admin", True)
    assert not r.target.use_agent  # IdentitiesOnly
    assert not resolve(SSHTarget(name="inner", address="inner", ssh_config=cfg, proxy_jump="none")).jumps
    r = resolve(SSHTarget(name="x", address="x", ssh_config=cfg, proxy_jump="a,b@c:1"))
    assert [(j.user, j.address, j.port) for j in r.jumps] == [("root", "a", 22), ("b", "c", 1)]


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("host", (None, "host", None)),
        ("u@host:2022", ("u", "host", 2022)),
        ("ssh://u@[::1]:22", ("u", "::1", 22)),
        ("[fe80::1]", (None, "fe80::1", None)),
    ],
)
def test_parse_jump(spec: str, parsed: tuple[str | None, str, int | None]) -> None:
    assert parse_jump(spec) == parsed


def test_parse_jump_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="ProxyJump"):
        parse_jump("u@host:port")


# -- known_hosts -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, paramiko.PKey]:
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("a", "b"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
        out[name] = paramiko.PKey.from_path(d / name)
    return out


def line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def route(kh: Path, hashed: bool = False) -> Route:
    ep = Endpoint("h1", "10.0.0.5", 2222, "root", (), False, True)
    return Route(jumps=(), target=ep, known_hosts=kh, hash_known_hosts=hashed)


def test_known_keys_patterns(tmp_path: Path, keys: dict[str, paramiko.PKey]) -> None:
    a = keys["a"]
    kh = write(
        tmp_path / "kh",
        "# comment\n\n"
        + line("[10.0.0.5]:2222", a)
        + line("10.0.0.*,!10.0.0.9", a)
        + line("garbage-without-key", a).split(" ")[0]
        + "\n"
        + "@revoked "
        + line("*", keys["b"]),
    )
    assert [k.line for k in known_keys(kh, "[10.0.0.5]:2222")] == [3, 6]
    assert [k.line for k in known_keys(kh, "10.0.0.7")] == [4, 6]
    assert [k.line for k in known_keys(kh, "10.0.0.9")] == [6]  # negated
    assert [k.line for k in known_keys(kh, "10.0.0.5")] == [4, 6]  # port 22 form differs
    assert known_keys(kh, "[10.0.0.5]:2222")[1].marker == "@revoked"
    assert known_keys(tmp_path / "missing", "x") == []


def test_hashed_entries_from_openssh_match(tmp_path: Path, keys: dict[str, paramiko.PKey]) -> None:
    kh = write(tmp_path / "kh", line("[10.0.0.5]:2222", keys["a"]))
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert kh.read_text().startswith("|1|")
    assert len(known_keys(kh, "[10.0.0.5]:2222")) == 1
    assert known_keys(kh, "10.0.0.5") == []


def test_check_host_key_verdicts(tmp_path: Path, keys: dict[str, paramiko.PKey]) -> None:
    a, b = keys["a"], keys["b"]
    kh = tmp_path / "kh"
    r = route(kh)
    with pytest.raises(HostKeyError, match="unknown SSH host key"):
        check_host_key(r.target, a, r, "strict", "h1")
    assert not kh.exists()
    assert check_host_key(r.target, a, r, "accept-new", "h1") == "recorded"
    assert kh.read_text() == line("[10.0.0.5]:2222", a)
    assert check_host_key(r.target, a, r, "strict", "h1") == "known"
    with pytest.raises(HostKeyError, match="man-in-the-middle"):
        check_host_key(r.target, b, r, "accept-new", "h1")
    kh.write_text(kh.read_text() + "@revoked " + line("*", a))
    with pytest.raises(HostKeyError, match="revoked"):
        check_host_key(r.target, a, r, "strict", "h1")


def test_other_key_type_on_record_is_treated_as_changed(tmp_path: Path, keys: dict[str, paramiko.PKey]) -> None:
    a = keys["a"]
    kh = write(tmp_path / "kh", f"[10.0.0.5]:2222 ssh-rsa {a.get_base64()}\n")
    r = route(kh)
    with pytest.raises(HostKeyError, match="no longer offers the key type on record"):
        check_host_key(r.target, a, r, "accept-new", "h1")


def test_accept_new_from_many_threads_loses_no_entry(tmp_path: Path, keys: dict[str, paramiko.PKey]) -> None:
    kh = tmp_path / "ssh" / "known_hosts"
    errors: list[BaseException] = []

    def record(i: int) -> None:
        ep = Endpoint(f"h{i}", f"10.0.1.{i}", 22, "root", (), False, True)
        try:
            check_host_key(ep, keys["a"], Route((), ep, kh, hash_known_hosts=True), "accept-new", ep.label)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(kh.read_text().splitlines()) == 16
    for i in range(16):
        assert len(known_keys(kh, f"10.0.1.{i}")) == 1
    assert not [p for p in kh.parent.iterdir() if p.name != "known_hosts"]  # no temp files left


def test_known_hosts_name() -> None:
    assert known_hosts_name("h", 22) == "h"
    assert known_hosts_name("h", 2222) == "[h]:2222"


def test_secrets_not_in_repr() -> None:
    t = SSHTarget(name="h", address="a", password="pw-secret-1", key_passphrase="pp-secret-2")
    assert "pw-secret-1" not in repr(t) and "pp-secret-2" not in repr(t)


def test_connection_package_does_not_import_paramiko() -> None:
    code = "import sys, provisioner.connection; sys.exit('paramiko' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_fingerprint_format(keys: dict[str, paramiko.PKey]) -> None:
    from provisioner.connection.ssh import fingerprint

    blob = base64.b64decode(keys["a"].get_base64())
    assert fingerprint(blob) == keys["a"].fingerprint
