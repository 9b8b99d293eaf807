"""End to end through the real CLI, against a real OpenSSH server on loopback: apply a file task,
re-apply (nothing changes), drift it by hand (plan exits 3 and shows the diff), apply restores it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshd import Sshd, sshd  # noqa: F401  (pytest finds the fixture by name)

pytestmark = pytest.mark.e2e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_file_apply_is_idempotent_and_plan_detects_drift(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    target = tmp_path / "managed" / "motd"
    target.parent.mkdir()
    inv = tmp_path / "inventory.yml"
    ssh_config = tmp_path / "ssh_config"
    ssh_config.touch()
    inv.write_text(
        f"""connection:
  user: {sshd.user}
  port: {sshd.port}
  private_key: {sshd.client_key}
  known_hosts: {sshd.known_hosts}
  host_key_policy: strict
  ssh_config: {ssh_config}
hosts:
  local: {{address: {sshd.address}, groups: [demo]}}
kv_store:
  hosts: [local]
"""
    )
    play = tmp_path / "play.yml"
    play.write_text(
        f"""- name: demo
  hosts: demo
  tasks:
    - name: motd
      file: {{path: {target}, content: "hello from provisioner\\n", mode: "0640"}}
"""
    )
    assert cli("validate", "-i", str(inv), str(play)).returncode == 0

    first = cli("apply", "-i", str(inv), str(play), "--output", "json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["ok"] and report["changed"] == 1
    assert target.read_text() == "hello from provisioner\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"

    second = cli("apply", "-i", str(inv), str(play), "--output", "json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["changed"] == 0
    # the cost of a no-op apply: one SSH connection and one round trip (the facts) per host, plus
    # taking and releasing the cluster lock on the lock host (the first kv host, here the same host)
    assert report["connections"] == {"local": {"connects": 1, "round_trips": 3}}

    target.write_text("edited by hand\n")
    plan = cli("plan", "-i", str(inv), str(play))
    assert plan.returncode == 3, plan.stdout + plan.stderr
    out = plan.stdout + plan.stderr
    assert "-edited by hand" in out and "+hello from provisioner" in out
    assert target.read_text() == "edited by hand\n"  # plan changed nothing

    restore = cli("apply", "-i", str(inv), str(play), "--output", "json")
    assert restore.returncode == 0 and json.loads(restore.stdout)["changed"] == 1
    assert target.read_text() == "hello from provisioner\n"
    assert cli("plan", "-i", str(inv), str(play)).returncode == 0


def test_unreachable_host_exits_1_with_reason(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    from tests.sshd import free_port

    inv = tmp_path / "inventory.yml"
    inv.write_text(
        f"""connection:
  port: {free_port()}
  private_key: {sshd.client_key}
  known_hosts: {sshd.known_hosts}
  retries: 0
  connect_timeout: 3
hosts:
  gone: {{address: 127.0.0.1, groups: [demo]}}
kv_store:
  hosts: [gone]
"""
    )
    play = tmp_path / "play.yml"
    play.write_text("- name: p\n  hosts: all\n  tasks:\n    - command: {cmd: 'true'}\n")
    res = cli("apply", "-i", str(inv), str(play), "--output", "json")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["unreachable"] == 1 and report["hosts"]["gone"]["unreachable"]
    assert "refused" in report["hosts"]["gone"]["unreachable_reason"]
    assert "Traceback" not in res.stderr
