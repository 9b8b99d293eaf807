"""Start-up cost: `--help` and `validate` must not import what they do not use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = ("paramiko", "docker", "consul", "requests", "cryptography")

PROBE = """
import sys
sys.argv = {argv!r}
from provisioner.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
print('HEAVY=' + ','.join(heavy))
"""


def _imported(argv: list[str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=["provisioner", *argv], heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    return out.rsplit("HEAVY=", 1)[1].strip()


def test_help_imports_nothing_heavy() -> None:
    assert _imported(["--help"]) == ""
    assert _imported(["lab", "--help"]) == ""


def test_validate_imports_nothing_heavy(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    inv = tmp_path / "inv.yml"
    inv.write_text(
        f"connection: {{private_key: {key}, host_key_policy: accept-new}}\n"
        "hosts:\n  a: {address: 198.18.0.2, groups: [kv]}\n  b: {address: 198.18.0.3, groups: [docker]}\n"
        "kv_store: {hosts: [a]}\nnetworks:\n  ov_net1: {subnet: 198.19.1.0/24}\n"
    )
    overlay = Path(__file__).parents[2] / "playbooks" / "overlay.yml"
    assert _imported(["validate", "-i", str(inv), str(overlay)]) == ""


def test_a_run_imports_only_the_modules_its_playbook_names(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    inv = tmp_path / "inv.yml"
    inv.write_text(
        f"connection: {{private_key: {key}, host_key_policy: accept-new}}\n"
        "hosts:\n  b: {address: 198.18.0.3, groups: [docker]}\n"
        "networks:\n  net1: {driver: bridge, subnet: 198.19.1.0/24}\n"
    )
    pb = tmp_path / "pb.yml"
    pb.write_text("- hosts: docker\n  tasks:\n    - file: {path: /etc/motd, content: hi}\n")
    listing = (
        "mods = sorted(m for m in sys.modules if m.startswith('provisioner.modules.'))\n"
        "print('MODS=' + ','.join(mods))"
    )
    probe = PROBE.replace("heavy = sorted", listing + "\nheavy = sorted")
    out = subprocess.run(
        [sys.executable, "-c", probe.format(argv=["provisioner", "validate", "-i", str(inv), str(pb)], heavy=HEAVY)],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    mods = out.split("MODS=", 1)[1].split("\n", 1)[0].split(",")
    assert mods == ["provisioner.modules.base", "provisioner.modules.file"]
