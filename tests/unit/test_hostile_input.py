"""Property tests: hostile strings cannot inject into shell commands.

Whatever passes inventory validation is a plain token; whatever we quote reaches the remote shell as
exactly one argument; atomic writes and the facts script touch only the path they were given.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provisioner.connection.base import RunResult, put_command, q
from provisioner.connection.fake import FakeConnection
from provisioner.errors import InputError
from provisioner.facts import gather
from provisioner.inventory import load_inventory

SHELL_META = set(" \t\n\r;&|$`'\"\\<>(){}*?[]!#~")
hostile = st.text(alphabet=st.sampled_from(sorted(SHELL_META) + list("abc-_./:=%@\x00\u00e9")), min_size=1, max_size=30)


def sh(cmd: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", cmd], input=stdin, capture_output=True, cwd=cwd, timeout=30, check=False)


@settings(max_examples=150, deadline=None)
@given(hostile)
def test_quoted_values_arrive_as_exactly_one_argument(value: str) -> None:
    if "\x00" in value:
        return  # NUL cannot be part of any argv; inputs containing it are refused earlier
    res = sh(f"printf '%s|' {q(value)}")
    assert res.stdout.decode() == value + "|"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile)
@example(name="h1\n")  # Python's `$` also matches before a trailing newline
@example(name="eth0\n")
def test_names_that_pass_validation_are_plain_tokens(tmp_path: Path, name: str) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    inv = tmp_path / "inv.yml"
    for field in ("host", "network", "group", "iface"):
        host = name if field == "host" else "h1"
        group = name if field == "group" else "g"
        net = name if field == "network" else "n"
        iface = name if field == "iface" else "eth0"
        h, g, i, n = _yaml(host), _yaml(group), _yaml(iface), _yaml(net)
        inv.write_text(
            f"connection: {{private_key: {key}, host_key_policy: accept-new}}\n"
            f"hosts:\n  {h}: {{address: 198.18.0.2, groups: [{g}], advertise_interface: {i}}}\n"
            f"kv_store: {{hosts: [{h}]}}\nnetworks:\n  {n}: {{subnet: 198.19.0.0/24}}\n"
        )
        try:
            load_inventory(inv)
        except InputError:
            continue
        assert not (set(name) & SHELL_META), f"{field} name {name!r} passed validation"
        assert "\x00" not in name


def _yaml(s: str) -> str:
    return (
        '"'
        + s.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
        .replace("\x00", "\\0")
        + '"'
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile.filter(lambda s: "/" not in s and "\x00" not in s and s not in (".", "..")))
def test_atomic_write_touches_only_its_own_path(tmp_path: Path, name: str) -> None:
    d = tmp_path / "w"
    d.mkdir(exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    target = d / name
    res = sh(put_command(str(target), 0o640, None), stdin=b"payload", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [p.name for p in d.iterdir()] == [name]
    assert target.read_bytes() == b"payload"
    assert list(tmp_path.iterdir()) == [d]


@pytest.mark.parametrize("name", ["a; touch INJECTED", "$(touch INJECTED)", "`touch INJECTED`", "x\ntouch INJECTED"])
def test_facts_script_reads_hostile_paths_without_running_them(tmp_path: Path, name: str) -> None:
    def local(cmd: str, stdin: bytes | None) -> RunResult:
        p = subprocess.run(["sh", "-c", cmd], input=stdin, capture_output=True, cwd=tmp_path, timeout=60, check=False)
        return RunResult(p.returncode, p.stdout.decode(), p.stderr.decode())

    path = tmp_path / name
    path.write_text("content")
    facts = gather(FakeConnection("local").on(r"^sh -s$", respond=local), files=[str(path)])
    assert facts.file(str(path)).content == "content"
    assert not (tmp_path / "INJECTED").exists()
