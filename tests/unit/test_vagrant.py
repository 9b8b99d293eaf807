"""The Vagrant lab: the Vagrantfile, its helper scripts and inventories/vagrant.yml must agree.

No VM is started. `vagrant validate` runs on a copy of the Vagrantfile in a temporary directory, so the
checkout gets no .vagrant/ state and no key.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
VAGRANTFILE = ROOT / "Vagrantfile"
INVENTORY = ROOT / "inventories" / "vagrant.yml"
PROJECT_KEY_RB = ROOT / "vagrant" / "project_key.rb"
PROVISION_SH = ROOT / "vagrant" / "provision.sh"

TABLE_START = "# --- machine table"
TABLE_END = "# --- end of machine table"


@dataclass(frozen=True)
class VagrantLab:
    machines: dict[str, str]  # name -> private network address
    user: str
    interface: str
    box: str


def parse_vagrantfile(text: str) -> VagrantLab:
    """Reads the machine table the Vagrantfile keeps machine-readable on purpose (see its comments)."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"Vagrantfile: no '{TABLE_START}' ... '{TABLE_END}' block")
    table = text[start:end]
    body = re.search(r"^MACHINES = \{\n(.*?)^\}\.freeze$", table, re.S | re.M)
    if body is None:
        raise ValueError("Vagrantfile machine table: no `MACHINES = { ... }.freeze`")
    machines: dict[str, str] = {}
    for line in body.group(1).splitlines():
        entry = re.fullmatch(r'\s*"([a-z0-9-]+)" => "([0-9.]+)",\s*', line)
        if entry is None:
            raise ValueError(f"Vagrantfile machine table: cannot read line {line!r}")
        machines[entry.group(1)] = entry.group(2)

    def constant(name: str) -> str:
        found = re.search(rf'^{name} = "([^"]+)"$', table, re.M)
        if found is None:
            raise ValueError(f'Vagrantfile machine table: no `{name} = "..."`')
        return found.group(1)

    return VagrantLab(machines, constant("SSH_USER"), constant("PRIVATE_INTERFACE"), constant("BOX"))


def ruby_constant(name: str) -> str:
    found = re.search(rf'^\s*{name} = "([^"]+)"$', PROJECT_KEY_RB.read_text(), re.M)
    assert found, f"{PROJECT_KEY_RB}: no {name} constant"
    return found.group(1)


@pytest.fixture(scope="module")
def lab() -> VagrantLab:
    return parse_vagrantfile(VAGRANTFILE.read_text())


@pytest.fixture(scope="module")
def inventory() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(INVENTORY.read_text())
    return data


# --- the Vagrantfile and the inventory agree ----------------------------------------------------------


def test_machine_table_is_the_classic_topology(lab: VagrantLab) -> None:
    assert lab.machines == {
        "consul": "192.168.115.20",
        "host1": "192.168.115.21",
        "host2": "192.168.115.22",
    }
    assert lab.box == "debian/bullseye64"  # Debian 11: docker.io 20.10 with Consul support


def test_inventory_hosts_match_vagrantfile(lab: VagrantLab, inventory: dict[str, Any]) -> None:
    hosts = inventory["hosts"]
    assert {name: host["address"] for name, host in hosts.items()} == lab.machines
    # No host overrides the connection user, so every host is reached as the Vagrantfile's user.
    assert inventory["connection"]["user"] == lab.user
    assert all("user" not in host for host in hosts.values())


def test_inventory_advertises_the_private_network_interface(lab: VagrantLab, inventory: dict[str, Any]) -> None:
    assert lab.interface != "eth0", "eth0 is Vagrant's NAT/management interface, not the private network"
    assert inventory["docker"]["advertise_interface"] == lab.interface
    assert all(host.get("advertise_interface", lab.interface) == lab.interface for host in inventory["hosts"].values())


def test_inventory_roles(inventory: dict[str, Any]) -> None:
    hosts = inventory["hosts"]
    assert inventory["kv_store"]["hosts"] == ["consul"]
    assert inventory["kv_store"]["backend"] == "consul"
    assert inventory["kv_store"]["image"] == "hashicorp/consul:1.15"
    assert sorted(n for n, h in hosts.items() if "docker" in h["groups"]) == ["host1", "host2"]
    assert "docker" not in hosts["consul"]["groups"]
    assert inventory["networks"] == {"ov_net1": {"driver": "overlay", "subnet": "10.0.0.0/24"}}
    assert inventory["verify"]["image"] == "busybox"


def test_inventory_key_and_known_hosts_are_the_vagrantfile_ones(inventory: dict[str, Any]) -> None:
    conn = inventory["connection"]
    state_dir = (ROOT / ".vagrant").resolve()
    assert (INVENTORY.parent / conn["private_key"]).resolve() == state_dir / ruby_constant("KEY_NAME")
    assert (INVENTORY.parent / conn["known_hosts"]).resolve() == state_dir / ruby_constant("KNOWN_HOSTS_NAME")
    assert conn["host_key_policy"] == "accept-new"


def test_key_location_is_gitignored() -> None:
    assert "/.vagrant/" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize(
    "broken",
    [
        "no table at all",
        f'{TABLE_START}\nMACHINES = {{\n  "host1" => 192.168.115.21,\n}}.freeze\n{TABLE_END}',
        f'{TABLE_START}\nMACHINES = {{\n  "host1" => "192.168.115.21",\n}}.freeze\n{TABLE_END}',
    ],
)
def test_parser_refuses_what_it_cannot_read(broken: str) -> None:
    with pytest.raises(ValueError, match="Vagrantfile"):
        parse_vagrantfile(broken)


# --- the real loader -----------------------------------------------------------------------------------


def copy_inventory(tmp_path: Path, with_key: bool) -> Path:
    """The inventory in a project-like tree, so its relative key path lands in tmp_path/.vagrant/."""
    (tmp_path / "inventories").mkdir()
    copy = tmp_path / "inventories" / INVENTORY.name
    shutil.copy(INVENTORY, copy)
    if with_key:
        (tmp_path / ".vagrant").mkdir()
        # The loader only checks that the key file exists; nothing connects in this test.
        (tmp_path / ".vagrant" / ruby_constant("KEY_NAME")).write_text("dummy, never used to connect\n")
    return copy


def test_inventory_loads_and_resolves_like_the_vagrantfile(tmp_path: Path, lab: VagrantLab) -> None:
    from provisioner.inventory import load_inventory

    inv = load_inventory(copy_inventory(tmp_path, with_key=True))
    assert set(inv.hosts) == set(lab.machines)
    assert inv.groups()["docker"] == ["host1", "host2"]
    assert [(name, addr) for name, addr, _ in inv.kv_endpoints()] == [("consul", lab.machines["consul"])]
    for name, address in lab.machines.items():
        conn = inv.connection_for(name)
        assert (conn.address, conn.user, conn.port) == (address, lab.user, 22)
        assert conn.become, "the vagrant user must reach root through sudo"
        assert conn.private_key is not None and conn.known_hosts is not None
        assert conn.private_key.resolve() == tmp_path.resolve() / ".vagrant" / ruby_constant("KEY_NAME")
        assert conn.known_hosts.resolve() == tmp_path.resolve() / ".vagrant" / ruby_constant("KNOWN_HOSTS_NAME")
        assert conn.host_key_policy == "accept-new"
        assert conn.ssh_config is None
        assert inv.advertise_interface(name) == lab.interface


def test_readme_validate_command_passes(tmp_path: Path) -> None:
    """`provisioner validate -i inventories/vagrant.yml playbooks/overlay.yml`, as in the README."""
    inventory = copy_inventory(tmp_path, with_key=True)
    playbook = ROOT / "playbooks" / "overlay.yml"
    result = subprocess.run(
        [sys.executable, "-m", "provisioner", "validate", "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_inventory_without_vagrant_up_names_the_missing_key(tmp_path: Path) -> None:
    from provisioner.errors import InputError
    from provisioner.inventory import load_inventory

    with pytest.raises(InputError) as caught:
        load_inventory(copy_inventory(tmp_path, with_key=False))
    message = str(caught.value)
    assert "connection.private_key" in message
    assert f".vagrant/{ruby_constant('KEY_NAME')} does not exist" in message


# --- vagrant validate ---------------------------------------------------------------------------------

# Only answers `--version`, which is all Vagrant's VirtualBox provider asks during `validate`; any other
# call fails loudly so a Vagrant that starts wanting more is noticed.
VBOXMANAGE_SHIM = """#!/bin/sh
if [ "$1" = "--version" ]; then echo 7.0.14r161095; exit 0; fi
echo "VBoxManage shim (tests/unit/test_vagrant.py): unexpected call: $*" >&2
exit 99
"""


@pytest.fixture
def vagrant_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(VAGRANTFILE, project / "Vagrantfile")
    shutil.copytree(ROOT / "vagrant", project / "vagrant")
    return project


def run_vagrant(
    project: Path, *args: str, provider: str | None = None, path_prefix: Path | None = None
) -> subprocess.CompletedProcess[str]:
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        pytest.skip("the `vagrant` binary is not installed (Debian: apt install vagrant vagrant-libvirt)")
    env = {
        **os.environ,
        "VAGRANT_CWD": str(project),
        "VAGRANT_HOME": str(project.parent / "vagrant.d"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",  # no version check over the network
        "VAGRANT_NO_COLOR": "1",
    }
    env.pop("VAGRANT_DEFAULT_PROVIDER", None)
    if provider:
        env["VAGRANT_DEFAULT_PROVIDER"] = provider
    if path_prefix:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return subprocess.run([vagrant, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def assert_validated(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"vagrant validate failed:\n{result.stdout}\n{result.stderr}"
    assert "Vagrantfile validated successfully" in result.stdout


def test_vagrant_validate_without_provider(vagrant_project: Path) -> None:
    assert_validated(run_vagrant(vagrant_project, "validate", "--ignore-provider"))
    # validate must not create a project key: only up/provision/reload do.
    assert not (vagrant_project / ".vagrant" / ruby_constant("KEY_NAME")).exists()


def test_vagrant_validate_libvirt(vagrant_project: Path) -> None:
    """The vagrant-libvirt plugin validates its provider block without a running libvirtd."""
    assert_validated(run_vagrant(vagrant_project, "validate", provider="libvirt"))


def test_vagrant_validate_virtualbox(vagrant_project: Path, tmp_path: Path) -> None:
    """VirtualBox is not in Debian; without it, a VBoxManage shim lets Vagrant check the provider block."""
    shim_dir = None
    if shutil.which("VBoxManage") is None:
        shim_dir = tmp_path / "bin"
        shim_dir.mkdir()
        shim = shim_dir / "VBoxManage"
        shim.write_text(VBOXMANAGE_SHIM)
        shim.chmod(0o755)
    assert_validated(run_vagrant(vagrant_project, "validate", provider="virtualbox", path_prefix=shim_dir))


def test_vagrant_validate_catches_a_provider_typo(vagrant_project: Path) -> None:
    vagrantfile = vagrant_project / "Vagrantfile"
    text = vagrantfile.read_text()
    assert 'lv.driver = "kvm"' in text
    vagrantfile.write_text(text.replace('lv.driver = "kvm"', 'lv.driver = "kvm"\n    lv.memroy = 1024'))
    result = run_vagrant(vagrant_project, "validate", provider="libvirt")
    assert result.returncode != 0
    assert "memroy" in result.stdout + result.stderr


# --- the project key, created on the host by vagrant/project_key.rb -----------------------------------


def run_ruby(script: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    ruby = shutil.which("ruby")
    if ruby is None or shutil.which("ssh-keygen") is None:
        pytest.skip("ruby or ssh-keygen missing (both come with Debian's vagrant and openssh-client)")
    prelude = f"require {str(PROJECT_KEY_RB)!r}\nkey = ProjectKey.new({str(state_dir)!r})\n"
    return subprocess.run([ruby, "-e", prelude + script], capture_output=True, text=True, timeout=60, check=True)


def test_project_key_is_created_once_and_kept(tmp_path: Path) -> None:
    state = tmp_path / ".vagrant"
    assert run_ruby("print key.public_key", state).stdout == ""  # before any `up`: no key, none created
    assert not state.exists()

    first = run_ruby("key.ensure!\nprint key.public_key", state).stdout
    private = state / ruby_constant("KEY_NAME")
    assert first.startswith("ssh-ed25519 ") and first.endswith(" provisioner-vagrant")
    assert private.stat().st_mode & 0o777 == 0o600
    assert "OPENSSH PRIVATE KEY" in private.read_text()

    assert run_ruby("key.ensure!\nprint key.public_key", state).stdout == first

    # Only the private half left (e.g. copied from another checkout): the public half is derived again.
    Path(f"{private}.pub").unlink()
    assert run_ruby("key.ensure!\nprint key.public_key", state).stdout == first


def test_forget_host_removes_only_that_host(tmp_path: Path) -> None:
    state = tmp_path / ".vagrant"
    state.mkdir()
    known_hosts = state / ruby_constant("KNOWN_HOSTS_NAME")
    a = "AAAAC3NzaC1lZDI1NTE5AAAAIEz1Fh0xJ7kGTZgR7ln8K0Vj5vTXqXg2l2ZqyVzX0p1n"
    known_hosts.write_text(f"192.168.115.21 ssh-ed25519 {a}\n192.168.115.22 ssh-ed25519 {a}\n")
    run_ruby('key.forget_host("192.168.115.21")', state)
    assert known_hosts.read_text() == f"192.168.115.22 ssh-ed25519 {a}\n"
    assert sorted(p.name for p in state.iterdir()) == [known_hosts.name]
    run_ruby('key.forget_host("192.168.115.21")', tmp_path / "absent")  # no file yet: nothing to do


# --- vagrant/provision.sh -----------------------------------------------------------------------------


def test_provision_script_parses() -> None:
    subprocess.run(["bash", "-n", str(PROVISION_SH)], check=True)
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(PROVISION_SH)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("pubkey", "message"),
    [
        ("", "no project public key was passed in"),
        ("ssh-rsa AAAAB3Nza provisioner-vagrant", "does not look like an ssh-ed25519 key"),
    ],
)
def test_provision_script_refuses_a_bad_key_before_touching_anything(pubkey: str, message: str) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "PROVISIONER_PUBKEY": pubkey,
        "PROVISIONER_USER": "vagrant",
        "PROVISIONER_ADDRESS": "192.168.115.21",
        "PROVISIONER_INTERFACE": "eth1",
    }
    result = subprocess.run(["bash", str(PROVISION_SH)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert "fix:" in result.stderr
